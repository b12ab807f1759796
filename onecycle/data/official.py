"""The official CIFAR-10 archives, binary and python versions, as train and test splits.

The python-version batches are pickles: they go through `CifarUnpickler`, which can rebuild numpy
arrays and nothing else, so a tampered archive cannot run code.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from onecycle.data.members import location, read_members
from onecycle.data.split import SIZE, SPLITS, DataError, Split

# The published md5s of the two archives (https://www.cs.toronto.edu/~kriz/cifar.html).
CIFAR10_BINARY_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"  # cifar-10-binary.tar.gz
CIFAR10_PYTHON_MD5 = "c58f30108f718f92721af3b95e74349a"  # cifar-10-python.tar.gz

PIXELS = 3 * SIZE * SIZE  # 3072 bytes per image: R, G, B planes of 32x32, row-major
RECORD_BYTES = 1 + PIXELS  # binary version: one label byte, then the image

# Member base names of the two official formats, per split; "meta" holds the class names.
BINARY_MEMBERS = {
    "train": [f"data_batch_{i}.bin" for i in range(1, 6)],
    "test": ["test_batch.bin"],
    "meta": ["batches.meta.txt"],
}
PYTHON_MEMBERS = {
    "train": [f"data_batch_{i}" for i in range(1, 6)],
    "test": ["test_batch"],
    "meta": ["batches.meta"],
}
_OFFICIAL_NAMES = {n for members in (BINARY_MEMBERS, PYTHON_MEMBERS) for names in members.values() for n in names}


def read_official(path: Path) -> tuple[Split, Split, str]:
    """Train and test splits of an official CIFAR-10 archive (or its extracted folder), and its format."""
    files, _ = read_members(path, lambda name: PurePosixPath(name).name in _OFFICIAL_NAMES)
    by_base: dict[str, str] = {}
    for name in files:
        base = PurePosixPath(name).name
        if base in by_base:
            raise DataError(f"{path} holds {base} twice ({by_base[base]} and {name}): keep one copy of the archive")
        by_base[base] = name
    members = _detect_format(set(by_base), path)
    parse = _parse_binary_split if members is BINARY_MEMBERS else _parse_python_split
    classes = (_binary_classes if members is BINARY_MEMBERS else _python_classes)(
        files[by_base[members["meta"][0]]], location(path, by_base[members["meta"][0]])
    )
    train, test = (
        parse([(files[by_base[b]], location(path, by_base[b])) for b in members[split]], classes) for split in SPLITS
    )
    return train, test, "cifar10-binary" if members is BINARY_MEMBERS else "cifar10-python"


def _detect_format(names: set[str], path: Path) -> dict[str, list[str]]:
    for members in (BINARY_MEMBERS, PYTHON_MEMBERS):
        if all(n in names for group in members.values() for n in group):
            return members
    closest = max((BINARY_MEMBERS, PYTHON_MEMBERS), key=lambda m: sum(n in names for g in m.values() for n in g))
    missing = [n for group in closest.values() for n in group if n not in names]
    raise DataError(
        f"{path} is not an official CIFAR-10 archive (cifar-10-binary.tar.gz or cifar-10-python.tar.gz): "
        f"missing {', '.join(missing)}. For an image-folder tree use data.source: folder"
    )


def _check_labels(labels: np.ndarray, num_classes: int, where: str) -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"{where} has labels outside 0..{num_classes - 1}: the archive is damaged, download it again")


def _parse_binary_split(batches: list[tuple[bytes, str]], classes: list[str]) -> Split:
    images, labels = [], []
    for data, where in batches:
        if not data or len(data) % RECORD_BYTES:
            raise DataError(
                f"{where} is {len(data)} bytes, not a whole number of {RECORD_BYTES}-byte records: "
                "the archive is damaged, download it again"
            )
        records = np.frombuffer(data, np.uint8).reshape(-1, RECORD_BYTES)
        batch_labels = records[:, 0].astype(np.int64)
        _check_labels(batch_labels, len(classes), where)
        labels.append(batch_labels)
        images.append(planes_to_nhwc(records[:, 1:]))
    return Split(np.concatenate(images), np.concatenate(labels), classes)


def planes_to_nhwc(rows: np.ndarray) -> np.ndarray:
    """N x 3072 rows of R, G, B planes (32x32 each, row-major) -> contiguous N x 32 x 32 x 3."""
    return np.ascontiguousarray(rows.reshape(-1, 3, SIZE, SIZE).transpose(0, 2, 3, 1))


def _binary_classes(data: bytes, where: str) -> list[str]:
    try:
        classes = [line.strip() for line in data.decode("utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError as err:
        raise DataError(f"{where} is not a text list of class names ({err}): the archive is damaged") from err
    if not classes:
        raise DataError(f"{where} lists no class names: the archive is damaged, download it again")
    return classes


# The one function numpy pickles an ndarray with; it lives in numpy.core (numpy 1) or numpy._core (numpy 2).
_RECONSTRUCT = np.empty(0).__reduce__()[0]
_PICKLE_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class CifarUnpickler(pickle.Unpickler):
    """Unpickles a CIFAR-10 python batch: dicts, lists, bytes, numbers and numpy arrays, nothing else.

    A pickle may call any importable function (os.system through __reduce__), so plain pickle.load
    of a downloaded file runs whatever its author wanted. The official batches need only numpy's
    ndarray reconstruction; every other global is refused before it is imported.
    """

    def __init__(self, file: io.BytesIO, where: str) -> None:
        super().__init__(file, encoding="bytes")  # the batches were pickled by Python 2: str -> bytes
        self._where = where

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _PICKLE_ALLOWED[(module, name)]
        except KeyError:
            raise DataError(
                f"{self._where} refers to {module}.{name}, which a CIFAR-10 batch never needs: refused to "
                "unpickle it (not an official archive, or tampered with)"
            ) from None


def unpickle_batch(data: bytes, where: str) -> dict[str, Any]:
    """A python-version batch as a dict with str keys, through `CifarUnpickler`."""
    try:
        obj = CifarUnpickler(io.BytesIO(data), where).load()
    except DataError:
        raise
    except Exception as err:  # a damaged pickle raises anything from UnpicklingError to TypeError
        raise DataError(f"{where} is not a readable CIFAR-10 batch ({type(err).__name__}: {err}): "
                        "the archive is damaged, download it again") from err
    if not isinstance(obj, dict):
        raise DataError(f"{where} holds a {type(obj).__name__}, not a CIFAR-10 batch dict: the archive is damaged")
    return {k.decode("latin-1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _parse_python_split(batches: list[tuple[bytes, str]], classes: list[str]) -> Split:
    images, labels = [], []
    for data, where in batches:
        batch = unpickle_batch(data, where)
        rows, batch_labels = batch.get("data"), batch.get("labels")
        if not (isinstance(rows, np.ndarray) and rows.dtype == np.uint8 and rows.ndim == 2 and rows.shape[1] == PIXELS):
            raise DataError(f"{where}: 'data' is not an N x {PIXELS} uint8 array: the archive is damaged")
        if not isinstance(batch_labels, list) or len(batch_labels) != len(rows):
            raise DataError(f"{where}: 'labels' is not a list of {len(rows)} labels: the archive is damaged")
        batch_labels = np.asarray(batch_labels, dtype=np.int64)
        _check_labels(batch_labels, len(classes), where)
        labels.append(batch_labels)
        images.append(planes_to_nhwc(rows))
    return Split(np.concatenate(images), np.concatenate(labels), classes)


def _python_classes(data: bytes, where: str) -> list[str]:
    names = unpickle_batch(data, where).get("label_names")
    if not isinstance(names, list) or not names or not all(isinstance(n, (bytes, str)) for n in names):
        raise DataError(f"{where}: 'label_names' is not a list of class names: the archive is damaged")
    return [n.decode("utf-8") if isinstance(n, bytes) else n for n in names]

