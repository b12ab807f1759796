"""The LR range test on the real network: the sweep of onecycle.lr_range driven by training steps.

A fresh model (the training seed's), with the optimizer, augmentation, batch size and numerics
that train_onecycle uses; the LR rises from start_lr to end_lr, one batch at each, through as
many epochs of batches as num_iter needs. Its weights are thrown away: training starts from
scratch. The rules that read the curve are onecycle.lr_range's; this module only runs them.
"""

from __future__ import annotations

import itertools
import logging
import math
import warnings

from onecycle import lr_range
from onecycle.augment import resolve_backend, validate
from onecycle.batches import EpochLoader
from onecycle.data import Split
from onecycle.device import Runtime
from onecycle.params import Params, to_dict
from onecycle.range_result import RangeTestResult
from onecycle.train import NonFiniteLoss, init_training

log = logging.getLogger(__name__)


def run_range_test(params: Params, split: Split, runtime: Runtime) -> tuple[lr_range.SweepResult, RangeTestResult]:
    """Sweep the LR over `split` and pick max_lr by params.lr_range_test.method.

    Returns the per-batch curve and the result (every rule's pick, the chosen one, how the sweep
    ended). Raises NonFiniteLoss (a user error) when fewer than 2 finite losses were recorded,
    lr_range.NoDescent when the loss never fell below its start, AugmentError for a recipe the
    backend cannot run.
    """
    lp, tp = params.lr_range_test, params.train
    backend = resolve_backend(params.augment.backend, params.augment.train)
    validate(params.augment, backend)
    loader = EpochLoader(split, tp.batch_size, params.augment, backend, runtime, params.seed, train=True)
    run = init_training(params, runtime, len(split.classes), lp.start_lr)
    batches = itertools.chain.from_iterable(loader.epoch(e) for e in itertools.count())
    log.info("LR range test: %g to %g (%s) over %d batches of %d; %s", lp.start_lr, lp.end_lr,
             lp.step_mode, lp.num_iter, tp.batch_size, runtime.describe())

    def step(_iteration: int, lr: float) -> float:
        run.set_lr(lr)
        loss, _ = run.step(*next(batches))
        return loss.item()

    sweep = lr_range.run_sweep(step, lp)
    if sum(map(math.isfinite, sweep.losses)) < 2:
        raise NonFiniteLoss(
            f"the LR range test stopped at iteration {sweep.stop_iteration} ({sweep.stop_reason}) with fewer than "
            f"2 finite losses: lower lr_range_test.start_lr (now {lp.start_lr:g}) or check the data"
        )
    # NoDescent (a user error: exit 2, nothing written) when the loss never fell
    curve = lr_range.read_curve(sweep.lrs, sweep.losses, lp.smooth_decades, lp.diverge_threshold, lp.step_mode,
                                (lp.start_lr, lp.end_lr))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", lr_range.LrSuggestionWarning)  # logged below, per rule
        picks = lr_range.suggest_all(curve)
    for pick in picks.values():
        if pick.fallback:
            log.warning("%s", pick.fallback)
    max_lr = picks[lp.method].lr
    log.info("stopped: %s at iteration %d; suggestions %s; max_lr (%s) = %.4g", sweep.stop_reason,
             sweep.stop_iteration, {k: float(f"{v.lr:.4g}") for k, v in picks.items()}, lp.method, max_lr)
    result = RangeTestResult(
        max_lr=max_lr,
        method=lp.method,
        suggestions={k: v.lr for k, v in picks.items()},
        fallbacks={k: v.fallback for k, v in picks.items() if v.fallback},
        stop_reason=sweep.stop_reason,
        stop_iteration=sweep.stop_iteration,
        start_loss=curve.start_loss,
        lowest_loss=float(curve.smoothed[curve.i_min]),
        sweep=to_dict(lp) | {"batch_size": tp.batch_size, "optimizer": tp.optimizer,
                             "device": str(runtime.device), "precision": runtime.precision},
    )
    return sweep, result
