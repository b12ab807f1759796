"""The LR range test (Smith, "Cyclical Learning Rates", 2017): the sweep, its stops, and the rules that pick max_lr.

The sweep and the pick are separate, as in fastai. `run_sweep` raises the LR batch by batch
through a callback that trains one batch, records each raw loss, and stops when the loss blows up.
The rules read the RAW per-batch losses of any recorded curve (ours, or two columns a user has)
and smooth them themselves, without lag, so a pick does not depend on how the sweep was sampled.

Units and conventions shared by everything here:

- The LR axis: log10(LR) for exponential sweeps, where widths are in DECADES; LR itself for linear
  sweeps, where a width of w decades means the same fraction of the swept range as w decades is
  of an exponential sweep between the same two LRs (`axis_width`).
- The smoother (`smooth`) is a centred moving average over `smooth_decades` (params.yaml) of the
  axis, applied after the sweep. Centred, so it has no lag: a feature at LR x stays at x whatever
  the number of batches per decade. At the ends the window shrinks symmetrically (the first and
  last points are their raw loss): it never reaches past an end, so neither end is pulled towards
  the middle. Rules look for minima and slopes only among the "full" points, whose whole window
  lies inside the curve; a turn upward is looked for among all points after the minimum, since
  the last points of a stopped sweep are where the loss blew up.
- The sweep's stops read a trailing moving average over the same width (`_TrailingMean`): it
  lags by half a window, so when it fires, the centred curve already shows the turn in what was
  recorded. Every threshold is a loss ratio; every width is in decades.
- The starting loss is the mean raw loss of the first window (the untrained network's level).
- A pick is always one of the swept LRs: `minimum` divides by 10 and then snaps to the nearest
  swept LR (never below the first). A rule that cannot read the curve (no turn, too few points)
  falls back to `minimum`'s pick, warns (LrSuggestionWarning) and says why in its `Suggestion`.
- A curve whose smoothed loss never falls LEARNED_DROP below its starting loss raises NoDescent
  (a user error): no rule can read it, and the fix is a lower start_lr.

    python -m onecycle.lr_range suggest curve.csv [--smooth-decades 0.3] [--diverge-threshold 5]

prints every rule's pick, and why, for a recorded curve (our plots/lr_losses.csv, or any CSV
whose first two numeric columns, or columns named lr and loss, are LR and raw loss).
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import warnings
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from onecycle.errors import UserError
from onecycle.params import METHODS, STEP_MODES, LrRangeParams

# Stop reasons recorded in SweepResult.stop_reason.
COMPLETED = "completed"
DIVERGED = "diverged"
LOST = "back above its starting loss"
NON_FINITE = "non-finite loss"

# A sweep has learned once its smoothed loss falls this far (relative) below its starting loss.
# On CIFAR-10 the fall is ~40% (2.9 -> 1.6-1.9); the batch-to-batch noise of the smoothed curve is
# a few percent, so 10% is learning, not noise. Below it the curve is refused (NoDescent), and
# `stop_above_start` only applies past it ("everything learned is lost" needs something learned).
LEARNED_DROP = 0.10

# Fewer full points than this and no rule reads a shape: each falls back (a handful of averages
# of a few batches cannot show a valley, a slope or a turn).
MIN_POINTS = 5

# `spike`: the turn upward is where the smoothed loss first rises above (1 + SPIKE_RISE) x its
# minimum. 0.25 because (a) it is far above the noise of the smoothed plateau (~1-3% of the loss),
# (b) on the reference's curve (minimum ~1.6, "above 2 near 0.03") +25% is where it starts to
# climb, and (c) it is far below the blow-up (`edge`).
SPIKE_RISE = 0.25

# The bottom of the curve: the points around the lowest smoothed loss that lie within this fraction
# of the curve's fall (starting loss - lowest) above the lowest. A real curve's bottom is flat and
# ragged (1.6-1.7 over half a decade on CIFAR-10), so its lowest point moves with the noise by a few
# tenths of a decade; the edges of the bottom, where the curve is falling or rising, do not.
BOTTOM_FRACTION = 0.25

# `steepest`: the fraction of the curve's fall (starting loss - lowest) at which its descent is read.
# A real descent is an S in log LR (a logistic: 2.9 -> 1.6 on CIFAR-10), steepest at its middle.
# The literal steepest gradient of a noisy curve wanders along the flat top of the slope: on the
# reference-like test curve its picks at 50 and 391 batches were up to 7x apart; the point where
# half of the fall is done moved by less than 1.3x.
STEEP_FALL = 0.5

# `valley`: how far along the longest valley the pick lies (0 = its top, 1 = its bottom).
# fastai describes its pick as "roughly 2/3 through the longest valley".
VALLEY_FRACTION = 2 / 3

# An LR sequence counts as exponential (linear) when the spread of its log (plain) steps is
# below this fraction of their mean: used to read a user's curve on the axis it was swept on.
UNIFORM_STEP_TOLERANCE = 0.05


class LrSuggestionWarning(UserWarning):
    """A suggestion rule could not read the curve and returned the documented fallback."""


class NoDescent(UserError):
    """The loss never fell below its starting level: no rule can read the curve."""


# ----------------------------------------------------------------------------- the axis


def lr_sequence(start_lr: float, end_lr: float, num_iter: int, mode: str) -> np.ndarray:
    """The LR of every batch of the sweep, first batch at `start_lr`, last at `end_lr`.

    exp:    lr_i = start_lr * (end_lr / start_lr) ** (i / (num_iter - 1))   (constant ratio)
    linear: lr_i = start_lr + (end_lr - start_lr) * i / (num_iter - 1)      (constant step)
    for i = 0 .. num_iter - 1. The endpoints are exact. ValueError for a bad mode or range.
    """
    if mode not in STEP_MODES:
        raise ValueError(f"step mode must be one of {', '.join(STEP_MODES)}, got {mode!r}")
    if num_iter < 2:
        raise ValueError(f"num_iter must be at least 2, got {num_iter}")
    if not 0 < start_lr < end_lr:
        raise ValueError(f"need 0 < start_lr < end_lr, got start_lr={start_lr}, end_lr={end_lr}")
    t = np.arange(num_iter, dtype=np.float64) / (num_iter - 1)
    if mode == "exp":
        lrs = start_lr * (end_lr / start_lr) ** t
    else:
        lrs = start_lr + (end_lr - start_lr) * t
    lrs[0], lrs[-1] = start_lr, end_lr  # no rounding at the ends
    return lrs


def axis(lrs: np.ndarray, mode: str) -> np.ndarray:
    """Position of each LR on the sweep's axis: log10(lr) for exp sweeps, lr for linear ones."""
    return np.log10(lrs) if mode == "exp" else np.asarray(lrs, dtype=np.float64)


def axis_width(decades: float, mode: str, start_lr: float, end_lr: float) -> float:
    """A width of `decades` in axis units: itself for exp sweeps; for linear sweeps the same
    fraction of (end_lr - start_lr) as `decades` is of log10(end_lr / start_lr)."""
    if mode == "exp":
        return decades
    return decades * (end_lr - start_lr) / math.log10(end_lr / start_lr)


def infer_mode(lrs: Sequence[float]) -> str:
    """'exp' when the LRs step by a constant ratio, 'linear' when by a constant difference, else
    'exp' (a log axis is how LR curves are read)."""
    x = np.asarray(lrs, dtype=np.float64)
    if len(x) < 3:
        return "exp"
    for mode, steps in (("exp", np.diff(np.log10(x))), ("linear", np.diff(x))):
        if steps.mean() > 0 and steps.std() <= UNIFORM_STEP_TOLERANCE * steps.mean():
            return mode
    return "exp"


def smooth(t: np.ndarray, losses: np.ndarray, width: float, statistic: str = "mean") -> np.ndarray:
    """Centred moving mean (or median) of `losses` over `width` of the axis `t` (increasing), no lag.

    Point i summarises every point within half a width of t[i] on both sides, the half-width
    shrunk to the distance to the nearer end, so the window stays centred: the first and last
    points are their own raw loss. The mean averages the noise best and is what the rules read;
    `edge` reads the median, because on a monotone stretch the median of a centred window is
    the centre's own value: the blow-up (steep and convex) is not pulled towards lower LRs as a
    mean pulls it. Non-finite losses must be dropped first.
    """
    t = np.asarray(t, dtype=np.float64)
    y = np.asarray(losses, dtype=np.float64)
    half = np.minimum(width / 2, np.minimum(t - t[0], t[-1] - t))
    eps = 1e-12 * max(1.0, float(np.abs(t).max()))  # points exactly half a width away are inside
    lo = np.searchsorted(t, t - half - eps, side="left")
    hi = np.searchsorted(t, t + half + eps, side="right")
    if statistic == "median":
        return np.array([np.median(y[a:b]) for a, b in zip(lo, hi)])
    csum = np.concatenate([[0.0], np.cumsum(y)])
    return (csum[hi] - csum[lo]) / (hi - lo)


class _TrailingMean:
    """Mean of the raw losses over the last `width` of the axis: the sweep's online average."""

    def __init__(self, width: float) -> None:
        self.width = width
        self.points: deque[tuple[float, float]] = deque()
        self.total = 0.0

    def update(self, t: float, loss: float) -> float:
        self.points.append((t, loss))
        self.total += loss
        while self.points[0][0] < t - self.width - 1e-12:
            self.total -= self.points.popleft()[1]
        return self.total / len(self.points)


# ----------------------------------------------------------------------------- the sweep


@dataclass
class SweepResult:
    """One row per batch trained: `lrs[i]` is the LR batch `iterations[i]` was trained WITH.

    losses: the raw loss of each batch (the last one may be NaN or inf: the sweep stops there).
    smoothed: `smooth` of the finite losses, NaN on a non-finite row (for the CSV and the plot).
    stop_reason: COMPLETED (all num_iter batches), DIVERGED (the trailing mean above
    diverge_threshold x its lowest), LOST (with stop_above_start: having learned, the trailing
    mean stayed above the starting loss for a whole window) or NON_FINITE.
    stop_iteration: the iteration of the last row (num_iter - 1 when completed).
    """

    iterations: list[int]
    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    stop_reason: str
    stop_iteration: int

    def columns(self) -> dict[str, list]:
        """The per-batch rows as columns, in CSV order: iteration, lr, loss, smoothed."""
        return {"iteration": self.iterations, "lr": self.lrs, "loss": self.losses, "smoothed": self.smoothed}


def run_sweep(step: Callable[[int, float], float], params: LrRangeParams, progress: bool = True) -> SweepResult:
    """Train batch after batch at rising LRs until num_iter batches, a blow-up or a non-finite loss.

    `step(iteration, lr)` must train exactly one batch at exactly `lr` and return its loss
    (anything `float()` accepts). The caller owns the model, optimizer and data; this sets nothing
    else, and never calls `step` again after a stop. Each row records the LR passed to `step` for
    that batch, as torch-lr-finder >= 0.2.0 records it (the reference's log, from an older
    version, shows each loss against the next batch's LR).
    """
    from tqdm import tqdm  # here, so `python -m onecycle.lr_range suggest` starts fast

    lrs = lr_sequence(params.start_lr, params.end_lr, params.num_iter, params.step_mode)
    t_all = axis(lrs, params.step_mode)
    width = axis_width(params.smooth_decades, params.step_mode, params.start_lr, params.end_lr)
    trailing = _TrailingMean(width)
    rows: dict[str, list] = {"iterations": [], "lrs": [], "losses": []}
    best, start, above_since = math.inf, math.nan, math.nan
    reason = COMPLETED
    with tqdm(total=params.num_iter, desc="lr range test", unit="batch", disable=not progress) as bar:
        for i, (lr, t) in enumerate(zip(lrs.tolist(), t_all.tolist())):
            loss = float(step(i, lr))
            for key, value in zip(rows, (i, lr, loss)):
                rows[key].append(value)
            bar.update(1)
            if not math.isfinite(loss):
                reason = NON_FINITE
                break
            mean = trailing.update(t, loss)
            bar.set_postfix_str(f"lr={lr:.3e} loss={mean:.4f}", refresh=False)
            if t - t_all[0] < width:
                continue  # the first window: the starting loss is still being measured
            start = mean if math.isnan(start) else start
            best = min(best, mean)
            # Cross-entropy is positive; a best <= 0 has no meaningful multiple, so no check there.
            if best > 0 and mean > params.diverge_threshold * best:
                reason = DIVERGED
                break
            # A network with BatchNorm often does not blow up 5x: its loss climbs to a plateau above
            # chance instead (3.3 on CIFAR-10 against ln 10 = 2.3). Back above the start for a whole
            # window (so a ragged curve does not stop on one bump), nothing is left to learn.
            learned = best < (1 - LEARNED_DROP) * start
            above_since = (above_since if not math.isnan(above_since) else t) if learned and mean > start else math.nan
            if params.stop_above_start and not math.isnan(above_since) and t - above_since >= width:
                reason = LOST
                break
    smoothed = _smooth_rows(rows["lrs"], rows["losses"], params.step_mode, width)
    return SweepResult(**rows, smoothed=smoothed, stop_reason=reason, stop_iteration=rows["iterations"][-1])


def _smooth_rows(lrs: list[float], losses: list[float], mode: str, width: float) -> list[float]:
    y = np.asarray(losses, dtype=np.float64)
    finite = np.isfinite(y)
    out = np.full(len(y), np.nan)
    if finite.any():
        out[finite] = smooth(axis(np.asarray(lrs)[finite], mode), y[finite], width)
    return out.tolist()


# ----------------------------------------------------------------------------- reading a curve


@dataclass(frozen=True)
class Curve:
    """A recorded curve made ready for the rules: finite points, smoothed on its axis.

    lrs, losses: (n,) float64, the finite points, LRs increasing. smoothed: (n,) `smooth` of them.
    full: (n,) bool, the points whose whole smoothing window lies inside the curve.
    start_loss: mean raw loss of the first window. mode: 'exp' or 'linear'. width: in axis units.
    diverge_threshold: the blow-up ratio `edge` reads (the sweep's own stop).
    """

    lrs: np.ndarray
    losses: np.ndarray
    smoothed: np.ndarray
    full: np.ndarray
    start_loss: float
    mode: str
    width: float
    diverge_threshold: float

    @property
    def i_min(self) -> int:
        """Index of the lowest smoothed loss among the full points (or all, if too few are full)."""
        candidates = np.flatnonzero(self.full) if self.full.sum() >= MIN_POINTS else np.arange(len(self.lrs))
        return int(candidates[np.argmin(self.smoothed[candidates])])

    @property
    def bottom(self) -> tuple[int, int]:
        """First and last index of the bottom: from the first full point whose smoothed loss comes
        within BOTTOM_FRACTION of the curve's fall above the lowest, to the last point before it
        first climbs out of that band after the lowest (a bump inside the bottom does not end it)."""
        i = self.i_min
        near = self.smoothed <= self.smoothed[i] + BOTTOM_FRACTION * (self.start_loss - self.smoothed[i])
        first = int(np.flatnonzero(near[: i + 1] & self.full[: i + 1] | (np.arange(i + 1) == i))[0])
        rise = np.flatnonzero(~near[i + 1 :])
        last = i + int(rise[0]) if len(rise) else len(near) - 1
        return first, last

    def nearest(self, t: float) -> int:
        """Index of the swept LR nearest to axis position t."""
        return int(np.argmin(np.abs(axis(self.lrs, self.mode) - t)))


def read_curve(
    lrs: Sequence[float],
    losses: Sequence[float],
    smooth_decades: float,
    diverge_threshold: float,
    mode: str | None = None,
    span: tuple[float, float] | None = None,
) -> Curve:
    """Drop non-finite points, check the LRs and smooth the raw `losses` without lag.

    mode: the sweep's step mode (None: `infer_mode`). span: the sweep's planned (start_lr,
    end_lr), which sets a linear sweep's window (default: the first and last LR recorded).
    Raises ValueError for fewer than 2 finite points, unequal lengths or LRs that are not
    positive and increasing; NoDescent when the loss never falls LEARNED_DROP below its start.
    """
    x = np.asarray(lrs, dtype=np.float64).ravel()
    y = np.asarray(losses, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"lrs and losses differ in length ({len(x)} and {len(y)})")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) < 2:
        raise ValueError(
            f"need at least 2 points with a finite LR and loss to suggest an LR, got {len(x)}: "
            "the sweep stopped at once (non-finite loss?) or was empty"
        )
    if np.any(x <= 0) or np.any(np.diff(x) <= 0):
        raise ValueError("the LRs must be positive and increasing, as a sweep produces")
    mode = mode or infer_mode(x)
    start_lr, end_lr = span or (float(x[0]), float(x[-1]))
    width = axis_width(smooth_decades, mode, start_lr, end_lr)
    t = axis(x, mode)
    s = smooth(t, y, width)
    full = (t - t[0] >= width / 2 - 1e-12) & (t[-1] - t >= width / 2 - 1e-12)
    start_loss = float(y[t - t[0] <= width + 1e-12].mean())
    curve = Curve(x, y, s, full, start_loss, mode, width, diverge_threshold)
    lowest = float(s[curve.i_min])
    if not lowest < (1 - LEARNED_DROP) * start_loss:
        raise NoDescent(
            f"the loss never fell {LEARNED_DROP:.0%} below its first losses (about {start_loss:.4g} at LR "
            f"{x[0]:.3g}; lowest smoothed {lowest:.4g} at LR {x[curve.i_min]:.3g}): lower "
            f"lr_range_test.start_lr (now {start_lr:g})"
        )
    return curve


# ----------------------------------------------------------------------------- the rules


@dataclass(frozen=True)
class Suggestion:
    """One rule's pick: `lr` (one of the swept LRs) and, when the rule could not read the curve,
    `fallback`: why it returned `minimum`'s pick instead (None when it read the curve)."""

    lr: float
    fallback: str | None = None


def suggest_minimum(c: Curve) -> Suggestion:
    """The LR at the middle of the bottom of the smoothed loss, divided by 10, snapped to the
    nearest swept LR (on the sweep's axis), never below the first.

    Source: fastai's `minimum` (fastai/callback/schedule.py) and its original lr_find advice "the
    minimum divided by 10": at the minimum the LR is already too high to keep the loss falling.
    The minimum is read as the middle (on the axis) of the curve's bottom (BOTTOM_FRACTION): the
    lowest point of a flat, ragged bottom moves with the noise. It is every other rule's fallback."""
    first, last = c.bottom
    t = axis(c.lrs, c.mode)
    middle_lr = c.lrs[c.nearest((t[first] + t[last]) / 2)]
    target = axis(np.array([max(middle_lr / 10, c.lrs[0])]), c.mode)[0]
    return Suggestion(float(c.lrs[c.nearest(target)]))


def suggest_steepest(c: Curve) -> Suggestion:
    """The LR where the smoothed loss falls fastest: the middle of its descent, the first full
    point where it has fallen STEEP_FALL (half) of the way from its starting loss to its lowest.

    Source: torch-lr-finder's suggestion (steepest gradient, ends skipped), fastai's `steep` and
    Lightning's `_LRFinder.suggestion`, which take the single steepest gradient. A descent in log
    LR is an S, steepest at its middle; read as the half-way point it does not move with the
    noise or the number of batches (see STEEP_FALL). Fallback when the descent is done before
    the first full point (start_lr too high to see it)."""
    level = c.start_loss - STEEP_FALL * (c.start_loss - c.smoothed[c.i_min])
    below = np.flatnonzero(c.full[: c.i_min + 1] & (c.smoothed[: c.i_min + 1] <= level))
    if len(below) == 0 or below[0] == np.flatnonzero(c.full)[0]:
        return _fallback(c, "steepest", "the loss had fallen half-way before the first full point "
                                        "(its descent is not in the sweep: lower lr_range_test.start_lr)")
    k = int(below[0])
    # between the last point above the level and the first below it, the one nearer the crossing
    return Suggestion(float(c.lrs[k if abs(c.smoothed[k] - level) <= abs(c.smoothed[k - 1] - level) else k - 1]))


def suggest_valley(c: Curve) -> Suggestion:
    """A point VALLEY_FRACTION (2/3) of the way down the longest valley of the smoothed loss.

    Source: fastai's `valley` (fastai/callback/schedule.py): the valley is the longest strictly
    decreasing subsequence of the losses (the O(n^2) dynamic programme); the pick lies 2/3 of the
    way from its top (where learning starts) to its bottom (where the LR stops helping). Here the
    subsequence is taken over the smoothed curve read every half smoothing width along the axis
    (a fixed number of points per decade, so the valley does not depend on the number of batches),
    it ends at most at the curve's bottom (BOTTOM_FRACTION), and 2/3 is measured along the axis.
    fastai's own index arithmetic lands nearer half-way; 2/3 follows its description."""
    t = axis(c.lrs, c.mode)
    full = np.flatnonzero(c.full)
    if len(full) < MIN_POINTS:
        return _fallback(c, "valley", f"only {len(full)} full points (fewer than {MIN_POINTS})")
    grid = np.arange(t[full[0]], t[full[-1]] + 1e-12, c.width / 2)
    if len(grid) < MIN_POINTS:
        return _fallback(c, "valley", f"the curve spans fewer than {MIN_POINTS} half-widths")
    first, last = _longest_valley(np.interp(grid, t, c.smoothed))
    end = min(grid[last], t[c.bottom[0]])
    target = grid[first] + VALLEY_FRACTION * (end - grid[first])
    return Suggestion(float(c.lrs[c.nearest(target)]))


def suggest_spike(c: Curve) -> Suggestion:
    """The last swept LR before the smoothed loss first rises (1 + SPIKE_RISE) x above its minimum.

    Source: the reference's by-eye reading, "where the loss suddenly spikes up", made exact at its
    onset (see SPIKE_RISE for why 0.25). The FIRST crossing after the minimum, so a ragged curve
    that dips back under the bar later does not move the pick past the turn."""
    bar = c.smoothed[c.i_min] * (1 + SPIKE_RISE)
    return _last_before(c, "spike", bar, f"never rises {SPIKE_RISE:.0%} above its minimum after it")


def suggest_edge(c: Curve) -> Suggestion:
    """The largest swept LR before the loss blows up: the last LR before the loss (centred moving
    median) first exceeds diverge_threshold (5) x its lowest smoothed value or, for a curve that
    never does, first climbs back above its starting loss.

    Source: the reference picked ~0.08 where its sweep stopped (SPEC.md: it ended near 0.084),
    and that sweep stopped on torch-lr-finder's blow-up test, the smoothed loss above 5x its best
    (its `diverge_th`, our `diverge_threshold`), read through an exponential average that lags
    by ~50 batches. `edge` reads the same 5x without the lag (the median: see `smooth`). The
    second bar is the sweep's other stop: a network with BatchNorm often climbs to a plateau above
    its starting loss instead of blowing up 5x, and past its start it trains worse than untrained."""
    median = smooth(axis(c.lrs, c.mode), c.losses, c.width, "median")
    lowest = c.smoothed[c.i_min]
    for bar in (c.diverge_threshold * lowest, c.start_loss):
        above = np.flatnonzero(median[c.i_min + 1 :] > bar)
        if lowest > 0 and len(above):
            return Suggestion(float(c.lrs[c.i_min + above[0]]))
    return _fallback(c, "edge", f"the loss never rises {c.diverge_threshold:g}x above its lowest nor back above "
                                "its start: the sweep ended before the loss blew up (raise lr_range_test.end_lr)")


_RULES: dict[str, Callable[[Curve], Suggestion]] = {
    "edge": suggest_edge,
    "spike": suggest_spike,
    "steepest": suggest_steepest,
    "valley": suggest_valley,
    "minimum": suggest_minimum,
}
assert tuple(_RULES) == METHODS, "the rule table and params.METHODS must list the same methods"


def suggest_all(curve: Curve) -> dict[str, Suggestion]:
    """Every rule's suggestion, keyed by method name in METHODS order. Fallbacks also warn
    (LrSuggestionWarning)."""
    return {method: rule(curve) for method, rule in _RULES.items()}


def suggest(
    lrs: Sequence[float],
    losses: Sequence[float],
    method: str,
    smooth_decades: float | None = None,
    diverge_threshold: float | None = None,
    mode: str | None = None,
) -> float:
    """max_lr by the named rule (one of METHODS) from a sweep's LRs and RAW per-batch losses.

    Defaults for smooth_decades and diverge_threshold are params.yaml's (LrRangeParams); mode is
    inferred from the LR steps when None. Raises ValueError (unknown method, unusable curve) or
    NoDescent; a fallback warns (LrSuggestionWarning)."""
    if method not in _RULES:
        raise ValueError(f"unknown LR suggestion method {method!r}: choose one of {', '.join(METHODS)}")
    defaults = LrRangeParams()
    curve = read_curve(lrs, losses, smooth_decades or defaults.smooth_decades,
                       diverge_threshold or defaults.diverge_threshold, mode)
    return _RULES[method](curve).lr


# ----------------------------------------------------------------------------- helpers


def _last_before(c: Curve, rule: str, bar: float, why_not: str) -> Suggestion:
    """The LR just before the first point after the minimum whose smoothed loss exceeds `bar`."""
    above = np.flatnonzero(c.smoothed[c.i_min + 1 :] > bar)
    if len(above) == 0:
        return _fallback(c, rule, f"the smoothed loss {why_not}")
    return Suggestion(float(c.lrs[c.i_min + above[0]]))


def _fallback(c: Curve, rule: str, why: str) -> Suggestion:
    lr = suggest_minimum(c).lr
    message = f"LR suggestion {rule!r}: {why}; falling back to the minimum rule's {lr:.3g}"
    warnings.warn(message, LrSuggestionWarning, stacklevel=3)
    return Suggestion(lr, message)


def _longest_valley(y: np.ndarray) -> tuple[int, int]:
    """First and last index of the longest strictly decreasing subsequence of y (O(n^2) DP): of
    the longest, the one ending earliest, and of those the one starting earliest."""
    n = len(y)
    length = np.ones(n, dtype=np.int64)  # length[i]: longest decreasing subsequence ending at i
    start = np.arange(n)  # start[i]: earliest first index among those longest subsequences
    for i in range(1, n):
        higher = y[:i] > y[i]
        if not higher.any():
            continue
        best = int(length[:i][higher].max())
        length[i] = best + 1
        start[i] = int(start[:i][higher & (length[:i] == best)].min())
    last = int(np.argmax(length))  # the first index reaching the longest length
    return int(start[last]), last


# ----------------------------------------------------------------------------- any recorded curve


def read_curve_csv(path: Path) -> tuple[list[float], list[float]]:
    """(lrs, raw losses) from a CSV: columns named `lr` and `loss` (our plots/lr_losses.csv), or
    else the first two columns that hold numbers. ValueError naming the file when neither is there."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = [row for row in csv.reader(f) if row]
    if not rows:
        raise ValueError(f"{path} is empty: expected columns lr and loss")
    header = [h.strip().lower() for h in rows[0]]
    if "lr" in header and "loss" in header:
        cols, body = (header.index("lr"), header.index("loss")), rows[1:]
    else:
        body = rows[1:] if not _numeric(rows[0][:2]) else rows
        cols = (0, 1)
    try:
        pairs = [(float(r[cols[0]]), float(r[cols[1]])) for r in body]
    except (ValueError, IndexError) as err:
        raise ValueError(f"{path}: expected columns lr and loss (or two numeric columns): {err}") from None
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _numeric(cells: list[str]) -> bool:
    try:
        [float(c) for c in cells]
    except ValueError:
        return False
    return len(cells) == 2


def main(argv: list[str] | None = None) -> int:
    defaults = LrRangeParams()
    p = argparse.ArgumentParser(prog="python -m onecycle.lr_range", description="Every rule's pick on a recorded curve.")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("suggest", help="print every rule's max LR for a CSV of LR and raw loss")
    s.add_argument("csv", type=Path)
    s.add_argument("--smooth-decades", type=float, default=defaults.smooth_decades)
    s.add_argument("--diverge-threshold", type=float, default=defaults.diverge_threshold)
    s.add_argument("--mode", choices=STEP_MODES, default=None, help="the sweep's step mode (default: from the LRs)")
    args = p.parse_args(argv)
    try:
        lrs, losses = read_curve_csv(args.csv)
        curve = read_curve(lrs, losses, args.smooth_decades, args.diverge_threshold, args.mode)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", LrSuggestionWarning)  # said below, per rule
            picks = suggest_all(curve)
    except (OSError, ValueError, UserError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{args.csv}: {len(curve.lrs)} points, LR {curve.lrs[0]:.3g} to {curve.lrs[-1]:.3g} ({curve.mode}); "
          f"starting loss {curve.start_loss:.4g}, lowest smoothed {curve.smoothed[curve.i_min]:.4g} at "
          f"{curve.lrs[curve.i_min]:.3g}; smoothed over {args.smooth_decades:g} decades")
    for method, pick in picks.items():
        print(f"  {method:9s} {pick.lr:.4g}   {pick.fallback or _READS[method]}")
    return 0


_READS = {
    "edge": "the last LR before the loss blows up (diverge_threshold x its minimum, or back above its start)",
    "spike": f"the last LR before the loss rises {SPIKE_RISE:.0%} above its minimum",
    "steepest": "the steepest fall of the smoothed loss before its minimum",
    "valley": f"{VALLEY_FRACTION:.0%} of the way down the longest valley",
    "minimum": "the LR of the lowest smoothed loss / 10, snapped to a swept LR",
}

if __name__ == "__main__":
    sys.exit(main())
