"""Helpers to drive the real pipeline: a copy of the project in a temporary git repository."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from tests.conftest import ROOT, synthetic_images

PROJECT_FILES = ["dvc.yaml", "params.yaml", ".dvcignore", ".gitignore", "stages", "onecycle"]


def image_folder(root: Path, n_train: int = 200, n_test: int = 50, classes: int = 10) -> Path:
    """An image-folder tree train/<class>/*.png, test/<class>/*.png of learnable 32x32 images."""
    for split, n, seed in (("train", n_train, 0), ("test", n_test, 1)):
        images, labels = synthetic_images(n, seed, classes)
        for i, (img, k) in enumerate(zip(images, labels)):
            folder = root / split / f"c{k}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(folder / f"{i:05d}.png")
    return root


def tiny_params(data_path: Path, **overrides) -> dict:
    """The committed params with a narrow model and a short run on `data_path`."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["data"].update(source="folder", path=str(data_path))
    raw["model"]["width"] = 8
    raw["lr_range_test"].update(num_iter=30, end_lr=10.0)
    raw["train"].update(epochs=2, batch_size=32, device="cpu")
    raw["evaluate"].update(batch_size=64, misclassified=6)
    for key, value in overrides.items():
        section, _, name = key.partition(".")
        if name:
            raw[section][name] = value
        else:
            raw[section] = value
    return raw


def env() -> dict:
    """The environment for stage commands: this interpreter's bin first, so `python` has the project."""
    out = dict(os.environ)
    out["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{out.get('PATH', '')}"
    out["GIT_AUTHOR_NAME"] = out["GIT_COMMITTER_NAME"] = "test"
    out["GIT_AUTHOR_EMAIL"] = out["GIT_COMMITTER_EMAIL"] = "test@example.invalid"
    out["DVC_NO_ANALYTICS"] = "1"
    return out


def run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def dvc(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    return run([str(Path(sys.executable).parent / "dvc"), *args], cwd, check)


def project_copy(dest: Path, params: dict) -> Path:
    """The project's pipeline files in a fresh git + DVC repository at `dest`, first commit made."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest / name)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q", "-b", "main"], dest)
    dvc("init", "-q", cwd=dest)
    shutil.copytree(ROOT / ".dvc" / "plots", dest / ".dvc" / "plots", dirs_exist_ok=True)
    dvc("config", "core.analytics", "false", cwd=dest)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-qm", "project"], dest)
    return dest


def ran_stages(output: str) -> list[str]:
    """Stage names from `dvc repro`'s "Running stage 'name'" lines."""
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")]


def write_params(project: Path, params: dict) -> None:
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def stage(script: str, project: Path, *args: str, check: bool = False) -> subprocess.CompletedProcess:
    return run([sys.executable, f"stages/{script}.py", *args], project, check)


def array(path: Path) -> np.ndarray:
    return np.load(path, allow_pickle=False)
