"""Side-by-side throughput of the training step, the augmentation and the real stage, in one run.

    python benchmarks/bench.py [--params params.yaml] [--data data/prepared] [--images 2560]

Prints a markdown table and the ratios the targets are stated in (README, benchmarks/RESULTS.md):
(2)/(1) the configured step against plain fp32 eager NCHW, and (4)/(2) the whole stage (data,
augmentation, step and progress bar) against its step alone. Nothing here is asserted: the
machines are shared and noisy, so numbers are read side by side, never against a clock.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from onecycle import augment
from onecycle.device import Runtime, runtime
from onecycle.model import build_model
from onecycle.params import TrainParams, load_params
from onecycle.train import build_optimizer, train_batch

ROOT = Path(__file__).resolve().parents[1]
TRAIN_GFLOP_PER_IMAGE = 2.3  # SPEC.md: forward 0.76 GFLOP, forward + backward about 2.3 per 32x32 image
BATCH = 128


def step_rate(rt: Runtime, tp: TrainParams, width: int, compile_model: bool, steps: int) -> float:
    """Images per second of the bare training step on one synthetic batch (no data path)."""
    torch.manual_seed(0)
    model = rt.prepare_model(build_model(width))
    optimizer = build_optimizer(model, tp, 0.01)
    net = torch.compile(model, dynamic=False) if compile_model else model
    scaler, loss_fn = rt.grad_scaler(), torch.nn.CrossEntropyLoss()
    x = rt.to_input(torch.randn(BATCH, 3, 32, 32))
    y = torch.randint(0, 10, (BATCH,), device=rt.device)
    for _ in range(3 if compile_model else 2):  # warm-up: allocator, cuDNN autotune, compilation
        train_batch(net, optimizer, scaler, rt, loss_fn, x, y)
    _sync(rt)
    t0 = time.perf_counter()
    for _ in range(steps):
        train_batch(net, optimizer, scaler, rt, loss_fn, x, y)
    _sync(rt)
    return BATCH * steps / (time.perf_counter() - t0)


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
        if device.type == "cuda":
            torch.cuda.synchronize()
        rates[name] = BATCH * batches / (time.perf_counter() - t0)
        del out
    return rates


def stage_run(params_path: Path, data: Path, images: int, tmp: Path) -> dict:
    """One epoch of the real train_onecycle stage on `images` prepared images; its metrics and peak RSS."""
    raw = yaml.safe_load(params_path.read_text())
    raw["data"]["train_samples"] = images
    raw["data"]["test_samples"] = 1000
    raw["train"].update(epochs=1, max_lr=0.05)
    (tmp / "params.yaml").write_text(yaml.safe_dump(raw))
    cmd = [sys.executable, str(ROOT / "stages" / "train_onecycle.py"), "--params", str(tmp / "params.yaml"),
           "--data", str(data), "--model", str(tmp / "model.pt"), "--history", str(tmp / "h.csv"),
           "--figure", str(tmp / "t.png"), "--metrics", str(tmp / "train.json"), "--checkpoint", str(tmp / "c.pt")]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"the stage failed:\n{proc.stderr[-3000:]}")
    metrics = json.loads((tmp / "train.json").read_text())
    metrics["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    return metrics


def _sync(rt: Runtime) -> None:
    if rt.device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    p.add_argument("--data", type=Path, default=ROOT / "data" / "prepared")
    p.add_argument("--images", type=int, default=2560, help="train images for the stage's epoch (4)")
    p.add_argument("--steps", type=int, default=8, help="timed steps per step measurement")
    args = p.parse_args()
    params = load_params(args.params)
    tp = params.train
    rt = runtime(tp.device, tp.precision, tp.channels_last)
    base = Runtime(rt.device, "fp32", False)
    if rt.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()

    rows = []
    r1 = step_rate(base, tp, params.model.width, False, args.steps)
    rows.append(("(1) step, fp32 eager NCHW (baseline)", r1))
    r2 = step_rate(rt, tp, params.model.width, tp.compile, args.steps)
    rows.append((f"(2) step as configured: {rt.precision}, channels_last={rt.channels_last}, compile={tp.compile}", r2))
    for name, rate in augment_rates(params.augment, rt.device).items():
        rows.append((f"(3) augmentation alone, {name} backend", rate))
    stage = None
    if (args.data / "train_images.npy").is_file():
        with tempfile.TemporaryDirectory() as tmp:
            stage = stage_run(args.params, args.data, args.images, Path(tmp))
        rows.append((f"(4) train_onecycle stage, one epoch of {args.images} prepared images", stage["images_per_second"]))

    print(f"date: {time.strftime('%Y-%m-%d %H:%M %Z')}; machine: {platform.machine()}, {torch.get_num_threads()} "
          f"torch threads, device {rt.device}"
          + (f" ({torch.cuda.get_device_name()})" if rt.device.type == "cuda" else "")
          + f"; torch {torch.__version__}; command: python benchmarks/bench.py {' '.join(sys.argv[1:])}")
    print()
    print("| measurement | images/s | TFLOP/s |")
    print("|---|---:|---:|")
    for name, rate in rows:
        tflops = rate * TRAIN_GFLOP_PER_IMAGE / 1e3 if name[:3] in ("(1)", "(2)", "(4)") else None
        print(f"| {name} | {rate:,.1f} | {'' if tflops is None else f'{tflops:.3f}'} |")
    print()
    print(f"ratio (2)/(1), configured step against the baseline: {r2 / r1:.2f}")
    if stage is not None:
        print(f"ratio (4)/(2), the stage against its bare step: {stage['images_per_second'] / r2:.2f}")
        print(f"(5) peak RSS of the train stage (all prepared images loaded): {stage['peak_rss_gib']:.2f} GiB")
    else:
        print(f"(4) skipped: no prepared data at {args.data} (run `dvc repro download` first)")
    if rt.device.type == "cuda":
        print(f"(5) peak GPU memory allocated: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
