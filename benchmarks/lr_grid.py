"""Final test accuracy against max LR: the full recipe at every rule's pick and at a log-spaced grid.

    python benchmarks/lr_grid.py [--params params.yaml] [--data PREPARED] [--out benchmarks/lr_grid]
        [--seeds 3] [--grid 0.01,0.02,0.04,0.08,0.16] [--rules-only | --grid-only]
        [--epochs E] [--train-samples N] [--test-samples N] [--width W] [--range-iters N]
        [--device D] [--precision P] [--compile | --no-compile] [--set SECTION.KEY=VALUE ...]
        [--jobs N] [--threads N]

The evidence for which rule should pick the max LR (issue 14, point 5). For each seed (params.yaml's
seed and the next ones) it runs the LR range test once, exactly as the lr_range_test stage does
(`onecycle.range_test.run_range_test`), and records every rule's pick (the keys of its
`suggestions`, whatever rules exist). Then it trains the train_onecycle recipe (`onecycle.train.fit`,
its per-epoch test pass included) at:

- each rule's pick, at the seed whose range test picked it: what a user of that rule gets;
- each LR of the grid (default 0.01, 0.02, 0.04, 0.08, 0.16, a factor of 2 apart), at every seed.

A pick and a grid LR equal within 1e-9 relative are one run, not two; so are two seeds' picks of the
same swept LR. It writes, under --out:

- `runs/<key>-seed<S>-lr<LR>.json`: one file per training, written (temp file, then os.replace) the
  moment it finishes: its final and best test accuracy, per-epoch history, seconds, settings;
- `range_tests/<key>-seed<S>.json`: each seed's sweep (raw curve) and every rule's pick;
- `table.md`: one row per max LR (source: grid and/or which rules picked it at which seeds; runs;
  final test accuracy mean ± sd over seeds; best epoch's accuracy; seconds per run), then one row per
  rule (its picks and the accuracy its picks trained to), headed by the command, the machine and the
  exact settings; also printed;
- `accuracy_vs_max_lr.png`: final test accuracy (mean ± sd, each run a dot) against max LR on a log
  axis, each rule's pick a labelled vertical line;
- `logs/` (each run's training log) and `checkpoints/` (each run in progress, resumed after a kill).

Started again, it skips every run and range test already written whose settings key matches:
a call cut short keeps what it did, and the next call finishes the rest (and rewrites the table and
figure even when nothing is left to run). The key is a sha256 of everything the result depends on:
what train_onecycle reads from the params (seed and max LR aside: they are part of each run's name),
the device and precision the runtime resolves to, and the prepared images and labels themselves; a
range test's key also covers the sweep's code (onecycle/lr_range.py, onecycle/range_test.py), so new
rules mean new picks. Change any setting and nothing old is reused. `--jobs` and `--threads` are not
in the key: they change how fast runs finish, and the order of float sums (see below), not the recipe.

Full scale, on a GPU: the reference's recipe as params.yaml has it (24 epochs of all 50,000 images,
width 64, batch 128), precision `auto` (bf16 on a GPU that has it), channels-last, augmentation
backend `auto` (the batched tensor backend: the images live on the GPU as uint8, each batch is
cropped, flipped and cut out there; the test images live there too), optionally torch.compile
(`--compile`). Not yet run on a GPU (none was lent to the session that wrote this): its wall time, and
whether `--jobs 2` or `--compile` pay there, are still to be measured with this command:

    python benchmarks/lr_grid.py --out benchmarks/lr_grid [--jobs 2] [--compile]

CPU-short, measured: 294 s wall (24 trainings of ~10 s and 3 range tests) on a shared 2-core AMD EPYC
(AVX2, fp32), a narrow network (width 8), a 2,500-image subset, 3 epochs, a 100-batch sweep, 3 seeds.
Its table answers a different question than the full one (which LR trains a narrow net best in 60
steps) and its header says it is shortened:

    python benchmarks/lr_grid.py --data data/prepared --out /tmp/lr_grid_cpu --device cpu --precision fp32 \\
        --width 8 --train-samples 2500 --test-samples 1000 --epochs 3 --range-iters 100 --seeds 3 --threads 1

`--jobs N` trains N runs at once in N worker processes fed from one queue (the range tests first).
On one GPU that can overlap the small kernels of several trainings; on a CPU the workers split the
torch threads. Each call ends with what it cost: its wall time against the sum of its runs' own times.
Measured at the CPU-short setting (4 runs, 1 seed) on the shared 2-core EPYC, two other jobs running:
`--jobs 1 --threads 1` 45 s wall (11 s a run); `--jobs 2 --threads 1` 59 s wall (each run 21-26 s,
1.6x overlap, plus ~15 s of worker start-up: no gain); `--jobs 1 --threads 2` 201 s (two OpenMP
threads on cores other processes use wait on each other: hence `--threads 1` above).

What a result depends on, beyond the key: the torch thread count changes the order of float sums on
the CPU, and 60 chaotic SGD steps amplify that: the same seed and LR reached 31.4/30.2/30.0/23.4% on
1 thread and 30.8/33.0/27.9/21.2% on 2 (max LR 0.01/0.02/0.04/0.08), as far apart as two seeds. So
runs are reproducible bit for bit only at the same thread count (and on a GPU, cuDNN's autotuned
kernels vary too); the key leaves threads and --jobs out, as it leaves out which seed of the same
distribution ran, and each record keeps its thread count. Read a difference between LRs against the
spread over seeds, never a single run.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import hashlib
import json
import logging
import math
import multiprocessing
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere: the project's own onecycle package
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from onecycle import io, lr_range, pipeline, plots, range_test  # noqa: E402
from onecycle.augment import resolve_backend, validate  # noqa: E402
from onecycle.batches import EpochLoader  # noqa: E402
from onecycle.cli import EXIT_BAD_INPUT  # noqa: E402
from onecycle.data import load_split  # noqa: E402
from onecycle.device import Runtime, cpu_info, data_workers, runtime  # noqa: E402
from onecycle.errors import UserError  # noqa: E402
from onecycle.params import Params, parse_params, reads  # noqa: E402
from onecycle.train import EpochStats, NonFiniteLoss, fit  # noqa: E402

log = logging.getLogger("lr_grid")

DEFAULT_GRID = (0.01, 0.02, 0.04, 0.08, 0.16)  # issue 14: a factor of 2 apart, around the reference's 0.08
SAME_LR = 1e-9  # relative: a pick this close to a grid LR (or another pick) is the same run
# SPEC.md: the run being reproduced (24 epochs of 391 batches of 128, the whole test set, the 6.6M-parameter net)
REFERENCE_SCALE = {"epochs": 24, "train_images": 50_000, "test_images": 10_000, "batch": 128, "width": 64}


# ----------------------------------------------------------------------------- settings and keys


@dataclass(frozen=True)
class Grid:
    """What one call runs: the params (with the command's overrides), the seeds, the grid, where."""

    raw: dict  # params as plain data, overrides applied; `seed` and `train.max_lr` are set per run
    data: Path  # the prepared folder (stages/download.py's output)
    out: Path
    seeds: tuple[int, ...]
    grid: tuple[float, ...]  # max LRs trained at every seed (empty with --rules-only)
    rules: bool  # run the range tests and train at each rule's pick (False with --grid-only)
    jobs: int  # trainings at once, in worker processes (1: in this process)
    train_key: str = ""  # sha256 of what a training's result depends on (see the module docstring)
    range_key: str = ""  # the same for a range test, its code included

    def params(self, seed: int, max_lr: float | None = None) -> Params:
        raw = json.loads(json.dumps(self.raw))  # a deep copy of plain data
        raw["seed"] = seed
        if max_lr is not None:
            raw["train"]["max_lr"] = max_lr
        return parse_params(raw)


def apply_overrides(raw: dict, items: Iterable[tuple[str, Any]]) -> dict:
    """Set `section.key` (or a top-level key) to each value; ParamsError comes later, from parse_params."""
    for key, value in items:
        section, _, name = key.partition(".")
        if key in ("seed", "train.max_lr"):
            raise UserError(f"--set {key}: the grid sets {key} itself (use --seeds or --grid)")
        if name:
            raw.setdefault(section, {})[name] = value
        else:
            raw[section] = value
    return raw


def settings_key(params: Params, stage: str, rt: Runtime, data_digest: str, code: str = "") -> str:
    """sha256 hex of what a result of `stage` depends on, the run's seed and max LR aside.

    From what `stage` reads (onecycle.params.STAGE_READS): not the seed or max LR (each run's name has
    them), and device and precision as the runtime resolved them (`auto` differs between machines),
    not as written; num_workers and nproc_per_node change speed, not the result (the grid trains each
    run in one process). Plus the prepared data's digest and, for the range test, its code's."""
    relevant = reads(params, stage)
    relevant.pop("seed", None)
    for name in ("max_lr", "device", "precision", "num_workers", "nproc_per_node"):
        relevant.get("train", {}).pop(name, None)
    relevant["runtime"] = {"device": rt.device.type, "precision": rt.precision}
    relevant["prepared"], relevant["code"] = data_digest, code
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()


def data_digest(data: Path) -> str:
    """sha256 of the prepared train and test images and labels, as load_split reads them (~1 s for CIFAR-10)."""
    digest = hashlib.sha256()
    for split in ("train", "test"):
        whole = load_split(data, split, None, 0)
        for array in (whole.images, whole.labels):
            digest.update(memoryview(np.ascontiguousarray(array)).cast("B"))
        digest.update(json.dumps(whole.classes).encode())
    return digest.hexdigest()


def code_digest() -> str:
    """sha256 of the sweep's and the rules' source: a changed rule must not reuse old picks."""
    digest = hashlib.sha256()
    for module in (lr_range, range_test):
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()


# ----------------------------------------------------------------------------- one task: a range test or a training


@dataclass(frozen=True)
class Task:
    """One unit of work for a worker: a range test (max_lr None) or a training at max_lr."""

    grid: Grid
    seed: int
    max_lr: float | None = None

    @property
    def name(self) -> str:
        if self.max_lr is None:
            return f"{self.grid.range_key[:12]}-seed{self.seed}"
        return f"{self.grid.train_key[:12]}-seed{self.seed}-lr{self.max_lr!r}"

    @property
    def result(self) -> Path:
        return self.grid.out / ("range_tests" if self.max_lr is None else "runs") / f"{self.name}.json"

    def same_as(self, other: Task) -> bool:
        if self.seed != other.seed or (self.max_lr is None) != (other.max_lr is None):
            return False
        return self.max_lr is None or same_lr(self.max_lr, other.max_lr)

    def describe(self) -> str:
        return f"range test, seed {self.seed}" if self.max_lr is None else f"max LR {self.max_lr:.4g}, seed {self.seed}"


def run_task(task: Task) -> dict:
    """Run `task`, write its record (atomically) and return it. Its library logging goes to logs/<name>.log."""
    t0 = time.perf_counter()
    log_file = task.grid.out / "logs" / f"{task.name}.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    library = logging.getLogger("onecycle")
    # The library's log lines, progress bars (stderr) and test lines (stdout) go to the run's log, one handle.
    with open(log_file, "w") as text, contextlib.redirect_stderr(text), contextlib.redirect_stdout(text):
        handler = logging.StreamHandler(text)
        library.addHandler(handler)
        try:
            record = _range_test(task) if task.max_lr is None else _train(task)
        finally:
            library.removeHandler(handler)
    record |= {"kind": "range_test" if task.max_lr is None else "training", "threads": torch.get_num_threads(),
               "key": task.grid.range_key if task.max_lr is None else task.grid.train_key, "seed": task.seed,
               "seconds": time.perf_counter() - t0, "jobs": task.grid.jobs, "machine": machine(),
               "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    io.write_json(task.result, _finite(record))
    log.info("done: %s: %s", task.describe(), _outcome(record))
    return record


def _range_test(task: Task) -> dict:
    params = task.grid.params(task.seed)
    rt = runtime(params.train.device, params.train.precision, params.train.channels_last)
    split = load_split(task.grid.data, "train", params.data.train_samples, task.seed)
    sweep, result = range_test.run_range_test(params, split, rt)
    return {"suggestions": {rule: float(lr) for rule, lr in result.suggestions.items()},
            "result": asdict(result), "lrs": list(sweep.lrs), "losses": list(sweep.losses)}


def _train(task: Task) -> dict:
    params = task.grid.params(task.seed, task.max_lr)
    tp = params.train
    rt = runtime(tp.device, tp.precision, tp.channels_last)
    backend = resolve_backend(params.augment.backend, params.augment.train)
    validate(params.augment, backend)
    train_split = load_split(task.grid.data, "train", params.data.train_samples, task.seed)
    test_split = load_split(task.grid.data, "test", params.data.test_samples, task.seed)
    workers = data_workers(tp.num_workers, rt.device) if backend == "albumentations" else 0
    train_loader = EpochLoader(train_split, tp.batch_size, params.augment, backend, rt, task.seed, train=True,
                               num_workers=workers)
    test_loader = EpochLoader(test_split, tp.batch_size, params.augment, None, rt, task.seed, train=False)
    checkpoint = task.grid.out / "checkpoints" / f"{task.name}.pt"
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    history: list[EpochStats] = []

    def on_epoch(stats: EpochStats) -> None:
        history.append(stats)
        log.info("  %s: epoch %d/%d, test accuracy %.2f%%", task.describe(), stats.epoch + 1, tp.epochs, stats.test_acc)

    record: dict[str, Any] = {"max_lr": task.max_lr, "status": "finished", "error": None, "images_per_second": None,
                              "train_seconds": None}
    try:
        result = fit(params, train_loader, test_loader, rt, task.max_lr, len(train_split.classes),
                     checkpoint=checkpoint, on_epoch=on_epoch)
        history = result.history  # with the epochs of a resumed checkpoint, which on_epoch never saw
        record |= {"images_per_second": result.images_per_second, "train_seconds": result.train_seconds}
    except NonFiniteLoss as err:  # a max LR too high: a result, not a failure of the grid
        record |= {"status": "diverged", "error": str(err)}
    checkpoint.unlink(missing_ok=True)
    finished = record["status"] == "finished"
    return record | {
        "final_test_acc": history[-1].test_acc if finished else None,
        "best_test_acc": max(h.test_acc for h in history) if history else None,
        "history": [asdict(h) for h in history],
        "runtime": rt.describe(), "augmentation": backend,
        "train_images": len(train_split.labels), "test_images": len(test_split.labels),
    }


def _finite(value: Any) -> Any:
    """NaN and infinities as None (JSON has neither): a diverged sweep's last loss."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


# ----------------------------------------------------------------------------- the plan: which LRs, which seeds


def same_lr(a: float, b: float) -> bool:
    return abs(a - b) <= SAME_LR * max(abs(a), abs(b))


@dataclass
class Point:
    """One max LR of the table: whether it is on the grid, which rules picked it at which seeds."""

    max_lr: float
    on_grid: bool = False
    picks: dict[str, list[int]] = field(default_factory=dict)  # rule -> seeds whose range test picked it
    seeds: list[int] = field(default_factory=list)  # seeds trained at this LR
    runs: list[dict] = field(default_factory=list)  # their records written so far (run_grid fills it)

    def source(self) -> str:
        """'grid', 'edge (seed 1,2,3)', 'grid; spike (seed 1)', ..."""
        parts = ["grid"] if self.on_grid else []
        parts += [f"{rule} (seed {','.join(map(str, seeds))})" for rule, seeds in self.picks.items()]
        return "; ".join(parts)


def plan_points(grid: Iterable[float], seeds: Iterable[int], picks: dict[int, dict[str, float]]) -> list[Point]:
    """The grid's LRs (every seed) and each seed's rule picks (that seed), LRs equal within SAME_LR merged.

    `picks[seed][rule]` is a max LR. Returns the points in increasing LR."""
    seeds = list(seeds)
    points = [Point(lr, on_grid=True, seeds=list(seeds)) for lr in grid]
    for seed in sorted(picks):
        for rule, lr in picks[seed].items():
            point = next((p for p in points if same_lr(p.max_lr, lr)), None)
            if point is None:
                point = Point(lr)
                points.append(point)
            point.picks.setdefault(rule, []).append(seed)
            if seed not in point.seeds:
                point.seeds.append(seed)
    return sorted(points, key=lambda p: p.max_lr)


class Records:
    """The records already written under the output folder for one key (runs or range tests)."""

    def __init__(self, folder: Path, key: str) -> None:
        self.items: list[dict] = []
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError):
                log.warning("ignoring %s: not a readable record (it is run again)", path)
                continue
            if isinstance(record, dict) and record.get("key") == key:
                self.items.append(record)

    def find(self, seed: int, max_lr: float | None = None) -> dict | None:
        for record in self.items:
            if record.get("seed") == seed and (max_lr is None or same_lr(record["max_lr"], max_lr)):
                return record
        return None

    def add(self, record: dict) -> None:
        self.items.append(record)


# ----------------------------------------------------------------------------- running: a queue over workers


class InProcess(cf.Executor):
    """--jobs 1: each task runs at submit, in this process (no worker start-up, plain tracebacks)."""

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> cf.Future:
        future: cf.Future = cf.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as err:  # reported by the caller with the task's name
            future.set_exception(err)
        return future


def _init_worker(threads: int) -> None:
    """A worker's share of the CPU and its console log line per epoch."""
    torch.set_num_threads(threads)
    setup_logging()


def threads_per_run(requested: int | None, jobs: int, device: torch.device) -> int:
    """Torch threads of each training: as asked, else on the CPU the workers split the cores (N workers
    x all threads would oversubscribe them, and OpenMP threads that wait on each other's cores spin);
    on a GPU the host threads only launch kernels, so each keeps torch's default."""
    if requested:
        return requested
    return max(1, torch.get_num_threads() // jobs) if device.type == "cpu" else torch.get_num_threads()


def executor(jobs: int, threads: int) -> cf.Executor:
    if jobs == 1:
        return InProcess()
    # spawn, never fork: a forked child of a process that touched CUDA or OpenMP can hang.
    return cf.ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                                  initializer=_init_worker, initargs=(threads,))


@dataclass
class Progress:
    """What this call ran, for the cost line and the exit status."""

    ran: list[dict] = field(default_factory=list)  # records of the tasks this call finished
    failed: list[str] = field(default_factory=list)  # "task: error" of the tasks that raised
    reused: int = 0  # tasks whose record an earlier call wrote


def run_grid(grid: Grid, threads: int) -> tuple[list[Point], dict[int, dict], Progress]:
    """Run every range test and training of `grid` not already written; return the plan and what ran.

    The range tests go first in the queue; each seed's picks join the queue as its test finishes, so
    the grid's runs overlap the tests. Returns (points, range-test records by seed, progress)."""
    runs, tests = Records(grid.out / "runs", grid.train_key), Records(grid.out / "range_tests", grid.range_key)
    progress, seen = Progress(), []  # seen: the tasks this call has queued or found written
    picks: dict[int, dict[str, float]] = {}
    pending: dict[cf.Future, Task] = {}
    with executor(grid.jobs, threads) as pool:

        def submit(task: Task) -> None:
            if any(t.same_as(task) for t in seen):  # a pick equal to a grid LR, or to another rule's pick
                return
            seen.append(task)
            if (tests.find(task.seed) if task.max_lr is None else runs.find(task.seed, task.max_lr)) is not None:
                progress.reused += 1
                return
            log.info("queued: %s", task.describe())
            pending[pool.submit(run_task, task)] = task

        def take_picks(seed: int, record: dict) -> None:
            picks[seed] = record["suggestions"]
            log.info("seed %d: picks %s", seed, ", ".join(f"{r} {lr:.4g}" for r, lr in picks[seed].items()))
            for lr in picks[seed].values():
                submit(Task(grid, seed, lr))

        for seed in grid.seeds if grid.rules else ():
            submit(Task(grid, seed))
        for seed in grid.seeds:
            for lr in grid.grid:
                submit(Task(grid, seed, lr))
        for seed in grid.seeds if grid.rules else ():  # picks of range tests written by an earlier call
            if tests.find(seed) is not None:
                take_picks(seed, tests.find(seed))
        while pending:
            finished, _ = cf.wait(list(pending), return_when=cf.FIRST_COMPLETED)
            for future in finished:
                task = pending.pop(future)
                try:
                    record = future.result()
                except Exception as err:  # a bug or a crash of one run: the others go on, the exit says so
                    log.error("FAILED: %s: %s: %s", task.describe(), type(err).__name__, err)
                    progress.failed.append(f"{task.describe()}: {type(err).__name__}: {err}")
                    continue
                progress.ran.append(record)
                if task.max_lr is None:
                    tests.add(record)
                    take_picks(task.seed, record)
                else:
                    runs.add(record)
    points = plan_points(grid.grid, grid.seeds, picks)
    for point in points:
        point.runs = [r for s in point.seeds if (r := runs.find(s, point.max_lr)) is not None]
    return points, {s: tests.find(s) for s in grid.seeds if tests.find(s) is not None}, progress


def _outcome(record: dict) -> str:
    if record["kind"] == "range_test":
        return f"a sweep of {len(record['lrs'])} batches"
    if record["status"] != "finished":
        return f"diverged after {len(record['history'])} epochs"
    return f"final test accuracy {record['final_test_acc']:.2f}% in {record['seconds']:.0f} s"


# ----------------------------------------------------------------------------- the table and the figure


def mean_sd(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def fmt_acc(values: list[float]) -> str:
    if not values:
        return "—"
    mean, sd = mean_sd(values)
    return f"{mean:.2f} ± {sd:.2f}" if sd is not None else f"{mean:.2f}"


def count(records: list[dict], planned: int) -> str:
    """'3', '3 (1 diverged)', '2 of 3' (a run not written yet: the call was cut short or a run failed)."""
    diverged = sum(r["status"] != "finished" for r in records)
    text = f"{len(records)}" + (f" of {planned}" if len(records) < planned else "")
    return text + (f" ({diverged} diverged)" if diverged else "")


def finals(records: list[dict]) -> list[float]:
    return [r["final_test_acc"] for r in records if r["status"] == "finished"]


def table(points: list[Point], tests: dict[int, dict]) -> str:
    """The markdown tables: one row per max LR, then one per rule (each seed at its own pick)."""
    lines = ["| max LR | source | runs | final test acc % (mean ± sd) | best epoch acc % (mean) | s / run |",
             "|---:|---|---:|---:|---:|---:|"]
    for p in points:
        runs = p.runs
        best = [r["best_test_acc"] for r in runs if r["status"] == "finished"]
        best_mean = f"{statistics.fmean(best):.2f}" if best else "—"
        seconds = f"{statistics.fmean(r['seconds'] for r in runs):.0f}" if runs else "—"
        lines.append(f"| {p.max_lr:.4g} | {p.source()} | {count(runs, len(p.seeds))} | {fmt_acc(finals(runs))} | "
                     f"{best_mean} | {seconds} |")
    rules = list(dict.fromkeys(rule for t in tests.values() for rule in t["suggestions"]))
    if rules:
        lines += ["", "| rule | pick per seed | runs | final test acc % at its picks (mean ± sd) |", "|---|---|---:|---:|"]
    for rule in rules:
        own = [(seed, t["suggestions"][rule]) for seed, t in sorted(tests.items()) if rule in t["suggestions"]]
        records = [r for seed, lr in own for p in points if same_lr(p.max_lr, lr)
                   for r in p.runs if r["seed"] == seed]
        picked = ", ".join(f"{seed}: {lr:.4g}" for seed, lr in own)
        lines.append(f"| {rule} | {picked} | {count(records, len(own))} | {fmt_acc(finals(records))} |")
    return "\n".join(lines)


RULE_STYLES = ["--", ":", "-.", (0, (5, 1, 1, 1)), (0, (1, 3))]  # rules that pick the same LR stay visible


def plot(points: list[Point], tests: dict[int, dict], title: str, path: Path) -> None:
    """Final test accuracy against max LR (log x): mean ± sd, each run a dot, each rule's picks a line.

    The grid's LRs (run at every seed) are joined by a line; an LR only some seeds' rules picked is a
    diamond on its own, its mean over those seeds. Each rule's picks are vertical lines of one colour
    and dash, named in the legend, each marked at the top with the seeds that picked it."""
    import matplotlib.pyplot as plt  # after onecycle.plots chose the headless backend

    fig, ax = plt.subplots(figsize=(9, 5.5))
    for on_grid, style, label in ((True, "o-", "grid: final test accuracy, mean ± sd over seeds"),
                                  (False, "D", "a rule's pick only: mean ± sd over the seeds that picked it")):
        done = [(p.max_lr, mean_sd(finals(p.runs))) for p in points if p.on_grid == on_grid and finals(p.runs)]
        if done:
            ax.errorbar([lr for lr, _ in done], [m for _, (m, _) in done], yerr=[sd or 0.0 for _, (_, sd) in done],
                        fmt=style, color="black" if on_grid else "dimgray", capsize=4, label=label, zorder=4)
    runs = [(p.max_lr, r) for p in points for r in p.runs]
    ax.scatter([lr for lr, r in runs if r["status"] == "finished"],
               [r["final_test_acc"] for _, r in runs if r["status"] == "finished"],
               s=14, color="gray", alpha=0.6, zorder=3, label="one run")
    diverged = [lr for lr, r in runs if r["status"] != "finished"]
    if diverged:
        ax.scatter(diverged, [0.0] * len(diverged), marker="x", color="red", zorder=3, label="diverged (drawn at 0)")
    rules = list(dict.fromkeys(rule for t in tests.values() for rule in t["suggestions"]))
    for i, rule in enumerate(rules):
        by_lr: dict[float, list[int]] = {}
        for seed, t in sorted(tests.items()):
            if rule in t["suggestions"]:
                lr = t["suggestions"][rule]
                by_lr.setdefault(next((k for k in by_lr if same_lr(k, lr)), lr), []).append(seed)
        for n, (lr, seeds) in enumerate(by_lr.items()):
            ax.axvline(lr, ls=RULE_STYLES[i % len(RULE_STYLES)], lw=1.4, color=f"C{i}",
                       label=f"{rule}'s pick" if n == 0 else None)
            ax.text(lr, 1.0 - 0.035 * (i + 1), f"s{','.join(map(str, seeds))} ", color=f"C{i}", fontsize=7,
                    ha="right", va="top", transform=ax.get_xaxis_transform())
    ax.set_xscale("log")
    ax.set_xlabel("max LR of the one-cycle schedule (log scale)")
    ax.set_ylabel("final test accuracy (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: no run hidden behind it
    plots.save_figure(fig, path)


# ----------------------------------------------------------------------------- the report


def machine() -> str:
    """The GPU's name, or the CPU's model name (lscpu's "Model name") and the torch threads."""
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda}), torch {torch.__version__}"
    model = cpu_info().model or platform.processor() or platform.machine()
    return f"{model}, {len(os.sched_getaffinity(0))} cores, torch {torch.__version__}"


def settings_lines(grid: Grid, rt: Runtime, train_images: int, test_images: int) -> list[str]:
    params = grid.params(grid.seeds[0])
    tp, lp = params.train, params.lr_range_test
    backend = resolve_backend(params.augment.backend, params.augment.train)
    scale = {"epochs": tp.epochs, "train_images": train_images, "test_images": test_images,
             "batch": tp.batch_size, "width": params.model.width}
    label = ("FULL SCALE: the reference's recipe" if scale == REFERENCE_SCALE else
             "SHORTENED, not the reference's scale ({epochs} epochs of {train_images:,} images in batches of "
             "{batch}, tested on {test_images:,}, width {width})".format(**REFERENCE_SCALE))
    sweep = ("no range test (--grid-only)" if not grid.rules else
             f"range test: {lp.num_iter} batches, LR {lp.start_lr:g} to {lp.end_lr:g} ({lp.step_mode})")
    return [
        f"scale: {label}",
        f"settings: {tp.epochs} epochs of {train_images:,} train images (batch {tp.batch_size}), test on "
        f"{test_images:,}; width {params.model.width}; {rt.describe()}; compile {'on' if tp.compile else 'off'}; "
        f"augmentation {backend}; {sweep}; seeds {', '.join(map(str, grid.seeds))}",
        f"settings key: train {grid.train_key[:12]}, range test {grid.range_key[:12]}",
    ]


def report(grid: Grid, rt: Runtime, points: list[Point], tests: dict[int, dict], header: list[str]) -> str:
    """Write table.md and accuracy_vs_max_lr.png; return the table's text."""
    text = "\n".join(["# Final test accuracy against max LR (benchmarks/lr_grid.py)", "",
                      *[f"    {line}" for line in header], "", table(points, tests), ""])
    io.write_text(grid.out / "table.md", text)
    title = next(line for line in header if line.startswith("settings: ")).removeprefix("settings: ")
    plot(points, tests, "\n".join(_wrap(title, 120)), grid.out / "accuracy_vs_max_lr.png")
    return text


def _wrap(text: str, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split(" "):
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return lines + [line]


# ----------------------------------------------------------------------------- the command


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    p.add_argument("--data", type=Path, default=ROOT / pipeline.stage("download").outs[0],
                   help="prepared folder (default: the download stage's output)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "lr_grid")
    p.add_argument("--seeds", type=int, default=3, help="seeds: params.yaml's seed and the next ones (default 3)")
    p.add_argument("--grid", type=_lrs, default=DEFAULT_GRID, help="max LRs trained at every seed, comma-separated")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--rules-only", action="store_true", help="only the rules' picks, no grid")
    which.add_argument("--grid-only", action="store_true", help="only the grid, no range tests")
    p.add_argument("--epochs", type=int, help="train.epochs")
    p.add_argument("--train-samples", type=int, help="data.train_samples (a class-balanced subset)")
    p.add_argument("--test-samples", type=int, help="data.test_samples")
    p.add_argument("--width", type=int, help="model.width")
    p.add_argument("--range-iters", type=int, help="lr_range_test.num_iter (batches in each sweep)")
    p.add_argument("--device", help="train.device")
    p.add_argument("--precision", help="train.precision")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None, help="train.compile")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="any other param (VALUE read as YAML), e.g. --set augment.backend=tensor")
    p.add_argument("--jobs", type=int, default=1, help="trainings at once, in worker processes (default 1)")
    p.add_argument("--threads", type=int, help="torch threads per training (default: on the CPU, torch's "
                   "default divided among the jobs; on a GPU, torch's default)")
    args = p.parse_args(argv)
    if args.seeds < 1 or args.jobs < 1 or (args.threads is not None and args.threads < 1):
        p.error("--seeds, --jobs and --threads must be at least 1")
    return args


def _lrs(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated LRs, e.g. 0.01,0.02, got {text!r}") from None
    if not values or not all(math.isfinite(v) and v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive LRs, got {text!r}")
    return values


def build_grid(args: argparse.Namespace) -> tuple[Grid, Runtime, int, int]:
    """The grid from the params file and the overrides, validated; its keys; the runtime; image counts."""
    if not args.params.is_file():
        raise UserError(f"params file {args.params} not found: pass --params")
    raw = yaml.safe_load(args.params.read_text()) or {}
    named = {"train.epochs": args.epochs, "data.train_samples": args.train_samples,
             "data.test_samples": args.test_samples, "model.width": args.width,
             "lr_range_test.num_iter": args.range_iters, "train.device": args.device,
             "train.precision": args.precision, "train.compile": args.compile}
    items = [(k, v) for k, v in named.items() if v is not None]
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise UserError(f"--set {item!r}: expected SECTION.KEY=VALUE")
        items.append((key.strip(), yaml.safe_load(value)))
    raw = apply_overrides(raw, items + [("train.nproc_per_node", 1)])  # one process per run (see the docstring)
    base = parse_params(raw)
    seeds = tuple(base.seed + i for i in range(args.seeds))
    grid = Grid(raw, args.data, args.out, seeds, () if args.rules_only else args.grid, not args.grid_only, args.jobs)
    rt = runtime(base.train.device, base.train.precision, base.train.channels_last)
    validate(base.augment, resolve_backend(base.augment.backend, base.augment.train))
    digest = data_digest(args.data)
    train_images = len(load_split(args.data, "train", base.data.train_samples, base.seed).labels)
    test_images = len(load_split(args.data, "test", base.data.test_samples, base.seed).labels)
    keys = {"train_key": settings_key(base, "train_onecycle", rt, digest),
            "range_key": settings_key(base, "lr_range_test", rt, digest, code_digest())}
    return replace(grid, **keys), rt, train_images, test_images


def setup_logging() -> None:
    """This script's lines on the console; the library's go to each run's log file (run_task)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False
    logging.getLogger("onecycle").setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    args = parse_args(argv)
    t0 = time.perf_counter()
    try:
        grid, rt, train_images, test_images = build_grid(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    command = shlex.join([Path(sys.executable).name, *sys.argv]) if argv is None else shlex.join(["lr_grid.py", *argv])
    threads = threads_per_run(args.threads, grid.jobs, rt.device)
    header = [f"command: {command}", f"machine: {machine()}; this call: --jobs {grid.jobs}, {threads} torch threads each",
              *settings_lines(grid, rt, train_images, test_images)]
    for line in header:
        log.info("%s", line)
    default_threads = torch.get_num_threads()
    if grid.jobs == 1:
        torch.set_num_threads(threads)  # the runs of --jobs 1 train in this process
    try:
        points, tests, progress = run_grid(grid, threads)
    finally:
        torch.set_num_threads(default_threads)  # main() may be called in a longer-lived process (the tests)
    text = report(grid, rt, points, tests, header)
    wall = time.perf_counter() - t0
    own = sum(r["seconds"] for r in progress.ran)
    trainings = sum(r["kind"] == "training" for r in progress.ran)
    print(text)
    print(f"this call: {trainings} trainings and {len(progress.ran) - trainings} range tests run "
          f"({len(progress.failed)} failed) in {wall:.0f} s wall with --jobs {grid.jobs}; their own times sum "
          f"to {own:.0f} s ({own / wall if wall else 0:.2f}x the wall time); {progress.reused} written by an "
          f"earlier call were reused; results in {grid.out}")
    if progress.failed:
        print("failed (run again to retry them):\n  " + "\n  ".join(progress.failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
