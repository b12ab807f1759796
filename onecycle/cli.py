"""What every stage script shares: arguments, logging, and turning bad input into a clear exit.

A stage's `main()` runs its work inside `run_stage`, which prints `error: <message>` and exits 2
for every error that is the user's to fix (params, data, artifacts, devices, a diverged run),
removing the stage's outputs first so DVC never sees a half-finished stage.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from onecycle.errors import UserError

EXIT_BAD_INPUT = 2


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default: params.yaml)")
    return p


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)


def remove_outputs(paths: Iterable[Path]) -> None:
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists():
            path.unlink()


def run_stage(work: Callable[[], None], outputs: Iterable[Path]) -> None:
    """Run `work`; on a user error remove `outputs`, print the message and exit 2."""
    from onecycle.distributed import is_main_process  # torch: imported once the stage runs anyway

    setup_logging()
    outputs = list(outputs)
    try:
        work()
    except UserError as err:
        if is_main_process():
            remove_outputs(outputs)
        print(f"error: {err}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    except BaseException:
        if is_main_process():
            remove_outputs(outputs)
        raise
