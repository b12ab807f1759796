"""Device, precision and memory format for the hardware at hand, in one place.

`train.precision: auto` picks, per device:

- CUDA: bf16 autocast where the GPU supports it, else fp16 with a grad scaler;
- the CPU: bf16 autocast only where the CPU computes bf16 natively (x86 AVX-512-BF16 or AMX, ARM
  FEAT_BF16), else fp32. Measured with `benchmarks/bench.py` (benchmarks/RESULTS.md): on an AMD EPYC
  with AVX-512-BF16 the bf16 channels-last step runs 2.2x the fp32 NCHW one; on an AMD EPYC with
  AVX2 only, bf16 is emulated and runs 13-17x slower than fp32;
- MPS: fp32.

An explicit `bf16` or `fp16` on a CPU that lacks it natively still runs, with a warning naming the
expected slowdown (EMULATED_SLOWDOWN). Channels-last is a plain switch (default on): it measured
faster on both CPU kinds (1.1-1.2x in fp32) and is what tensor cores want on a GPU.
"""

from __future__ import annotations

import contextlib
import logging
import platform
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from onecycle.errors import UserError

log = logging.getLogger(__name__)

# How much slower than the fp32 channels-last step an emulated autocast step runs: benchmarks/RESULTS.md,
# AMD EPYC with AVX2 only (bf16 13-15x in benchmarks/bench.py's probe, 17x over whole batches in issue 11;
# fp16 17-19x in the probe).
EMULATED_SLOWDOWN = {"bf16": "13-17", "fp16": "17-19"}


class DeviceError(UserError):
    """The requested device or precision is not available here."""


@dataclass(frozen=True)
class CpuSupport:
    """Which reduced precisions this CPU computes natively, and the instruction sets that say so."""

    bf16: bool
    fp16: bool
    isa: str  # what was found, for the log: "AMX", "AVX-512-BF16", "ARM FEAT_BF16"; else ATen's best kernels ("AVX2")


def _torch_probe(name: str) -> bool | None:
    """torch.cpu's private CPUID probes (torch 2.x); None where this torch lacks one or it fails."""
    probe = getattr(torch.cpu, name, None)
    try:
        return bool(probe()) if probe is not None else None
    except Exception:  # a private API: any failure means "cannot tell"
        return None


@dataclass(frozen=True)
class CpuInfo:
    """The first processor's entry in Linux's /proc/cpuinfo; empty where there is none."""

    model: str = ""  # "model name", e.g. "AMD EPYC"
    ident: str = ""  # vendor, family, model and stepping (x86) or implementer, part and revision (ARM)
    flags: frozenset[str] = frozenset()  # x86 `flags` or ARM `Features`


def cpu_info() -> CpuInfo:
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return CpuInfo()
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep and fields:
            break  # the end of the first processor's entry
        fields.setdefault(key.strip().lower(), value.strip())
    ident = ("vendor_id", "cpu family", "model", "stepping", "cpu implementer", "cpu part", "cpu revision")
    return CpuInfo(fields.get("model name", ""), " ".join(fields[k] for k in ident if k in fields),
                   frozenset((fields.get("flags") or fields.get("features") or "").split()))


def _arm_features() -> set[str]:
    """ARM feature names: /proc/cpuinfo on Linux, sysctl hw.optional.arm.FEAT_* on macOS."""
    features = set(cpu_info().flags)
    if features or sys.platform != "darwin":
        return features
    for sysctl_name, feature in (("hw.optional.arm.FEAT_BF16", "bf16"), ("hw.optional.arm.FEAT_FP16", "fphp")):
        try:  # one name a call: sysctl skips unknown names, which would shift the answers
            out = subprocess.run(["sysctl", "-n", sysctl_name], capture_output=True, text=True, check=False)
        except OSError:
            break
        if out.returncode == 0 and out.stdout.strip() == "1":
            features.add(feature)
    return features


def probe_cpu() -> CpuSupport:
    """What this CPU computes natively. Reads the instruction sets themselves, never
    `torch.ops.mkldnn._is_mkldnn_bf16_supported()`, which is true on any AVX-512 CPU, bf16 or not
    (issue 11). Raises nothing: a probe this torch lacks counts as absent, and the log says so."""
    machine = platform.machine().lower()
    best = torch.backends.cpu.get_cpu_capability()
    if machine in ("x86_64", "amd64", "i686", "i386"):
        amx = _torch_probe("_is_amx_tile_supported")  # every AMX CPU so far has AMX-BF16
        avx512_bf16 = _torch_probe("_is_avx512_bf16_supported")
        fp16 = bool(_torch_probe("_is_amx_fp16_supported"))
        if amx or avx512_bf16:
            return CpuSupport(True, fp16, "AMX" if amx else "AVX-512-BF16")
        if avx512_bf16 is None:
            return CpuSupport(False, False, f"{best}; this torch cannot probe for bf16")
    elif machine in ("aarch64", "arm64"):
        features = _arm_features()
        if "bf16" in features:
            return CpuSupport(True, "fphp" in features, "ARM FEAT_BF16")
    return CpuSupport(False, False, best)


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    precision: str  # fp32, bf16 or fp16
    channels_last: bool
    why: str = ""  # how precision was chosen, for the log

    @property
    def amp_dtype(self) -> torch.dtype | None:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)

    def describe(self) -> str:
        """One line for the stage's log: device, precision and why, memory format."""
        return (f"device {self.device}, precision {self.precision}{f' ({self.why})' if self.why else ''}, "
                f"{'channels-last' if self.channels_last else 'NCHW'}")

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


def resolve_precision(name: str, device: torch.device, cpu: CpuSupport | None = None) -> tuple[str, str]:
    """(precision, why) for `train.precision` on `device`; `cpu` defaults to `probe_cpu()`.

    Raises DeviceError for bf16 on a GPU without it. Logs a warning for bf16 or fp16 on a CPU
    that only emulates it (it runs, but slower than fp32: bf16 13-17x, fp16 17-19x; EMULATED_SLOWDOWN).
    """
    if device.type == "cuda":
        if name == "bf16" and not torch.cuda.is_bf16_supported():
            raise DeviceError("train.precision bf16 is not supported by this GPU: use fp16 or fp32")
        if name != "auto":
            return name, "set in params"
        return ("bf16", "auto: the GPU supports bf16") if torch.cuda.is_bf16_supported() else \
            ("fp16", "auto: the GPU has no bf16")
    if device.type != "cpu":
        return ("fp32", "auto: the default on MPS") if name == "auto" else (name, "set in params")
    cpu = cpu or probe_cpu()
    if name == "auto":
        if cpu.bf16:
            return "bf16", f"auto: this CPU has native bf16 ({cpu.isa})"
        return "fp32", f"auto: this CPU has no native bf16 ({cpu.isa} only), so bf16 autocast would be emulated"
    native = {"bf16": cpu.bf16, "fp16": cpu.fp16}.get(name, True)
    if not native:
        log.warning("train.precision is %s, but this CPU (%s only) has no native %s: autocast emulates it, about %sx "
                    "slower than fp32 (measured on an AVX2 AMD EPYC, benchmarks/RESULTS.md); set "
                    "train.precision: auto to get fp32 here", name, cpu.isa, name, EMULATED_SLOWDOWN[name])
        return name, f"set in params; emulated on this CPU ({cpu.isa})"
    return name, "set in params"


def runtime(device: str, precision: str, channels_last: bool, local_rank: int = 0) -> Runtime:
    dev = resolve_device(device, local_rank)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick the fastest kernels once
    chosen, why = resolve_precision(precision, dev)
    return Runtime(dev, chosen, channels_last, why)


def data_workers(setting: int | str, device: torch.device) -> int:
    """DataLoader workers for per-image augmentation: none on the CPU, where the step needs both
    cores and augmenting a batch costs ~1% of a step; 8 on a GPU, whose step is far faster."""
    if setting != "auto":
        return int(setting)
    return 8 if device.type == "cuda" else 0
