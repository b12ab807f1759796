"""Atomic writes of files and folders, and safe loads.

Every output is written under a temp name beside its target, `.<name>.<8 hex digits>.tmp` (hidden,
and the same pattern for files and folders), and moved into place with `os.replace`, so a kill at
any moment leaves either the old output or the new one, and DVC never caches half of one. Loads
never execute code from disk: JSON, CSV, and `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import secrets
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from onecycle.errors import UserError

T = TypeVar("T")

TEMP_SUFFIX = ".tmp"
# O_BINARY exists only on Windows, where a text-mode descriptor would rewrite newlines.
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)


class ArtifactError(UserError):
    """An input file (artifact of an earlier stage) is missing or not what it should be."""


def _create_beside(path: Path, create: Callable[[Path], T]) -> tuple[Path, T]:
    """Create a fresh temp file or folder beside `path` with `create` (which must refuse an existing
    name); return its path and what `create` returned."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}"
        try:
            return tmp, create(tmp)
        except FileExistsError:
            continue  # a 1-in-4-billion clash with another temp: draw another name


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb") -> Iterator[BinaryIO]:
    """Open a temp file beside `path`; on success fsync and move it into place, on error remove it."""
    path = Path(path)
    # Mode 0o666 less the umask: what open() would give (mkstemp's 0600 would hide outputs from others).
    tmp, fd = _create_beside(path, lambda name: os.open(name, _CREATE_FLAGS, 0o666))
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """An empty temp folder beside `path` to fill; on success it replaces `path` whole, on error it is removed.

    Write the files inside with `atomic_open` (which fsyncs them). The folder gets the mode mkdir
    gives (0o777 less the umask; mkdtemp's would be 0700).
    """
    path = Path(path)
    tmp, _ = _create_beside(path, os.mkdir)
    try:
        yield tmp
        _swap_in(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
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
    """torch.save, atomically (checkpoints and the model file)."""
    import torch

    with atomic_open(path, "wb") as handle:
        torch.save(obj, handle)


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


def read_json(path: str | Path, what: str) -> Any:
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{what} {path} not found: run the stage that writes it first (dvc repro)")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ArtifactError(f"{what} {path} is not valid JSON ({err}): rerun the stage that writes it") from err


def finite_float(value: Any, key: str, path: str | Path) -> float:
    """A positive finite float read from a file, or ArtifactError naming the key and file."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ArtifactError(f"{key} in {path} must be a positive finite number, got {value!r}")
    return float(value)


def remove(*paths: str | Path) -> None:
    """Remove outputs (on failure: leave nothing partial behind)."""
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            Path(path).unlink()
