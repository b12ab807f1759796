"""Stage train_onecycle: OneCycle training of the ResNet at the max LR the range test chose.

Writes the model (state dict + resolved params), the per-epoch history, its figure and the
metrics; while it runs, every epoch (and every step's LR and momentum) goes to the DVCLive
folder (onecycle/live.py), which `dvc exp show` and `dvc plots` read as the run goes on. Resumes from its checkpoint after a kill; under torchrun only rank 0 writes.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from onecycle import io, plots
from onecycle.augment import resolve_backend, validate
from onecycle.batches import EpochLoader
from onecycle.cli import parser, run_stage
from onecycle.data import load_split
from onecycle.device import data_workers, runtime
from onecycle.distributed import barrier, process_group
from onecycle.live import LiveLog
from onecycle.model import save_weights
from onecycle.params import check_lr, load_params, reads
from onecycle.range_result import read_max_lr
from onecycle.train import fit

log = logging.getLogger("train_onecycle")


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--max-lr", type=Path, required=True)
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--history", type=Path, required=True)
    p.add_argument("--figure", type=Path, required=True)
    p.add_argument("--metrics", type=Path, required=True)
    p.add_argument("--details", type=Path, required=True, help="timings (not a metric)")
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--live", type=Path, required=True, help="DVCLive folder: metrics while training runs")
    args = p.parse_args()
    outputs = [args.model, args.model.with_suffix(".json"), args.history, args.figure, args.metrics, args.details, args.live]
    run_stage(lambda: train(args), outputs)


def train(args) -> None:
    params = load_params(args.params)
    tp = params.train
    if tp.max_lr == "auto":
        max_lr = check_lr(read_max_lr(args.max_lr), f"max_lr in {args.max_lr}",
                          "rerun `dvc repro lr_range_test`, or set train.max_lr")
    else:
        max_lr = tp.max_lr
    with process_group(tp.device) as place:
        rt = runtime(tp.device, tp.precision, tp.channels_last, place.local_rank)
        backend = resolve_backend(params.augment.backend, params.augment.train)
        validate(params.augment, backend)
        train_split = load_split(args.data, "train", params.data.train_samples, params.seed)
        test_split = load_split(args.data, "test", params.data.test_samples, params.seed)
        workers = data_workers(tp.num_workers, rt.device) if backend == "albumentations" else 0
        common = dict(runtime=rt, seed=params.seed, rank=place.rank, world=place.world_size)
        train_loader = EpochLoader(train_split, tp.batch_size, params.augment, backend, train=True,
                                   num_workers=workers, **common)
        # The per-epoch test pass: batch size only sets memory (BatchNorm is in eval mode).
        test_loader = EpochLoader(test_split, tp.batch_size, params.augment, None, train=False, **common)
        if place.is_main:
            log.info("%s, augmentation %s, max_lr %.4g, %d processes", rt.describe(), backend, max_lr, place.world_size)
        t0 = time.perf_counter()
        live = LiveLog(args.live) if place.is_main else None
        result = fit(params, train_loader, test_loader, rt, max_lr, len(train_split.classes),
                     checkpoint=args.checkpoint, place=place, on_epoch=live and live.epoch,
                     on_step=live and live.step)
        if live is not None:
            live.close(result.history[-1].epoch)
        if place.is_main:
            write_outputs(args, params, max_lr, train_split.classes, result, time.perf_counter() - t0, rt)
            args.checkpoint.unlink(missing_ok=True)  # finished: a changed param must start fresh
        barrier()


def write_outputs(args, params, max_lr, classes, result, seconds, rt) -> None:
    save_weights(args.model, result.model)
    io.write_json(args.model.with_suffix(".json"), {
        "architecture": "ResNet9", "width": params.model.width, "classes": list(classes),
        "max_lr": max_lr, "device": str(rt.device), "precision": rt.precision,
        # only what this stage reads (dvc.yaml), so the file never disagrees with its own cache key
        "params": reads(params, "train_onecycle"),
    })
    rows = [[h.epoch, h.lr, h.train_loss, h.train_acc, h.test_loss, h.test_acc, h.seconds] for h in result.history]
    io.write_csv(args.history, ["epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc", "seconds"], rows)
    plots.plot_training(result.history, args.figure)
    last = result.history[-1]
    best = max(result.history, key=lambda h: h.test_acc)
    # Numbers that compare across experiments, rounded as they are read: accuracy in % to 0.01 (one
    # image in 10,000), losses to 4 significant digits; the max LR exact (it is the one trained with).
    io.write_json(args.metrics, {
        "max_lr": max_lr,
        "epochs": len(result.history),
        "final": {"train_acc": round(last.train_acc, 2), "train_loss": io.significant(last.train_loss),
                  "test_acc": round(last.test_acc, 2), "test_loss": io.significant(last.test_loss)},
        "best": {"test_acc": round(best.test_acc, 2), "epoch": best.epoch,
                 "test_loss": io.significant(min(h.test_loss for h in result.history))},
        "images_per_second": round(result.images_per_second, 1),
    })
    # Timings measure the machine, not the result: beside the metrics, not among them.
    io.write_json(args.details, {"seconds": {"total": sum(h.seconds for h in result.history),
                                             "training": result.train_seconds, "this_run": seconds}})

if __name__ == "__main__":
    main()
