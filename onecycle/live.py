"""Live experiment logging through DVCLive: what `dvc exp show`, `dvc plots` and VS Code follow while
train_onecycle runs.

Why DVCLive rather than our own files: it is the DVC ecosystem's logger, so the running experiment's
row in `dvc exp show` and the VS Code extension's live plots read its files with no glue.

Its defaults are not ours, and are set here:
- `dvcyaml=None`: DVCLive would otherwise rewrite the project's dvc.yaml at every step; our
  dvc.yaml declares its outputs itself (the train_onecycle stage's `dvclive/` metrics and plots).
- `save_dvc_exp=False`, `report=None`: DVC runs the stage; DVCLive only writes files.
- `resume=False`: each run starts the folder afresh. After a resume from a checkpoint, fit replays
  the checkpoint's epochs (and recomputes their steps' LR and momentum from the schedule) through
  the same callbacks, so the folder never trusts rows a kill may have cut.

What a kill leaves: DVCLive appends rows to `plots/metrics/**.tsv` and rewrites `metrics.json`
in place, not atomically, so a SIGKILL can leave a cut last row or a cut JSON file. Nothing reads
them but a person and DVC's live view; the next run clears the folder and replays the history
(tests/test_faults.py checks the finished folder equals an uninterrupted run's).

Files (under `dir`): metrics.json (the last epoch's values and `step`, the epoch), and
plots/metrics/ with one TSV per metric: train/loss, train/acc, test/loss, test/acc (%), lr (of the
epoch's last step), seconds (per epoch) against the epoch; schedule/lr and schedule/momentum
against the optimizer step (the one-cycle shape; plots only, not in metrics.json).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from onecycle.train import EpochStats, StepStats


class LiveLog:
    """Per-epoch and per-step metrics to a DVCLive folder; pass `epoch` and `step` to `train.fit`."""

    def __init__(self, directory: Path) -> None:
        from dvclive import Live  # here: only the main process of a training imports it

        logging.getLogger("dvclive").setLevel(logging.WARNING)  # its info lines would break the reference log
        # Afresh, whatever a killed or older run left there (even a file where a folder belongs)
        for stale in (directory / "plots", directory / "metrics.json"):
            if stale.is_dir():
                shutil.rmtree(stale)
            elif stale.exists():
                stale.unlink()
        self.live = Live(dir=str(directory), resume=False, report=None, save_dvc_exp=False, dvcyaml=None)
        self.steps: list[StepStats] = []  # this epoch's steps, written with the epoch (see `step`)

    def epoch(self, stats: EpochStats) -> None:
        self._write_steps()
        live = self.live
        live.step = stats.epoch
        for name, value in (("train/loss", stats.train_loss), ("train/acc", stats.train_acc),
                            ("test/loss", stats.test_loss), ("test/acc", stats.test_acc), ("lr", stats.lr),
                            ("seconds", stats.seconds)):
            live.log_metric(name, value)
        live.make_summary()  # metrics.json now holds this epoch: `dvc exp show` reads it while the run goes on

    def step(self, stats: StepStats) -> None:
        # Kept in memory and written with the epoch: DVCLive appends to its files on every call, and
        # two file appends per optimizer step would sit in the training loop (hundreds a second on a GPU).
        self.steps.append(stats)

    def _write_steps(self) -> None:
        for stats in self.steps:
            self.live.step = stats.step
            self.live.log_metric("schedule/lr", stats.lr)
            self.live.log_metric("schedule/momentum", stats.momentum)
        self.steps.clear()
        self.live.summary.pop("schedule", None)  # a chart, not a number to compare across experiments

    def close(self, last_epoch: int) -> None:
        """Write the summary at the last epoch (not the last optimizer step) and stop."""
        self.live.step = last_epoch
        self.live.make_summary()
