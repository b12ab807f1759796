"""The training checkpoint: what it must match to be resumed, its save and restore side by side, and its lock.

Written at the end of every epoch by rank 0, atomically (io.save_torch), so a crash or a kill loses
at most the epoch in progress; read back with `torch.load(weights_only=True)`. New state is added in
`save` and `restore` together, and VERSION is bumped when old files can no longer be restored.
While a run trains, `lock` holds `<checkpoint>.lock`, so a second run on the same checkpoint (a new
`dvc repro` beside an orphaned training) stops at once instead of overwriting the first one's epochs.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from onecycle import io
from onecycle.errors import UserError
from onecycle.params import Params, reads

if TYPE_CHECKING:
    from onecycle.data import Split
    from onecycle.train import Training

log = logging.getLogger(__name__)

VERSION = 1
LOCK_SUFFIX = ".lock"


class CheckpointBusy(UserError):
    """Another process holds the checkpoint's lock: it is training on it now."""


@contextlib.contextmanager
def lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` + LOCK_SUFFIX for the block, or raise CheckpointBusy at once (no waiting)
    naming the process that holds it; io.WriteError when the lock file cannot be made.

    An OS file lock (flock on POSIX, msvcrt.locking on Windows), so it is released by the kernel when its
    holder ends in any way, SIGKILL included: a stale lock file never blocks a run. The lock file holds
    the holder's pid, for the message; on POSIX it is removed on release (Windows cannot remove an open file).
    """
    path = Path(path)
    lock_path = path.with_name(path.name + LOCK_SUFFIX)
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise io.WriteError(lock_path, err.strerror or str(err)) from err
    fd = _acquire(path, lock_path)
    try:
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        if os.name != "nt":
            with contextlib.suppress(FileNotFoundError):
                os.unlink(lock_path)  # while still holding it: whoever opens the name next makes a new file
        os.close(fd)  # releases the lock


def _acquire(path: Path, lock_path: Path) -> int:
    """An open descriptor of `lock_path` holding its lock; CheckpointBusy if another process has it."""
    while True:
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as err:
            raise io.WriteError(lock_path, err.strerror or str(err)) from err
        try:
            _lock_fd(fd)
        except OSError as err:
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES, errno.EDEADLK):
                os.close(fd)
                raise io.WriteError(lock_path, err.strerror or str(err)) from err
            holder = _holder(fd)
            os.close(fd)
            raise CheckpointBusy(
                f"checkpoint {path} is being trained by another process (pid {holder}): two runs would overwrite "
                f"each other's epochs. Wait for it to finish, or stop it (kill {holder}) and rerun; it resumes "
                "from the last finished epoch"
            ) from None
        if os.name == "nt" or _same_file(fd, lock_path):
            return fd
        os.close(fd)  # its last holder removed the file between our open and our lock: lock the new one


def _lock_fd(fd: int) -> None:
    if os.name == "nt":
        import msvcrt

        # A byte far past the pid, so that a busy run can still read the pid of the holder.
        os.lseek(fd, 1 << 20, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    else:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _holder(fd: int) -> str:
    """The pid the lock's holder wrote, or 'unknown' (it may not have written it yet)."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 32).decode("ascii", "replace").strip()
    except OSError:
        return "unknown"
    return text if text.isdigit() else "unknown"


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


def fingerprint(params: Params, max_lr: float, train: Split, world_size: int) -> str:
    """What a checkpoint must match to be resumed (sha256 hex): every param train_onecycle reads,
    the max LR, the number of processes and the training images and labels themselves."""
    relevant = reads(params, "train_onecycle")
    relevant["max_lr"], relevant["world"] = max_lr, world_size
    data = hashlib.sha256(memoryview(np.ascontiguousarray(train.images)).cast("B"))  # ~0.2 s for 150 MB
    data.update(memoryview(np.ascontiguousarray(train.labels)).cast("B"))
    relevant["data"] = data.hexdigest()
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()


def save(path: Path, key: str, run: Training, history: list[dict], train_seconds: float) -> None:
    """Everything a resumed run needs to continue as if never stopped, the RNG included."""
    io.save_torch(path, {
        "version": VERSION,
        "fingerprint": key,
        "model": run.raw_model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict() if run.scheduler is not None else None,
        "scaler": run.scaler.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "history": history,
        "train_seconds": train_seconds,
    })


def load(path: Path | None, expected: str) -> dict | None:
    """The checkpoint to resume from, or None (absent, damaged, or from other params: start fresh)."""
    if path is None or not path.is_file():
        return None
    try:
        state = io.load_torch(path, "checkpoint")
    except io.ArtifactError as err:
        log.warning("ignoring checkpoint: %s", err)
        return None
    if not isinstance(state, dict) or state.get("version") != VERSION or state.get("fingerprint") != expected:
        log.info("checkpoint %s is from other params or data: starting fresh", path)
        return None
    return state


def restore(state: dict, run: Training) -> tuple[list[dict], float]:
    """Put a loaded checkpoint back into `run` (before any DDP wrapping); returns (history rows, train seconds)."""
    run.raw_model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    if run.scheduler is not None:
        run.scheduler.load_state_dict(state["scheduler"])
    run.scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["torch_rng"])
    return state["history"], state["train_seconds"]
