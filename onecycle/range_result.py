"""The range test's files: metrics/max_lr.json (read by train_onecycle) and the curve plots/lr_losses.csv.

Its own small module (not onecycle.lr_range) so that train_onecycle depends on the files' format
alone: a change to the sweep or the rules reruns the range test, and training reruns only if the
result it writes changes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from typing import TYPE_CHECKING

from onecycle import io

if TYPE_CHECKING:  # only the type: training must not depend on the sweep's code (see above)
    from onecycle.lr_range import SweepResult


@dataclass(frozen=True)
class RangeTestResult:
    """metrics/max_lr.json: the chosen max LR, every rule's suggestion and how the sweep ended.

    Written by the lr_range_test stage; train_onecycle reads only `max_lr` (read_max_lr)."""

    max_lr: float  # the chosen rule's suggestion, in LR units: always one of the swept LRs
    method: str  # the rule that chose it (one of params.METHODS)
    suggestions: dict[str, float]  # every rule's pick, keyed by params.METHODS
    fallbacks: dict[str, str]  # rule -> why it could not read the curve and fell back (empty: all read it)
    stop_reason: str  # lr_range's COMPLETED, DIVERGED, LOST or NON_FINITE
    stop_iteration: int  # the last iteration run, from 0
    start_loss: float  # mean raw loss over the first smoothing window (the untrained network's)
    lowest_loss: float  # the lowest smoothed loss among the full points
    sweep: dict  # the sweep's settings and the training params it shares

    def write(self, path: Path) -> None:
        io.write_json(path, asdict(self))


def read_max_lr(path: Path) -> float:
    """The max LR from `RangeTestResult.write`'s file, checked to be a positive finite number.

    Raises io.ArtifactError (exit 2) naming the file when it is missing, damaged or has no valid max_lr."""
    data = io.read_json(path, "LR range test result")
    if not isinstance(data, dict) or "max_lr" not in data:
        raise io.ArtifactError(f"{path} has no max_lr: rerun `dvc repro lr_range_test`")
    return io.finite_float(data["max_lr"], "max_lr", path)


CURVE_COLUMNS = ["iteration", "lr", "loss", "smoothed_loss"]  # plots/lr_losses.csv, one row per batch


def write_curve(path: Path, sweep: SweepResult) -> None:
    """The sweep's per-batch rows as CSV (CURVE_COLUMNS): what `dvc plots` draws."""
    io.write_csv(path, CURVE_COLUMNS, list(zip(sweep.iterations, sweep.lrs, sweep.losses, sweep.smoothed)))
