"""The pipeline as `dvc.yaml` declares it: each stage's command, inputs and outputs, read from there.

`dvc.yaml` is the one place a stage's paths are written: its `cmd` passes every path to the stage
script (as DVC's example project does), and the scripts have no default paths of their own.
Whatever runs a stage outside DVC (the tests, the benchmark, `benchmarks/gpu.sh`) takes the
command from here, moving the outputs under a folder of its choice and pointing the inputs where
it wants, so no path is repeated by hand.

    python -m onecycle.pipeline STAGE --params P --out-dir D [--input data/prepared=/elsewhere] ...

runs one stage that way (its outputs keep their relative paths under D).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

PROJECT = Path(__file__).resolve().parents[1]  # the checkout holding dvc.yaml and stages/


@dataclass(frozen=True)
class Stage:
    """One stage of dvc.yaml: its command split into words, its deps and its outputs (relative paths)."""

    name: str
    cmd: list[str]
    deps: list[str]
    outs: list[str]  # outs, metrics and plots, in dvc.yaml's order


def stage(name: str, project: Path = PROJECT) -> Stage:
    """The stage `name` of `project`/dvc.yaml. KeyError naming the stages when there is no such stage."""
    stages = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]
    if name not in stages:
        raise KeyError(f"no stage {name!r} in {project / 'dvc.yaml'}: the stages are {', '.join(stages)}")
    spec = stages[name]
    outs = [_path(entry) for key in ("outs", "metrics", "plots") for entry in spec.get(key, [])]
    return Stage(name, shlex.split(spec["cmd"]), [_path(d) for d in spec.get("deps", [])], outs)


def _path(entry: str | dict) -> str:
    """An entry of deps/outs: a path, or a one-key mapping {path: {cache: false, ...}}."""
    return entry if isinstance(entry, str) else next(iter(entry))


def command(
    name: str,
    params: Path,
    out_dir: Path,
    inputs: Mapping[str, Path] | None = None,
    project: Path = PROJECT,
) -> list[str]:
    """The stage's command from dvc.yaml, runnable from any directory, writing under `out_dir`.

    The word `python` becomes this interpreter and scripts become absolute; `--params` is added.
    The value of every other `--flag` is a path: a dep is taken from `inputs` (keyed by its path in
    dvc.yaml) or else from `project`; anything else the stage writes (its outputs, the checkpoint)
    goes to `out_dir`/<its path in dvc.yaml>.
    """
    spec, inputs = stage(name, project), dict(inputs or {})
    argv: list[str] = []
    words = iter(spec.cmd)
    for word in words:
        if word == "python":
            argv.append(sys.executable)
        elif word.startswith("--"):
            value = next(words)
            if value in spec.deps:
                where = Path(inputs.pop(value, project / value))
            else:
                where = out_dir / value
            argv += [word, str(where)]
        elif (project / word).is_file():
            argv.append(str(project / word))
        else:
            argv.append(word)
    if inputs:
        raise KeyError(f"stage {name} reads no {', '.join(inputs)} (its deps: {', '.join(spec.deps)})")
    return argv + ["--params", str(params)]


def outputs(name: str, out_dir: Path, project: Path = PROJECT) -> dict[str, Path]:
    """Where `command(name, ..., out_dir)` writes each output, keyed by its path in dvc.yaml."""
    return {out: out_dir / out for out in stage(name, project).outs}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stage")
    p.add_argument("--params", type=Path, required=True)
    p.add_argument("--out-dir", type=Path, required=True)
    p.add_argument("--input", action="append", default=[], metavar="DEP=PATH",
                   help="read the dep DEP (its path in dvc.yaml) from PATH instead")
    args = p.parse_args()
    inputs = dict(item.split("=", 1) for item in args.input)
    argv = command(args.stage, args.params, args.out_dir, {k: Path(v) for k, v in inputs.items()})
    os.execv(argv[0], argv)


if __name__ == "__main__":
    main()
