"""Shared fixtures: tiny learnable image sets and a narrow-model params object."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from onecycle.synthetic import synthetic_images  # noqa: F401 (re-exported for tests)

ROOT = Path(__file__).resolve().parents[1]
REAL_DATA_DEFAULT = ROOT.parent / "shared" / "datasets" / "cifar10-jpeg.tar.xz"
CLASSES = [f"class{k}" for k in range(10)]


def real_data_path() -> Path | None:
    """The shared JPEG CIFAR-10 (ONECYCLE_CIFAR10_JPEG overrides), or None; CI requires it."""
    path = Path(os.environ.get("ONECYCLE_CIFAR10_JPEG", REAL_DATA_DEFAULT))
    if path.is_file():
        return path
    if os.environ.get("ONECYCLE_REQUIRE_REAL_DATA") == "1":
        pytest.fail(f"real data required (ONECYCLE_REQUIRE_REAL_DATA=1) but {path} does not exist")
    return None


@pytest.fixture
def real_data() -> Path:
    path = real_data_path()
    if path is None:
        pytest.skip(
            f"real CIFAR-10 JPEG archive not found at {REAL_DATA_DEFAULT}: "
            "set ONECYCLE_CIFAR10_JPEG to its path to run this test"
        )
    return path
