"""CIFAR-10 in, prepared arrays out: the three sources, safe archive reading, checksums, subsets.

`prepare` turns one of three sources into the prepared format every later stage loads:

- `cifar10`: the official binary archive, downloaded and md5-verified, then kept as a cache;
- `archive`: a local copy of an official archive (binary or python version), or its extracted folder;
- `folder`: an image-folder tree `train/<class>/*`, `test/<class>/*`, as a folder or a .tar/.tar.gz/
  .tar.xz/.zip of one.

The prepared format is four .npy files (uint8 NHWC RGB images and int64 labels per split),
`classes.json` and `manifest.json`, built in a temp folder and swapped in whole, so DVC never
caches half of it. `np.load` reads all 60,000 images in well under a second, where decoding the
JPEGs again would take seconds per stage.

Nothing in an input is trusted: archive members are read in memory (never extracted to disk),
names that are absolute or contain `..` and links are refused, and the python-version pickles go
through an unpickler that can rebuild numpy arrays and nothing else.
"""

from __future__ import annotations

import hashlib
import http.client
import importlib.metadata
import io
import json
import logging
import lzma
import os
import pickle
import platform
import secrets
import shutil
import stat
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, NamedTuple

import numpy as np
import PIL
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from onecycle.errors import UserError
from onecycle.params import DataParams

log = logging.getLogger(__name__)

# The official archives and their published md5s (https://www.cs.toronto.edu/~kriz/cifar.html).
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
CIFAR10_BINARY_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"  # cifar-10-binary.tar.gz
CIFAR10_PYTHON_MD5 = "c58f30108f718f92721af3b95e74349a"  # cifar-10-python.tar.gz
CACHE_NAME = "cifar-10-binary.tar.gz"  # the verified download, kept beside the prepared folder

DOWNLOAD_ATTEMPTS = 3
DOWNLOAD_BACKOFF_S = 2.0  # seconds before the second attempt, doubled before each later one
DOWNLOAD_TIMEOUT_S = 60.0  # seconds a connect or a single read may block
CHUNK_BYTES = 1 << 20  # 1 MiB: read size for hashing and downloading

SIZE = 32  # CIFAR images are 32x32 pixels
PIXELS = 3 * SIZE * SIZE  # 3072 bytes per image: R, G, B planes of 32x32, row-major
RECORD_BYTES = 1 + PIXELS  # binary version: one label byte, then the image
SPLITS = ("train", "test")

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

# What a damaged or truncated archive raises while it is read (gzip and bz2 raise OSError subclasses).
_ARCHIVE_ERRORS = (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError, OSError)
_NETWORK_ERRORS = (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException)

_LOCAL_COPY_HINT = (
    "To use a local copy instead, set data.source: archive and data.path to a downloaded "
    "cifar-10-binary.tar.gz or cifar-10-python.tar.gz (or its extracted folder), or data.source: folder "
    "and data.path to an image-folder tree train/<class>/*, test/<class>/* (a folder, .tar, .tar.gz, "
    ".tar.xz or .zip)"
)


class DataError(UserError):
    """The data source is missing, damaged, unsafe or not laid out as expected; the message says what to do."""


@dataclass(frozen=True, eq=False)  # eq=False: comparing arrays elementwise has no single truth value
class Split:
    images: np.ndarray  # uint8, N x 32 x 32 x 3, RGB (NHWC)
    labels: np.ndarray  # int64, N, index into classes
    classes: list[str]


class _Source(NamedTuple):
    train: Split
    test: Split
    info: dict[str, Any]  # source, path, format, source_sha256 (for the manifest)


# ----------------------------------------------------------------------------- prepare


def prepare(
    params: DataParams,
    out_dir: Path,
    seed: int,
    *,
    download_url: str = CIFAR10_URL,
    download_md5: str = CIFAR10_BINARY_MD5,
) -> dict:
    """Read the source named by `params` and write the prepared dataset to `out_dir`; return its manifest.

    All of both splits is written; subsets are taken at load time (`load_split`), so changing
    data.train_samples never re-prepares. `seed` is accepted for the stages' uniform call and
    unused: preparation draws nothing at random. `download_url`/`download_md5` exist so tests can
    serve a tiny archive locally (source `cifar10` with checksum `auto`).
    """
    del seed
    out_dir = Path(out_dir)
    source = _read_source(params, out_dir.parent, download_url, download_md5)
    return _write_prepared(out_dir, source)


def _read_source(params: DataParams, cache_dir: Path, url: str, md5: str) -> _Source:
    if params.source == "cifar10":
        return _read_cifar10(params, cache_dir / CACHE_NAME, url, md5)
    path = Path(params.path).expanduser()
    if not path.exists():
        raise DataError(f"data.path {path} does not exist: set data.path in params.yaml to your local archive or folder")
    if params.source == "archive":
        sha256 = _check_source_file(path, params.checksum, (CIFAR10_BINARY_MD5, CIFAR10_PYTHON_MD5))
        train, test, fmt = read_official(path)
    else:
        sha256 = _check_source_file(path, params.checksum, ())
        train, test = read_folder(path, params.resize)
        fmt = "image-folder"
    return _Source(train, test, _info(params.source, str(params.path), fmt, sha256 or folder_digest(path)))


def _info(source: str, path: str, fmt: str, sha256: str) -> dict[str, Any]:
    return {"source": source, "path": path, "format": fmt, "source_sha256": sha256}


def _write_prepared(out_dir: Path, source: _Source) -> dict:
    """Write every file into a temp folder beside `out_dir`, then swap it in; on any error remove it."""
    tmp = _new_dir_beside(out_dir, "tmp")
    try:
        files = {}
        for name, split in zip(SPLITS, (source.train, source.test)):
            files[f"{name}_images.npy"] = _save_npy(tmp / f"{name}_images.npy", split.images)
            files[f"{name}_labels.npy"] = _save_npy(tmp / f"{name}_labels.npy", split.labels)
        classes = source.train.classes
        _save_json(tmp / "classes.json", classes)
        manifest = {
            **source.info,
            "classes": classes,
            "counts": {name: _counts(split) for name, split in zip(SPLITS, (source.train, source.test))},
            "files": files,
            "created_by": _versions(),
        }
        _save_json(tmp / "manifest.json", manifest)
        _swap_in(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _save_npy(path: Path, array: np.ndarray) -> dict[str, Any]:
    with open(path, "wb") as handle:
        np.save(handle, array, allow_pickle=False)
        handle.flush()
        os.fsync(handle.fileno())
    return {"sha256": file_digests(path)["sha256"], "bytes": path.stat().st_size}


def _save_json(path: Path, obj: Any) -> None:
    # A plain write: the whole temp folder is what moves into place atomically.
    with open(path, "w") as handle:
        handle.write(json.dumps(obj, indent=2, allow_nan=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def _new_dir_beside(path: Path, suffix: str) -> Path:
    """A new empty hidden folder beside `path`, created with the user's umask (mkdtemp's would be 0700)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        candidate = path.parent / f".{path.name}.{secrets.token_hex(4)}.{suffix}"
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue


def _swap_in(tmp: Path, out_dir: Path) -> None:
    """Replace `out_dir` by `tmp`. A crash in between leaves no `out_dir`, never a half-written one."""
    old = None
    if out_dir.exists() or out_dir.is_symlink():
        old = _new_dir_beside(out_dir, "old")
        os.replace(out_dir, old / out_dir.name)
    os.replace(tmp, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _counts(split: Split) -> dict[str, Any]:
    per_class = np.bincount(split.labels, minlength=len(split.classes))
    return {"total": int(len(split.labels)), "per_class": dict(zip(split.classes, map(int, per_class)))}


def _versions() -> dict[str, str]:
    try:
        onecycle = importlib.metadata.version("onecycle")
    except importlib.metadata.PackageNotFoundError:
        onecycle = "unknown"
    return {"onecycle": onecycle, "python": platform.python_version(), "numpy": np.__version__, "pillow": PIL.__version__}


# ----------------------------------------------------------------------------- checksums


def file_digests(path: Path) -> dict[str, str]:
    """md5 and sha256 of a file in one pass (md5 to match the published digests, sha256 for the manifest)."""
    md5, sha256 = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            md5.update(chunk)
            sha256.update(chunk)
    return {"md5": md5.hexdigest(), "sha256": sha256.hexdigest()}


def accepted_digests(checksum: str, published_md5s: Sequence[str]) -> list[str]:
    """The digests ("md5:<hex>"/"sha256:<hex>") a file may match; empty: no check.

    "auto" accepts the published md5s of the source (none for image folders), "none" skips the check.
    """
    if checksum == "none":
        return []
    if checksum == "auto":
        return [f"md5:{md5}" for md5 in published_md5s]
    return [checksum.lower()]


def check_digests(what: str, digests: dict[str, str], accepted: Sequence[str]) -> None:
    """Raise DataError, with expected and actual digests, unless `digests` match one of `accepted`."""
    if not accepted or any(digests[a.partition(":")[0]] == a.partition(":")[2] for a in accepted):
        return
    algos = sorted({a.partition(":")[0] for a in accepted})
    actual = ", ".join(f"{algo}:{digests[algo]}" for algo in algos)
    raise DataError(
        f"checksum mismatch for {what}: expected {' or '.join(accepted)}, got {actual}. The file is damaged or "
        "not the one expected: download it again, or, if you trust this copy, set data.checksum to its digest or none"
    )


def _check_source_file(path: Path, checksum: str, published_md5s: Sequence[str]) -> str | None:
    """Verify a local source file; return its sha256 (None for a folder: see `folder_digest`)."""
    if path.is_dir():
        if checksum not in ("auto", "none"):
            raise DataError(
                f"data.checksum {checksum} applies to a file, but data.path {path} is a folder: "
                "set data.checksum: auto or none"
            )
        return None
    digests = file_digests(path)
    check_digests(str(path), digests, accepted_digests(checksum, published_md5s))
    return digests["sha256"]


# ----------------------------------------------------------------------------- source cifar10 (download)


def _read_cifar10(params: DataParams, cache: Path, url: str, md5: str) -> _Source:
    accepted = accepted_digests(params.checksum, (md5,))
    digests = file_digests(cache) if cache.is_file() else None
    if digests is not None and (not accepted or _matches(digests, accepted)):
        log.info("using the verified download %s", cache)
    else:
        digests = download(url, cache, accepted)
    train, test, fmt = read_official(cache)
    return _Source(train, test, _info("cifar10", url, fmt, digests["sha256"]))


def _matches(digests: dict[str, str], accepted: Sequence[str]) -> bool:
    try:
        check_digests("", digests, accepted)
    except DataError:
        return False
    return True


def download(
    url: str,
    dest: Path,
    accepted: Sequence[str],
    *,
    attempts: int = DOWNLOAD_ATTEMPTS,
    backoff_s: float = DOWNLOAD_BACKOFF_S,
) -> dict[str, str]:
    """Fetch `url` to `dest`, retrying network errors; `dest` appears only once its checksum passed.

    Returns the file's digests. The bytes go to a temp file beside `dest`, removed on any failure.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        _fetch_with_retries(url, tmp, attempts, backoff_s)
        digests = file_digests(tmp)
        check_digests(f"the download of {url}", digests, accepted)
        os.replace(tmp, dest)
        return digests
    finally:
        tmp.unlink(missing_ok=True)


def _fetch_with_retries(url: str, dest: Path, attempts: int, backoff_s: float) -> None:
    for attempt in range(1, attempts + 1):
        try:
            _fetch(url, dest)
            return
        except _NETWORK_ERRORS as err:
            last = err
            if attempt < attempts:
                delay_s = backoff_s * 2 ** (attempt - 1)
                log.warning("download attempt %d of %d failed (%s); retrying in %.0f s", attempt, attempts, err, delay_s)
                time.sleep(delay_s)
    reason = getattr(last, "reason", None) or last
    raise DataError(f"could not download {url} after {attempts} attempts ({reason}): no network? {_LOCAL_COPY_HINT}")


def _fetch(url: str, dest: Path) -> None:
    log.info("downloading %s", url)
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response, open(dest, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None  # bytes; None: unknown
        received = 0
        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=PurePosixPath(url).name) as bar:
            while chunk := response.read(CHUNK_BYTES):
                out.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    if total is not None and received != total:
        raise http.client.IncompleteRead(b"", total - received)


# ----------------------------------------------------------------------------- reading members safely


def member_name(raw: str, archive: Path) -> str:
    """The normalized relative name of an archive member; DataError if it could point outside the archive."""
    if raw.startswith(("/", "\\")) or PureWindowsPath(raw).drive:
        raise DataError(f"{archive}: member {raw!r} has an absolute path: refusing to read this archive (unsafe)")
    parts = [p for p in raw.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise DataError(f"{archive}: member {raw!r} points outside the archive ('..'): refusing to read it (unsafe)")
    return "/".join(parts)


def _hidden(name: str) -> bool:
    """Files the OS or an archiver adds (.DS_Store, ._x, __MACOSX/): never data."""
    return any(part.startswith(".") or part == "__MACOSX" for part in name.split("/"))


Keep = Callable[[str], bool]  # which file members to read into memory, by normalized name


def read_members(path: Path, keep: Keep) -> tuple[dict[str, bytes], set[str]]:
    """File contents (name -> bytes) of the kept, non-hidden members of a folder or archive, and all folder names.

    Every member is validated, kept or not. Archives are read in memory: .tar in any compression
    as a stream (a .tar.xz cannot seek cheaply), .zip by its index.
    """
    if path.is_dir():
        return _read_folder_files(path, keep)
    try:
        if zipfile.is_zipfile(path):
            return _read_zip(path, keep)
        return _read_tar(path, keep)
    except _ARCHIVE_ERRORS as err:
        raise DataError(
            f"cannot read archive {path} ({type(err).__name__}: {err}): it is damaged or truncated (copy or "
            "download it again), or not a .tar, .tar.gz, .tar.xz or .zip archive"
        ) from err


def _read_tar(path: Path, keep: Keep) -> tuple[dict[str, bytes], set[str]]:
    files, dirs = {}, set()
    with tarfile.open(path, mode="r|*") as tar:
        for member in tar:
            name = member_name(member.name, path)
            if member.issym() or member.islnk():
                kind = "symlink" if member.issym() else "hardlink"
                raise DataError(f"{path}: member {member.name!r} is a {kind} (to {member.linkname!r}): links are refused")
            if member.isdir():
                if not _hidden(name):
                    dirs.add(name)
            elif not member.isfile():
                raise DataError(f"{path}: member {member.name!r} is a device or fifo, not a file: refused")
            elif not _hidden(name) and keep(name):
                files[name] = tar.extractfile(member).read()
    return files, dirs


def _read_zip(path: Path, keep: Keep) -> tuple[dict[str, bytes], set[str]]:
    files, dirs = {}, set()
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            name = member_name(info.filename, path)
            if stat.S_ISLNK(info.external_attr >> 16):  # unix mode in the high 16 bits
                raise DataError(f"{path}: member {info.filename!r} is a symlink: links are refused")
            if info.is_dir():
                if not _hidden(name):
                    dirs.add(name)
            elif not _hidden(name) and keep(name):
                files[name] = archive.read(info)
    return files, dirs


def _read_folder_files(root: Path, keep: Keep) -> tuple[dict[str, bytes], set[str]]:
    files, dirs = {}, set()
    for current, subdirs, names in os.walk(root):
        base = Path(current).relative_to(root).as_posix()
        for entry in subdirs + names:
            name = entry if base == "." else f"{base}/{entry}"
            if _hidden(name):
                continue
            if os.path.islink(os.path.join(current, entry)):
                raise DataError(f"{root / name} is a symlink: links are not followed, copy the file or folder in instead")
            if entry in subdirs:
                dirs.add(name)
            elif keep(name):
                files[name] = (root / name).read_bytes()
        subdirs[:] = [d for d in subdirs if not d.startswith(".")]
    return files, dirs


def _where(path: Path, name: str) -> str:
    """How an error names a file: its path in a folder, or the member and the archive."""
    return str(path / name) if path.is_dir() else f"member {name} of {path}"


# ----------------------------------------------------------------------------- official archives


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
        files[by_base[members["meta"][0]]], _where(path, by_base[members["meta"][0]])
    )
    train, test = (
        parse([(files[by_base[b]], _where(path, by_base[b])) for b in members[split]], classes) for split in SPLITS
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


# ----------------------------------------------------------------------------- image folders


def read_folder(path: Path, resize: bool) -> tuple[Split, Split]:
    """Train and test splits of an image-folder tree (a folder or an archive of one).

    Labels are indices into the sorted class folder names; images within a class follow their
    file names, so the result does not depend on the order of a listing or an archive.
    """
    files, dirs = read_members(path, lambda name: True)
    dirs |= {parent for name in files for parent in _parents(name)}
    root = find_root(dirs, path)
    per_split = {split: _class_files(files, dirs, f"{root}{split}", path) for split in SPLITS}
    classes = sorted(per_split["train"])
    if set(per_split["test"]) != set(classes):
        only_train = sorted(set(classes) - set(per_split["test"]))
        only_test = sorted(set(per_split["test"]) - set(classes))
        raise DataError(
            f"train/ and test/ in {path} must have the same class folders: only in train: {only_train}, "
            f"only in test: {only_test}"
        )
    names = {split: [name for cls in classes for name in per_split[split][cls]] for split in SPLITS}
    every = names["train"] + names["test"]
    in_folder = path.is_dir()
    wheres = [f"{path}/{name}" if in_folder else f"member {name} of {path}" for name in every]
    images = decode_images([files[name] for name in every], wheres, resize)
    splits = []
    for split, start in zip(SPLITS, (0, len(names["train"]))):
        counts = [len(per_split[split][cls]) for cls in classes]
        labels = np.repeat(np.arange(len(classes), dtype=np.int64), counts)
        splits.append(Split(images[start:start + len(labels)], labels, classes))
    return splits[0], splits[1]


def _parents(name: str) -> list[str]:
    parts = name.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def find_root(dirs: set[str], path: Path) -> str:
    """The prefix ("" or "top/") of the shallowest folder holding both train/ and test/."""
    candidates = {""} | dirs
    both = [d for d in candidates if _join(d, "train") in dirs and _join(d, "test") in dirs]
    if not both:
        halves = sorted(d for d in dirs if PurePosixPath(d).name in SPLITS)
        found = f"found only {', '.join(h + '/' for h in halves)}" if halves else "found neither train/ nor test/"
        raise DataError(
            f"{path} is not an image-folder tree: expected train/<class>/<image> and test/<class>/<image> "
            f"(at the top or under one folder), {found}"
        )
    depth = min(d.count("/") + bool(d) for d in both)
    shallowest = sorted(d for d in both if d.count("/") + bool(d) == depth)
    if len(shallowest) > 1:
        raise DataError(f"{path} holds several image-folder trees ({', '.join(shallowest)}): keep one")
    return f"{shallowest[0]}/" if shallowest[0] else ""


def _join(parent: str, child: str) -> str:
    return f"{parent}/{child}" if parent else child


def _class_files(files: dict[str, bytes], dirs: set[str], base: str, path: Path) -> dict[str, list[str]]:
    """Class name -> its image names sorted by name, for the split folder `base`."""
    prefix = f"{base}/"
    by_class: dict[str, list[str]] = {d[len(prefix):]: [] for d in dirs if d.startswith(prefix) and "/" not in d[len(prefix):]}
    for name in files:
        if name.startswith(prefix):
            rest = name[len(prefix):].split("/")
            if len(rest) != 2:
                raise DataError(f"{_where(path, name)} is not directly inside a class folder: expected {base}/<class>/<image>")
            by_class[rest[0]].append(name)
    if not by_class:
        raise DataError(f"{base}/ in {path} has no class folders: expected {base}/<class>/<image>")
    for name, images in by_class.items():
        if not images:
            raise DataError(f"class folder {base}/{name} in {path} has no images: add its images or remove the folder")
    return {name: sorted(images) for name, images in by_class.items()}


def decode_images(datas: list[bytes], wheres: list[str], resize: bool) -> np.ndarray:
    """Decode encoded images into one N x 32 x 32 x 3 uint8 array; `wheres` names each one in errors.

    One process: on the 2 shared cores we plan for, a pool of 2 decoded the 60,000 JPEGs of
    ../shared/datasets in 2.7-4.2 s against 3.5-4.1 s alone, not worth worker start-up and the
    `spawn` pitfalls (it cannot start from `python -`).
    """
    images = np.empty((len(datas), SIZE, SIZE, 3), np.uint8)
    for i, (data, where) in enumerate(zip(datas, wheres)):
        images[i] = decode_image(data, where, resize)
    return images


def decode_image(data: bytes, where: str, resize: bool) -> np.ndarray:
    """A 32 x 32 x 3 uint8 RGB array from encoded image bytes.

    Anything other than RGB 32x32 is an error unless `resize` (then: convert to RGB, bilinear resize):
    silently converting would hide a wrong dataset.
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()  # decode now, so a truncated file fails here and is named
            if image.mode != "RGB" or image.size != (SIZE, SIZE):
                if not resize:
                    raise DataError(
                        f"{where} is a {image.mode} {image.size[0]}x{image.size[1]} image, expected RGB {SIZE}x{SIZE}: "
                        "convert it, or set data.resize: true to convert to RGB and resize (bilinear)"
                    )
                return np.asarray(image.convert("RGB").resize((SIZE, SIZE), Image.Resampling.BILINEAR))
            return np.asarray(image)
    except UnidentifiedImageError:
        raise DataError(f"{where} is not an image PIL can read: remove it (class folders must hold only images)") from None
    except (OSError, Image.DecompressionBombError) as err:
        raise DataError(f"{where} is a damaged image ({err}): replace or remove it") from err


def folder_digest(root: Path) -> str:
    """sha256 of a folder's listing: one "name<TAB>sha256 of content" line per non-hidden file, sorted.

    It identifies a folder's content the way a file's digest identifies an archive.
    """
    names = sorted(
        (Path(current) / name).relative_to(root).as_posix() for current, _, files in os.walk(root) for name in files
    )
    lines = [f"{name}\t{file_digests(root / name)['sha256']}\n" for name in names if not _hidden(name)]
    return hashlib.sha256("".join(lines).encode()).hexdigest()


# ----------------------------------------------------------------------------- loading and subsets


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

    Sorted, so the subset keeps the prepared order (shuffling is the loader's job).
    """
    if samples > len(labels):
        raise DataError(f"asks for {samples} images but the prepared split has only {len(labels)}")
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
