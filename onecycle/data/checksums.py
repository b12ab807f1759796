"""Digests of source files and folders, and checking them against what the user or the publisher expects."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

from onecycle.data.members import hidden, open_regular
from onecycle.data.split import DataError

CHUNK_BYTES = 1 << 20  # 1 MiB: read size for hashing and downloading


class Digester:
    """md5 and sha256 of a byte stream in one pass (md5 to match the published digests, sha256 for the manifest)."""

    def __init__(self) -> None:
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._sha256 = hashlib.sha256()

    def update(self, chunk: bytes) -> None:
        self._md5.update(chunk)
        self._sha256.update(chunk)

    def hexdigests(self) -> dict[str, str]:
        return {"md5": self._md5.hexdigest(), "sha256": self._sha256.hexdigest()}


def file_digests(path: Path) -> dict[str, str]:
    """md5 and sha256 of a file (see `Digester`); DataError if it is not a regular file (a FIFO would never end)."""
    digester = Digester()
    with open_regular(path) as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digester.update(chunk)
    return digester.hexdigests()


def accepted_digests(checksum: str, published_md5s: Sequence[str]) -> list[str]:
    """The digests ("md5:<hex>"/"sha256:<hex>") a file may match; empty: no check.

    "auto" accepts the published md5s of the source (none for image folders), "none" skips the check.
    """
    if checksum == "none":
        return []
    if checksum == "auto":
        return [f"md5:{md5}" for md5 in published_md5s]
    return [checksum.lower()]


def check_digests(what: str, digests: dict[str, str], accepted: Sequence[str]) -> None:
    """Raise DataError, with expected and actual digests, unless `digests` match one of `accepted`."""
    if digests_match(digests, accepted):
        return
    algos = sorted({a.partition(":")[0] for a in accepted})
    actual = ", ".join(f"{algo}:{digests[algo]}" for algo in algos)
    raise DataError(
        f"checksum mismatch for {what}: expected {' or '.join(accepted)}, got {actual}. The file is damaged or "
        "not the one expected: download it again, or, if you trust this copy, set data.checksum to its digest or none"
    )


def digests_match(digests: dict[str, str], accepted: Sequence[str]) -> bool:
    """True when nothing is expected or `digests` match one of `accepted`."""
    return not accepted or any(digests[a.partition(":")[0]] == a.partition(":")[2] for a in accepted)


def check_source_file(path: Path, checksum: str, published_md5s: Sequence[str]) -> str | None:
    """Verify a local source file; return its sha256 (None for a folder: see `folder_digest`)."""
    if path.is_dir():
        if checksum not in ("auto", "none"):
            raise DataError(
                f"data.checksum {checksum} applies to a file, but data.path {path} is a folder: "
                "set data.checksum: auto or none"
            )
        return None
    digests = file_digests(path)
    check_digests(str(path), digests, accepted_digests(checksum, published_md5s))
    return digests["sha256"]


def folder_digest(root: Path) -> str:
    """sha256 of a folder's listing: one "name<TAB>sha256 of content" line per non-hidden file, sorted.

    It identifies a folder's content the way a file's digest identifies an archive.
    """
    names = sorted(
        (Path(current) / name).relative_to(root).as_posix() for current, _, files in os.walk(root) for name in files
    )
    lines = [f"{name}\t{file_digests(root / name)['sha256']}\n" for name in names if not hidden(name)]
    return hashlib.sha256("".join(lines).encode()).hexdigest()
