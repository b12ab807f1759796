"""Two processes under torchrun (gloo, CPU) through the real stage: one set of outputs, exact repeats."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from onecycle.data import prepare
from onecycle.params import DataParams
from tests.pipeline import env, image_folder, tiny_params, train_command

pytestmark = pytest.mark.slow


def launch(tmp: Path, tag: str, prepared: Path, params_file: Path) -> subprocess.CompletedProcess:
    cmd = train_command(tmp / tag, prepared, params_file, tmp / "max_lr.json")
    return subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=600)


def test_two_processes_finish_write_once_and_repeat_exactly(tmp_path):
    folder = image_folder(tmp_path / "images", n_train=200, n_test=50)
    prepared = tmp_path / "prepared"
    prepare(DataParams(source="folder", path=str(folder)), prepared)
    raw = tiny_params(folder)
    raw["train"].update(epochs=2, batch_size=32, nproc_per_node=2)
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(raw))
    (tmp_path / "max_lr.json").write_text('{"max_lr": 0.05}')

    first = launch(tmp_path, "a", prepared, params_file)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "2 processes" in first.stderr
    assert first.stderr.count("Total params:") == 1  # the summary (and every log line) from rank 0 only
    assert first.stderr.count("Test set: Average loss") + first.stdout.count("Test set: Average loss") == 2
    written = sorted(str(p.relative_to(tmp_path / "a")) for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert [w for w in written if not w.startswith("dvclive/")] == [
        "metrics/details/train.json", "metrics/train.json", "models/model.json", "models/model.pt",
        "plots/train_history.csv", "plots/training.png"]
    assert "dvclive/metrics.json" in written and "dvclive/plots/metrics/schedule/lr.tsv" in written
    metrics = json.loads((tmp_path / "a" / "metrics" / "train.json").read_text())
    assert metrics["epochs"] == 2

    second = launch(tmp_path, "b", prepared, params_file)
    assert second.returncode == 0, second.stderr[-3000:]
    a = torch.load(tmp_path / "a" / "models" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "models" / "model.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    strip = lambda p: [line.rsplit(",", 1)[0] for line in p.read_text().splitlines()]  # noqa: E731 (drop seconds)
    assert strip(tmp_path / "a" / "plots/train_history.csv") == strip(tmp_path / "b" / "plots/train_history.csv")
