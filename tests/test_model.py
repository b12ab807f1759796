"""The network of SPEC.md, exactly."""

from __future__ import annotations

import torch

from onecycle.model import build_model, count_params, summary


def test_reference_width_has_the_reference_parameter_count_and_shapes():
    model = build_model(64)
    assert count_params(model) == 6_575_370
    text = summary(model)
    # Layer numbers, names and shapes of the reference's summary (SPEC.md table).
    for row in [
        ("Conv2d-1", "[-1, 64, 32, 32]", "1,792"),
        ("Conv2d-4", "[-1, 128, 32, 32]", "73,856"),
        ("MaxPool2d-5", "[-1, 128, 16, 16]", "0"),
        ("Residual-14", "[-1, 128, 16, 16]", "0"),
        ("Conv2d-15", "[-1, 256, 16, 16]", "295,168"),
        ("Conv2d-19", "[-1, 512, 8, 8]", "1,180,160"),
        ("Residual-29", "[-1, 512, 4, 4]", "0"),
        ("MaxPool2d-30", "[-1, 512, 1, 1]", "0"),
        ("Linear-31", "[-1, 10]", "5,130"),
    ]:
        assert any(all(part in line for part in row) for line in text.splitlines()), row
    assert "Total params: 6,575,370" in text
    assert "Trainable params: 6,575,370" in text


def test_narrow_model_runs_and_scales():
    model = build_model(8)
    out = model(torch.randn(4, 3, 32, 32))
    assert out.shape == (4, 10)
    assert count_params(model) < count_params(build_model(16)) < 6_575_370


def test_pool_comes_before_norm():
    layer = build_model(8).layer1
    assert [type(m).__name__ for m in layer] == ["Conv2d", "MaxPool2d", "BatchNorm2d", "ReLU"]
