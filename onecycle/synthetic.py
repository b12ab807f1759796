"""Generated image sets: learnable, deterministic, tiny. For tests and the reproduction check.

Not a fallback for real data: no stage ever uses these unless a user points data.path at a
folder written by `image_folder`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def synthetic_images(n: int, seed: int, num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """uint8 NHWC 32x32 images whose class sets the mean colour and a bright square's position.

    A narrow network learns them in a few epochs, so a check can tell training from noise.
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


def image_folder(root: Path, n_train: int = 200, n_test: int = 50, classes: int = 10) -> Path:
    """Write an image-folder tree train/c<k>/*.png, test/c<k>/*.png of `synthetic_images`."""
    from PIL import Image

    for split, n, seed in (("train", n_train, 0), ("test", n_test, 1)):
        images, labels = synthetic_images(n, seed, classes)
        for i, (img, k) in enumerate(zip(images, labels)):
            folder = Path(root) / split / f"c{k}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(folder / f"{i:05d}.png")
    return Path(root)
