"""benchmarks/bench.py runs end to end on a narrow model and prints every ratio (no timing is asserted)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from onecycle import data
from onecycle.params import DataParams
from tests.conftest import ROOT
from tests.pipeline import image_folder, tiny_params


@pytest.mark.slow
def test_bench_prints_each_configuration_and_the_ratios(tmp_path):
    folder = image_folder(tmp_path / "images", n_train=256, n_test=64)
    prepared = tmp_path / "prepared"
    data.prepare(DataParams(source="folder", path=str(folder)), prepared)
    raw = tiny_params(folder)  # fp32: the same path on every CPU type
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench.py"), "--params", str(tmp_path / "params.yaml"),
         "--data", str(prepared), "--images", "160", "--steps", "1", "--rounds", "2", "--threads", "1"],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    for row in ("(1) step, fp32 eager NCHW", "(2) step, fp32 eager channels-last", "(3) step, bf16",
                "(4) step, fp16", "(5) step as configured", "(6) step", "1 threads", "(9) train_onecycle stage"):
        assert row in out, row
    assert "native bf16: " in out and "ratio (9)/fastest eager" in out and "ratio (9)/(1)" in out
    assert "the stage chose: device cpu, precision fp32 (set in params)" in out
