"""The LR range test: LR sequences, the lag-free smoother, the sweep's stops, and every rule.

The rules read RAW per-batch losses. The central property: on one underlying curve sampled at 50,
100, 200 and 391 batches, with realistic noise, every rule picks (nearly) the same LR.
"""

from __future__ import annotations

import math
import subprocess
import sys
import warnings

import numpy as np
import pytest
import yaml

from onecycle import pipeline
from onecycle.lr_range import (
    METHODS,
    SPIKE_RISE,
    LrSuggestionWarning,
    NoDescent,
    axis,
    infer_mode,
    lr_sequence,
    read_curve,
    run_sweep,
    smooth,
    suggest,
    suggest_all,
)
from onecycle.params import LrRangeParams
from tests.pipeline import env, image_folder, tiny_params

pytestmark = pytest.mark.timeout(120)
DEFAULT = LrRangeParams()


def log_grid(n: int = 391, start: float = 1e-5, end: float = 1.0) -> np.ndarray:
    return lr_sequence(start, end, n, "exp")


def curve(lrs, losses, decades: float = DEFAULT.smooth_decades, mode: str | None = "exp"):
    return read_curve(lrs, losses, decades, DEFAULT.diverge_threshold, mode)


def picks(lrs, losses, **kw) -> dict[str, float]:
    return {k: v.lr for k, v in suggest_all(curve(lrs, losses, **kw)).items()}


def parabola(lrs: np.ndarray) -> np.ndarray:
    """A clean U in log LR: minimum 1.0 at LR 1e-2, 1 + (log10 lr + 2)^2."""
    return 1.0 + (np.log10(lrs) + 2.0) ** 2


def reference_clean(lr):
    """Shaped like the reference's range test (../shared/SPEC.md): about 2.9 at 1e-5, falling to
    about 1.6 by 3e-3..1e-2, rising to ~2 at 0.03 and blowing up (4.6 at 0.05, 20 at 0.08)."""
    x = np.log10(lr)
    return 1.6 + 1.3 / (1 + np.exp(2.5 * (x + 3.5))) + 0.4 * np.exp(9.2 * (x + 1.52))


def reference_like_loss(lr: float, rng: np.random.Generator, noise: float = 0.06) -> float:
    """One batch's loss on the reference-like curve; 6% per batch is a batch of 128 on CIFAR-10
    (per-image cross-entropy sd ~1 at a mean of ~1.6: 1 / sqrt(128) / 1.6)."""
    return float(reference_clean(lr)) * (1 + noise * rng.standard_normal())


# ----------------------------------------------------------------------------- lr_sequence, axis


def test_exp_sequence_exact_ends_and_constant_ratio():
    lrs = lr_sequence(1e-5, 1.0, 391, "exp")
    assert len(lrs) == 391 and lrs[0] == 1e-5 and lrs[-1] == 1.0
    np.testing.assert_allclose(lrs[1:] / lrs[:-1], (1.0 / 1e-5) ** (1 / 390), rtol=1e-12)


def test_linear_sequence_exact_ends_and_constant_step():
    lrs = lr_sequence(0.01, 1.0, 100, "linear")
    assert lrs[0] == 0.01 and lrs[-1] == 1.0
    np.testing.assert_allclose(np.diff(lrs), 0.99 / 99, rtol=1e-10)


@pytest.mark.parametrize(
    "args", [(1e-5, 1.0, 1, "exp"), (1.0, 1e-5, 10, "exp"), (0.0, 1.0, 10, "exp"), (1e-5, 1.0, 10, "cosine")]
)
def test_bad_sequence_arguments_raise(args):
    with pytest.raises(ValueError):
        lr_sequence(*args)


def test_the_step_mode_is_read_from_the_lrs():
    assert infer_mode(lr_sequence(1e-5, 1.0, 50, "exp")) == "exp"
    assert infer_mode(lr_sequence(1e-3, 1.0, 50, "linear")) == "linear"
    assert infer_mode([1e-3, 2e-3, 7e-3, 9e-3]) == "exp"  # neither: read on a log axis


# ----------------------------------------------------------------------------- the smoother


def test_centred_mean_by_hand_and_raw_ends():
    t = np.arange(5.0)
    y = np.array([4.0, 2.0, 6.0, 0.0, 8.0])
    # width 2: half-width 1, shrunk at the ends (0 at t=0 and t=4)
    np.testing.assert_allclose(smooth(t, y, 2.0), [4.0, 4.0, 8 / 3, 14 / 3, 8.0])


def test_no_lag_a_straight_line_is_left_exactly_where_it_is():
    # The old exponential average lagged ~50 batches; a centred window has no lag at any sampling.
    for n in (50, 391):
        t = axis(log_grid(n), "exp")
        line = 3.0 - 0.2 * t
        np.testing.assert_allclose(smooth(t, line, 0.5), line, rtol=1e-12)


def test_the_median_leaves_a_monotone_blow_up_in_place_the_mean_does_not():
    t = np.linspace(-2.0, -1.0, 101)
    y = np.exp(9.2 * (t + 1.52))  # convex and rising, as a blow-up
    np.testing.assert_allclose(smooth(t, y, 0.5, "median"), y, rtol=1e-12)
    assert np.all(smooth(t, y, 0.5)[1:-1] > y[1:-1])  # the mean is pulled up: it would read the edge early


# ----------------------------------------------------------------------------- the sweep and its stops


class Recorder:
    """A step function that records every (iteration, lr) it is called with."""

    def __init__(self, loss_of):
        self.loss_of = loss_of
        self.calls: list[tuple[int, float]] = []

    def __call__(self, iteration: int, lr: float) -> float:
        self.calls.append((iteration, lr))
        return self.loss_of(iteration, lr)


def test_completed_sweep_records_every_batch_with_the_lr_it_trained_with():
    params = LrRangeParams(start_lr=1e-4, end_lr=1e-1, num_iter=50, smooth_decades=0.5)
    step = Recorder(lambda i, lr: 2.0 - 0.01 * i)
    result = run_sweep(step, params, progress=False)
    assert result.stop_reason == "completed"
    assert result.iterations == list(range(50)) and result.stop_iteration == 49
    # the off-by-one guard: row i holds the LR passed to step for batch i, not the next one
    assert list(zip(result.iterations, result.lrs)) == step.calls
    assert result.lrs == lr_sequence(1e-4, 1e-1, 50, "exp").tolist()
    assert result.losses == [2.0 - 0.01 * i for i in range(50)]
    np.testing.assert_allclose(result.smoothed, smooth(axis(np.array(result.lrs), "exp"), result.losses, 0.5))
    assert list(result.columns()) == ["iteration", "lr", "loss", "smoothed"]


def test_linear_sweep_passes_linear_lrs():
    params = LrRangeParams(start_lr=0.01, end_lr=0.5, num_iter=20, step_mode="linear", smooth_decades=0.3)
    step = Recorder(lambda i, lr: 1.0)
    run_sweep(step, params, progress=False)
    assert [lr for _, lr in step.calls] == lr_sequence(0.01, 0.5, 20, "linear").tolist()


def blow_up(i: int, lr: float) -> float:
    """Falls from 3 to 1 by 1e-2, then multiplies by 10 per 0.2 decade: a clean blow-up."""
    x = math.log10(lr)
    return 1.0 + 2.0 / (1 + math.exp(4 * (x + 3.5))) + (10 ** ((x + 1.6) / 0.2) if x > -1.6 else 0.0)


def test_divergence_stops_the_sweep_and_calls_no_more():
    step = Recorder(blow_up)
    result = run_sweep(step, LrRangeParams(), progress=False)
    assert result.stop_reason == "diverged"
    assert len(step.calls) == result.stop_iteration + 1 < 391  # nothing trained after the stop
    # the trailing mean (window 0.5 decade) lags by a quarter decade: it stops past the blow-up
    assert 10**-1.5 < result.lrs[-1] < 10**-0.8


def test_stops_and_rules_agree_the_blow_up_is_read_from_what_was_recorded():
    for loss_of in (blow_up, plateau):
        result = run_sweep(loss_of, LrRangeParams(), progress=False)
        assert result.stop_reason in ("diverged", "back above its starting loss")
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no rule falls back: the turn is in the recorded losses
            found = suggest_all(curve(result.lrs, result.losses))
        assert found["edge"].lr < result.lrs[-1] and found["spike"].lr <= found["edge"].lr


def plateau(i: int, lr: float) -> float:
    """BatchNorm-like: 3.0 falling to 1.8 by 1e-2, then climbing to a plateau at 3.3 (never 5x)."""
    x = math.log10(lr)
    return 1.8 + 1.2 / (1 + math.exp(4 * (x + 3.5))) + 1.5 / (1 + math.exp(-12 * (x + 1.3)))


def test_a_loss_back_above_its_start_for_a_window_stops_the_sweep():
    result = run_sweep(plateau, LrRangeParams(), progress=False)
    assert result.stop_reason == "back above its starting loss"
    edge = suggest(result.lrs, result.losses, "edge")
    assert 10**-1.6 < edge < 10**-1.1  # the climb past the start (~3.0), at ~10^-1.35
    off = run_sweep(plateau, LrRangeParams(stop_above_start=False), progress=False)
    assert off.stop_reason == "completed"


def test_a_sweep_that_never_learned_is_not_stopped_and_is_refused():
    # noise around a flat 2.3: the loss never fell 10%, so rising above its first value means nothing
    rng = np.random.default_rng(0)
    result = run_sweep(lambda i, lr: 2.3 * (1 + 0.05 * rng.standard_normal()), LrRangeParams(), progress=False)
    assert result.stop_reason == "completed"
    with pytest.raises(NoDescent, match=r"never fell 10% below its first losses .*lower lr_range_test.start_lr"):
        curve(result.lrs, result.losses)


def test_one_ragged_batch_does_not_stop_the_sweep():
    result = run_sweep(lambda i, lr: 6.0 if i == 200 else 1.0 + 1.0 / (1 + i), LrRangeParams(), progress=False)
    assert result.stop_reason == "completed"


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_loss_stops_at_once_and_is_recorded(bad):
    step = Recorder(lambda i, lr: bad if i == 7 else 2.0)
    result = run_sweep(step, LrRangeParams(num_iter=50), progress=False)
    assert result.stop_reason == "non-finite loss"
    assert result.stop_iteration == 7 and len(step.calls) == 8 and len(result.losses) == 8
    last = result.losses[-1]
    assert math.isnan(last) if math.isnan(bad) else last == bad
    assert math.isnan(result.smoothed[-1]) and result.smoothed[:7] == [2.0] * 7


def test_step_returning_a_tensor_like_value_is_converted_to_float():
    result = run_sweep(lambda i, lr: np.float32(1.5), LrRangeParams(num_iter=3), progress=False)
    assert all(type(x) is float for x in result.losses)


def test_sweep_of_a_tiny_torch_model_records_the_optimizer_lr():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    inputs, targets = 30 * torch.randn(64, 8), torch.randint(0, 3, (64,))  # large inputs: LR 10 blows it up
    model = torch.nn.Linear(8, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    used: list[float] = []

    def step(iteration: int, lr: float) -> float:
        for group in optimizer.param_groups:
            group["lr"] = lr
        used.append(optimizer.param_groups[0]["lr"])
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(inputs), targets)
        loss.backward()
        optimizer.step()
        return loss.item()

    result = run_sweep(step, LrRangeParams(start_lr=1e-5, end_lr=10, num_iter=60), progress=False)
    assert result.lrs == used
    assert result.stop_reason != "completed"  # LR 10 on inputs of scale 30 blows it up


# ----------------------------------------------------------------------------- rules: clean curves


def test_rules_on_a_clean_u():
    lrs = log_grid()
    found = picks(lrs, parabola(lrs))
    # minimum: the middle of the bottom (symmetric about 1e-2), / 10
    assert found["minimum"] == pytest.approx(1e-3, rel=0.05)
    # spike: 1 + d^2 first exceeds 1.25 x its lowest about half a decade past the minimum
    assert found["spike"] == pytest.approx(10 ** (-2 + math.sqrt(SPIKE_RISE)), rel=0.1)
    assert 1e-4 < found["valley"] < 1e-2 and found["steepest"] < found["valley"]
    assert all(v in set(lrs.tolist()) for v in found.values())  # every pick is a swept LR


def test_steepest_is_the_middle_of_an_s_shaped_descent():
    lrs = log_grid()
    x = np.log10(lrs)
    losses = 2.0 - np.tanh(2.0 * (x + 3.0)) + 0.5 * np.exp(4.0 * (x + 1.0))  # steepest fall at 1e-3
    assert picks(lrs, losses)["steepest"] == pytest.approx(1e-3, rel=0.1)


def test_a_linear_sweep_is_read_on_a_linear_axis():
    lrs = lr_sequence(1e-3, 1.0, 400, "linear")
    losses = 2.0 - np.tanh(8.0 * (lrs - 0.4)) + 20 * np.maximum(lrs - 0.85, 0)  # steepest at LR 0.4
    c = curve(lrs, losses, mode=None)
    assert c.mode == "linear"
    assert suggest_all(c)["steepest"].lr == pytest.approx(0.4, rel=0.05)


def test_valley_is_the_longest_descent_not_the_first_one():
    # a short dip, a bump, then a long steady descent to 1e-1: the valley is the long one
    lrs = log_grid(200)
    losses = np.concatenate([np.linspace(3.0, 2.8, 10), np.linspace(3.2, 1.0, 150), np.linspace(1.1, 3.0, 40)])
    assert 10**-3.2 < picks(lrs, losses)["valley"] < 10**-1.8  # 2/3 down the long descent, not in the dip


def test_minimum_snaps_to_a_swept_lr_and_never_goes_below_the_first():
    lrs = log_grid(100, 1e-4, 1.0)
    losses = 1.0 + (np.log10(lrs) + 3.0) ** 2  # bottom at 1e-3: / 10 lies below the first LR's 10^-3.9
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LrSuggestionWarning)
        found = picks(lrs, losses)
    assert found["minimum"] == lrs[0]


def test_suggest_all_returns_every_method_in_order():
    lrs = log_grid()
    found = suggest_all(curve(lrs, parabola(lrs)))
    assert list(found) == list(METHODS)
    for method, pick in found.items():
        assert pick.lr == suggest(lrs, parabola(lrs), method, mode="exp")


def test_unknown_method_raises():
    with pytest.raises(ValueError, match="edge, spike, steepest, valley, minimum"):
        suggest([1e-3, 1e-2], [1.0, 0.5], "fastest")


# ----------------------------------------------------------------------------- rules: noisy, broken


def test_suggest_reads_a_raw_noisy_curve_as_the_clean_one():
    # users have raw recorded curves (the reference publishes one): no pre-smoothing needed
    lrs = log_grid()
    rng = np.random.default_rng(1)
    clean = picks(lrs, reference_clean(lrs))
    for method in METHODS:
        noisy = suggest(lrs, reference_clean(lrs) * (1 + 0.06 * rng.standard_normal(len(lrs))), method)
        assert 1 / 1.5 < noisy / clean[method] < 1.5, method


def test_non_finite_points_are_dropped_before_the_rules():
    lrs = log_grid()
    losses = parabola(lrs)
    broken = losses.copy()
    broken[[50, 120, 200]] = [np.nan, np.inf, -np.inf]
    assert picks(lrs, broken) == picks(np.delete(lrs, [50, 120, 200]), np.delete(losses, [50, 120, 200]))


@pytest.mark.parametrize("losses", [np.full(100, 2.3), np.linspace(1.0, 3.0, 100)])
def test_a_curve_that_never_falls_is_refused(losses):
    with pytest.raises(NoDescent, match="never fell"):
        curve(log_grid(100), losses)


def test_without_a_turn_upward_spike_and_edge_fall_back_to_minimum_and_say_why():
    lrs = log_grid(100)
    losses = np.linspace(3.0, 1.0, 100)  # the sweep ended before the loss turned
    with pytest.warns(LrSuggestionWarning, match="never rises"):
        found = suggest_all(curve(lrs, losses))
    assert found["spike"].lr == found["edge"].lr == found["minimum"].lr
    assert "raise lr_range_test.end_lr" in found["edge"].fallback
    assert found["minimum"].fallback is None and found["valley"].fallback is None


def test_a_readable_curve_gives_no_warning():
    lrs = log_grid()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        suggest_all(curve(lrs, reference_clean(lrs)))


@pytest.mark.parametrize("lrs, losses", [([], []), ([1e-3], [1.0]), ([1e-3, 1e-2], [1.0, math.nan])])
def test_fewer_than_two_finite_points_is_a_clear_error(lrs, losses):
    with pytest.raises(ValueError, match="at least 2 points"):
        suggest(lrs, losses, "minimum")


def test_mismatched_lengths_and_unsorted_lrs_are_errors():
    with pytest.raises(ValueError, match="differ in length"):
        suggest([1e-3, 1e-2, 1e-1], [1.0, 0.5], "minimum")
    with pytest.raises(ValueError, match="increasing"):
        suggest([1e-2, 1e-3, 1e-1], [1.0, 0.5, 0.7], "minimum")


# ----------------------------------------------------------------------------- the reference's curve


@pytest.mark.parametrize("seed", range(5))
def test_edge_reads_the_reference_like_curve_as_the_reference_did(seed):
    rng = np.random.default_rng(seed)
    result = run_sweep(lambda i, lr: reference_like_loss(lr, rng), LrRangeParams(), progress=False)
    assert result.stop_reason == "diverged"
    assert 0.06 < result.lrs[-1] < 0.12  # the reference's sweep ended near 0.084
    found = picks(result.lrs, result.losses)
    assert 0.08 / 1.5 <= found["edge"] <= 0.08 * 1.5  # the reference picked ~0.08
    assert found["spike"] < found["edge"]  # the onset of the turn, before the blow-up
    assert found["minimum"] < found["spike"] / 5
    assert 1e-4 <= found["valley"] <= 1e-2


def test_picks_do_not_depend_on_the_sweeps_length():
    """One underlying curve (the reference-like one, 6% noise per batch) swept at 50, 100, 200
    and 391 batches, 8 draws each. Every rule's typical pick (the median over the draws) agrees
    within 1.5x across the lengths; single draws within 2x (at 50 batches neighbouring LRs are
    1.27x apart, so one step of the grid plus the noise of a 3-batch window)."""
    found = {n: {m: [] for m in METHODS} for n in (50, 100, 200, 391)}
    for n in found:
        for draw in range(8):
            rng = np.random.default_rng([n, draw])
            result = run_sweep(lambda i, lr: reference_like_loss(lr, rng), LrRangeParams(num_iter=n), progress=False)
            for method, lr in picks(result.lrs, result.losses).items():
                found[n][method].append(lr)
    for method in METHODS:
        typical = [float(np.median(found[n][method])) for n in found]
        assert max(typical) / min(typical) < 1.5, (method, typical)
        for draw in range(8):
            single = [found[n][method][draw] for n in found]
            assert max(single) / min(single) < 2.0, (method, draw, single)


# ----------------------------------------------------------------------------- any recorded curve


def test_suggest_command_on_our_csv_and_on_two_plain_columns(tmp_path):
    rng = np.random.default_rng(0)
    lrs = log_grid()
    losses = reference_clean(lrs) * (1 + 0.06 * rng.standard_normal(len(lrs)))
    ours = tmp_path / "lr_losses.csv"
    ours.write_text("iteration,lr,loss,smoothed_loss\n" + "".join(
        f"{i},{lr:.17g},{loss:.17g},0\n" for i, (lr, loss) in enumerate(zip(lrs, losses))))
    plain = tmp_path / "plain.csv"
    plain.write_text("".join(f"{lr:.17g}, {loss:.17g}\n" for lr, loss in zip(lrs, losses)))
    outputs = []
    for path in (ours, plain):
        out = subprocess.run([sys.executable, "-m", "onecycle.lr_range", "suggest", str(path)], env=env(),
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        outputs.append(out.stdout.split(":", 1)[1])
        for method in METHODS:
            assert f"  {method} " in out.stdout
    assert outputs[0] == outputs[1]  # the same curve, the same picks
    expected = picks(lrs, losses)
    assert f"edge      {expected['edge']:.4g}" in outputs[0]


def test_suggest_command_refuses_a_flat_curve_with_exit_2(tmp_path):
    flat = tmp_path / "flat.csv"
    flat.write_text("lr,loss\n" + "".join(f"{lr:.17g},2.3\n" for lr in log_grid(50)))
    out = subprocess.run([sys.executable, "-m", "onecycle.lr_range", "suggest", str(flat)], env=env(),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and out.stderr.startswith("error: the loss never fell")


@pytest.mark.slow
def test_the_stage_stops_before_writing_when_the_loss_never_falls(tmp_path):
    folder = image_folder(tmp_path / "images", n_train=64, n_test=16, classes=3)
    raw = tiny_params(folder)
    raw["lr_range_test"].update(start_lr=1e-9, end_lr=1e-7, num_iter=20, smooth_decades=0.4)  # too low to learn
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    subprocess.run(pipeline.command("download", params, tmp_path), env=env(), check=True, capture_output=True)
    out = subprocess.run(pipeline.command("lr_range_test", params, tmp_path,
                                          {"data/prepared": tmp_path / "data" / "prepared"}),
                         env=env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "error: the loss never fell" in out.stderr and "lower lr_range_test.start_lr (now 1e-09)" in out.stderr
    assert not [p for p in pipeline.outputs("lr_range_test", tmp_path).values() if p.exists()]


# ----------------------------------------------------------------------------- the plot


def test_plot_lr_range_writes_a_png(tmp_path):
    from onecycle.plots import plot_lr_range

    lrs = log_grid(100)
    losses = list(parabola(lrs)[:-1]) + [math.nan]  # a sweep that stopped on NaN
    smoothed = list(smooth(axis(lrs[:-1], "exp"), np.array(losses[:-1]), 0.5)) + [math.nan]
    found = {"edge": 0.05, "spike": 0.03, "steepest": 1e-4, "valley": 1e-3, "minimum": 1e-5}
    plot_lr_range(lrs, losses, smoothed, found, "edge", tmp_path / "lr_range.png")
    assert (tmp_path / "lr_range.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    plot_lr_range(lrs, [2.0] * 100, [2.0] * 100, {}, "edge", tmp_path / "flat.png")  # nothing to clip
    assert (tmp_path / "flat.png").stat().st_size > 0
