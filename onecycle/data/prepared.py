"""The prepared format every stage after download loads, and the class-balanced subsets drawn from it.

Four .npy files (uint8 NHWC RGB images and int64 labels per split), `classes.json` and
`manifest.json`, built in a temp folder and swapped in whole (io.atomic_dir), so DVC never caches
half of it. `np.load` reads all 60,000 images in well under a second, where decoding the JPEGs
again would take seconds per stage.
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import PIL

from onecycle.data.checksums import file_digests
from onecycle.data.split import SIZE, SPLITS, DataError, Split
from onecycle.io import atomic_dir, atomic_open, write_json


def write_prepared(out_dir: Path, train: Split, test: Split, info: dict[str, Any]) -> dict:
    """Write both splits, classes.json and manifest.json (`info` plus counts, file digests and versions)
    to `out_dir`, whole or not at all; return the manifest."""
    with atomic_dir(out_dir) as tmp:
        files = {}
        for name, split in zip(SPLITS, (train, test)):
            files[f"{name}_images.npy"] = _save_npy(tmp / f"{name}_images.npy", split.images)
            files[f"{name}_labels.npy"] = _save_npy(tmp / f"{name}_labels.npy", split.labels)
        write_json(tmp / "classes.json", train.classes)
        manifest = {
            **info,
            "classes": train.classes,
            "counts": {name: _counts(split) for name, split in zip(SPLITS, (train, test))},
            "files": files,
            "created_by": _versions(),
        }
        write_json(tmp / "manifest.json", manifest)
    return manifest


def _save_npy(path: Path, array: np.ndarray) -> dict[str, Any]:
    with atomic_open(path) as handle:
        np.save(handle, array, allow_pickle=False)
    return {"sha256": file_digests(path)["sha256"], "bytes": path.stat().st_size}


def _counts(split: Split) -> dict[str, Any]:
    per_class = np.bincount(split.labels, minlength=len(split.classes))
    return {"total": int(len(split.labels)), "per_class": dict(zip(split.classes, map(int, per_class)))}


def _versions() -> dict[str, str]:
    try:
        onecycle = importlib.metadata.version("onecycle")
    except importlib.metadata.PackageNotFoundError:
        onecycle = "unknown"
    return {"onecycle": onecycle, "python": platform.python_version(), "numpy": np.__version__, "pillow": PIL.__version__}


def load_split(data_dir: Path, split: str, samples: int | None, seed: int) -> Split:
    """One prepared split, whole or as a class-balanced seeded subset of `samples` images.

    The subset is drawn here, not in `prepare`, so that data.train_samples (a quick-run knob)
    never re-prepares and every stage with the same seed sees the same images.
    """
    if split not in SPLITS:
        raise DataError(f"split must be 'train' or 'test', got {split!r}")
    data_dir = Path(data_dir)
    classes = _load_classes(data_dir)
    try:
        images = np.load(data_dir / f"{split}_images.npy", allow_pickle=False)
        labels = np.load(data_dir / f"{split}_labels.npy", allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise _damaged(data_dir, f"{type(err).__name__}: {err}") from err
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (SIZE, SIZE, 3):
        raise _damaged(data_dir, f"{split}_images.npy is {images.dtype} {images.shape}, expected uint8 N x 32 x 32 x 3")
    if labels.dtype != np.int64 or labels.shape != images.shape[:1]:
        raise _damaged(data_dir, f"{split}_labels.npy is {labels.dtype} {labels.shape}, expected int64 ({len(images)},)")
    if labels.size and (labels.min() < 0 or labels.max() >= len(classes)):
        raise _damaged(data_dir, f"{split}_labels.npy has labels outside 0..{len(classes) - 1}")
    if samples is None:
        return Split(images, labels, classes)
    try:
        chosen = balanced_subset(labels, classes, samples, seed)
    except DataError as err:
        raise DataError(f"data.{split}_samples: {err}") from None
    return Split(images[chosen], labels[chosen], classes)


def _load_classes(data_dir: Path) -> list[str]:
    try:
        classes = json.loads((data_dir / "classes.json").read_text())
    except (OSError, ValueError) as err:
        raise _damaged(data_dir, f"classes.json: {err}") from err
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise _damaged(data_dir, "classes.json is not a list of class names")
    return classes


def _damaged(data_dir: Path, detail: str) -> DataError:
    return DataError(f"prepared data in {data_dir} is incomplete or damaged ({detail}): rerun `dvc repro download`")


def class_quotas(samples: int, num_classes: int) -> np.ndarray:
    """Images per class in a balanced subset: samples // classes each, the remainder to the first classes."""
    return samples // num_classes + (np.arange(num_classes) < samples % num_classes)


def balanced_subset(labels: np.ndarray, classes: Sequence[str], samples: int, seed: int) -> np.ndarray:
    """Sorted indices of a class-balanced subset of `samples` images, drawn with `seed`.

    Sorted, so the subset keeps the prepared order (shuffling is the loader's job). DataError if `samples` is
    more than the split holds, fewer than the classes, or needs more of a class than it has.
    """
    if samples > len(labels):
        raise DataError(f"asks for {samples} images but the prepared split has only {len(labels)}")
    if samples < len(classes):
        raise DataError(
            f"asks for {samples} images but there are {len(classes)} classes: a balanced subset needs at least "
            f"one image of each, so ask for {len(classes)} or more"
        )
    rng = np.random.default_rng(seed)
    chosen = []
    for label, quota in enumerate(class_quotas(samples, len(classes))):
        pool = np.flatnonzero(labels == label)
        if quota > len(pool):
            raise DataError(
                f"a balanced subset of {samples} needs {quota} images of class {classes[label]!r}, "
                f"but the prepared split has only {len(pool)}: ask for fewer"
            )
        chosen.append(rng.choice(pool, size=quota, replace=False))
    return np.sort(np.concatenate(chosen))
