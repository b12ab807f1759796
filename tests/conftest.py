"""Shared fixtures: tiny learnable image sets and a narrow-model params object."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
REAL_DATA_DEFAULT = ROOT.parent / "shared" / "datasets" / "cifar10-jpeg.tar.xz"
CLASSES = [f"class{k}" for k in range(10)]


def synthetic_images(n: int, seed: int, num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """uint8 NHWC images whose class sets the mean colour and a bright square's position.

    Learnable in a few epochs by a narrow network, so a test can tell training from noise.
    """
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % num_classes
    rng.shuffle(labels)
    palette = np.random.default_rng(1234).integers(40, 216, size=(num_classes, 3))
    images = palette[labels][:, None, None, :] + rng.normal(0, 25, size=(n, 32, 32, 3))
    for i, k in enumerate(labels):
        r, c = 4 + 2 * (k % 5), 4 + 10 * (k // 5)
        images[i, r : r + 8, c : c + 8] = 250
    return np.clip(images, 0, 255).astype(np.uint8), labels.astype(np.int64)


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
