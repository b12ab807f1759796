"""Stage lr_range_test: sweep the LR over batches of the training set and pick max_lr by a stated rule.

Writes the curve (plots/lr_losses.csv), every rule's suggestion and the chosen max_lr
(metrics/max_lr.json), the picks for `dvc plots` to mark on the curve (plots/lr_picks.csv) and the
figure (plots/lr_range.png); see onecycle/range_test.py.
"""

from __future__ import annotations

from pathlib import Path

from onecycle import plots
from onecycle.cli import parser, run_stage
from onecycle.data import load_split
from onecycle.device import runtime
from onecycle.params import load_params
from onecycle.range_result import write_curve, write_picks
from onecycle.range_test import run_range_test

def main() -> None:
    p = parser(__doc__)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--curve", type=Path, required=True)
    p.add_argument("--picks", type=Path, required=True)
    p.add_argument("--result", type=Path, required=True)
    p.add_argument("--details", type=Path, required=True, help="the result's words and settings (not a metric)")
    p.add_argument("--figure", type=Path, required=True)
    args = p.parse_args()
    run_stage(lambda: range_test(args), [args.curve, args.picks, args.result, args.details, args.figure])


def range_test(args) -> None:
    params = load_params(args.params)
    tp = params.train
    rt = runtime(tp.device, tp.precision, tp.channels_last)
    split = load_split(args.data, "train", params.data.train_samples, params.seed)
    sweep, result = run_range_test(params, split, rt)
    write_curve(args.curve, sweep)
    write_picks(args.picks, sweep, result.suggestions, result.method, result.fallbacks)
    result.write(args.result, args.details)
    plots.plot_lr_range(sweep.lrs, sweep.losses, sweep.smoothed, result.suggestions, result.method, args.figure,
                        fallbacks=result.fallbacks)


if __name__ == "__main__":
    main()
