"""Precision by CPU capability: the probe stubbed both ways, so these hold on any CPU type."""

from __future__ import annotations

import logging

import pytest
import torch

from onecycle import device
from onecycle.device import CpuSupport, resolve_precision, runtime

CPU = torch.device("cpu")
NATIVE = CpuSupport(bf16=True, fp16=False, isa="AVX-512-BF16")
EMULATED = CpuSupport(bf16=False, fp16=False, isa="AVX2")


def test_auto_is_bf16_only_where_the_cpu_has_it_natively():
    precision, why = resolve_precision("auto", CPU, NATIVE)
    assert precision == "bf16" and "native bf16" in why and "AVX-512-BF16" in why
    precision, why = resolve_precision("auto", CPU, EMULATED)
    assert precision == "fp32" and "no native bf16" in why and "AVX2" in why


@pytest.mark.parametrize("cpu, expected", [(NATIVE, "bf16"), (EMULATED, "fp32")])
def test_runtime_uses_the_probe_and_says_why(monkeypatch, cpu, expected):
    monkeypatch.setattr(device, "probe_cpu", lambda: cpu)
    rt = runtime("cpu", "auto", True)
    assert rt.precision == expected
    line = rt.describe()
    assert f"precision {expected} (auto:" in line and cpu.isa in line and "channels-last" in line


def test_explicit_bf16_on_an_emulating_cpu_runs_with_a_warning_naming_the_slowdown(caplog):
    with caplog.at_level(logging.WARNING, logger="onecycle.device"):
        precision, why = resolve_precision("bf16", CPU, EMULATED)
    assert precision == "bf16" and "emulated" in why
    (record,) = caplog.records
    assert "no native bf16" in record.message and "13-17x slower than fp32" in record.message and "auto" in record.message


def test_explicit_bf16_on_a_native_cpu_and_fp32_anywhere_say_nothing(caplog):
    with caplog.at_level(logging.WARNING, logger="onecycle.device"):
        assert resolve_precision("bf16", CPU, NATIVE) == ("bf16", "set in params")
        assert resolve_precision("fp32", CPU, EMULATED) == ("fp32", "set in params")
    assert caplog.records == []


def test_explicit_fp16_without_native_fp16_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="onecycle.device"):
        assert resolve_precision("fp16", CPU, NATIVE)[0] == "fp16"
    assert "no native fp16" in caplog.text


def test_x86_probe_reads_the_instruction_set_not_mkldnn(monkeypatch):
    monkeypatch.setattr(device.platform, "machine", lambda: "x86_64")
    flags = {"_is_avx512_bf16_supported": False, "_is_amx_tile_supported": False, "_is_amx_fp16_supported": False}
    monkeypatch.setattr(device, "_torch_probe", lambda name: flags[name])
    # an AVX-512 CPU without bf16: mkldnn would call it bf16-capable; the probe must not
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True, raising=False)
    assert device.probe_cpu().bf16 is False
    flags["_is_avx512_bf16_supported"] = True
    assert device.probe_cpu() == CpuSupport(True, False, "AVX-512-BF16")
    flags["_is_amx_tile_supported"] = True
    assert device.probe_cpu().isa == "AMX"


def test_arm_probe_reads_the_bf16_feature(monkeypatch):
    monkeypatch.setattr(device.platform, "machine", lambda: "aarch64")
    monkeypatch.setattr(device, "_arm_features", lambda: {"fp", "asimd", "bf16"})
    assert device.probe_cpu() == CpuSupport(True, False, "ARM FEAT_BF16")
    monkeypatch.setattr(device, "_arm_features", lambda: {"fp", "asimd"})
    assert device.probe_cpu().bf16 is False


def test_a_torch_without_the_probes_means_fp32_and_says_why(monkeypatch):
    monkeypatch.setattr(device.platform, "machine", lambda: "x86_64")
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported", "_is_amx_fp16_supported"):
        monkeypatch.delattr(torch.cpu, name, raising=False)
    cpu = device.probe_cpu()
    assert cpu.bf16 is False and "cannot probe" in cpu.isa
    assert resolve_precision("auto", CPU, cpu)[0] == "fp32"


def test_a_failing_probe_counts_as_absent(monkeypatch):
    def broken():
        raise AttributeError("no such binding")

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", broken, raising=False)
    assert device._torch_probe("_is_avx512_bf16_supported") is None


def test_the_probe_on_this_machine_agrees_with_cpuinfo():
    """No assumption about which CPU runs this: whatever it is, the probe and the kernel's flags agree."""
    flags = device.cpu_info().flags
    if device.platform.machine().lower() not in ("x86_64", "amd64") or not flags:
        pytest.skip("compares with x86 /proc/cpuinfo flags")
    assert device.probe_cpu().bf16 == bool({"avx512_bf16", "amx_bf16"} & flags)
