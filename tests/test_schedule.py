"""The one-cycle schedule: torch's OneCycleLR, our pure restatement, and SPEC.md agree."""

from __future__ import annotations

import pytest
import torch

from onecycle.params import TrainParams
from tests.one_cycle_oracle import OneCycle, epoch_end_lrs
from onecycle.train import build_optimizer, build_scheduler

STEPS = 391  # batches per epoch in the reference


def scheduler_lrs(tp: TrainParams, max_lr: float, steps: int):
    model = torch.nn.Linear(2, 2)
    opt = build_optimizer(model, tp, max_lr / tp.div_factor)
    sched = build_scheduler(opt, tp, max_lr, steps)
    lrs, moms = [], []
    for k in range(tp.epochs * steps):
        lrs.append(opt.param_groups[0]["lr"])
        moms.append(opt.param_groups[0]["momentum"])
        opt.step()
        if k < tp.epochs * steps - 1:
            sched.step()
    return lrs, moms


@pytest.mark.parametrize("anneal", ["cos", "linear"])
@pytest.mark.parametrize("three_phase", [False, True])
def test_pure_schedule_equals_torch(anneal, three_phase):
    tp = TrainParams(epochs=3, anneal_strategy=anneal, three_phase=three_phase)
    lrs, moms = scheduler_lrs(tp, 0.08, 50)
    cycle = OneCycle(0.08, 150, tp.pct_start, tp.div_factor, tp.final_div_factor, anneal, three_phase)
    assert lrs == pytest.approx([cycle.lr(k) for k in range(150)], rel=1e-12, abs=1e-15)
    assert moms == pytest.approx([cycle.momentum(k, 0.85, 0.95) for k in range(150)], rel=1e-12)


def test_reference_schedule_matches_spec():
    """SPEC.md: starts at 0.0032, peaks at the end of epoch 5 of 24, ends at 3.2e-7, cosine."""
    tp = TrainParams()
    lrs, moms = scheduler_lrs(tp, 0.08, STEPS)
    assert lrs[0] == pytest.approx(0.0032)
    assert lrs[-1] == pytest.approx(3.2e-7)
    peak = max(range(len(lrs)), key=lrs.__getitem__)
    assert peak // STEPS == 4  # 0-based epoch 4 is the reference's fifth epoch
    assert 5 * STEPS - 2 <= peak <= 5 * STEPS - 1
    assert moms[peak] == pytest.approx(0.85, abs=1e-6) and moms[0] == pytest.approx(0.95)
    # The LR logged per epoch is the LR of that epoch's last optimizer step.
    logged = epoch_end_lrs(OneCycle(0.08, 24 * STEPS), STEPS)
    assert logged == pytest.approx([lrs[(e + 1) * STEPS - 1] for e in range(24)])
    assert logged[4] == pytest.approx(0.08, rel=1e-6) and logged[-1] == pytest.approx(3.2e-7)
    # cosine, not linear: halfway down the anneal the LR is max/2 plus half the floor
    mid = (peak + len(lrs) - 1) // 2
    assert lrs[mid] == pytest.approx(0.04, rel=0.01)
    assert lrs[peak + (len(lrs) - peak) // 4] > 0.06  # a linear anneal would be at ~0.06
