"""Faults: a SIGKILL mid-epoch loses at most that epoch; outputs are atomic; no unsafe loads."""

from __future__ import annotations

import ast
import csv
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml

from onecycle import io
from onecycle.data import prepare
from onecycle.params import DataParams
from tests.conftest import ROOT
from tests.pipeline import env, image_folder, tiny_params, train_command


def train_cmd(tmp: Path, tag: str, prepared: Path, params_file: Path) -> list[str]:
    return train_command(tmp / tag, prepared, params_file, tmp / "max_lr.json")


def live_files(out: Path) -> dict[str, str]:
    """Every file of the DVCLive folder but the per-epoch wall times, by relative path."""
    live = out / "dvclive"
    return {str(p.relative_to(live)): p.read_text() for p in sorted(live.rglob("*"))
            if p.is_file() and p.name != "seconds.tsv"} | {"metrics.json": _without_seconds(live / "metrics.json")}


def _without_seconds(path: Path) -> str:
    import json

    data = json.loads(path.read_text())
    data.pop("seconds")
    return json.dumps(data, sort_keys=True)


def history(path: Path) -> list[dict]:
    rows = list(csv.DictReader(path.open()))
    for row in rows:
        row.pop("seconds")
    return rows


@pytest.mark.slow
def test_sigkill_mid_epoch_then_rerun_equals_an_uninterrupted_run(tmp_path):
    folder = image_folder(tmp_path / "images", n_train=1000, n_test=50)
    prepared = tmp_path / "prepared"
    prepare(DataParams(source="folder", path=str(folder)), prepared)
    raw = tiny_params(folder)
    raw["train"].update(epochs=3, batch_size=16)  # 63 steps an epoch: about a second or more
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(raw))
    (tmp_path / "max_lr.json").write_text('{"max_lr": 0.05}')

    subprocess.run(train_cmd(tmp_path, "whole", prepared, params_file), env=env(), check=True,
                   capture_output=True, timeout=600)

    cmd = train_cmd(tmp_path, "killed", prepared, params_file)
    ckpt = tmp_path / "killed" / "checkpoints" / "train_onecycle.pt"
    proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)  # into epoch 1: the checkpoint is written after epoch 0's test pass
    assert proc.poll() is None, "training finished before it could be killed: make the run longer"
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert len(torch.load(ckpt, weights_only=True)["history"]) == 1
    assert not (tmp_path / "killed" / "models" / "model.pt").exists()

    rerun = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert "resuming from" in rerun.stderr and "after epoch 0" in rerun.stderr
    assert "Epoch=0 " not in rerun.stderr  # the finished epoch is not trained again
    killed, whole = tmp_path / "killed" / "plots", tmp_path / "whole" / "plots"
    assert history(killed / "train_history.csv") == history(whole / "train_history.csv")
    # DVCLive's folder: the resumed run cleared it and replayed the checkpoint's epochs and steps
    assert live_files(tmp_path / "killed") == live_files(tmp_path / "whole")
    a = torch.load(tmp_path / "whole" / "models" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "killed" / "models" / "model.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not ckpt.exists()  # a finished run removes its checkpoint


def test_atomic_write_keeps_the_old_file_when_interrupted(tmp_path):
    target = tmp_path / "metrics.json"
    io.write_json(target, {"accuracy": 1.0})
    with pytest.raises(RuntimeError), io.atomic_open(target) as handle:
        handle.write(b'{"accura')
        raise RuntimeError("killed mid-write")
    assert io.read_json(target, "metrics") == {"accuracy": 1.0}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]  # no temp file left


def test_outputs_get_the_usual_file_mode(tmp_path):
    mask = os.umask(0o022)
    try:
        io.write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(mask)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600


def test_json_outputs_refuse_nan(tmp_path):
    with pytest.raises(ValueError):
        io.write_json(tmp_path / "m.json", {"loss": float("nan")})
    assert not (tmp_path / "m.json").exists()


# ----------------------------------------------------------------------------- the security scan

UNSAFE = {
    ("pickle", "load"), ("pickle", "loads"), ("yaml", "load"), ("yaml", "unsafe_load"), ("yaml", "full_load"),
    ("marshal", "loads"), ("shelve", "open"),
}


def unsafe_calls(source: str, filename: str) -> list[str]:
    """Calls that could run code from a file: plain unpickling, unsafe YAML, eval/exec, unchecked loads."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        where = f"{filename}:{node.lineno}"
        kwargs = {k.arg: k.value for k in node.keywords}
        if isinstance(func, ast.Name) and func.id in ("eval", "exec", "__import__"):
            found.append(f"{where} {func.id}()")
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
            pair = (func.value.id, func.attr)
            if pair in UNSAFE:
                found.append(f"{where} {pair[0]}.{pair[1]}()")
            if pair == ("torch", "load"):
                flag = kwargs.get("weights_only")
                if not (isinstance(flag, ast.Constant) and flag.value is True):
                    found.append(f"{where} torch.load() without weights_only=True")
            if pair == ("np", "load"):
                flag = kwargs.get("allow_pickle")
                if not (isinstance(flag, ast.Constant) and flag.value is False):
                    found.append(f"{where} np.load() without allow_pickle=False")
    return found


def test_scan_finds_what_it_looks_for():
    bad = "import pickle, torch, yaml\npickle.loads(b)\ntorch.load(p)\nyaml.load(s)\neval(x)\nnp.load(f)\n"
    assert len(unsafe_calls(bad, "bad.py")) == 5
    good = "torch.load(p, weights_only=True)\nyaml.safe_load(s)\nnp.load(f, allow_pickle=False)\n"
    assert unsafe_calls(good, "good.py") == []


def test_package_and_stages_load_nothing_unsafely():
    files = sorted((ROOT / "onecycle").rglob("*.py")) + sorted((ROOT / "stages").glob("*.py"))
    found = [hit for f in files for hit in unsafe_calls(f.read_text(), str(f.relative_to(ROOT)))]
    assert found == []
