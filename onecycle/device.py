"""Device and precision choices, in one place."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch


class DeviceError(ValueError):
    """The requested device or precision is not available here."""


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    precision: str  # fp32, bf16 or fp16
    channels_last: bool

    @property
    def amp_dtype(self) -> torch.dtype | None:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def to_input(self, images: torch.Tensor) -> torch.Tensor:
        """Float NCHW batch → the device and memory format the model expects (non-blocking copy)."""
        images = images.to(self.device, non_blocking=True)
        layout = torch.channels_last if self.channels_last else torch.contiguous_format
        return images.contiguous(memory_format=layout)  # a no-op when the batch is already laid out so

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        model = model.to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model

    def grad_scaler(self) -> torch.amp.GradScaler:
        # Only fp16 underflows without loss scaling; a disabled scaler is a no-op passthrough.
        return torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """auto: CUDA, then MPS, then CPU. An explicit device that is absent is an error, not a fallback."""
    cuda = torch.cuda.is_available()
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        name = "cuda" if cuda else "mps" if mps else "cpu"
    if name == "cuda":
        if not cuda:
            raise DeviceError("train.device is 'cuda' but no CUDA device is available here: set train.device to auto or cpu")
        return torch.device("cuda", local_rank)
    if name == "mps" and not mps:
        raise DeviceError("train.device is 'mps' but MPS is not available here: set train.device to auto or cpu")
    return torch.device(name)


def resolve_precision(name: str, device: torch.device) -> str:
    """auto: bf16 on CUDA (fp16 where bf16 is unsupported) and on the CPU, fp32 on MPS."""
    if name != "auto":
        if name == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise DeviceError("train.precision bf16 is not supported by this GPU: use fp16 or fp32")
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu":
        return "bf16"
    return "fp32"


def runtime(device: str, precision: str, channels_last: bool, local_rank: int = 0) -> Runtime:
    dev = resolve_device(device, local_rank)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick the fastest kernels once
    return Runtime(dev, resolve_precision(precision, dev), channels_last)


def data_workers(setting: int | str, device: torch.device) -> int:
    """DataLoader workers for per-image augmentation: none on the CPU, where the step needs both
    cores and augmenting a batch costs ~1% of a step; 8 on a GPU, whose step is far faster."""
    if setting != "auto":
        return int(setting)
    return 8 if device.type == "cuda" else 0
