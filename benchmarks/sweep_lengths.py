"""Every rule's pick from real range tests at several sweep lengths and seeds, with their spread.

    python benchmarks/sweep_lengths.py [--params params.yaml] [--data PREPARED]
        [--lengths 391,100] [--seeds 0,1,2] [--width W] [--set SECTION.KEY=VALUE] [--out FILE]

Runs the project's own range test (onecycle.range_test.run_range_test, as the lr_range_test stage
does) at the params' settings, with `lr_range_test.num_iter` and `seed` overridden, and prints each
rule's picks per length, their geometric mean and spread (max/min over seeds), and the ratio of the
geometric means between lengths. On real data a shorter sweep is a different experiment (fewer
training steps before each LR), so the ratio measures the sweep, not only the rules; the rules'
own independence of the sampling is tests/test_lr_range.py::test_picks_do_not_depend_on_the_sweeps_length.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from onecycle import io, pipeline  # noqa: E402
from onecycle.data import load_split  # noqa: E402
from onecycle.device import runtime  # noqa: E402
from onecycle.params import load_params, parse_params, to_dict  # noqa: E402
from onecycle.range_test import run_range_test  # noqa: E402


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or "unknown CPU"


def geomean(values: list[float]) -> float:
    return statistics.geometric_mean(values)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    p.add_argument("--data", type=Path, default=ROOT / pipeline.stage("download").outs[0])
    p.add_argument("--lengths", default="391,100", help="sweep lengths in batches, comma-separated")
    p.add_argument("--seeds", default="0,1,2", help="seeds, comma-separated")
    p.add_argument("--width", type=int, default=None, help="model.width override (a narrow net for a CPU)")
    p.add_argument("--train-samples", type=int, default=None, help="data.train_samples override")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="any other param override, e.g. lr_range_test.end_lr=10 (YAML value)")
    p.add_argument("--out", type=Path, default=None, help="also write every pick as JSON here")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    lengths = [int(n) for n in args.lengths.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    base = to_dict(load_params(args.params))
    if args.width:
        base["model"]["width"] = args.width
    if args.train_samples:
        base["data"]["train_samples"] = args.train_samples
    for item in args.set:
        key, _, value = item.partition("=")
        section, _, name = key.partition(".")
        base[section][name] = yaml.safe_load(value)

    runs = []
    for n in lengths:
        for seed in seeds:
            raw = json.loads(json.dumps(base))
            raw["seed"] = seed
            raw["lr_range_test"]["num_iter"] = n
            params = parse_params(raw)
            rt = runtime(params.train.device, params.train.precision, params.train.channels_last)
            split = load_split(args.data, "train", params.data.train_samples, params.seed)
            t0 = time.perf_counter()
            sweep, result = run_range_test(params, split, rt)
            runs.append({"num_iter": n, "seed": seed, "stop_reason": result.stop_reason,
                         "stop_iteration": result.stop_iteration, "last_lr": sweep.lrs[-1],
                         "suggestions": result.suggestions, "fallbacks": result.fallbacks,
                         "seconds": time.perf_counter() - t0})
            print(f"num_iter {n:4d} seed {seed}: stopped {result.stop_reason} at {result.stop_iteration} "
                  f"(LR {sweep.lrs[-1]:.3g}); " + ", ".join(f"{k} {v:.3g}" for k, v in result.suggestions.items())
                  + (f"; fallbacks: {', '.join(result.fallbacks)}" if result.fallbacks else "")
                  + f" [{runs[-1]['seconds']:.0f} s]", flush=True)

    rules = list(runs[0]["suggestions"])
    print(f"\nmachine: {cpu_model()}; device {rt.device}, precision {rt.precision}; width {base['model']['width']}, "
          f"batch {base['train']['batch_size']}, train images {base['data']['train_samples'] or 'all'}; "
          f"command: python benchmarks/sweep_lengths.py {' '.join(sys.argv[1:])}")
    print("| rule | " + " | ".join(f"{n} batches: geo. mean (spread max/min)" for n in lengths)
          + f" | ratio {lengths[0]}/{lengths[-1]} |")
    print("|---|" + "---:|" * (len(lengths) + 1))
    for rule in rules:
        means = []
        cells = []
        for n in lengths:
            picks = [r["suggestions"][rule] for r in runs if r["num_iter"] == n]
            means.append(geomean(picks))
            cells.append(f"{means[-1]:.3g} ({max(picks) / min(picks):.2f}x)")
        print(f"| `{rule}` | " + " | ".join(cells) + f" | {means[0] / means[-1]:.2f} |")
    if args.out:
        io.write_json(args.out, {"machine": cpu_model(), "command": sys.argv, "runs": runs})


if __name__ == "__main__":
    main()
