"""Side-by-side throughput of the training step in each precision and layout, and of the real stage.

    python benchmarks/bench.py [--params params.yaml] [--data PREPARED] [--images 2560]
                               [--threads 1,2] [--try-compile]

One run measures, on the device the params resolve to:

- the eager training step (forward, backward, SGD step on one fixed batch of 128) in fp32 NCHW
  (the baseline), fp32 channels-last, bf16 channels-last and fp16 channels-last. On a CPU without
  native bf16 (or fp16) that row is a short probe (one step of 32 images): emulated, it is too slow
  to time at length, and the probe is enough to show by how much;
- the step as the params configure it (precision `auto` resolved for this machine, `train.compile`);
- optionally each thread count of `--threads`, and `torch.compile` of the fastest eager step;
- the augmentation alone, per backend;
- one epoch of the real `train_onecycle` stage at its params, on `--images` prepared images.

It prints a markdown table and every ratio the targets are stated in (README, benchmarks/RESULTS.md):
each row against the fp32 NCHW baseline, and the stage against the fastest eager step. Nothing here
is asserted: the machines are shared and noisy, so numbers are read side by side, never against a clock.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

from onecycle import augment, pipeline
from onecycle.device import Runtime, cpu_info, probe_cpu, runtime
from onecycle.model import build_model
from onecycle.params import TrainParams, load_params
from onecycle.train import Training, build_optimizer

ROOT = Path(__file__).resolve().parents[1]
TRAIN_GFLOP_PER_IMAGE = 2.3  # SPEC.md: forward 0.76 GFLOP, forward + backward about 2.3 per 32x32 image
BATCH = 128  # the reference's batch size
PROBE_BATCH = 32  # images in the one-step probe of an emulated precision


@dataclass
class Measured:
    name: str
    images_per_second: float
    eager: bool = False  # a candidate for "the fastest eager configuration"
    step: bool = True  # a training step (has a TFLOP/s figure), not the augmentation alone


class Step:
    """One training-step configuration, built and warmed up once, timed in rounds."""

    def __init__(self, rt: Runtime, tp: TrainParams, width: int, compile_model: bool = False,
                 batch: int = BATCH, threads: int | None = None):
        self.rt, self.batch, self.threads = rt, batch, threads
        torch.manual_seed(0)
        model = rt.prepare_model(build_model(width))
        net = torch.compile(model, dynamic=False) if compile_model else model
        self.run = Training(model, net, build_optimizer(model, tp, 0.01), None, rt.grad_scaler(), rt,
                            torch.nn.CrossEntropyLoss())
        self.x = rt.to_input(torch.randn(batch, 3, 32, 32))
        self.y = torch.randint(0, 10, (batch,), device=rt.device)
        self.time(3 if compile_model else 1)  # warm-up: allocator, cuDNN autotune, compilation

    def time(self, steps: int) -> float:
        """Images per second over `steps` steps on the fixed batch (no data path)."""
        default = torch.get_num_threads()
        torch.set_num_threads(self.threads or default)
        try:
            _sync(self.rt.device)
            t0 = time.perf_counter()
            for _ in range(steps):
                self.run.step(self.x, self.y)
            _sync(self.rt.device)
            return self.batch * steps / (time.perf_counter() - t0)
        finally:
            torch.set_num_threads(default)


def interleaved(steps: dict[str, Step], rounds: int, per_round: int) -> dict[str, float]:
    """Median images/s of each step over `rounds` rounds, one turn each per round: on a shared, noisy
    machine a slow spell then hits every configuration alike instead of whichever ran at the time."""
    rates: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            rates[name].append(step.time(per_round))
    return {name: statistics.median(r) for name, r in rates.items()}


def augment_rates(aug, device: torch.device, batches: int = 20) -> dict[str, float]:
    images = np.random.default_rng(0).integers(0, 256, (BATCH, 32, 32, 3), dtype=np.uint8)
    albu = augment.AlbumentationsBatch(aug, 0)
    tensor = augment.TensorAugment(aug)
    on_device = torch.from_numpy(images).to(device)
    gen = torch.Generator(device=device).manual_seed(0)
    rates = {}
    for name, fn in (("albumentations", lambda: albu(images)), ("tensor", lambda: tensor(on_device, gen))):
        fn()
        t0 = time.perf_counter()
        for _ in range(batches):
            out = fn()
        _sync(device)
        rates[name] = BATCH * batches / (time.perf_counter() - t0)
        del out
    return rates


def stage_run(params_path: Path, data: Path, images: int, tmp: Path) -> dict:
    """One epoch of the real train_onecycle stage on `images` prepared images; its metrics and peak RSS."""
    raw = yaml.safe_load(params_path.read_text())
    raw["data"]["train_samples"] = images
    test_images = len(np.load(data / "test_labels.npy", allow_pickle=False))
    raw["data"]["test_samples"] = min(1000, test_images)  # the per-epoch test pass is not what is measured
    raw["train"].update(epochs=1, max_lr=0.05)
    (tmp / "params.yaml").write_text(yaml.safe_dump(raw))
    cmd = pipeline.command("train_onecycle", tmp / "params.yaml", tmp, {"data/prepared": data})
    with open(tmp / "stderr.log", "w+") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak RSS, not every child's so far
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        stderr = err.read()
    if proc.returncode != 0:
        sys.exit(f"the stage failed:\n{stderr[-3000:]}")
    metrics = json.loads(pipeline.outputs("train_onecycle", tmp)["metrics/train.json"].read_text())
    metrics["peak_rss_gib"] = usage.ru_maxrss / (2**30 if sys.platform == "darwin" else 2**20)  # bytes / KiB
    metrics["log"] = next((line for line in stderr.splitlines() if line.startswith("device ")), "")
    return metrics


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def machine() -> str:
    """The CPU's model name, the instruction sets that decide precision, and what the probe made of them."""
    info = cpu_info()
    model, flags = info.model, info.flags
    wanted = ["avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_fp16", "asimd", "bf16", "sve"]
    cpu = probe_cpu()
    return (f"{model or platform.processor() or platform.machine()}; "
            f"flags: {' '.join(f for f in wanted if f in flags) or 'none of interest'}; "
            f"native bf16: {'yes' if cpu.bf16 else 'no'} ({cpu.isa}); {torch.get_num_threads()} torch threads")


def measure(args, params) -> tuple[list[Measured], Runtime]:
    tp, width = params.train, params.model.width
    rt = runtime(tp.device, tp.precision, tp.channels_last)
    dev = rt.device
    cpu = probe_cpu() if dev.type == "cpu" else None
    eager = {"(1) step, fp32 eager NCHW (baseline)": Step(Runtime(dev, "fp32", False), tp, width),
             "(2) step, fp32 eager channels-last": Step(Runtime(dev, "fp32", True), tp, width)}
    probes = {}
    for n, precision in ((3, "bf16"), (4, "fp16")):
        if dev.type == "mps" or (dev.type == "cuda" and precision == "bf16" and not torch.cuda.is_bf16_supported()):
            continue  # the stage runs fp32 there
        lowp = Runtime(dev, precision, True)
        if cpu is None or getattr(cpu, precision):
            eager[f"({n}) step, {precision} eager channels-last"] = Step(lowp, tp, width)
        else:  # emulated: seconds per step, so one short step tells the story
            probes[f"({n}) step, {precision} eager channels-last: emulated on this CPU, a one-step probe of "
                   f"{PROBE_BATCH} images"] = Step(lowp, tp, width, batch=PROBE_BATCH)
    others = {f"(5) step as configured: {rt.precision}, {'channels-last' if rt.channels_last else 'NCHW'}, "
              f"compile={tp.compile}": Step(rt, tp, width, tp.compile)}
    first = interleaved(eager, 1, 1)  # a first look, to pick which configuration the options vary
    best = max(first, key=first.get)
    best_rt = eager[best].rt
    label = best[4:].split(":")[0]
    for threads in args.threads:
        others[f"(6) {label}, {threads} threads"] = Step(best_rt, tp, width, threads=threads)
    if args.try_compile:
        others[f"(7) {label}, torch.compile (after its warm-up)"] = Step(best_rt, tp, width, compile_model=True)
    rates = interleaved(eager | others, args.rounds, args.steps) | interleaved(probes, 1, 1)
    rows = [Measured(name, rate, eager=name in eager) for name, rate in sorted(rates.items())]
    for name, rate in augment_rates(params.augment, dev).items():
        rows.append(Measured(f"(8) augmentation alone, {name} backend", rate, step=False))
    return rows, rt


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    p.add_argument("--data", type=Path, default=ROOT / pipeline.stage("download").outs[0],
                   help="prepared folder (default: the download stage's output)")
    p.add_argument("--images", type=int, default=2560, help="train images for the stage's epoch (9); 0: skip it")
    p.add_argument("--steps", type=int, default=3, help="timed steps per configuration per round")
    p.add_argument("--rounds", type=int, default=5, help="rounds; each row is the median over them")
    p.add_argument("--threads", type=lambda s: [int(t) for t in s.split(",")], default=[],
                   help="also time the fastest eager step at these torch thread counts, e.g. 1,2")
    p.add_argument("--try-compile", action="store_true", help="also time torch.compile of the fastest eager step")
    args = p.parse_args()
    params = load_params(args.params)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    rows, rt = measure(args, params)
    stage = None
    if args.images and (args.data / "train_images.npy").is_file():
        with tempfile.TemporaryDirectory() as tmp:
            stage = stage_run(args.params, args.data, args.images, Path(tmp))
        rows.append(Measured(f"(9) train_onecycle stage at its params, one epoch of {args.images} prepared images",
                             stage["images_per_second"]))

    print(f"date: {time.strftime('%Y-%m-%d %H:%M %Z')}; {machine() if rt.device.type == 'cpu' else ''}"
          + (f"device {rt.device} ({torch.cuda.get_device_name()})" if rt.device.type == "cuda" else "")
          + f"; torch {torch.__version__}; command: python benchmarks/bench.py {' '.join(sys.argv[1:])}")
    base = rows[0].images_per_second
    fastest = max((r for r in rows if r.eager), key=lambda r: r.images_per_second)
    print()
    print("| measurement | images/s | TFLOP/s | vs (1) | vs fastest eager |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        rate = r.images_per_second
        tflops = f"{rate * TRAIN_GFLOP_PER_IMAGE / 1e3:.3f}" if r.step else ""
        vs = f"{rate / base:.2f}" if r.step else ""
        vs_fast = f"{rate / fastest.images_per_second:.2f}" if r.step else ""
        print(f"| {r.name} | {rate:,.1f} | {tflops} | {vs} | {vs_fast} |")
    print()
    print(f"fastest eager configuration: {fastest.name}")
    configured = next(r for r in rows if r.name.startswith("(5)"))
    print(f"ratio (5)/fastest eager, the configured step: {configured.images_per_second / fastest.images_per_second:.2f}")
    if stage is not None:
        print(f"the stage chose: {stage['log']}")
        print(f"ratio (9)/fastest eager, the stage at its defaults (target >= 0.9): "
              f"{stage['images_per_second'] / fastest.images_per_second:.2f}")
        print(f"ratio (9)/(1), the stage against plain fp32 (target >= 2.1 where bf16 is native): "
              f"{stage['images_per_second'] / base:.2f}")
        print(f"peak RSS of the train stage (all prepared images loaded): {stage['peak_rss_gib']:.2f} GiB")
    elif args.images:
        print(f"(9) skipped: no prepared data at {args.data} (run `dvc repro download` first)")
    if rt.device.type == "cuda":
        print(f"peak GPU memory allocated: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
