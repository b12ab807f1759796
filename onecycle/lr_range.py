"""The LR range test (Smith, "Cyclical Learning Rates", 2017): the sweep, and the rules that pick max_lr.

The sweep and the pick are separate, as in fastai. `run_sweep` raises the LR batch by batch
through a callback that trains one batch, records each loss and its bias-corrected moving
average, and stops when the loss explodes. The suggestion rules are small pure functions of
`(lrs, losses)` and know nothing of the model, files or plots.

Conventions shared by every rule:

- `losses` is the SMOOTHED curve, exactly as the sweep stores it (`SweepResult.smoothed`, the
  `smoothed` column of the CSV). Rules never smooth again, so a rule re-run on the CSV gives the
  same LR the stage chose.
- Points whose LR or loss is NaN or infinite are dropped first (the row of a non-finite loss).
- `lrs` must be positive and non-decreasing, as a sweep produces.
- Fewer than 2 finite points: `ValueError` (a sweep that short says nothing at all).
- A curve a rule cannot read (shorter than `MIN_POINTS`, no descent, no turn upward) gives an
  `LrSuggestionWarning` and the FALLBACK: the LR of the lowest smoothed loss divided by 10 (the
  `minimum` rule). It is the most conservative rule; an LR too low trains slowly, one too high
  diverges.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from onecycle.params import METHODS, STEP_MODES, LrRangeParams

__all__ = [
    "METHODS",
    "LrSuggestionWarning",
    "SweepResult",
    "lr_sequence",
    "run_sweep",
    "smooth",
    "suggest",
    "suggest_all",
    "suggest_minimum",
    "suggest_spike",
    "suggest_steepest",
    "suggest_valley",
]

# Stop reasons recorded in SweepResult.stop_reason.
COMPLETED = "completed"
DIVERGED = "diverged"
LOST = "back above its starting loss"

# `stop_above_start` applies only once the smoothed loss has fallen this far (relative) below its
# first value: a sweep must have learned something before "everything learned is lost" means
# anything. On CIFAR-10 the fall is ~40% (2.9 -> 1.6-1.9).
LEARNED_DROP = 0.1
NON_FINITE = "non-finite loss"

# Fewer finite points than this and no rule but `minimum` is attempted: with beta 0.98 the first
# handful of smoothed points are averages of a few batches, too few to show a shape.
MIN_POINTS = 5

# A curve whose smoothed loss never falls this far (relative) below its highest value before its
# minimum has not learned: every rule would read noise. A real sweep on CIFAR-10 falls ~40%
# (2.9 -> 1.6 in the reference), a constant curve 0%.
FLAT_DROP = 0.01

# `spike`: the turn upward is where the smoothed loss first rises above (1 + SPIKE_RISE) x its
# minimum. 0.25 because: (a) it is far above the noise of the smoothed plateau (beta 0.98 shrinks
# the batch-to-batch noise ~10x, to ~1% of the loss), so ragged batches do not trigger it;
# (b) it is the reference's own reading: minimum ~1.6, "rising above 2 near 0.03" is +25%;
# (c) it is far below diverge_threshold (5x), so the pick lies well before the sweep stops.
# On a curve like the reference's (smoothed, beta 0.98) it lands at ~0.04-0.07, next to the
# 0.08 the reference picked by eye (tests/test_lr_range.py::test_spike_on_reference_like_curve).
SPIKE_RISE = 0.25

# `steepest`: points trimmed before looking for the steepest slope. The start: a tenth of the
# points, as fastai's lr_find (`[num_it//10:-5]`): the first smoothed points average only a few
# batches, so their slope is mostly noise (torch-lr-finder's fixed skip_start=10 is too few at
# beta 0.98, where the average needs ~50 batches to settle). The end: 5 points, as both fastai and
# torch-lr-finder (skip_end=5): they sit in the explosion and their slope is one-sided.
STEEPEST_SKIP_START_FRACTION = 0.1
STEEPEST_SKIP_END = 5

# `valley`: how far along the longest valley the pick lies (0 = its top, 1 = its bottom).
# fastai describes its pick as "roughly 2/3 through the longest valley".
VALLEY_FRACTION = 2 / 3


class LrSuggestionWarning(UserWarning):
    """A suggestion rule could not read the curve and returned the documented fallback."""


# ----------------------------------------------------------------------------- the sweep


def lr_sequence(start_lr: float, end_lr: float, num_iter: int, mode: str) -> np.ndarray:
    """The LR of every batch of the sweep, first batch at `start_lr`, last at `end_lr`.

    exp:    lr_i = start_lr * (end_lr / start_lr) ** (i / (num_iter - 1))   (constant ratio)
    linear: lr_i = start_lr + (end_lr - start_lr) * i / (num_iter - 1)      (constant step)
    for i = 0 .. num_iter - 1. The endpoints are exact.
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


def smooth(losses: Sequence[float], beta: float) -> np.ndarray:
    """Bias-corrected exponential moving average, as Adam corrects its moments.

    avg_i = beta * avg_{i-1} + (1 - beta) * loss_i, avg_{-1} = 0; smoothed_i = avg_i / (1 - beta**(i+1)).
    The correction undoes the pull towards the zero start, so smoothed_0 = loss_0. A NaN or
    infinite loss poisons every value after it (`run_sweep` stops at the first one).
    """
    if not 0 <= beta < 1:
        raise ValueError(f"beta must be in [0, 1), got {beta}")
    ema = _Ema(beta)
    return np.array([ema.update(float(x)) for x in losses], dtype=np.float64)


class _Ema:
    """The running form of `smooth`, one loss at a time (the sweep needs it before the next batch)."""

    def __init__(self, beta: float) -> None:
        self.beta = beta
        self.avg = 0.0
        self.count = 0

    def update(self, loss: float) -> float:
        self.avg = self.beta * self.avg + (1 - self.beta) * loss
        self.count += 1
        return self.avg / (1 - self.beta**self.count)


@dataclass
class SweepResult:
    """One row per batch trained: `lrs[i]` is the LR batch `iterations[i]` was trained WITH.

    stop_reason: 'completed' (all num_iter batches), 'diverged' (smoothed loss above
    diverge_threshold x best_smoothed), 'back above its starting loss' (with stop_above_start: the
    smoothed loss fell at least LEARNED_DROP below its first value, then climbed back above it) or
    'non-finite loss' (NaN or inf; that last row keeps its
    raw loss and has a NaN smoothed loss, so the rules drop it).
    stop_iteration: the iteration of the last row (num_iter - 1 when completed).
    best_smoothed: the lowest smoothed loss of the sweep (inf if the very first loss was non-finite).
    """

    iterations: list[int]
    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    stop_reason: str
    stop_iteration: int
    best_smoothed: float

    def columns(self) -> dict[str, list]:
        """The per-batch rows as columns, in CSV order: iteration, lr, loss, smoothed."""
        return {"iteration": self.iterations, "lr": self.lrs, "loss": self.losses, "smoothed": self.smoothed}


def run_sweep(step: Callable[[int, float], float], params: LrRangeParams, progress: bool = True) -> SweepResult:
    """Train batch after batch at rising LRs until num_iter batches, divergence or a non-finite loss.

    `step(iteration, lr)` must train exactly one batch at exactly `lr` and return its loss
    (anything `float()` accepts). The caller owns the model, optimizer and data; this sets nothing
    else, and never calls `step` again after a stop. Each row records the LR passed to `step` for
    that batch (torch-lr-finder records the next batch's LR against this batch's loss; not here).
    """
    lrs = lr_sequence(params.start_lr, params.end_lr, params.num_iter, params.step_mode)
    ema = _Ema(params.smooth_beta)
    rows: dict[str, list] = {"iterations": [], "lrs": [], "losses": [], "smoothed": []}
    best = math.inf
    start = math.nan  # the first smoothed loss: the untrained network's
    reason = COMPLETED
    with tqdm(total=params.num_iter, desc="lr range test", unit="batch", disable=not progress) as bar:
        for i, lr in enumerate(lrs.tolist()):
            loss = float(step(i, lr))
            finite = math.isfinite(loss)
            smoothed = ema.update(loss) if finite else math.nan
            for key, value in zip(rows, (i, lr, loss, smoothed)):
                rows[key].append(value)
            bar.update(1)
            if not finite:
                reason = NON_FINITE
                break
            best = min(best, smoothed)
            start = smoothed if i == 0 else start
            bar.set_postfix_str(f"lr={lr:.3e} loss={smoothed:.4f}", refresh=False)
            # Cross-entropy is positive; a best <= 0 has no meaningful multiple, so no check there.
            if best > 0 and smoothed > params.diverge_threshold * best:
                reason = DIVERGED
                break
            # A network with BatchNorm often does not explode 5x: its loss climbs to a plateau above
            # chance instead (3.3 on CIFAR-10 against ln 10 = 2.3). Past the start, nothing is left to learn.
            if params.stop_above_start and best < (1 - LEARNED_DROP) * start and smoothed > start:
                reason = LOST
                break
    return SweepResult(**rows, stop_reason=reason, stop_iteration=rows["iterations"][-1], best_smoothed=best)


# ----------------------------------------------------------------------------- the pick


def suggest(lrs: Sequence[float], losses: Sequence[float], method: str) -> float:
    """max_lr by the named rule (one of METHODS) from the sweep's LRs and SMOOTHED losses."""
    if method not in _RULES:
        raise ValueError(f"unknown LR suggestion method {method!r}: choose one of {', '.join(METHODS)}")
    return _RULES[method](lrs, losses)


def suggest_all(lrs: Sequence[float], losses: Sequence[float]) -> dict[str, float]:
    """Every rule's suggestion, keyed by method name in METHODS order."""
    return {method: suggest(lrs, losses, method) for method in METHODS}


def suggest_minimum(lrs: Sequence[float], losses: Sequence[float]) -> float:
    """LR of the lowest smoothed loss, divided by 10.

    Source: fastai's `minimum` (fastai/callback/schedule.py) and its original lr_find advice "the
    minimum divided by 10": at the minimum the LR is already too high to keep the loss falling.
    It is also the fallback of every other rule.
    """
    x, y = _prepare(lrs, losses, "minimum")
    return _minimum_over_10(x, y)


def suggest_steepest(lrs: Sequence[float], losses: Sequence[float]) -> float:
    """LR where the smoothed loss falls fastest against log LR, ends trimmed.

    Source: torch-lr-finder's suggestion (skip_start/skip_end, steepest gradient), fastai's
    `steep` and Lightning's `_LRFinder.suggestion`. Here the slope is d loss / d ln(lr) by
    central differences (`np.gradient` with the log LRs as coordinates, so linear sweeps work
    too), after trimming int(0.1 * n) points at the start and min(5, n // 10) at the end (n: the
    finite points), and only up to the smoothed minimum: past it the loss is exploding, and a
    falling stretch there (the loss settling at a high plateau after the explosion, as on the
    real CIFAR-10 sweep) is no place to train. Fallback when no such slope is negative.
    """
    x, y = _prepare(lrs, losses, "steepest")
    if len(x) < MIN_POINTS or _is_flat(y):
        return _fallback(x, y, "steepest", _why_unreadable(y))
    start = int(STEEPEST_SKIP_START_FRACTION * len(x))
    end = min(len(x) - min(STEEPEST_SKIP_END, len(x) // 10), int(np.argmin(y)) + 1)
    if end - start < 3:
        return _fallback(x, y, "steepest", "fewer than 3 points lie between the trimmed start and the minimum")
    log_x, window = np.log(x[start:end]), y[start:end]
    distinct = np.concatenate([[True], np.diff(log_x) > 0])  # np.gradient needs distinct coordinates
    log_x, window, kept = log_x[distinct], window[distinct], x[start:end][distinct]
    if len(kept) < 3:
        return _fallback(x, y, "steepest", "fewer than 3 distinct LRs left after trimming the ends")
    slope = np.gradient(window, log_x)
    i = int(np.argmin(slope))
    if slope[i] >= 0:
        return _fallback(x, y, "steepest", "the trimmed curve never falls")
    return float(kept[i])


def suggest_valley(lrs: Sequence[float], losses: Sequence[float]) -> float:
    """A point VALLEY_FRACTION (2/3) of the way down the longest valley of the smoothed loss.

    Source: fastai's `valley` (fastai/callback/schedule.py, the "longest valley" rule of its
    forums): the valley is the longest strictly decreasing subsequence of the losses, found by
    the O(n^2) dynamic programme; the pick lies between its top (where learning starts) and its
    bottom (where the LR stops helping). Here the valley's first and last indices are tracked
    exactly (the longest valley ending earliest, and of those the one starting earliest), and the
    pick is the index first + round(2/3 * (last - first)). fastai's own index arithmetic lands
    nearer half-way; 2/3 follows its description and this project's brief.
    """
    x, y = _prepare(lrs, losses, "valley")
    if len(x) < MIN_POINTS or _is_flat(y):
        return _fallback(x, y, "valley", _why_unreadable(y))
    first, last = _longest_valley(y)
    return float(x[first + round(VALLEY_FRACTION * (last - first))])


def suggest_spike(lrs: Sequence[float], losses: Sequence[float]) -> float:
    """The largest LR before the smoothed loss turns sharply upward away from its minimum.

    Source: the reference's by-eye pick, "where the loss suddenly spikes up" (Smith's upper
    bound of the range test), made exact: the last LR before the first point after the minimum
    whose smoothed loss exceeds (1 + SPIKE_RISE) x the minimum (see SPIKE_RISE for why 0.25).
    The FIRST crossing, so a ragged curve that dips back under the bar later does not move the
    pick past the turn. Fallback when the curve never rises that far after its minimum (the
    sweep stopped before the turn, or the loss never turned).
    """
    x, y = _prepare(lrs, losses, "spike")
    if len(x) < MIN_POINTS or _is_flat(y):
        return _fallback(x, y, "spike", _why_unreadable(y))
    i_min = int(np.argmin(y))
    bar = y[i_min] + SPIKE_RISE * abs(y[i_min])
    above = np.flatnonzero(y[i_min:] > bar)
    if len(above) == 0:
        return _fallback(x, y, "spike", f"the smoothed loss never rises {SPIKE_RISE:.0%} above its minimum after it")
    return float(x[i_min + above[0] - 1])


_RULES: dict[str, Callable[[Sequence[float], Sequence[float]], float]] = {
    "spike": suggest_spike,
    "steepest": suggest_steepest,
    "valley": suggest_valley,
    "minimum": suggest_minimum,
}
assert tuple(_RULES) == METHODS, "the rule table and params.METHODS must list the same methods"


# ----------------------------------------------------------------------------- helpers


def _prepare(lrs: Sequence[float], losses: Sequence[float], rule: str) -> tuple[np.ndarray, np.ndarray]:
    """Finite (lr, loss) pairs as float arrays; a clear ValueError when nothing can be suggested."""
    x = np.asarray(lrs, dtype=np.float64).ravel()
    y = np.asarray(losses, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"{rule}: lrs and losses differ in length ({len(x)} and {len(y)})")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) < 2:
        raise ValueError(
            f"{rule}: need at least 2 points with a finite LR and loss to suggest an LR, got {len(x)}: "
            "the sweep stopped at once (non-finite loss?) or was empty"
        )
    if np.any(x <= 0) or np.any(np.diff(x) < 0):
        raise ValueError(f"{rule}: the LRs must be positive and non-decreasing, as a sweep produces")
    return x, y


def _is_flat(y: np.ndarray) -> bool:
    """True when the loss never falls FLAT_DROP below its highest value before its minimum."""
    i_min = int(np.argmin(y))
    top = float(np.max(y[: i_min + 1]))
    return top - y[i_min] <= FLAT_DROP * max(abs(top), 1e-12)


def _why_unreadable(y: np.ndarray) -> str:
    if len(y) < MIN_POINTS:
        return f"only {len(y)} finite points, fewer than {MIN_POINTS}"
    return f"the smoothed loss never falls {FLAT_DROP:.0%} below its earlier values (flat curve)"


def _lowest_over_10(x: np.ndarray, y: np.ndarray) -> float:
    return float(x[int(np.argmin(y))] / 10)


def _minimum_over_10(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < MIN_POINTS or _is_flat(y):
        warnings.warn(
            f"LR suggestion 'minimum': {_why_unreadable(y)}; the LR of the lowest loss / 10 is a guess",
            LrSuggestionWarning,
            stacklevel=3,
        )
    return _lowest_over_10(x, y)


def _fallback(x: np.ndarray, y: np.ndarray, rule: str, why: str) -> float:
    value = _lowest_over_10(x, y)
    warnings.warn(
        f"LR suggestion {rule!r}: {why}; falling back to the LR of the lowest loss / 10 = {value:.3g}",
        LrSuggestionWarning,
        stacklevel=3,
    )
    return value


def _longest_valley(y: np.ndarray) -> tuple[int, int]:
    """First and last index of the longest strictly decreasing subsequence of y (O(n^2) DP)."""
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

