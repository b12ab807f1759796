"""Atomic writes of files and folders, and safe loads.

Every output is written under a temp name beside its target, `.<name>.<8 hex digits>.tmp` (hidden,
and the same pattern for files and folders), and moved into place with `os.replace`, so a kill at
any moment leaves either the old output or the new one, and DVC never caches half of one. A run
killed with no chance to clean up (SIGKILL, a power cut) leaves its temp behind: the next writer
of the same output removes it first. A write that fails for want of space or permission raises
`WriteError`, which names the output and the reason. Loads never execute code from disk: JSON,
CSV, and `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import logging
import math
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from onecycle.errors import UserError
from onecycle.params import shown

T = TypeVar("T")

log = logging.getLogger(__name__)

TEMP_SUFFIX = ".tmp"
# O_BINARY exists only on Windows, where a text-mode descriptor would rewrite newlines.
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
# Errors that mean a write failed whichever call raised them: no space, over quota, a file over the
# size limit, a read-only file system. Others raised while an output is written (a read error,
# a bug) keep their own type.
_WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})


class ArtifactError(UserError):
    """An input file (artifact of an earlier stage) is missing or not what it should be."""


class WriteError(UserError):
    """An output could not be written: the disk is full, the folder is read-only or not the user's."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"cannot write {path}: {reason}")
        self.path, self.reason = Path(path), reason


def _write_error(path: Path, err: OSError) -> WriteError:
    return WriteError(path, err.strerror or str(err))


def _temp_names(path: Path) -> re.Pattern[str]:
    """The names of `path`'s temp siblings: this module's `.tmp`, and the `.part` (download) and `.old`
    (the prepared folder's swap) of versions before it; 8 characters of token_hex's or mkstemp's alphabet."""
    return re.compile(rf"\.{re.escape(path.name)}\.[a-z0-9_]{{8}}\.(?:tmp|part|old)")


def remove_stale_temps(path: str | Path) -> None:
    """Remove the temp siblings of `path` that a killed run left behind (files or folders).

    Every writer here calls it before writing `path`. Two writers of one output at once would remove
    each other's temp: a stage never runs twice at once (DVC locks the repository; under torchrun
    only rank 0 writes).
    """
    path = Path(path)
    pattern = _temp_names(path)
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(path.parent):
            if pattern.fullmatch(entry.name):
                log.info("removing %s, left behind by an interrupted run", entry.path)
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)


def _create_beside(path: Path, create: Callable[[Path], T]) -> tuple[Path, T]:
    """Create a fresh temp file or folder beside `path` with `create` (which must refuse an existing
    name); return its path and what `create` returned. WriteError if the folder refuses it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}"
            try:
                return tmp, create(tmp)
            except FileExistsError:
                continue  # a 1-in-4-billion clash with another temp: draw another name
    except OSError as err:
        raise _write_error(path, err) from err


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb") -> Iterator[BinaryIO]:
    """Open a temp file beside `path`; on success fsync and move it into place, on error remove it.

    Raises WriteError (naming `path`) when the file cannot be created, or when writing fails with
    no space, over quota or on a read-only file system, whether in the caller's writes or the fsync.
    """
    path = Path(path)
    remove_stale_temps(path)
    # Mode 0o666 less the umask: what open() would give (mkstemp's 0600 would hide outputs from others).
    tmp, fd = _create_beside(path, lambda name: os.open(name, _CREATE_FLAGS, 0o666))
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(err, OSError) and err.errno in _WRITE_ERRNOS:
            raise _write_error(path, err) from err
        raise


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """An empty temp folder beside `path` to fill; on success it replaces `path` whole, on error it is removed.

    Write the files inside with `atomic_open` (which fsyncs them); a WriteError of one of them is
    raised again naming `path`, the output the user knows. The folder gets the mode mkdir gives
    (0o777 less the umask; mkdtemp's would be 0700).
    """
    path = Path(path)
    remove_stale_temps(path)
    tmp, _ = _create_beside(path, os.mkdir)
    try:
        yield tmp
        _swap_in(tmp, path)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, WriteError) and tmp in err.path.parents:
            raise WriteError(path, err.reason) from err
        if isinstance(err, OSError) and err.errno in _WRITE_ERRNOS:
            raise _write_error(path, err) from err
        raise


def _swap_in(tmp: Path, path: Path) -> None:
    """Replace `path` by the folder `tmp`. A crash in between leaves no `path`, never a half-written one."""
    old = None
    if path.exists() or path.is_symlink():
        # os.replace cannot move a folder onto a non-empty one: move the old output into a new temp folder first.
        old, _ = _create_beside(path, os.mkdir)
        os.replace(path, old / path.name)
    os.replace(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode())


def write_json(path: str | Path, obj: Any) -> None:
    # allow_nan=False: a NaN in a metrics file would be invalid JSON for DVC and browsers.
    write_text(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")


def write_csv(path: str | Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    write_text(path, buffer.getvalue())


def save_torch(path: str | Path, obj: Any) -> None:
    """torch.save, atomically (checkpoints and the model file); WriteError naming `path` on a full disk.

    Serialized in memory first, then written: torch.save writing into a file that fills up reports
    "unexpected pos 285376 vs 285272" (a RuntimeError) instead of the OSError, while a plain write keeps
    ENOSPC for atomic_open to name. The cost is one copy of the file in memory (~50 MB for the
    reference network's checkpoint).
    """
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with atomic_open(path, "wb") as handle:
        handle.write(buffer.getbuffer())


def load_torch(path: str | Path, what: str) -> Any:
    """torch.load with weights_only=True: tensors and plain containers, never arbitrary code."""
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{what} {path} not found: run the stage that writes it first (dvc repro)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ArtifactError(
            f"{what} {path} holds something other than tensors and plain data (refused to unpickle it): {err}"
        ) from err
    except Exception as err:  # torch raises RuntimeError, EOFError, zipfile errors... on damaged files
        raise ArtifactError(f"{what} {path} is damaged or not a torch file: {err}") from err


MAX_JSON_BYTES = 1 << 20  # the JSON files stages read (metrics/max_lr.json) are a few KB


def read_json(path: str | Path, what: str) -> Any:
    """The JSON file `path` written by an earlier stage (`what` names it in messages).

    ArtifactError when it is missing, not a regular file, over MAX_JSON_BYTES, not UTF-8 JSON, or nested
    deeper than Python's recursion limit lets json read (a 100,000-deep list was a RecursionError traceback).
    """
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"{what} {path} not found: run the stage that writes it first (dvc repro)")
    if not path.is_file():
        raise ArtifactError(f"{what} {path} is not a regular file: rerun the stage that writes it")
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_JSON_BYTES + 1)  # bounded even if it grows while read
    except OSError as err:
        raise ArtifactError(f"cannot read {what} {path}: {err.strerror or err}") from err
    if len(data) > MAX_JSON_BYTES:
        raise ArtifactError(f"{what} {path} is over {MAX_JSON_BYTES:,} bytes, not what the stage writes: rerun it")
    try:
        return json.loads(data.decode("utf-8"))
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError, or an integer of more than 4,300 digits
        raise ArtifactError(f"{what} {path} is not valid JSON ({err}): rerun the stage that writes it") from err
    except RecursionError:
        raise ArtifactError(
            f"{what} {path} nests values deeper than Python can read (the stage writes 3 levels): rerun it"
        ) from None


def finite_float(value: Any, key: str, path: str | Path) -> float:
    """A positive finite float read from a file, or ArtifactError naming the key and file."""
    try:
        number = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan
    except OverflowError:  # an integer beyond float's range
        number = math.inf
    if not math.isfinite(number) or number <= 0:
        raise ArtifactError(f"{key} in {path} must be a positive finite number, got {shown(value)}")
    return number



def significant(x: float, digits: int = 4) -> float:
    """x rounded to `digits` significant digits (metrics files: 0.0007579, not 0.0007578805851087509)."""
    return float(f"{x:.{digits}g}") if math.isfinite(x) else x
