"""The one-cycle schedule restated as pure functions of the step number: a test oracle.

`torch.optim.lr_scheduler.OneCycleLR` drives training; these functions restate its formula so
the schedule can be tested, plotted and logged without an optimizer, and so a test can check
that the scheduler does what SPEC.md describes (start max_lr/25, peak at the end of epoch 5 of
24, end at start/1e4).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class OneCycle:
    max_lr: float
    total_steps: int  # optimizer steps in the whole run: epochs * batches per epoch
    pct_start: float = 0.2083
    div_factor: float = 25.0
    final_div_factor: float = 1e4
    anneal_strategy: str = "cos"
    three_phase: bool = False

    @property
    def initial_lr(self) -> float:
        return self.max_lr / self.div_factor

    @property
    def min_lr(self) -> float:
        return self.initial_lr / self.final_div_factor

    def phases(self, low: float, high: float, end: float) -> list[tuple[float, float, float]]:
        """(last step of the phase, value at its start, value at its end), as OneCycleLR lays them out."""
        up = float(self.pct_start * self.total_steps) - 1
        if self.three_phase:
            return [(up, low, high), (2 * up, high, low), (self.total_steps - 1, low, end)]
        return [(up, low, high), (self.total_steps - 1, high, end)]

    def lr(self, step: int) -> float:
        """LR used by optimizer step `step` (0-based)."""
        return self._at(step, self.phases(self.initial_lr, self.max_lr, self.min_lr))

    def momentum(self, step: int, base: float, top: float) -> float:
        """Momentum used by step `step` when cycling: top → base while the LR rises, then back."""
        return self._at(step, self.phases(top, base, top))

    def _at(self, step: int, phases: list[tuple[float, float, float]]) -> float:
        if not 0 <= step < self.total_steps:
            raise ValueError(f"step {step} outside the schedule's {self.total_steps} steps")
        start_step = 0.0
        for i, (end_step, start, end) in enumerate(phases):
            if step <= end_step or i == len(phases) - 1:
                pct = (step - start_step) / (end_step - start_step)
                return anneal(start, end, pct, self.anneal_strategy)
            start_step = end_step
        raise AssertionError("unreachable")


def anneal(start: float, end: float, pct: float, strategy: str) -> float:
    """Value `pct` of the way from start to end: cosine (OneCycleLR's default) or linear."""
    if strategy == "cos":
        return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
    return (end - start) * pct + start


def epoch_end_lrs(cycle: OneCycle, steps_per_epoch: int) -> list[float]:
    """The LR of each epoch's last optimizer step: what the reference logs per epoch (SPEC.md)."""
    epochs = cycle.total_steps // steps_per_epoch
    return [cycle.lr((e + 1) * steps_per_epoch - 1) for e in range(epochs)]
