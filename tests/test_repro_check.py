"""`make repro-check` as users' CI runs it: the committed profile reproduces the committed metrics."""

from __future__ import annotations

import subprocess
import sys

import pytest

from repro.check import differences, leaves
from tests.conftest import ROOT


def test_leaves_drop_times_and_keep_numbers():
    metrics = {"final": {"test_acc": 80.0}, "seconds": {"total": 3.0}, "images_per_second": 9.0, "method": "spike"}
    assert leaves(metrics) == {"final.test_acc": 80.0}


def test_differences_show_changed_missing_and_new_keys():
    rows = differences({"a": 1.0, "b": 2.0}, {"a": 1.0, "b": 2.5, "c": 3.0}, 0.0)
    assert rows == [("b", 2.0, 2.5), ("c", None, 3.0)]
    assert differences({"a": 1.0}, {"a": 1.0 + 1e-9}, 1e-6) == []


@pytest.mark.slow
def test_reproduction_check_passes():
    proc = subprocess.run([sys.executable, str(ROOT / "repro" / "check.py")], capture_output=True, text=True,
                          timeout=900, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "reproduction check passed" in proc.stdout
