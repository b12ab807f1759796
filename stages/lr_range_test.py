"""Stage lr_range_test: sweep the LR over one epoch of batches and pick max_lr by a stated rule.

A fresh model (the training seed's), the optimizer, augmentation and batch size that
train_onecycle uses; the LR rises from start_lr to end_lr, one batch at each. Writes the curve
(plots/lr_losses.csv), every rule's suggestion and the chosen max_lr (metrics/max_lr.json) and
the figure (plots/lr_range.png). Its weights are thrown away: training starts from scratch.
"""

from __future__ import annotations

import itertools
import logging
import math
import warnings
from pathlib import Path

from onecycle import io, lr_range, plots
from onecycle.augment import resolve_backend, validate
from onecycle.batches import EpochLoader
from onecycle.cli import parser, run_stage
from onecycle.data import load_split
from onecycle.device import runtime
from onecycle.params import load_params, to_dict
from onecycle.range_result import RangeTestResult
from onecycle.train import NonFiniteLoss, init_training

log = logging.getLogger("lr_range_test")


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--data", type=Path, default=Path("data/prepared"))
    p.add_argument("--curve", type=Path, default=Path("plots/lr_losses.csv"))
    p.add_argument("--result", type=Path, default=Path("metrics/max_lr.json"))
    p.add_argument("--figure", type=Path, default=Path("plots/lr_range.png"))
    args = p.parse_args()
    run_stage(lambda: range_test(args), [args.curve, args.result, args.figure])


def range_test(args) -> None:
    params = load_params(args.params)
    lp, tp = params.lr_range_test, params.train
    rt = runtime(tp.device, tp.precision, tp.channels_last)
    split = load_split(args.data, "train", params.data.train_samples, params.seed)
    backend = resolve_backend(params.augment.backend, params.augment.train)
    validate(params.augment, backend)
    loader = EpochLoader(split, tp.batch_size, params.augment, backend, rt, params.seed, train=True)
    run = init_training(params, rt, len(split.classes), lp.start_lr)
    batches = itertools.chain.from_iterable(loader.epoch(e) for e in itertools.count())
    log.info("LR range test: %g to %g (%s) over %d batches of %d; %s", lp.start_lr, lp.end_lr,
             lp.step_mode, lp.num_iter, tp.batch_size, rt.describe())

    def step(_iteration: int, lr: float) -> float:
        run.set_lr(lr)
        loss, _ = run.step(*next(batches))
        return loss.item()

    sweep = lr_range.run_sweep(step, lp)
    if sum(map(math.isfinite, sweep.smoothed)) < 2:
        raise NonFiniteLoss(
            f"the LR range test stopped at iteration {sweep.stop_iteration} ({sweep.stop_reason}) with fewer than "
            f"2 finite losses: lower lr_range_test.start_lr (now {lp.start_lr:g}) or check the data"
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", lr_range.LrSuggestionWarning)
        suggestions = lr_range.suggest_all(sweep.lrs, sweep.smoothed)
    for w in caught:
        log.warning("%s", w.message)
    max_lr = suggestions[lp.method]
    log.info("stopped: %s at iteration %d; suggestions %s; max_lr (%s) = %.4g", sweep.stop_reason,
             sweep.stop_iteration, {k: float(f"{v:.4g}") for k, v in suggestions.items()}, lp.method, max_lr)

    cols = sweep.columns()
    io.write_csv(args.curve, ["iteration", "lr", "loss", "smoothed_loss"],
                 list(zip(cols["iteration"], cols["lr"], cols["loss"], cols["smoothed"])))
    RangeTestResult(
        max_lr=max_lr,
        method=lp.method,
        suggestions=suggestions,
        warnings=[str(w.message) for w in caught],
        stop_reason=sweep.stop_reason,
        stop_iteration=sweep.stop_iteration,
        best_smoothed_loss=sweep.best_smoothed if math.isfinite(sweep.best_smoothed) else None,
        sweep=to_dict(lp) | {"batch_size": tp.batch_size, "optimizer": tp.optimizer,
                             "device": str(rt.device), "precision": rt.precision},
    ).write(args.result)
    plots.plot_lr_range(sweep.lrs, sweep.losses, sweep.smoothed, suggestions, lp.method, args.figure)


if __name__ == "__main__":
    main()
