"""Atomic writes and safe loads.

Every output goes to a temporary file beside its target and is moved into place with
`os.replace`, so a kill at any moment leaves either the old file or the new one, and DVC
never caches half a file. Loads never execute code from disk: JSON, CSV, and
`torch.load(weights_only=True)`.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from onecycle.errors import UserError


class ArtifactError(UserError):
    """An input file (artifact of an earlier stage) is missing or not what it should be."""


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb") -> Iterator[BinaryIO]:
    """Open a temp file beside `path`; on success fsync and move it into place, on error remove it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the mode open() would give
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


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

