"""The training loop on a narrow model and synthetic images: learning, resume, determinism, NaN."""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch

from onecycle.batches import EpochLoader
from onecycle.data import Split
from onecycle.device import runtime
from onecycle.params import Params, parse_params, to_dict
from onecycle.train import NonFiniteLoss, fit
from tests.conftest import CLASSES, synthetic_images


def tiny_params(**train) -> Params:
    raw = to_dict(Params())
    raw["model"]["width"] = 8
    raw["train"].update(dict(epochs=3, batch_size=32, device="cpu", precision="fp32") | train)
    raw["augment"]["train"] = [{"HorizontalFlip": {"p": 0.5}}]
    return parse_params(raw)


def loaders(params: Params, n_train: int = 320, n_test: int = 100):
    rt = runtime("cpu", params.train.precision, params.train.channels_last)
    tr = Split(*synthetic_images(n_train, 0), CLASSES)
    te = Split(*synthetic_images(n_test, 1), CLASSES)
    train = EpochLoader(tr, params.train.batch_size, params.augment, "albumentations", rt, params.seed)
    test = EpochLoader(te, 100, params.augment, "albumentations", rt, params.seed, train=False)
    return rt, train, test


def run(params: Params, checkpoint=None, on_epoch=None, on_step=None):
    rt, train, test = loaders(params)
    return fit(params, train, test, rt, 0.05, 10, checkpoint=checkpoint, on_epoch=on_epoch, on_step=on_step)


def comparable(result):
    return [dataclasses.replace(h, seconds=0.0) for h in result.history]


def test_learns_and_logs_reference_format(capsys):
    result = run(tiny_params(epochs=4))
    assert [h.epoch for h in result.history] == [0, 1, 2, 3]
    assert result.history[-1].test_acc > 50.0  # chance is 10%
    assert result.images_per_second > 0
    captured = capsys.readouterr()
    log = captured.out + captured.err
    # the reference's two lines per epoch: the bar's description, then the test line
    assert re.search(r"Epoch=3 LR=[0-9.e-]+ Loss=\d+\.\d{4} batch_id=9 Accuracy=\d+\.\d{2}%: 100%", log)
    tests = re.findall(r"Test set: Average loss: \d+\.\d{4}, Accuracy: (\d+)/100 \((\d+\.\d{2})%\)", log)
    assert len(tests) == 4
    assert float(tests[-1][1]) == pytest.approx(result.history[-1].test_acc, abs=0.005)


def test_step_callback_sees_the_one_cycle_shape():
    steps = []
    result = run(tiny_params(epochs=2), on_step=steps.append)
    assert [(s.epoch, s.batch, s.step) for s in steps] == [(e, b, e * 10 + b) for e in range(2) for b in range(10)]
    lrs, moms = [s.lr for s in steps], [s.momentum for s in steps]
    peak = lrs.index(max(lrs))
    assert max(lrs) == pytest.approx(0.05, rel=0.05) and 0 < peak < 19  # warm-up, then anneal
    assert lrs[0] == pytest.approx(0.05 / 25) and lrs[-1] < lrs[0]
    assert moms[peak] == min(moms) and moms[0] == max(moms)  # momentum cycles against the LR
    assert [h.lr for h in result.history] == [lrs[9], lrs[19]]  # an epoch logs its last step's LR


def test_same_params_same_numbers():
    a, b = run(tiny_params()), run(tiny_params())
    assert comparable(a) == comparable(b)
    for (k, va), (_, vb) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(va, vb), k


def test_resume_after_a_crash_equals_an_uninterrupted_run(tmp_path):
    whole = run(tiny_params())
    ckpt = tmp_path / "ckpt.pt"

    def crash_after_epoch_1(stats):
        if stats.epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(tiny_params(), checkpoint=ckpt, on_epoch=crash_after_epoch_1)
    assert ckpt.is_file()
    resumed = run(tiny_params(), checkpoint=ckpt)
    assert comparable(resumed) == comparable(whole)
    for (k, va), (_, vb) in zip(whole.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(va, vb), k


def test_checkpoint_from_other_params_is_not_resumed(tmp_path):
    ckpt = tmp_path / "ckpt.pt"
    run(tiny_params(epochs=2), checkpoint=ckpt)
    changed = run(tiny_params(epochs=2, weight_decay=0.0), checkpoint=ckpt)
    fresh = run(tiny_params(epochs=2, weight_decay=0.0))
    assert comparable(changed) == comparable(fresh)


def test_checkpoint_loads_weights_only(tmp_path):
    ckpt = tmp_path / "ckpt.pt"
    run(tiny_params(epochs=1), checkpoint=ckpt)
    state = torch.load(ckpt, weights_only=True)
    assert {"model", "optimizer", "scheduler", "scaler", "torch_rng", "history"} <= set(state)


def test_non_finite_loss_stops_with_epoch_batch_and_lr():
    params = tiny_params(epochs=2)
    rt, train, test = loaders(params)
    with pytest.raises(NonFiniteLoss) as err:
        fit(params, train, test, rt, 1e8, 10)
    msg = str(err.value)
    assert "epoch 0" in msg and "batch" in msg and "LR" in msg and "max_lr" in msg


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_runs_on_cpu(precision):
    result = run(tiny_params(epochs=1, precision=precision))
    assert result.history[0].train_loss == pytest.approx(result.history[0].train_loss)  # finite
    assert 0 <= result.history[0].test_acc <= 100
