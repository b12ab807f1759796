"""Run a stage script in this process, or under torchrun when train.nproc_per_node > 1.

    python stages/launch.py stages/train_onecycle.py [args...]

One process per GPU on this machine; for several machines call torchrun yourself (README).
The stage ends with the process that started it (dvc): see onecycle.cli.die_with_parent. The request
survives the exec into torchrun, whose workers torchrun ends when it gets the signal.
"""

from __future__ import annotations

import os

PARENT = os.getppid()  # first, before the imports: the parent may end while they run

import argparse  # noqa: E402
import runpy  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from onecycle.cli import die_with_parent  # noqa: E402
from onecycle.params import ParamsError, load_params  # noqa: E402


def main() -> None:
    die_with_parent(PARENT)
    if len(sys.argv) < 2:
        sys.exit("usage: python stages/launch.py STAGE_SCRIPT [args...]")
    script, rest = sys.argv[1], sys.argv[2:]
    finder = argparse.ArgumentParser(add_help=False)
    finder.add_argument("--params", type=Path, default=Path("params.yaml"))
    params_path = finder.parse_known_args(rest)[0].params
    try:
        nproc = load_params(params_path).train.nproc_per_node
    except ParamsError:
        nproc = 1  # the stage itself reports the error (and removes its outputs, which this cannot know)
    if nproc > 1 and "WORLD_SIZE" not in os.environ:
        # torch.distributed.run is torchrun, from this interpreter's own torch (not whatever is on PATH)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", script]
        os.execv(sys.executable, [*cmd, *rest])
    sys.argv = [script, *rest]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
