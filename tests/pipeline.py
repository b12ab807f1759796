"""Helpers to drive the real pipeline: a copy of the project in a temporary git repository.

The copying and the dvc/git calls are repro/check.py's own, so the tests exercise them too.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from onecycle import pipeline
from onecycle.synthetic import image_folder  # noqa: F401 (re-exported for tests)
from repro import check
from tests.conftest import ROOT

env, run, dvc = check.env, check.run, check.dvc


def tiny_params(data_path: Path, **overrides) -> dict:
    """The committed params with a narrow model and a short run on `data_path`, in fp32 on the CPU
    (the precision `auto` picks depends on the CPU type: tests/test_device.py covers that choice)."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["data"].update(source="folder", path=str(data_path))
    raw["model"]["width"] = 8
    raw["lr_range_test"].update(num_iter=30)
    raw["train"].update(epochs=2, batch_size=32, device="cpu", precision="fp32")
    raw["evaluate"].update(batch_size=64, misclassified=6)
    for key, value in overrides.items():
        section, _, name = key.partition(".")
        if name:
            raw[section][name] = value
        else:
            raw[section] = value
    return raw


def project_copy(dest: Path, params: dict) -> Path:
    return check.project_copy(dest, yaml.safe_dump(params, sort_keys=False))


def ran_stages(output: str) -> list[str]:
    """Stage names from `dvc repro`'s "Running stage 'name'" lines."""
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")]


def write_params(project: Path, params: dict) -> None:
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def train_command(out_dir: Path, prepared: Path, params_file: Path, max_lr_file: Path) -> list[str]:
    """dvc.yaml's train_onecycle command on `prepared` and `max_lr_file`, writing under `out_dir`."""
    inputs = {"data/prepared": prepared, "metrics/max_lr.json": max_lr_file}
    return pipeline.command("train_onecycle", params_file, out_dir, inputs)
