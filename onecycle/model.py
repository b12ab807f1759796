"""The reference network: the DAWNBench "ResNet-9" with the pool before the norm (SPEC.md).

With width 64 it has 6,575,370 parameters; `width` scales every layer so tests can run a
narrow copy of the same architecture.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from onecycle import io


def conv_pool_bn(c_in: int, c_out: int, pool: bool) -> nn.Sequential:
    """Conv 3x3 (pad 1, with bias) → [MaxPool 2] → BatchNorm → ReLU: one "layer" of SPEC.md."""
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=True)]
    if pool:
        layers.append(nn.MaxPool2d(2))
    layers += [nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class Residual(nn.Module):
    """x + R(x), with R two conv-bn-relu layers at constant width."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.res = nn.Sequential(conv_pool_bn(channels, channels, False), conv_pool_bn(channels, channels, False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.res(x)


class ResNet9(nn.Module):
    """Input 3x32x32 (normalised), output 10 logits.

    Args:
        width: channels of the first layer (64 in SPEC.md); later layers use 2x, 4x, 8x.
        num_classes: size of the output layer.
    """

    def __init__(self, width: int = 64, num_classes: int = 10) -> None:
        super().__init__()
        w = width
        self.prep = conv_pool_bn(3, w, pool=False)  # 64x32x32
        self.layer1 = conv_pool_bn(w, 2 * w, pool=True)  # 128x16x16
        self.res1 = Residual(2 * w)
        self.layer2 = conv_pool_bn(2 * w, 4 * w, pool=True)  # 256x8x8
        self.layer3 = conv_pool_bn(4 * w, 8 * w, pool=True)  # 512x4x4
        self.res3 = Residual(8 * w)
        self.pool = nn.MaxPool2d(4)  # 512x1x1
        self.fc = nn.Linear(8 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.res1(self.layer1(self.prep(x)))
        x = self.res3(self.layer3(self.layer2(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


def build_model(width: int, num_classes: int = 10) -> ResNet9:
    return ResNet9(width=width, num_classes=num_classes)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def summary(model: nn.Module, input_size: tuple[int, int, int] = (3, 32, 32)) -> str:
    """A table like the reference's (torchsummary style): layer, output shape, params, then totals."""
    rows: list[tuple[str, str, int]] = []
    counts: dict[str, int] = {}
    hooks = []

    def hook(module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        name = type(module).__name__
        counts[name] = counts.get(name, 0) + 1
        shape = str([-1, *output.shape[1:]])
        params = sum(p.numel() for p in module.parameters(recurse=False))
        rows.append((f"{name}-{len(rows) + 1}", shape, params))

    for module in model.modules():
        if not list(module.children()) or isinstance(module, Residual):
            hooks.append(module.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        with torch.no_grad():
            model(torch.zeros(2, *input_size, device=device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    total = count_params(model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    line = "-" * 64
    out = [line, f"{'Layer (type)':>25}  {'Output Shape':>25}  {'Param #':>10}", "=" * 64]
    out += [f"{name:>25}  {shape:>25}  {params:>10,}" for name, shape, params in rows]
    out += [
        "=" * 64,
        f"Total params: {total:,}",
        f"Trainable params: {trainable:,}",
        f"Non-trainable params: {total - trainable:,}",
        line,
    ]
    return "\n".join(out)


# ----------------------------------------------------------------------------- the model file


def save_weights(path: Path, net: nn.Module) -> None:
    """models/model.pt: the network's state dict on the CPU, written atomically, loadable with
    `torch.load(path, weights_only=True)` (no code is ever unpickled)."""
    io.save_torch(path, {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()})


def load_weights(path: Path, width: int, num_classes: int) -> ResNet9:
    """The trained network from `save_weights`' file, on the CPU.

    Raises io.ArtifactError (exit 2) when the file is missing, damaged, not a state dict, or does
    not fit a ResNet9 of this width and class count."""
    state = io.load_torch(path, "model")
    model = build_model(width, num_classes)
    if not isinstance(state, dict):
        raise io.ArtifactError(f"model {path} is not a state dict: rerun `dvc repro train_onecycle`")
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise io.ArtifactError(
            f"model {path} does not fit a ResNet9 of width {width} with {num_classes} classes "
            f"(was model.width changed?): rerun `dvc repro train_onecycle`. Details: {str(err)[:300]}"
        ) from err
    return model
