"""What every stage script shares: arguments, logging, and turning bad input or SIGTERM into a clear exit.

A stage's `main()` runs its work inside `run_stage`, which prints `error: <message>` and exits 2
for every error that is the user's to fix (params, data, artifacts, devices, a diverged run, a
full disk), removing the stage's outputs first so DVC never sees a half-finished stage. SIGTERM
ends the work the same way (`raise_on_sigterm`), with exit 143; `die_with_parent` makes the kernel
send that SIGTERM when the process that started the stage (dvc) ends, so no stage outlives it.
Warnings are logged as `warning: <message>`.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import signal
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import FrameType

from onecycle.errors import UserError

EXIT_BAD_INPUT = 2
EXIT_TERMINATED = 128 + signal.SIGTERM  # 143: how a shell reports a process ended by SIGTERM


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default: params.yaml)")
    return p


class _Formatter(logging.Formatter):
    """The message alone; `warning: ` before warnings (and `error: ` before errors) so they stand out."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return f"{record.levelname.lower()}: {text}" if record.levelno >= logging.WARNING else text


def setup_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter("%(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>: the signal a process receives when its parent ends


def die_with_parent(parent: int) -> bool:
    """Ask Linux to send this process SIGTERM when its parent ends; `parent` is os.getppid() read as early
    as the process could (its first lines). Returns whether the request is in place (False off Linux).

    Without it, SIGTERM to `dvc` alone left the training running with parent 1, and the next `dvc repro`
    trained beside it. If the parent already ended before the request took effect (this process was
    reparented in between), the SIGTERM it missed is sent now. The signal ends a stage like any SIGTERM:
    inside `run_stage`, cleanup and exit 143. Linux sends it when the parent *thread* that started this
    process ends; dvc starts stages from its main thread, which waits for them. Off Linux nothing is
    done here: the checkpoint lock (onecycle.checkpoint.lock) still keeps two trainings apart.
    """
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
        logging.getLogger(__name__).warning(
            "cannot ask to end with the parent process (prctl: %s)", os.strerror(ctypes.get_errno())
        )
        return False
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGTERM)
    return True


def remove_outputs(paths: Iterable[Path]) -> None:
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists():
            path.unlink()


class Terminated(BaseException):
    """SIGTERM arrived inside `raise_on_sigterm`. A BaseException, like KeyboardInterrupt, so that no
    `except Exception` on the way out swallows it."""


@contextlib.contextmanager
def raise_on_sigterm() -> Iterator[None]:
    """Within the block, SIGTERM raises `Terminated` in the main thread instead of ending the process
    at once, so every `finally`, context manager and cleanup on the way out runs (temp files and
    partial outputs are removed). A second SIGTERM, during that cleanup, ends the process at once.

    Install it from the main thread (Python runs signal handlers there). `run_stage` uses it and
    maps `Terminated` to exit 143.
    """

    def handler(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise Terminated("terminated by SIGTERM")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _is_main_process() -> bool:
    """Rank 0 of a torchrun job, or alone. A stage that never imported onecycle.distributed (download)
    is never one rank of several, and need not import torch (4 s, 600 MB) to learn it."""
    distributed = sys.modules.get("onecycle.distributed")
    return distributed is None or distributed.is_main_process()


def run_stage(work: Callable[[], None], outputs: Iterable[Path]) -> None:
    """Run `work`; on a user error remove `outputs`, print the message and exit 2; on SIGTERM the same, exit 143."""
    setup_logging()
    outputs = list(outputs)
    try:
        with raise_on_sigterm():
            work()
    except UserError as err:
        if _is_main_process():
            remove_outputs(outputs)
        print(f"error: {err}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    except Terminated:
        if _is_main_process():
            remove_outputs(outputs)
        print("error: terminated by SIGTERM: this stage's partial outputs and temp files were removed", file=sys.stderr)
        sys.exit(EXIT_TERMINATED)
    except BaseException:
        if _is_main_process():
            remove_outputs(outputs)
        raise
