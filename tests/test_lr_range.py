"""The LR range test: LR sequences, smoothing, the sweep's stops, and every suggestion rule."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from onecycle.lr_range import (
    METHODS,
    SPIKE_RISE,
    LrSuggestionWarning,
    lr_sequence,
    run_sweep,
    smooth,
    suggest,
    suggest_all,
)
from onecycle.params import LrRangeParams

pytestmark = pytest.mark.timeout(60)


def log_grid(n: int = 391, start: float = 1e-5, end: float = 1.0) -> np.ndarray:
    return lr_sequence(start, end, n, "exp")


def parabola(lrs: np.ndarray) -> np.ndarray:
    """A clean U in log LR: minimum 1.0 at LR 1e-2, 1 + (log10 lr + 2)^2."""
    return 1.0 + (np.log10(lrs) + 2.0) ** 2


# ----------------------------------------------------------------------------- lr_sequence


def test_exp_sequence_exact_ends_and_constant_ratio():
    lrs = lr_sequence(1e-5, 1.0, 391, "exp")
    assert len(lrs) == 391
    assert lrs[0] == 1e-5 and lrs[-1] == 1.0
    ratios = lrs[1:] / lrs[:-1]
    np.testing.assert_allclose(ratios, (1.0 / 1e-5) ** (1 / 390), rtol=1e-12)
    i = np.arange(391)
    np.testing.assert_allclose(lrs, 1e-5 * (1.0 / 1e-5) ** (i / 390), rtol=1e-12)


def test_linear_sequence_exact_ends_and_constant_step():
    lrs = lr_sequence(0.01, 1.0, 100, "linear")
    assert lrs[0] == 0.01 and lrs[-1] == 1.0
    np.testing.assert_allclose(np.diff(lrs), 0.99 / 99, rtol=1e-10)


def test_two_point_sequence_is_the_two_ends():
    assert lr_sequence(1e-3, 1e-1, 2, "exp").tolist() == [1e-3, 1e-1]


@pytest.mark.parametrize(
    "args", [(1e-5, 1.0, 1, "exp"), (1.0, 1e-5, 10, "exp"), (0.0, 1.0, 10, "exp"), (1e-5, 1.0, 10, "cosine")]
)
def test_bad_sequence_arguments_raise(args):
    with pytest.raises(ValueError):
        lr_sequence(*args)


# ----------------------------------------------------------------------------- smooth


def test_smooth_matches_hand_computed_bias_corrected_ema():
    beta = 0.9
    # avg: 0.1*4 = 0.4 -> 0.9*0.4 + 0.1*2 = 0.56 -> 0.9*0.56 + 0.1*6 = 1.104
    # corrected by 1 - 0.9, 1 - 0.81, 1 - 0.729:
    expected = [0.4 / 0.1, 0.56 / 0.19, 1.104 / 0.271]
    np.testing.assert_allclose(smooth([4.0, 2.0, 6.0], beta), expected, rtol=1e-12)
    assert smooth([4.0, 2.0, 6.0], beta)[0] == pytest.approx(4.0)  # the correction removes the zero start


def test_smooth_with_beta_zero_is_identity_and_constant_stays_constant():
    np.testing.assert_allclose(smooth([3.0, 1.0, 2.0], 0.0), [3.0, 1.0, 2.0])
    np.testing.assert_allclose(smooth([2.5] * 50, 0.98), 2.5, rtol=1e-12)


# ----------------------------------------------------------------------------- run_sweep


class Recorder:
    """A step function that records every (iteration, lr) it is called with."""

    def __init__(self, loss_of):
        self.loss_of = loss_of
        self.calls: list[tuple[int, float]] = []

    def __call__(self, iteration: int, lr: float) -> float:
        self.calls.append((iteration, lr))
        return self.loss_of(iteration, lr)


def test_completed_sweep_records_every_batch_with_the_lr_it_trained_with():
    params = LrRangeParams(start_lr=1e-4, end_lr=1e-1, num_iter=50, smooth_beta=0.9)
    step = Recorder(lambda i, lr: 2.0 - 0.01 * i)
    result = run_sweep(step, params, progress=False)
    assert result.stop_reason == "completed"
    assert len(result.lrs) == len(result.losses) == len(result.smoothed) == 50
    assert result.iterations == list(range(50)) and result.stop_iteration == 49
    # the off-by-one guard: row i holds the LR passed to step for batch i, not the next one
    assert [(i, lr) for i, lr in zip(result.iterations, result.lrs)] == step.calls
    assert result.lrs == lr_sequence(1e-4, 1e-1, 50, "exp").tolist()
    assert result.losses == [2.0 - 0.01 * i for i in range(50)]
    np.testing.assert_allclose(result.smoothed, smooth(result.losses, 0.9))
    assert result.best_smoothed == min(result.smoothed)
    assert list(result.columns()) == ["iteration", "lr", "loss", "smoothed"]


def test_linear_sweep_passes_linear_lrs():
    params = LrRangeParams(start_lr=0.01, end_lr=0.5, num_iter=20, step_mode="linear")
    step = Recorder(lambda i, lr: 1.0)
    run_sweep(step, params, progress=False)
    assert [lr for _, lr in step.calls] == lr_sequence(0.01, 0.5, 20, "linear").tolist()


def test_divergence_stops_at_the_first_smoothed_loss_over_threshold_and_calls_no_more():
    # beta 0 makes smoothed == raw, so the stop iteration is known exactly: best 1.0 at i=9,
    # then the loss doubles each batch: 2, 4, 8 (> 5 x 1.0 at i=12).
    params = LrRangeParams(num_iter=100, smooth_beta=0.0, diverge_threshold=5.0)
    step = Recorder(lambda i, lr: 10.0 - i if i < 10 else 2.0 ** (i - 9))
    result = run_sweep(step, params, progress=False)
    assert result.stop_reason == "diverged"
    assert result.stop_iteration == 12 and result.iterations[-1] == 12
    assert len(step.calls) == 13  # nothing trained after the stop
    assert result.best_smoothed == 1.0


def test_a_loss_back_above_its_start_stops_the_sweep():
    # BatchNorm networks plateau above chance instead of exploding 5x: 3.0 -> 1.8 -> 3.3 flat.
    losses = [3.0 - 0.1 * i for i in range(13)] + [1.8 + 0.3 * i for i in range(6)] + [3.3] * 20
    params = LrRangeParams(num_iter=len(losses), smooth_beta=0.0)
    step = Recorder(lambda i, lr: losses[i])
    result = run_sweep(step, params, progress=False)
    assert result.stop_reason == "back above its starting loss"
    assert result.stop_iteration == 18  # 1.8 + 0.3 * 5 = 3.3 > 3.0 (index 13 + 5), the first above the start
    assert len(step.calls) == 19
    off = run_sweep(lambda i, lr: losses[i], LrRangeParams(num_iter=len(losses), smooth_beta=0.0,
                                                           stop_above_start=False), progress=False)
    assert off.stop_reason == "completed"


def test_a_sweep_that_never_learned_is_not_stopped_for_exceeding_its_start():
    # noise around a flat 2.3: the loss never fell 10%, so rising above the first value means nothing
    losses = [2.3, 2.25, 2.35, 2.28, 2.4, 2.31] * 5
    params = LrRangeParams(num_iter=len(losses), smooth_beta=0.0)
    assert run_sweep(lambda i, lr: losses[i], params, progress=False).stop_reason == "completed"


def test_divergence_uses_the_smoothed_loss():
    # one raw outlier of 6x the best does not stop a sweep smoothed at beta 0.9
    losses = [1.0] * 20 + [6.0] + [1.0] * 9
    params = LrRangeParams(num_iter=30, smooth_beta=0.9, diverge_threshold=5.0)
    result = run_sweep(lambda i, lr: losses[i], params, progress=False)
    assert result.stop_reason == "completed"


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_loss_stops_at_once_and_is_recorded(bad):
    params = LrRangeParams(num_iter=50, smooth_beta=0.9)
    step = Recorder(lambda i, lr: bad if i == 7 else 2.0)
    result = run_sweep(step, params, progress=False)
    assert result.stop_reason == "non-finite loss"
    assert result.stop_iteration == 7 and len(step.calls) == 8
    assert len(result.losses) == 8
    last = result.losses[-1]
    assert (math.isnan(last) if math.isnan(bad) else last == bad)
    assert math.isnan(result.smoothed[-1])
    assert result.best_smoothed == pytest.approx(2.0)


def test_step_returning_a_tensor_like_value_is_converted_to_float():
    result = run_sweep(lambda i, lr: np.float32(1.5), LrRangeParams(num_iter=3), progress=False)
    assert all(type(x) is float for x in result.losses)


def test_sweep_of_a_tiny_torch_model_records_the_optimizer_lr():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    inputs, targets = torch.randn(64, 8), torch.randint(0, 3, (64,))
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

    params = LrRangeParams(start_lr=1e-3, end_lr=1e3, num_iter=60, smooth_beta=0.9)
    result = run_sweep(step, params, progress=False)
    assert result.lrs == used
    assert result.stop_reason in ("diverged", "non-finite loss", "back above its starting loss")  # LR 1e3 blows it up
    assert result.best_smoothed < result.smoothed[0]  # it learned before it blew up


# ----------------------------------------------------------------------------- rules: clean curves


def test_rules_on_a_clean_u():
    lrs = log_grid()
    losses = parabola(lrs)
    i_min = int(np.argmin(losses))
    assert lrs[i_min] == pytest.approx(1e-2, rel=0.02)
    # minimum: LR of the lowest loss / 10
    assert suggest(lrs, losses, "minimum") == lrs[i_min] / 10
    # valley: the whole descent 0..i_min is the valley; 2/3 of the way down is log10 lr = -3
    assert suggest(lrs, losses, "valley") == lrs[round(2 / 3 * i_min)]
    assert suggest(lrs, losses, "valley") == pytest.approx(1e-3, rel=0.05)
    # spike: 1 + d^2 first exceeds 1.25 at d = 0.5 decades past the minimum, i.e. LR 10^-1.5
    expected = lrs[np.flatnonzero((np.arange(391) > i_min) & (losses > 1 + SPIKE_RISE))[0] - 1]
    assert suggest(lrs, losses, "spike") == expected
    assert suggest(lrs, losses, "spike") == pytest.approx(10**-1.5, rel=0.05)


def test_steepest_finds_the_middle_of_a_tanh_drop():
    lrs = log_grid()
    x = np.log10(lrs)
    losses = 2.0 - np.tanh(2.0 * (x + 3.0)) + 0.5 * np.exp(4.0 * (x + 1.0))  # steepest fall at 1e-3
    assert suggest(lrs, losses, "steepest") == pytest.approx(1e-3, rel=0.05)


def test_steepest_uses_log_lr_so_a_linear_sweep_gives_the_same_point():
    # (a linear sweep spends few batches at small LRs: its first tenth, trimmed, reaches LR 0.1)
    lrs = lr_sequence(1e-4, 1.0, 2000, "linear")
    x = np.log10(lrs)
    losses = 2.0 - np.tanh(2.0 * (x + 0.5))  # steepest against log LR at 10^-0.5; per batch (per LR) at ~0.15
    assert suggest(lrs, losses, "steepest") == pytest.approx(10**-0.5, rel=0.05)


def test_valley_is_the_longest_descent_not_the_first_one():
    # a short dip, a bump, then a long steady descent: the valley is the long one
    lrs = log_grid(200)
    losses = np.concatenate([np.linspace(3.0, 2.8, 10), np.linspace(3.2, 1.0, 150), np.linspace(1.1, 3.0, 40)])
    first, last = 10, 159
    assert suggest(lrs, losses, "valley") == lrs[first + round(2 / 3 * (last - first))]


def test_suggest_all_returns_every_method_in_order():
    lrs = log_grid()
    result = suggest_all(lrs, parabola(lrs))
    assert list(result) == list(METHODS)
    assert result == {m: suggest(lrs, parabola(lrs), m) for m in METHODS}
    assert all(isinstance(v, float) for v in result.values())


def test_unknown_method_raises():
    with pytest.raises(ValueError, match="spike, steepest, valley, minimum"):
        suggest([1e-3, 1e-2], [1.0, 0.5], "fastest")


# ----------------------------------------------------------------------------- rules: noisy, broken


def test_rules_on_a_noisy_u_agree_with_the_clean_curve():
    lrs = log_grid()
    rng = np.random.default_rng(1)
    clean = smooth(parabola(lrs), 0.98)
    noisy = smooth(parabola(lrs) + rng.normal(0.0, 0.1, len(lrs)), 0.98)
    for method in ("spike", "valley", "minimum"):
        ratio = suggest(lrs, noisy, method) / suggest(lrs, clean, method)
        assert 1 / 1.5 < ratio < 1.5, method


def test_non_finite_points_are_dropped_before_the_rules():
    lrs = log_grid()
    losses = parabola(lrs)
    broken = losses.copy()
    broken[[50, 120, 200]] = [np.nan, np.inf, -np.inf]
    assert suggest_all(lrs, broken) == suggest_all(np.delete(lrs, [50, 120, 200]), np.delete(losses, [50, 120, 200]))
    # a sweep that stopped on NaN: the last row has a NaN smoothed loss
    assert suggest(list(lrs[:300]) + [lrs[300]], list(losses[:300]) + [math.nan], "minimum") == suggest(
        lrs[:300], losses[:300], "minimum"
    )


def test_flat_curve_warns_and_falls_back_to_minimum_over_10():
    lrs = log_grid(100)
    losses = np.full(100, 2.3)
    for method in METHODS:
        with pytest.warns(LrSuggestionWarning, match="flat"):
            value = suggest(lrs, losses, method)
        assert value == lrs[0] / 10, method


def test_rising_curve_is_flat_too():
    lrs = log_grid(100)
    with pytest.warns(LrSuggestionWarning):
        assert suggest(lrs, np.linspace(1.0, 3.0, 100), "valley") == lrs[0] / 10


def test_short_curve_warns_and_falls_back():
    lrs = [1e-4, 1e-3, 1e-2, 1e-1]
    losses = [2.0, 1.5, 1.0, 3.0]
    for method in METHODS:
        with pytest.warns(LrSuggestionWarning, match="fewer than 5"):
            assert suggest(lrs, losses, method) == pytest.approx(1e-3), method


def test_spike_without_a_turn_upward_warns_and_falls_back():
    lrs = log_grid(100)
    losses = np.linspace(3.0, 1.0, 100)  # the sweep stopped before the loss turned
    with pytest.warns(LrSuggestionWarning, match="never rises"):
        assert suggest(lrs, losses, "spike") == lrs[-1] / 10


def test_readable_curve_gives_no_warning():
    lrs = log_grid()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        suggest_all(lrs, parabola(lrs))


@pytest.mark.parametrize("lrs, losses", [([], []), ([1e-3], [1.0]), ([1e-3, 1e-2], [1.0, math.nan])])
def test_fewer_than_two_finite_points_is_a_clear_error(lrs, losses):
    with pytest.raises(ValueError, match="at least 2 points"):
        suggest(lrs, losses, "minimum")


def test_mismatched_lengths_and_unsorted_lrs_are_errors():
    with pytest.raises(ValueError, match="differ in length"):
        suggest([1e-3, 1e-2, 1e-1], [1.0, 0.5], "minimum")
    with pytest.raises(ValueError, match="non-decreasing"):
        suggest([1e-2, 1e-3, 1e-1], [1.0, 0.5, 0.7], "minimum")


# ----------------------------------------------------------------------------- the reference's curve


def reference_like_loss(lr: float, rng: np.random.Generator) -> float:
    """A batch loss shaped like the reference's range test (../shared/SPEC.md).

    About 2.9 at 1e-5, falling to about 1.6 by 3e-3..1e-2, rising to ~2 at 0.03 and exploding
    (4.6 at 0.05, 20 at 0.08); every batch is 6% noisy (ragged).
    """
    x = math.log10(lr)
    clean = 1.6 + 1.3 / (1 + math.exp(2.5 * (x + 3.5))) + 0.4 * math.exp(9.2 * (x + 1.52))
    return clean * (1 + 0.06 * rng.standard_normal())


@pytest.mark.parametrize("seed", range(5))
def test_spike_on_reference_like_curve(seed):
    rng = np.random.default_rng(seed)
    result = run_sweep(lambda i, lr: reference_like_loss(lr, rng), LrRangeParams(), progress=False)
    # the reference's sweep ended near LR 0.084, around iteration 307 of 391
    assert result.stop_reason in ("diverged", "back above its starting loss")
    assert 290 <= result.stop_iteration <= 330
    picks = suggest_all(result.lrs, result.smoothed)
    # documented range: the reference picked ~0.08 by eye where the loss spikes up
    assert 0.02 <= picks["spike"] <= 0.1
    # the other rules sit in the descent, well below the spike
    assert picks["minimum"] < picks["spike"] / 5
    assert 1e-4 <= picks["valley"] <= 1e-2


# ----------------------------------------------------------------------------- the plot


def test_plot_lr_range_writes_a_png(tmp_path):
    from onecycle.plots import plot_lr_range

    lrs = log_grid(100)
    losses = list(parabola(lrs)[:-1]) + [math.nan]  # a sweep that stopped on NaN
    smoothed = list(smooth(losses[:-1], 0.9)) + [math.nan]
    picks = {"spike": 0.03, "steepest": 1e-4, "valley": 1e-3, "minimum": 1e-7}  # minimum off the swept range
    plot_lr_range(lrs, losses, smoothed, picks, "spike", tmp_path / "lr_range.png")
    assert (tmp_path / "lr_range.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    plot_lr_range(lrs, [2.0] * 100, [2.0] * 100, {}, "spike", tmp_path / "flat.png")  # nothing to clip
    assert (tmp_path / "flat.png").stat().st_size > 0


def test_steepest_falls_back_when_the_minimum_comes_within_the_trimmed_start():
    lrs = lr_sequence(1e-5, 1.0, 200, "exp")
    losses = np.concatenate([np.linspace(3.0, 2.0, 15), np.linspace(2.0, 4.0, 185)])  # minimum at index 14
    with pytest.warns(LrSuggestionWarning, match="steepest"):
        pick = suggest(lrs, losses, "steepest")
    assert pick == pytest.approx(lrs[14] / 10)
