"""The training loop: OneCycle per batch, devices and precision, checkpoint and resume.

`fit` trains the network of SPEC.md and returns its history; it writes nothing but its own
checkpoint (the stage script writes the outputs). One fixed-format progress line per epoch,
as the reference's log:

    Epoch=0 LR=0.0105 Loss=1.8194 batch_id=390 Accuracy=39.39%: 100%|███| 391/391 [...]
    Test set: Average loss: 1.6975, Accuracy: 4723/10000 (47.23%)
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from onecycle import io
from onecycle.batches import EpochLoader
from onecycle.data import Split
from onecycle.device import Runtime
from onecycle.model import build_model, summary
from onecycle.params import Params, TrainParams, to_dict

log = logging.getLogger(__name__)

CHECKPOINT_VERSION = 1


class NonFiniteLoss(RuntimeError):
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

    net: nn.Module  # the bare network: what is saved and loaded
    model: nn.Module  # what is called: net, or net wrapped by DDP and/or torch.compile
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    runtime: Runtime
    loss_fn: nn.Module


@dataclass(frozen=True)
class Dist:
    """This process's place in a torchrun job (rank 0 of 1 when run alone)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


# ----------------------------------------------------------------------------- pieces


def build_optimizer(model: nn.Module, tp: TrainParams, lr: float) -> torch.optim.Optimizer:
    """The optimizer of train_onecycle; the LR range test builds the same one."""
    if tp.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=lr, momentum=tp.momentum, nesterov=tp.nesterov, weight_decay=tp.weight_decay
        )
    opt = torch.optim.Adam if tp.optimizer == "adam" else torch.optim.AdamW
    return opt(model.parameters(), lr=lr, betas=(tp.momentum, 0.999), weight_decay=tp.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, tp: TrainParams, max_lr: float, steps_per_epoch: int):
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


def init_training(
    params: Params, runtime: Runtime, num_classes: int, lr: float, log_summary: bool = False
) -> tuple[nn.Module, torch.optim.Optimizer, torch.amp.GradScaler]:
    """The network with the run's seeded initial weights, its optimizer and grad scaler.

    train_onecycle and the LR range test both start here, so the range test measures the very
    network and optimizer that training will use (and never hands its weights on).
    """
    torch.manual_seed(params.seed)  # the same initial weights on every rank and every run
    net = build_model(params.model.width, num_classes)
    if log_summary:
        log.info("%s", summary(net))
    net = runtime.prepare_model(net)
    return net, build_optimizer(net, params.train, lr), runtime.grad_scaler()


def train_batch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    runtime: Runtime,
    loss_fn: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step at the optimizer's current LR. Returns (loss, logits), still on the device."""
    with runtime.autocast():
        logits = model(images)
        loss = loss_fn(logits, labels)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss.detach(), logits.detach()


@torch.no_grad()
def test_pass(model: nn.Module, loader: EpochLoader, runtime: Runtime) -> tuple[float, int, int]:
    """(mean cross-entropy, correct, total) over this rank's test images, reduced across ranks."""
    model.eval()
    device = runtime.device
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    total = 0
    for images, labels in loader.epoch(0):
        with runtime.autocast():
            logits = model(images)
        loss_sum += nn.functional.cross_entropy(logits.float(), labels, reduction="sum")
        correct += (logits.argmax(1) == labels).sum()
        total += len(labels)
    loss_sum, correct_f, total_f = _summed_over_ranks(loss_sum, correct, total)
    model.train()
    return loss_sum / total_f, int(correct_f), int(total_f)


def _summed_over_ranks(loss_sum: torch.Tensor, correct: torch.Tensor, count: int) -> tuple[float, float, float]:
    """(loss sum, correct, images) added up over every process of a DDP job (one host sync)."""
    stats = torch.stack([loss_sum.double(), correct.double(), torch.tensor(float(count), device=loss_sum.device,
                                                                           dtype=torch.float64)])
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(stats)
    loss_total, correct_total, seen_total = stats.tolist()
    return loss_total, correct_total, seen_total


# ----------------------------------------------------------------------------- checkpoint


def fingerprint(params: Params, max_lr: float, train: Split, world: int) -> str:
    """What a checkpoint must match to be resumed: every param that shapes training, the LR, the data."""
    relevant = {k: v for k, v in to_dict(params).items() if k not in ("evaluate", "lr_range_test")}
    relevant["max_lr"], relevant["world"] = max_lr, world
    data = hashlib.sha256(memoryview(np.ascontiguousarray(train.images)).cast("B"))  # ~0.2 s for 150 MB
    data.update(memoryview(np.ascontiguousarray(train.labels)).cast("B"))
    relevant["data"] = data.hexdigest()
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()


def save_checkpoint(path: Path, state: dict) -> None:
    io.save_torch(path, state)


def load_checkpoint(path: Path | None, expected: str) -> dict | None:
    """The checkpoint to resume from, or None (absent, damaged, or from other params: start fresh)."""
    if path is None or not path.is_file():
        return None
    try:
        state = io.load_torch(path, "checkpoint")
    except io.ArtifactError as err:
        log.warning("ignoring checkpoint: %s", err)
        return None
    if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION or state.get("fingerprint") != expected:
        log.info("checkpoint %s is from other params or data: starting fresh", path)
        return None
    return state


# ----------------------------------------------------------------------------- the loop


def fit(
    params: Params,
    train_loader: EpochLoader,
    test_loader: EpochLoader,
    runtime: Runtime,
    max_lr: float,
    num_classes: int,
    checkpoint: Path | None = None,
    place: Dist = Dist(),
    on_epoch: Callable[[EpochStats], None] | None = None,
) -> FitResult:
    """Train for params.train.epochs with OneCycle peaking at max_lr, resuming from `checkpoint`."""
    tp = params.train
    net, optimizer, scaler = init_training(params, runtime, num_classes, max_lr / tp.div_factor, log_summary=place.main)
    scheduler = build_scheduler(optimizer, tp, max_lr, len(train_loader))
    result = FitResult(model=net, train_images=train_loader.num_images * place.world)

    key = fingerprint(params, max_lr, train_loader.split, place.world)
    state = load_checkpoint(checkpoint, key)
    start = 0
    if state is not None:
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"])
        result.history = [EpochStats(**row) for row in state["history"]]
        result.train_seconds = state["train_seconds"]
        start = len(result.history)
        if place.main:
            log.info("resuming from %s after epoch %d of %d", checkpoint, start - 1, tp.epochs)

    _agree_on_start(start, runtime, checkpoint)
    run = Training(net, _wrap(net, tp, runtime, place), optimizer, scheduler, scaler, runtime,
                   nn.CrossEntropyLoss(label_smoothing=tp.label_smoothing))
    for epoch in range(start, tp.epochs):
        t0 = time.perf_counter()
        lr, train_loss, train_acc, seconds = _train_epoch(run, train_loader, epoch, place)
        test_loss, correct, total = test_pass(run.model, test_loader, runtime)
        if not math.isfinite(test_loss):
            raise NonFiniteLoss(
                f"the test loss became {test_loss} after epoch {epoch}, batch {len(train_loader) - 1} "
                f"(last LR {lr:.4g}): the weights diverged; lower train.max_lr and rerun"
            )
        if place.main:
            tqdm.write(
                f"Test set: Average loss: {test_loss:.4f}, Accuracy: {correct}/{total} ({100.0 * correct / total:.2f}%)"
            )
        stats = EpochStats(
            epoch, lr, train_loss, train_acc, test_loss, 100.0 * correct / total, time.perf_counter() - t0
        )
        result.history.append(stats)
        result.train_seconds += seconds
        if place.main and checkpoint is not None:
            save_checkpoint(checkpoint, _state(key, run, result))
        if on_epoch is not None:
            on_epoch(stats)
    return result


def _agree_on_start(start: int, runtime: Runtime, checkpoint: Path | None) -> None:
    """Under DDP every rank must resume from the same epoch (each reads the checkpoint itself)."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    both = torch.tensor([start, -start], device=runtime.device)
    dist.all_reduce(both, op=dist.ReduceOp.MAX)
    if both[0].item() != -both[1].item():
        raise io.ArtifactError(
            f"the processes found different checkpoints at {checkpoint} (resuming after epochs "
            f"{-both[1].item()} to {both[0].item()}): put --checkpoint on a filesystem every node shares"
        )


def _wrap(net: nn.Module, tp: TrainParams, runtime: Runtime, place: Dist) -> nn.Module:
    model = net
    if place.world > 1:
        if tp.sync_batchnorm and runtime.device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # keeps the same Parameter objects
        ids = [runtime.device.index] if runtime.device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    if tp.compile:
        model = torch.compile(model, dynamic=False)  # two fixed shapes (full and last batch): no dynamic kernels
    return model


def _state(key: str, run: Training, result: FitResult) -> dict:
    return {
        "version": CHECKPOINT_VERSION,
        "fingerprint": key,
        "model": run.net.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "scaler": run.scaler.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "history": [asdict(h) for h in result.history],
        "train_seconds": result.train_seconds,
    }


def _train_epoch(run: Training, loader: EpochLoader, epoch: int, place: Dist) -> tuple[float, float, float, float]:
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
    bar = tqdm(total=len(loader), disable=not place.main, dynamic_ncols=True, leave=True)
    t0 = time.perf_counter()
    for b, (images, labels) in enumerate(loader.epoch(epoch)):
        lrs.append(run.optimizer.param_groups[0]["lr"])
        loss, logits = train_batch(run.model, run.optimizer, run.scaler, run.runtime, run.loss_fn, images, labels)
        run.scheduler.step()
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
    loss_total, correct_total, seen_total = _summed_over_ranks(loss_sum, correct, seen)
    return lrs[-1], loss_total / seen_total, 100.0 * correct_total / seen_total, seconds
