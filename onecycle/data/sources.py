"""The three sources `prepare` reads, and the download of the official archive.

- `cifar10`: the official binary archive, downloaded and md5-verified, then kept as a cache;
- `archive`: a local copy of an official archive (binary or python version), or its extracted folder;
- `folder`: an image-folder tree `train/<class>/*`, `test/<class>/*`, as a folder or a .tar/.tar.gz/
  .tar.xz/.zip of one.
"""

from __future__ import annotations

import http.client
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, NamedTuple

from tqdm import tqdm

from onecycle.data.checksums import (
    CHUNK_BYTES,
    Digester,
    accepted_digests,
    check_digests,
    check_source_file,
    digests_match,
    file_digests,
    folder_digest,
)
from onecycle.data.images import read_folder
from onecycle.data.official import CIFAR10_BINARY_MD5, CIFAR10_PYTHON_MD5, read_official
from onecycle.data.prepared import write_prepared
from onecycle.data.split import DataError, Split
from onecycle.io import atomic_open, remove_stale_temps
from onecycle.params import DataParams

log = logging.getLogger(__name__)

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"  # published md5: CIFAR10_BINARY_MD5
CACHE_NAME = "cifar-10-binary.tar.gz"  # the verified download, kept beside the prepared folder

DOWNLOAD_ATTEMPTS = 3
DOWNLOAD_BACKOFF_S = 2.0  # seconds before the second attempt, doubled before each later one
DOWNLOAD_TIMEOUT_S = 60.0  # seconds a connect or a single read may block

_NETWORK_ERRORS = (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException)

_LOCAL_COPY_HINT = (
    "To use a local copy instead, set data.source: archive and data.path to a downloaded "
    "cifar-10-binary.tar.gz or cifar-10-python.tar.gz (or its extracted folder), or data.source: folder "
    "and data.path to an image-folder tree train/<class>/*, test/<class>/* (a folder, .tar, .tar.gz, "
    ".tar.xz or .zip)"
)


class _Source(NamedTuple):
    train: Split
    test: Split
    info: dict[str, Any]  # source, path, format, source_sha256 (for the manifest)


def prepare(
    params: DataParams,
    out_dir: Path,
    *,
    download_url: str = CIFAR10_URL,
    download_md5: str = CIFAR10_BINARY_MD5,
) -> dict:
    """Read the source named by `params` and write the prepared dataset to `out_dir`; return its manifest.

    All of both splits is written; subsets are taken at load time (`load_split`), so changing
    data.train_samples never re-prepares. `download_url`/`download_md5` exist so tests can
    serve a tiny archive locally (source `cifar10` with checksum `auto`).
    """
    out_dir = Path(out_dir)
    # A run killed without cleanup (SIGKILL) leaves hidden temps, up to the size of the archive: gone at the next start.
    for path in (out_dir, out_dir.parent / CACHE_NAME):
        remove_stale_temps(path)
    source = _read_source(params, out_dir.parent, download_url, download_md5)
    return write_prepared(out_dir, source.train, source.test, source.info)


def resolve_data_path(raw: str, cwd: Path | None = None) -> tuple[Path, Path | None]:
    """data.path as the user meant it, and the folder a relative one was read from (None: absolute).

    A relative path is relative to the project folder the user runs DVC in. Queued and `--temp`
    experiments run in a copy of the project under <project>/.dvc/tmp/exps/...: there a relative
    path is read from <project>, where the user wrote it, not from the copy."""
    path = Path(raw).expanduser()
    if path.is_absolute():
        return path, None
    here = (Path.cwd() if cwd is None else cwd).resolve()
    parts = here.parts
    copy = next((i for i in range(len(parts) - 1) if parts[i] == ".dvc" and parts[i + 1] == "tmp"), None)
    base = Path(*parts[:copy]) if copy is not None else here
    return base / path, base


def _read_source(params: DataParams, cache_dir: Path, url: str, md5: str) -> _Source:
    if params.source == "cifar10":
        return _read_cifar10(params, cache_dir / CACHE_NAME, url, md5)
    path, base = resolve_data_path(params.path)
    if not path.exists():
        where = f" (a relative path is read from the project folder, {base})" if base is not None else ""
        raise DataError(f"data.path {params.path} does not exist{where}: set data.path in params.yaml to your "
                        "local archive or folder, relative to the project folder or absolute")
    if params.source == "archive":
        sha256 = check_source_file(path, params.checksum, (CIFAR10_BINARY_MD5, CIFAR10_PYTHON_MD5))
        train, test, fmt = read_official(path)
    else:
        sha256 = check_source_file(path, params.checksum, ())
        train, test = read_folder(path, params.resize)
        fmt = "image-folder"
    return _Source(train, test, _info(params.source, str(params.path), fmt, sha256 or folder_digest(path)))


def _info(source: str, path: str, fmt: str, sha256: str) -> dict[str, Any]:
    return {"source": source, "path": path, "format": fmt, "source_sha256": sha256}


def _read_cifar10(params: DataParams, cache: Path, url: str, md5: str) -> _Source:
    accepted = accepted_digests(params.checksum, (md5,))
    digests = file_digests(cache) if cache.is_file() else None
    if digests is not None and digests_match(digests, accepted):
        log.info("using the verified download %s", cache)
    else:
        digests = download(url, cache, accepted)
    train, test, fmt = read_official(cache)
    return _Source(train, test, _info("cifar10", url, fmt, digests["sha256"]))


def download(
    url: str,
    dest: Path,
    accepted: Sequence[str],
    *,
    attempts: int = DOWNLOAD_ATTEMPTS,
    backoff_s: float = DOWNLOAD_BACKOFF_S,
) -> dict[str, str]:
    """Fetch `url` to `dest`, retrying network errors; `dest` appears only once its checksum passed.

    Returns the file's digests. The bytes go to a temp file beside `dest` (io.atomic_open), removed
    on any failure.
    """
    with atomic_open(dest) as handle:
        digests = _fetch_with_retries(url, handle, attempts, backoff_s)
        check_digests(f"the download of {url}", digests, accepted)
    return digests


def _fetch_with_retries(url: str, out: BinaryIO, attempts: int, backoff_s: float) -> dict[str, str]:
    for attempt in range(1, attempts + 1):
        try:
            return _fetch(url, out)
        except _NETWORK_ERRORS as err:
            last = err
            if attempt < attempts:
                delay_s = backoff_s * 2 ** (attempt - 1)
                log.warning("download attempt %d of %d failed (%s); retrying in %.0f s", attempt, attempts, err, delay_s)
                time.sleep(delay_s)
    reason = getattr(last, "reason", None) or last
    raise DataError(f"could not download {url} after {attempts} attempts ({reason}): no network? {_LOCAL_COPY_HINT}")


def _fetch(url: str, out: BinaryIO) -> dict[str, str]:
    """Write the body of `url` to `out` from its start (a retry overwrites a partial attempt); return its digests."""
    log.info("downloading %s", url)
    out.seek(0)
    out.truncate()
    digester = Digester()
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
        total = int(response.headers.get("Content-Length") or 0) or None  # bytes; None: unknown
        received = 0
        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=PurePosixPath(url).name) as bar:
            while chunk := response.read(CHUNK_BYTES):
                out.write(chunk)
                digester.update(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    if total is not None and received != total:
        raise http.client.IncompleteRead(b"", total - received)
    return digester.hexdigests()
