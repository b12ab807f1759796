"""The range test's files: metrics/max_lr.json (read by train_onecycle), the curve plots/lr_losses.csv and
every rule's pick beside it, plots/lr_picks.csv (what the DVC chart marks).

Its own small module (not onecycle.lr_range) so that train_onecycle depends on the files' format
alone: a change to the sweep or the rules reruns the range test, and training reruns only if the
result it writes changes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from typing import TYPE_CHECKING

from onecycle import io

if TYPE_CHECKING:  # only the type: training must not depend on the sweep's code (see above)
    from onecycle.lr_range import SweepResult


@dataclass(frozen=True)
class RangeTestResult:
    """The range test's result: the chosen max LR, every rule's suggestion and how the sweep ended.

    Written by the lr_range_test stage as metrics/max_lr.json and metrics/details/max_lr.json
    (`write`); train_onecycle reads only `max_lr` (read_max_lr)."""

    max_lr: float  # the chosen rule's suggestion, in LR units: always one of the swept LRs
    method: str  # the rule that chose it (one of params.METHODS)
    suggestions: dict[str, float]  # every rule's pick, keyed by params.METHODS
    fallbacks: dict[str, str]  # rule -> why it could not read the curve and fell back (empty: all read it)
    stop_reason: str  # lr_range's COMPLETED, DIVERGED, LOST or NON_FINITE
    stop_iteration: int  # the last iteration run, from 0
    start_loss: float  # mean raw loss over the first smoothing window (the untrained network's)
    lowest_loss: float  # the lowest smoothed loss among the full points
    sweep: dict  # the sweep's settings and the training params it shares

    def write(self, path: Path, details: Path) -> None:
        """The numbers that compare across experiments to `path` (metrics/max_lr.json: max_lr, every
        rule's pick, the starting and lowest loss, where the sweep stopped; losses to 4 decimals, LRs
        exact since training uses them), the words and settings to `details` (not a DVC metric:
        method, stop reason, fallbacks, the sweep's settings)."""
        io.write_json(path, {
            "max_lr": self.max_lr,
            "suggestions": self.suggestions,
            "start_loss": round(self.start_loss, 4),
            "lowest_loss": round(self.lowest_loss, 4),
            "stop_iteration": self.stop_iteration,
        })
        io.write_json(details, {"method": self.method, "stop_reason": self.stop_reason, "fallbacks": self.fallbacks,
                                "sweep": self.sweep})


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


PICKS_COLUMNS = ["rule", "lr", "smoothed_loss", "chosen", "fallback"]  # plots/lr_picks.csv, one row per rule


def write_picks(path: Path, sweep: SweepResult, suggestions: Mapping[str, float], chosen: str,
                fallbacks: Mapping[str, str]) -> None:
    """Every rule's pick as CSV (PICKS_COLUMNS), so `dvc plots` can mark them on the curve.

    `suggestions`, `chosen` and `fallbacks` as in RangeTestResult (its suggestions, method and fallbacks).
    Columns: rule; lr, its suggestion (LR units); smoothed_loss, the smoothed curve at that LR, where
    the chart puts the pick's dot (empty when the LR lies outside the finite curve); chosen, 1 for the
    rule that set max_lr, else 0; fallback, why the rule could not read the curve and fell back (empty:
    it read it).
    """
    rows = [[rule, lr, _smoothed_at(lr, sweep.lrs, sweep.smoothed), int(rule == chosen), fallbacks.get(rule, "")]
            for rule, lr in suggestions.items()]
    io.write_csv(path, PICKS_COLUMNS, rows)


def _smoothed_at(lr: float, lrs: list[float], smoothed: list[float]) -> float | str:
    """The smoothed loss at `lr`, linear in log(LR) between the finite points around it; "" outside them.

    Every pick is one of the swept LRs, so this is that row's value; interpolating keeps it defined
    for an LR between rows."""
    import numpy as np

    x, y = np.log(np.asarray(lrs, dtype=float)), np.asarray(smoothed, dtype=float)  # the sweep's LRs are > 0
    finite = np.isfinite(x) & np.isfinite(y)
    if not finite.any() or not x[finite][0] <= math.log(lr) <= x[finite][-1]:
        return ""
    return float(np.interp(math.log(lr), x[finite], y[finite]))
