"""`make repro-check` as users' CI runs it: identical on a rerun, within stated tolerances anywhere."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import yaml

from repro import check
from repro.check import Tolerance, changed_params, compare, identical, leaves, tolerance
from tests.conftest import ROOT

EXPECTED = {name: leaves(json.loads((ROOT / "repro" / "expected" / name).read_text()))
            for name in ("max_lr.json", "train.json", "eval.json")}


def test_leaves_drop_times_and_keep_numbers():
    metrics = {"final": {"test_acc": 80.0}, "seconds": {"total": 3.0}, "images_per_second": 9.0, "method": "spike"}
    assert leaves(metrics) == {"final.test_acc": 80.0}


def test_every_expected_metric_has_a_stated_tolerance():
    unlisted = [f"{file}:{key}" for file, flat in EXPECTED.items() for key in flat
                if tolerance(file, key) is check.UNLISTED]
    assert unlisted == []


def test_the_max_lr_the_profile_trains_at_is_fixed_not_picked():
    profile = yaml.safe_load((ROOT / "repro" / "params.yaml").read_text())
    assert isinstance(profile["train"]["max_lr"], float)
    assert EXPECTED["train.json"]["max_lr"] == profile["train"]["max_lr"]
    assert tolerance("train.json", "max_lr").abs_tol == 0.0


def _perturbed(file: str, key: str, delta: float) -> dict:
    actual = {f: dict(flat) for f, flat in EXPECTED.items()}
    actual[file][key] += delta
    return actual


@pytest.mark.parametrize("file, key", [(f, k) for f, flat in EXPECTED.items() for k in flat
                                       if tolerance(f, k).abs_tol is not None])
def test_perturbation_inside_the_tolerance_passes_and_outside_fails(file, key):
    tol = tolerance(file, key).abs_tol
    outside = 1.1 * tol if tol else 1e-9 * max(1.0, abs(EXPECTED[file][key]))
    for sign in (1, -1):
        if tol:
            assert all(r.ok for r in compare(EXPECTED, _perturbed(file, key, sign * 0.9 * tol)))
        rows = compare(EXPECTED, _perturbed(file, key, sign * outside))
        assert [(r.file, r.key) for r in rows if not r.ok] == [(file, key)]


def test_a_missing_or_new_metric_fails():
    actual = {f: dict(flat) for f, flat in EXPECTED.items()}
    del actual["eval.json"]["accuracy"]
    actual["eval.json"]["new_metric"] = 1.0
    bad = {r.key for r in compare(EXPECTED, actual) if not r.ok}
    assert bad == {"accuracy", "new_metric"}


def test_a_metric_left_out_across_machines_is_still_checked_on_the_same_machine():
    assert tolerance("max_lr.json", "max_lr").abs_tol is None
    rerun = _perturbed("max_lr.json", "max_lr", 1e-12)
    assert [(r.file, r.key) for r in identical(EXPECTED, rerun)] == [("max_lr.json", "max_lr")]
    assert identical(EXPECTED, EXPECTED) == []


def test_exactly_at_the_tolerance_passes():
    assert Tolerance(1.0, "").accepts(100.0, 99.0) and not Tolerance(1.0, "").accepts(100.0, math.nextafter(99.0, 0))


def test_a_changed_param_fails_the_check():
    profile = yaml.safe_load((ROOT / "repro" / "params.yaml").read_text())
    assert changed_params(profile, profile) == []
    changed = yaml.safe_load((ROOT / "repro" / "params.yaml").read_text())
    changed["train"]["epochs"] += 1
    changed["augment"]["train"][2]["HorizontalFlip"]["p"] = 0.25
    assert changed_params(profile, changed) == ["augment.train", "train.epochs"]
    del changed["data"]["train_samples"]  # null before: a missing key is a change too
    assert "data.train_samples" in changed_params(profile, changed)


@pytest.mark.slow
def test_reproduction_check_passes():
    proc = subprocess.run([sys.executable, str(ROOT / "repro" / "check.py")], capture_output=True, text=True,
                          timeout=900, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "second run is identical" in proc.stdout
    assert "reproduction check passed" in proc.stdout


def test_on_the_runner_that_made_the_expected_values_every_metric_is_exact():
    here = check.machine_fingerprint()
    assert check.same_runner(dict(here), here) == bool(here["cpu"] and here["cpu_id"])
    for key in here:
        assert not check.same_runner({**here, key: "other"}, here), key
    assert not check.same_runner(None, here)
    assert not check.same_runner({**here, "cpu": ""}, {**here, "cpu": ""})  # an unreadable CPU could be any CPU
    for file, key, delta in (("train.json", "final.test_acc", -0.2), ("max_lr.json", "max_lr", 1e-9)):
        assert all(r.ok for r in compare(EXPECTED, _perturbed(file, key, delta)))  # within tolerance, or not compared
        bad = [(r.file, r.key) for r in compare(EXPECTED, _perturbed(file, key, delta), check.SAME_RUNNER) if not r.ok]
        assert bad == [(file, key)]
