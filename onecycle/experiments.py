"""Seeds aggregated: test accuracy mean ± sd per configuration, over the experiments DVC ran.

    dvc exp run --queue -S seed=1 ; ... ; dvc exp run --queue -S seed=5 ; dvc queue start
    dvc exp show --json | python -m onecycle.experiments        # or: python -m onecycle.experiments

Reads `dvc exp show --json` (run for you when nothing is piped in), takes every experiment (the
workspace and the commits themselves are left out, so nothing is counted twice), groups them by
their params with `seed` left out, and prints one row per configuration: the params that differ
between configurations, the seeds, and `metrics/eval.json`'s accuracy as mean ± sample sd (%).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

METRIC_FILE, METRIC = "metrics/eval.json", "accuracy"


def experiments(shown: Any) -> Iterator[tuple[dict[str, Any], float | None]]:
    """(flattened params, accuracy or None) of every experiment in `dvc exp show --json`'s output."""
    for baseline in shown if isinstance(shown, list) else []:
        for group in baseline.get("experiments") or []:
            for rev in group.get("revs") or []:
                data = rev.get("data") or {}
                params = _flatten((data.get("params") or {}).get("params.yaml", {}).get("data", {}))
                metrics = (data.get("metrics") or {}).get(METRIC_FILE, {}).get("data", {})
                if params:
                    yield params, metrics.get(METRIC)


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out |= _flatten(value, f"{name}.")
        else:
            out[name] = json.dumps(value) if isinstance(value, list) else value
    return out


def by_configuration(rows: list[tuple[dict[str, Any], float | None]]) -> list[dict[str, Any]]:
    """One entry per configuration (params but seed): its differing params, seeds and accuracies."""
    groups: dict[tuple, dict[str, Any]] = {}
    for params, accuracy in rows:
        rest = {k: v for k, v in params.items() if k != "seed"}
        entry = groups.setdefault(tuple(sorted(rest.items(), key=lambda kv: kv[0])),
                                  {"params": rest, "seeds": [], "accuracy": []})
        entry["seeds"].append(params.get("seed"))
        if accuracy is not None:
            entry["accuracy"].append(float(accuracy))
    entries = list(groups.values())
    keys = sorted({k for e in entries for k in e["params"]})
    differing = [k for k in keys if len({repr(e["params"].get(k)) for e in entries}) > 1]
    for e in entries:
        e["differs"] = {k: e["params"].get(k) for k in differing}
    return entries


def table(entries: list[dict[str, Any]]) -> str:
    lines = ["| configuration | seeds | runs | accuracy % (mean ± sd) |", "|---|---|---:|---:|"]
    for e in entries:
        config = ", ".join(f"{k}={v}" for k, v in e["differs"].items()) or "(all the same)"
        acc = e["accuracy"]
        value = "–" if not acc else f"{statistics.mean(acc):.2f}" + (
            f" ± {statistics.stdev(acc):.2f}" if len(acc) > 1 else "")
        seeds = ", ".join(str(s) for s in sorted(e["seeds"], key=lambda s: (s is None, s)))
        lines.append(f"| {config} | {seeds} | {len(acc)} | {value} |")
    return "\n".join(lines)


def main() -> int:
    if sys.stdin.isatty() or "--run" in sys.argv:
        shown = subprocess.run([sys.executable, "-m", "dvc", "exp", "show", "--json"], capture_output=True,
                               text=True, check=False)
        if shown.returncode != 0:
            print(f"error: dvc exp show failed: {shown.stderr.strip()}", file=sys.stderr)
            return 2
        text = shown.stdout
    else:
        text = sys.stdin.read()
    try:
        rows = list(experiments(json.loads(text)))
    except ValueError as err:
        print(f"error: not the output of `dvc exp show --json`: {err}", file=sys.stderr)
        return 2
    if not rows:
        print("error: no experiments: queue some (dvc exp run --queue -S seed=1 ...) and run them "
              "(dvc queue start)", file=sys.stderr)
        return 2
    print(table(by_configuration(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
