"""torch-lr-finder 0.2.2 (PyPI, the `test` extra) as an oracle for our sweep (issue 14, point 6).

An independent implementation of Smith's range test: driven with the same seeded network, optimizer,
batches and LR sequence as `onecycle.lr_range.run_sweep`, it must record the same LRs and the same raw
per-batch losses. What its 0.2.2 does, read from its `LRFinder.range_test` and `ExponentialLR`:

- The LR. Its ExponentialLR (a torch LRScheduler) gives iteration i the LR
  start_lr * (end_lr / start_lr) ** (i / (num_iter - 1)) (torch >= 1.1, where `last_epoch` starts at 0):
  the first batch trains at start_lr and the last at end_lr. That is our `lr_sequence(..., "exp")`
  term for term, so the same `num_iter` gives the same LRs; nothing needs shifting.
- What it records. Each iteration trains one batch at the optimizer's current LR, then appends
  `lr_schedule.get_lr()[0]` (still iteration i's LR) and only then steps the schedule: `history["lr"][i]`
  is the LR batch i TRAINED WITH. (Before 0.2.0 it stepped first and recorded the next batch's LR, the
  off-by-one the reference's log shows.) The test checks this from the outside too: its loss function
  reads the optimizer's LR at each forward pass.
- The loss. With `smooth_f=0` `history["loss"][i]` is batch i's raw loss; otherwise an EMA without bias
  correction. It stops once a loss exceeds `diverge_th` x the best, so `diverge_th` is set far above any
  loss ratio here.

Both run in fp32 on the CPU with contiguous (NCHW) tensors, one batch per step, no accumulation. Its
side gets the batches through a plain DataLoader (no shuffling), which its TrainDataLoaderIter wraps.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torch_lr_finder import LRFinder

from onecycle import lr_range
from onecycle.augment import normalize_batch
from onecycle.device import Runtime
from onecycle.model import build_model
from onecycle.params import LrRangeParams, ModelParams, Params
from onecycle.synthetic import synthetic_images
from onecycle.train import build_optimizer, init_training

START_LR, END_LR = 1e-4, 1.0  # four decades, into the LRs where the loss turns up
NUM_ITER, BATCH = 24, 16  # batches in the sweep, images per batch
PARAMS = Params(seed=3, model=ModelParams(width=8))  # a narrow network: the test takes a few seconds


def fixed_batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """NUM_ITER batches of BATCH normalised synthetic images (float32 NCHW, contiguous) and labels."""
    images, labels = synthetic_images(NUM_ITER * BATCH, seed=0)
    x = normalize_batch(images, PARAMS.augment.mean, PARAMS.augment.std).contiguous()
    return list(zip(x.split(BATCH), torch.from_numpy(labels).split(BATCH)))


class RecordingLoss(nn.CrossEntropyLoss):
    """Cross-entropy that notes the optimizer's LR at each call: the LR the batch is trained with."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        super().__init__()
        self.optimizer, self.lrs = optimizer, []

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        self.lrs.append(self.optimizer.param_groups[0]["lr"])
        return super().forward(logits, labels)


def torch_lr_finder_sweep(batches) -> tuple[dict, list[float]]:
    """torch-lr-finder's history over `batches`, and the LR its optimizer held at each forward pass."""
    torch.manual_seed(PARAMS.seed)  # as init_training seeds our side
    model = build_model(PARAMS.model.width, 10)
    optimizer = build_optimizer(model, PARAMS.train, START_LR)
    criterion = RecordingLoss(optimizer)
    x, y = (torch.cat(parts) for parts in zip(*batches))
    loader = DataLoader(TensorDataset(x, y), batch_size=BATCH, shuffle=False)
    finder = LRFinder(model, optimizer, criterion, device="cpu")
    finder.range_test(loader, start_lr=START_LR, end_lr=END_LR, num_iter=NUM_ITER, step_mode="exp",
                      smooth_f=0, diverge_th=1e9)
    return finder.history, criterion.lrs


def our_sweep(batches) -> lr_range.SweepResult:
    """run_sweep with a step that trains batch i at the LR it is given, through the range test's own Training."""
    run = init_training(PARAMS, Runtime(torch.device("cpu"), "fp32", False), 10, START_LR)

    def step(i: int, lr: float) -> float:
        run.set_lr(lr)
        loss, _ = run.step(*batches[i])
        return loss.item()

    sweep = LrRangeParams(start_lr=START_LR, end_lr=END_LR, num_iter=NUM_ITER, step_mode="exp")
    return lr_range.run_sweep(step, sweep, progress=False)


@pytest.fixture
def one_thread():
    """One torch thread: so small a network runs 2-10x slower on two threads of a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_torch_lr_finder_records_the_lrs_and_raw_losses_of_our_sweep(one_thread):
    batches = fixed_batches()
    theirs, trained_with = torch_lr_finder_sweep(batches)
    ours = our_sweep(batches)
    n = len(ours.lrs)
    # Our sweep may stop by its own rules before the last batch (on this curve: at batch 21 of 24, loss 31.5,
    # "back above its starting loss"); torch-lr-finder ran them all. The common rows include the blow-up.
    assert len(theirs["lr"]) == NUM_ITER and n >= NUM_ITER - 6, ours.stop_reason

    expected = lr_range.lr_sequence(START_LR, END_LR, NUM_ITER, "exp")
    np.testing.assert_allclose(theirs["lr"], expected, rtol=1e-12)  # the same LR sequence by definition
    np.testing.assert_allclose(trained_with, theirs["lr"], rtol=0)  # it records the LR each batch trained with
    np.testing.assert_allclose(ours.lrs, theirs["lr"][:n], rtol=1e-12)
    # The raw losses: the same model, optimizer and batches in the same order give the same numbers
    # (measured: bitwise equal; the tolerance leaves room for a different reduction order elsewhere).
    np.testing.assert_allclose(ours.losses, theirs["loss"][:n], rtol=1e-6, atol=0)
    # The curve is not flat: equal losses mean the same training, not two untrained networks.
    assert max(ours.losses) / min(ours.losses) > 1.2
