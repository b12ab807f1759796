"""The training loop: OneCycle per batch, devices and precision, checkpoint and resume.

`fit` trains the network of SPEC.md and returns its history; it writes nothing but its own
checkpoint (the stage script writes the outputs). One fixed-format progress line per epoch,
as the reference's log:

    Epoch=0 LR=0.0105 Loss=1.8194 batch_id=390 Accuracy=39.39%: 100%|███| 391/391 [...]
    Test set: Average loss: 1.6975, Accuracy: 4723/10000 (47.23%)
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from onecycle import checkpoint as ckpt
from onecycle import distributed
from onecycle.batches import EpochLoader
from onecycle.device import Runtime
from onecycle.distributed import Place
from onecycle.evaluate import predict
from onecycle.errors import UserError
from onecycle.model import build_model, summary
from onecycle.params import Params, ParamsError, TrainParams

log = logging.getLogger(__name__)

MIN_WARMUP_STEPS = 10  # a rise to max_lr in fewer optimizer steps than this is a jump, not a warm-up: warn


class NonFiniteLoss(UserError):
    """The loss became NaN or infinite: training stops, no model is written."""


@dataclass
class EpochStats:
    epoch: int
    lr: float  # LR of the epoch's last optimizer step (what the reference logs)
    train_loss: float
    train_acc: float  # percent
    test_loss: float
    test_acc: float  # percent
    seconds: float  # wall time of the epoch: training and the test pass


@dataclass(frozen=True)
class StepStats:
    """One optimizer step as it ran: what per-step logging (the one-cycle shape) needs."""

    epoch: int
    batch: int  # within the epoch, from 0
    step: int  # from the start of the run: epoch * batches per epoch + batch
    lr: float  # the LR this step trained with
    momentum: float  # SGD's momentum, or Adam's beta1, this step trained with


@dataclass
class FitResult:
    model: nn.Module  # the bare network (not wrapped by DDP or torch.compile), on its device
    history: list[EpochStats] = field(default_factory=list)
    train_images: int = 0  # images trained on per epoch by all processes
    train_seconds: float = 0.0  # time spent in training steps (this run and resumed ones)

    @property
    def images_per_second(self) -> float:
        return self.train_images * len(self.history) / self.train_seconds if self.train_seconds else 0.0


@dataclass
class Training:
    """What one optimizer step needs: the network (bare and as called), its optimizer and schedule."""

    raw_model: nn.Module  # the bare network: what is saved and loaded
    model: nn.Module  # what is called: raw_model, or raw_model wrapped by DDP and/or torch.compile
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None  # None: the caller sets each LR (range test)
    scaler: torch.amp.GradScaler
    runtime: Runtime
    loss_fn: nn.Module

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def step(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step at the current LR, then the schedule's next LR if there is a schedule.

        images: (N, 3, H, W) float on the device; labels: (N,) int64. Returns (loss, logits), detached,
        still on the device (reading them syncs the host)."""
        with self.runtime.autocast():
            logits = self.model(images)
            loss = self.loss_fn(logits, labels)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.scheduler is not None:
            self.scheduler.step()
        return loss.detach(), logits.detach()


# ----------------------------------------------------------------------------- pieces


def build_optimizer(model: nn.Module, tp: TrainParams, lr: float) -> torch.optim.Optimizer:
    """The optimizer of train_onecycle; the LR range test builds the same one."""
    if tp.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=lr, momentum=tp.momentum, nesterov=tp.nesterov, weight_decay=tp.weight_decay
        )
    opt = torch.optim.Adam if tp.optimizer == "adam" else torch.optim.AdamW
    return opt(model.parameters(), lr=lr, betas=(tp.momentum, 0.999), weight_decay=tp.weight_decay)


def warmup_steps(tp: TrainParams, total_steps: int) -> float:
    """Where OneCycleLR's rise ends, as a step index from 0: pct_start * total_steps - 1 (its own formula).

    At or below 0 there is no warm-up at all: 0 divides by zero inside OneCycleLR, and below 0 the first
    step is already past the peak, so the run starts at max_lr. Otherwise the LR needs ceil() of it steps
    to climb from max_lr / div_factor to max_lr.
    """
    return tp.pct_start * total_steps - 1


def check_schedule(tp: TrainParams, steps_per_epoch: int, warn: bool = True) -> None:
    """ParamsError when the one-cycle schedule of `tp` over `steps_per_epoch` batches cannot warm up; with
    `warn`, a logged warning when its warm-up has fewer than MIN_WARMUP_STEPS steps. (The max LR's range is
    the stage's to check, params.check_lr: a library caller may want a diverging run.)"""
    total = tp.epochs * steps_per_epoch
    rise = warmup_steps(tp, total)
    steps = f"{_count(total, 'optimizer step')} ({_count(tp.epochs, 'epoch')} of {_count(steps_per_epoch, 'batch')})"
    if rise <= 0:
        need = math.floor(1 / tp.pct_start) + 1  # the fewest steps with pct_start * steps > 1
        raise ParamsError(
            f"train.pct_start {tp.pct_start:g} x {steps} leaves no warm-up step: the LR would start at its peak "
            f"(OneCycleLR needs pct_start x steps above 1). Train for at least {need} steps (more train.epochs or "
            f"images, or a smaller train.batch_size)"
            + (f", or raise train.pct_start above {1 / total:.3g}" if total > 1 else "")
        )
    if warn and rise < MIN_WARMUP_STEPS:
        log.warning(
            "train.pct_start %g x %s gives a warm-up of only %s (fewer than %d): the LR jumps to max_lr "
            "instead of climbing; train longer or raise train.pct_start for a real warm-up",
            tp.pct_start, steps, _count(math.ceil(rise), "step"), MIN_WARMUP_STEPS,
        )


def _count(n: int, noun: str) -> str:
    plural = noun + ("es" if noun.endswith(("sh", "tch")) or noun == "batch" else "s")  # batches, epochs
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {plural}"


def build_scheduler(
    optimizer: torch.optim.Optimizer, tp: TrainParams, max_lr: float, steps_per_epoch: int, warn: bool = True
) -> torch.optim.lr_scheduler.OneCycleLR:
    """OneCycleLR over tp.epochs x steps_per_epoch steps peaking at max_lr, after check_schedule (which
    warns of a short warm-up with `warn`: one process of several says it)."""
    check_schedule(tp, steps_per_epoch, warn)
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=max_lr,
        epochs=tp.epochs,
        steps_per_epoch=steps_per_epoch,
        pct_start=tp.pct_start,
        anneal_strategy=tp.anneal_strategy,
        cycle_momentum=tp.cycle_momentum,
        base_momentum=tp.base_momentum,
        max_momentum=tp.max_momentum,
        div_factor=tp.div_factor,
        final_div_factor=tp.final_div_factor,
        three_phase=tp.three_phase,
    )


def init_training(params: Params, runtime: Runtime, num_classes: int, lr: float, log_summary: bool = False) -> Training:
    """The network with the run's seeded initial weights, its optimizer, scaler and loss, no schedule.

    train_onecycle and the LR range test both start here, so the range test measures the very
    network and optimizer that training will use (and never hands its weights on).
    """
    torch.manual_seed(params.seed)  # the same initial weights on every rank and every run
    net = build_model(params.model.width, num_classes)
    if log_summary:
        log.info("%s", summary(net))
    net = runtime.prepare_model(net)
    return Training(net, net, build_optimizer(net, params.train, lr), None, runtime.grad_scaler(), runtime,
                    nn.CrossEntropyLoss(label_smoothing=params.train.label_smoothing))


def test_pass(model: nn.Module, loader: EpochLoader, runtime: Runtime) -> tuple[float, int, int]:
    """(mean cross-entropy, correct, total) over the test images of every process (evaluate.predict)."""
    pred = predict(model, loader.epoch(0), runtime)
    loss_sum, correct, total = distributed.summed([pred.loss_sum(), pred.correct(), len(pred.labels)],
                                                  runtime.device)
    return loss_sum / total, int(correct), int(total)


# ----------------------------------------------------------------------------- the loop


def fit(
    params: Params,
    train_loader: EpochLoader,
    test_loader: EpochLoader,
    runtime: Runtime,
    max_lr: float,
    num_classes: int,
    checkpoint: Path | None = None,
    place: Place = Place(),
    on_epoch: Callable[[EpochStats], None] | None = None,
    on_step: Callable[[StepStats], None] | None = None,
) -> FitResult:
    """Train for params.train.epochs with OneCycle peaking at max_lr, resuming from `checkpoint`.

    The schedule is checked first (build_scheduler: ParamsError when it has no warm-up). While it trains,
    the main process holds the checkpoint's lock (checkpoint.lock): a second training of the same
    checkpoint raises CheckpointBusy at once instead of overwriting this one's epochs.
    `on_epoch` is called after each epoch's checkpoint, `on_step` after each optimizer step (on
    every process: the caller decides which one logs). Neither syncs the device. After a resume,
    both are first called for the restored epochs (`_replay`), so a logger that starts afresh
    ends with what an uninterrupted run logs."""
    tp = params.train
    run = init_training(params, runtime, num_classes, max_lr / tp.div_factor, log_summary=place.is_main)
    run.scheduler = build_scheduler(run.optimizer, tp, max_lr, len(train_loader), warn=place.is_main)
    owner = place.is_main and checkpoint is not None  # rank 0 alone writes the checkpoint, so it alone locks it
    with ckpt.lock(checkpoint) if owner else contextlib.nullcontext():
        result = FitResult(model=run.raw_model, train_images=train_loader.num_images * place.world_size)

        key = ckpt.fingerprint(params, max_lr, train_loader.split, place.world_size)
        state = ckpt.load(checkpoint, key)
        if state is not None:
            history, result.train_seconds = ckpt.restore(state, run)
            result.history = [EpochStats(**row) for row in history]
            if place.is_main:
                log.info("resuming from %s after epoch %d of %d", checkpoint, len(history) - 1, tp.epochs)
            _replay(result.history, tp, max_lr, len(train_loader), on_epoch, on_step)
        start = len(result.history)
        distributed.agree_on_start(start, runtime.device, checkpoint)
        run.model = distributed.wrap(run.raw_model, place, runtime.device, tp.sync_batchnorm)
        if tp.compile:
            run.model = torch.compile(run.model, dynamic=False)  # two fixed shapes (full and last batch)
        for epoch in range(start, tp.epochs):
            t0 = time.perf_counter()
            lr, train_loss, train_acc, seconds = _train_epoch(run, train_loader, epoch, place, on_step)
            test_loss, correct, total = test_pass(run.model, test_loader, runtime)
            if not math.isfinite(test_loss):
                raise NonFiniteLoss(
                    f"the test loss became {test_loss} after epoch {epoch}, batch {len(train_loader) - 1} "
                    f"(last LR {lr:.4g}): the weights diverged; lower train.max_lr and rerun"
                )
            if place.is_main:
                tqdm.write(
                    f"Test set: Average loss: {test_loss:.4f}, Accuracy: {correct}/{total} ({100.0 * correct / total:.2f}%)"
                )
            stats = EpochStats(
                epoch, lr, train_loss, train_acc, test_loss, 100.0 * correct / total, time.perf_counter() - t0
            )
            result.history.append(stats)
            result.train_seconds += seconds
            if place.is_main and checkpoint is not None:
                ckpt.save(checkpoint, key, run, [asdict(h) for h in result.history], result.train_seconds)
            if on_epoch is not None:
                on_epoch(stats)
        return result


def _replay(
    history: list[EpochStats],
    tp: TrainParams,
    max_lr: float,
    steps_per_epoch: int,
    on_epoch: Callable[[EpochStats], None] | None,
    on_step: Callable[[StepStats], None] | None,
) -> None:
    """Call the callbacks for the epochs a checkpoint restored, as if they had just run.

    Each step's LR and momentum are recomputed by stepping the same torch OneCycleLR on a
    throwaway optimizer: the schedule is a function of the step count alone, so the values are
    the ones the interrupted run trained with, bit for bit."""
    if on_step is not None:
        dummy = nn.Linear(1, 1)
        optimizer = build_optimizer(dummy, tp, max_lr / tp.div_factor)
        scheduler = build_scheduler(optimizer, tp, max_lr, steps_per_epoch, warn=False)
    for stats in history:
        for b in range(steps_per_epoch if on_step is not None else 0):
            group = optimizer.param_groups[0]
            momentum = group["betas"][0] if "betas" in group else group["momentum"]
            on_step(StepStats(stats.epoch, b, stats.epoch * steps_per_epoch + b, group["lr"], momentum))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "scheduler.step() before optimizer.step()": intended
                scheduler.step()
        if on_epoch is not None:
            on_epoch(stats)


def _train_epoch(
    run: Training, loader: EpochLoader, epoch: int, place: Place, on_step: Callable[[StepStats], None] | None
) -> tuple[float, float, float, float]:
    """One epoch; returns (LR of its last step, mean train loss, train accuracy %, training seconds)."""
    run.model.train()
    device = run.runtime.device
    # Running sums stay on the device: reading them forces a host sync, so the bar reads them
    # only every `sync_every` steps on a GPU (on the CPU a read costs nothing).
    sync_every = 1 if device.type == "cpu" else 50
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    seen = 0
    lrs: list[float] = []
    bar = tqdm(total=len(loader), disable=not place.is_main, dynamic_ncols=True, leave=True)
    t0 = time.perf_counter()
    for b, (images, labels) in enumerate(loader.epoch(epoch)):
        group = run.optimizer.param_groups[0]
        lrs.append(group["lr"])
        momentum = group["betas"][0] if "betas" in group else group["momentum"]
        loss, logits = run.step(images, labels)
        if on_step is not None:
            on_step(StepStats(epoch, b, epoch * len(loader) + b, lrs[-1], momentum))
        loss_sum += loss.double() * len(labels)
        correct += (logits.argmax(1) == labels).sum()
        seen += len(labels)
        if b % sync_every == 0 or b == len(loader) - 1:
            batch_loss = loss.item()
            if not math.isfinite(batch_loss) or not math.isfinite(loss_sum.item()):
                bar.close()
                where = f"batch {b}" if sync_every == 1 else f"one of batches {max(0, b - sync_every + 1)}-{b}"
                raise NonFiniteLoss(
                    f"the training loss became {batch_loss} at epoch {epoch}, {where} (LR {lrs[-1]:.4g}): "
                    "lower train.max_lr (or pick it with another lr_range_test.method) and rerun"
                )
            bar.set_description(
                f"Epoch={epoch} LR={lrs[-1]:.6g} Loss={batch_loss:.4f} batch_id={b} "
                f"Accuracy={100.0 * correct.item() / seen:.2f}%",
                refresh=False,
            )
        bar.update(1)
    bar.close()
    seconds = time.perf_counter() - t0
    loss_total, correct_total, seen_total = distributed.summed([loss_sum, correct, seen], device)
    return lrs[-1], loss_total / seen_total, 100.0 * correct_total / seen_total, seconds
