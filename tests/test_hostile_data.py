"""Hostile and broken data sources (issue 13): each is refused by the download stage with `error:`,
exit 2 (143 for SIGTERM), its key words, nothing left behind, and a normal run next.

The hostile files are built here, small on disk: a zip member and a PNG's pixels are deflated
zeros, one compressed MiB repeated (a full flush resets the compressor, so every MiB compresses to
the same 1 KB). Where memory is the danger, the stage runs in a subprocess whose peak RSS is read
with os.wait4.
"""

from __future__ import annotations

import errno
import http.server
import io
import os
import runpy
import signal
import struct
import subprocess
import sys
import tarfile
import threading
import time
import warnings
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from onecycle import cli
from onecycle.data import MAX_IMAGE_PIXELS, MAX_MEMBER_BYTES, DataError, load_split, members, prepare
from onecycle.data.images import decode_image
from onecycle.io import WriteError, atomic_open
from onecycle.params import DataParams
from tests.conftest import ROOT

MIB = 1 << 20
PEAK_RSS_LIMIT_MIB = 200  # the stage itself peaks near 45 MiB; the bombs below took 1.4-2.1 GB before


# ----------------------------------------------------------------------------- builders


def png(size: int = 32, mode: str = "RGB", value: int | tuple = (10, 20, 30), fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (size, size), value).save(buffer, format=fmt)
    return buffer.getvalue()


def good_tree(classes: tuple[str, ...] = ("cat", "dog")) -> dict[str, bytes]:
    return {f"{split}/{c}/{i}.png": png() for split in ("train", "test") for c in classes for i in range(2)}


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    for name, payload in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(payload)
    return root


def tar_of(path: Path, members_: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, payload in members_:
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return path


def deflate_zeros(n: int) -> bytes:
    """Raw deflate of `n` zero bytes, about 1 KB per MiB."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    mib, rest = divmod(n, MIB)
    block = compressor.compress(bytes(MIB)) + compressor.flush(zlib.Z_FULL_FLUSH)
    return block * mib + compressor.compress(bytes(rest)) + compressor.flush()


def zip_of_zeros(path: Path, name: str, size: int) -> Path:
    """A valid zip whose one member holds `size` zero bytes, written by hand (zipfile would compress them)."""
    data = deflate_zeros(size)
    crc = 0
    for start in range(0, size, MIB):
        crc = zlib.crc32(bytes(min(MIB, size - start)), crc)
    raw = name.encode()
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0x21, crc, len(data), size, len(raw), 0) + raw
    central = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0x21, crc, len(data), size, len(raw),
                          0, 0, 0, 0, 0, 0) + raw
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(central), len(local) + len(data), 0)
    path.write_bytes(local + data + central + end)
    return path


def png_of_zeros(width: int, height: int) -> bytes:
    """A valid black RGB PNG of width x height (427 KB for 12000 x 12000, 432 MB of pixels decoded)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    raw = (1 + 3 * width) * height  # a filter byte, then RGB, per row
    adler = ((raw % 65521) << 16) | 1  # Adler-32 of `raw` zeros
    idat = b"\x78\xda" + deflate_zeros(raw) + struct.pack(">I", adler)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8 bits, RGB
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


# ----------------------------------------------------------------------------- running the stage


def leftovers(out: Path) -> list[str]:
    """Hidden entries beside the output: temp files or folders a failed run left behind."""
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(".")) if out.parent.exists() else []


def next_run_works(tmp: Path, out: Path) -> None:
    tree = write_tree(tmp / "good-tree", good_tree())
    manifest = prepare(DataParams(source="folder", path=str(tree)), out)
    assert manifest["counts"]["train"]["total"] == 4 and leftovers(out) == []


def download_fails(tmp: Path, capsys, data: dict, *words: str,
                   inject: Callable[[pytest.MonkeyPatch], None] = lambda mp: None) -> str:
    """Run the download stage in this process on `data` (with `inject`'s patches): exit 2, `error:`
    with `words`, the planted stale output removed, no temp left, and a normal run next."""
    out = tmp / "out" / "prepared"
    out.mkdir(parents=True, exist_ok=True)
    (out / "stale.npy").write_bytes(b"stale")
    params = tmp / "params.yaml"
    params.write_text(yaml.safe_dump({"data": {"checksum": "none", **data}}))
    argv = sys.argv
    sys.argv = ["stages/download.py", "--params", str(params), "--out", str(out)]
    try:
        with pytest.raises(SystemExit) as exit_info, pytest.MonkeyPatch.context() as patches:
            inject(patches)
            runpy.run_path(str(ROOT / "stages" / "download.py"), run_name="__main__")
    finally:
        sys.argv = argv
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert "error: " in err and "Traceback" not in err
    for word in words:
        assert word in err, f"{word!r} not in: {err}"
    assert not out.exists() and leftovers(out) == []
    next_run_works(tmp, out)
    return err


# Runs a command and prints its peak RSS. The test process cannot measure the stage itself: on Linux
# a child's ru_maxrss includes the memory of the process it was forked from (torch-sized, here).
PEAK_RSS = """
import os, subprocess, sys
proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(proc.pid, 0)
print(usage.ru_maxrss / (1 << 20 if sys.platform == "darwin" else 1 << 10))  # MiB (bytes on macOS, KiB on Linux)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def stage_in_subprocess(tmp: Path, data: dict) -> tuple[int, str, float]:
    """Run the download stage in a subprocess: its exit code, stderr and peak RSS in MiB."""
    params = tmp / "params.yaml"
    params.write_text(yaml.safe_dump({"data": {"checksum": "none", **data}}))
    out = tmp / "out" / "prepared"
    result = subprocess.run(
        [sys.executable, "-c", PEAK_RSS, sys.executable, str(ROOT / "stages" / "download.py"),
         "--params", str(params), "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert not out.exists() and leftovers(out) == []
    return result.returncode, result.stderr, float(result.stdout)


# ----------------------------------------------------------------------------- kind 1: endless or far bigger than it says


@pytest.mark.timeout(30)  # before the fix, reading the FIFO waited forever
def test_fifo_inside_the_tree_is_refused_by_name(tmp_path, capsys):
    tree = write_tree(tmp_path / "tree", good_tree())
    os.mkfifo(tree / "train" / "cat" / "pipe.png")
    download_fails(tmp_path, capsys, {"source": "folder", "path": str(tree)},
                   "pipe.png", "FIFO", "not a regular file")


@pytest.mark.timeout(30)
@pytest.mark.parametrize("source, checksum", [("folder", "none"), ("folder", "auto"), ("archive", "none")])
def test_data_path_naming_a_fifo_is_refused(tmp_path, capsys, source, checksum):
    fifo = tmp_path / "cifar.tar.gz"
    os.mkfifo(fifo)
    download_fails(tmp_path, capsys, {"source": source, "path": str(fifo), "checksum": checksum},
                   str(fifo), "FIFO", "not a regular file")


@pytest.mark.timeout(30)
@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero here")
def test_data_path_naming_dev_zero_is_refused(tmp_path, capsys):
    download_fails(tmp_path, capsys, {"source": "folder", "path": "/dev/zero"},
                   "/dev/zero", "character device", "not a regular file")


def test_zip_with_a_1_gib_member_is_refused_unread(tmp_path):
    bomb = zip_of_zeros(tmp_path / "bomb.zip", "train/cat/big.png", 1 << 30)
    assert bomb.stat().st_size < 2 * MIB
    code, err, peak_mib = stage_in_subprocess(tmp_path, {"source": "folder", "path": str(bomb)})
    assert code == 2, err
    for word in ("error: ", "train/cat/big.png", "1,073,741,824 bytes", f"{MAX_MEMBER_BYTES >> 20} MiB", "refused"):
        assert word in err
    assert peak_mib < PEAK_RSS_LIMIT_MIB, f"peak RSS {peak_mib:.0f} MiB"


@pytest.mark.parametrize("resize", [False, True])
def test_png_declaring_12000x12000_is_refused_before_decoding(tmp_path, resize):
    tree = write_tree(tmp_path / "tree", good_tree() | {"train/dog/huge.png": png_of_zeros(12000, 12000)})
    code, err, peak_mib = stage_in_subprocess(tmp_path, {"source": "folder", "path": str(tree), "resize": resize})
    assert code == 2, err
    for word in ("huge.png", "12000x12000", "4096x4096", "before decoding"):
        assert word in err
    assert peak_mib < PEAK_RSS_LIMIT_MIB, f"peak RSS {peak_mib:.0f} MiB"


def test_image_past_pils_own_limit_is_named_too_large_not_damaged():
    with pytest.raises(DataError, match="too large") as info:
        decode_image(png_of_zeros(14000, 14000), "member x.png of t.zip", resize=True)  # 196 M pixels
    assert "damaged" not in str(info.value)


def test_image_at_the_pixel_limit_is_decoded():
    side = int(MAX_IMAGE_PIXELS ** 0.5)
    assert decode_image(png_of_zeros(side, side), "big.png", resize=True).shape == (32, 32, 3)


def test_tar_member_declaring_more_than_the_limit_is_refused_before_reading(tmp_path, capsys):
    header = tarfile.TarInfo("train/cat/big.png")
    header.size = 1 << 40  # 1 TiB declared; nothing of it follows
    archive = tmp_path / "liar.tar"
    archive.write_bytes(header.tobuf(format=tarfile.GNU_FORMAT) + bytes(4096))
    download_fails(tmp_path, capsys, {"source": "folder", "path": str(archive)},
                   "train/cat/big.png", "1,099,511,627,776 bytes", "refused before reading")


def test_file_in_a_folder_above_the_member_limit_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(members, "MAX_MEMBER_BYTES", 4096)
    tree = write_tree(tmp_path / "tree", good_tree() | {"test/dog/noise.png": os.urandom(8192)})
    download_fails(tmp_path, capsys, {"source": "folder", "path": str(tree)}, "noise.png", "8,192 bytes")


def test_source_reading_more_than_the_total_limit_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(members, "MAX_TOTAL_BYTES", 8 * len(png()))  # the tree holds 8 images and one more
    archive = tar_of(tmp_path / "t.tar.gz", list((good_tree() | {"train/dog/extra.png": png()}).items()))
    download_fails(tmp_path, capsys, {"source": "folder", "path": str(archive)}, "of files to read", "refused")


# ----------------------------------------------------------------------------- kind 2: bad data accepted without a word


def prepared_pixels(tmp: Path, image: bytes, resize: bool = True) -> np.ndarray:
    tree = write_tree(tmp / "tree", good_tree() | {"train/dog/odd.png": image})
    out = tmp / "prepared"
    prepare(DataParams(source="folder", path=str(tree), resize=resize), out)
    train = load_split(out, "train", None, seed=0)
    return train.images[np.flatnonzero(train.labels == 1)[-1]]  # dog's last image by name: odd.png


def sixteen_bit_grey(value: int, size: int = 40) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((size, size), value, np.uint16)).save(buffer, format="PNG")  # mode I;16
    return buffer.getvalue()


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    pixels = prepared_pixels(tmp_path, sixteen_bit_grey(32768))  # mid-grey; PIL's convert made it 255
    assert (pixels == 128).all()


def test_sixteen_bit_png_without_resize_is_refused_naming_its_mode(tmp_path, capsys):
    tree = write_tree(tmp_path / "tree", good_tree() | {"train/dog/deep.png": sixteen_bit_grey(1000, 32)})
    download_fails(tmp_path, capsys, {"source": "folder", "path": str(tree)}, "deep.png", "I;16", "data.resize: true")


@pytest.mark.parametrize("image, expected", [
    (png(32, "1", 1), 255),  # 1-bit: white
    (png(40, "L", 77), 77),
    (png(32, "LA", (90, 0)), 90),  # alpha dropped, like RGBA
    (png(32, "P", 0), 0),  # palette index 0: black in PIL's default palette
    (png(32, "CMYK", (0, 0, 0, 0), "JPEG"), 255),  # no ink: white
])
def test_eight_bit_modes_are_converted_over_their_full_range(tmp_path, image, expected):
    pixels = prepared_pixels(tmp_path, image).astype(int)
    assert np.abs(pixels - expected).max() <= 1


@pytest.mark.parametrize("mode, value", [("I", 300), ("F", 0.5), ("LAB", (50, 0, 0))])
def test_modes_without_a_defined_range_are_refused(tmp_path, capsys, mode, value):
    tree = write_tree(tmp_path / "tree", good_tree() | {"train/dog/odd.tif": png(32, mode, value, "TIFF")})
    download_fails(tmp_path, capsys, {"source": "folder", "path": str(tree), "resize": True},
                   "odd.tif", f"is a {mode} image", "no defined conversion")


@pytest.mark.parametrize("raw", ["train/cat/0.png", "./train/cat/0.png"])
def test_the_same_member_twice_in_a_tar_is_refused_naming_both(tmp_path, capsys, raw):
    archive = tar_of(tmp_path / "t.tar.gz", list(good_tree().items()) + [(raw, png(32, "RGB", (1, 2, 3)))])
    download_fails(tmp_path, capsys, {"source": "folder", "path": str(archive)},
                   "'train/cat/0.png' twice", f"'{raw}'")


def test_the_same_member_twice_in_a_zip_is_refused_naming_both(tmp_path, capsys):
    archive = tmp_path / "t.zip"
    with zipfile.ZipFile(archive, "w") as zf, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile warns "Duplicate name": the point of the test
        for name, payload in good_tree().items():
            zf.writestr(name, payload)
        zf.writestr("test/dog/1.png", png(32, "RGB", (1, 2, 3)))
    download_fails(tmp_path, capsys, {"source": "folder", "path": str(archive)}, "'test/dog/1.png' twice")


def test_a_single_class_is_refused(tmp_path, capsys):
    tree = write_tree(tmp_path / "tree", good_tree(("cat",)))
    download_fails(tmp_path, capsys, {"source": "folder", "path": str(tree)}, "one class folder (cat)", "at least 2")


def test_subset_smaller_than_the_class_count_is_refused(tmp_path):
    tree = write_tree(tmp_path / "tree", good_tree(tuple(f"c{k:02d}" for k in range(12))))
    out = tmp_path / "prepared"
    prepare(DataParams(source="folder", path=str(tree)), out)
    with pytest.raises(DataError, match=r"data.train_samples: asks for 10 images but there are 12 classes"):
        load_split(out, "train", 10, seed=0)
    assert len(load_split(out, "train", 12, seed=0).labels) == 12


# ----------------------------------------------------------------------------- kind 3: names that are not UTF-8


def test_non_utf8_class_folder_is_refused(tmp_path, capsys):
    tree = write_tree(tmp_path / "tree", good_tree())
    for split in ("train", "test"):
        os.rename(tree / split / "cat", os.path.join(os.fsencode(tree / split), b"caf\xe9"))  # Latin-1 "café"
    download_fails(tmp_path, capsys, {"source": "folder", "path": str(tree)}, "not valid UTF-8", r"caf\xe9")


def test_non_utf8_file_name_in_a_tar_is_refused(tmp_path, capsys):
    odd = os.fsdecode(b"train/cat/\xff.png")  # tarfile writes the byte back as it was read
    archive = tar_of(tmp_path / "t.tar.gz", list(good_tree().items()) + [(odd, png())])
    download_fails(tmp_path, capsys, {"source": "folder", "path": str(archive)}, "not valid UTF-8", r"\xff.png")


def test_zip_name_flagged_utf8_that_is_not_is_refused(tmp_path, capsys):
    archive = tmp_path / "t.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name, payload in good_tree().items():
            zf.writestr(name, payload)
        zf.writestr("train/cat/\u00ff.png", png())  # stored as UTF-8, flagged so
    archive.write_bytes(archive.read_bytes().replace("\u00ff".encode(), b"\xff\xff"))  # then made invalid
    download_fails(tmp_path, capsys, {"source": "folder", "path": str(archive)}, "not valid UTF-8")


# ----------------------------------------------------------------------------- kind 5: signals and write errors


PAUSE_WHILE_WRITING = """
import runpy, sys, time
import numpy as np
save = np.save
def save_then_wait(*args, **kwargs):
    save(*args, **kwargs)
    print("writing", flush=True)  # the temp folder now holds a file: the test sends SIGTERM
    time.sleep(60)
np.save = save_then_wait
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.timeout(60)
def test_sigterm_while_the_prepared_folder_is_written_cleans_up_and_exits_143(tmp_path):
    tree = write_tree(tmp_path / "tree", good_tree())
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"data": {"source": "folder", "path": str(tree)}}))
    out = tmp_path / "out" / "prepared"
    proc = subprocess.Popen(
        [sys.executable, "-c", PAUSE_WHILE_WRITING, str(ROOT / "stages" / "download.py"),
         "--params", str(params), "--out", str(out)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert proc.stdout.readline() == "writing\n"
    assert [name for name in leftovers(out) if name.startswith(".prepared.")]  # what a kill used to leave
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == cli.EXIT_TERMINATED == 143, err
    assert "error: terminated by SIGTERM" in err and "Traceback" not in err
    assert not out.exists() and leftovers(out) == []
    next_run_works(tmp_path, out)


class Stalls(http.server.BaseHTTPRequestHandler):
    """Promises 10 MiB, sends 64 KiB, then holds the connection until the test releases it."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(10 * MIB))
        self.end_headers()
        self.wfile.write(bytes(64 << 10))
        self.wfile.flush()
        self.server.requested.set()
        self.server.release.wait(30)

    def log_message(self, *args) -> None:
        pass


DOWNLOAD = """
import sys
from pathlib import Path
from onecycle import cli
from onecycle.data import prepare
from onecycle.params import DataParams
url, out = sys.argv[1], Path(sys.argv[2])
cli.run_stage(lambda: prepare(DataParams(), out, download_url=url), [out])
"""


@pytest.mark.timeout(60)
def test_sigterm_during_the_download_removes_its_temp_file_and_exits_143(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Stalls)
    server.requested, server.release = threading.Event(), threading.Event()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    out = tmp_path / "data" / "prepared"
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", DOWNLOAD, f"http://127.0.0.1:{server.server_address[1]}/c.tar.gz", str(out)],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        assert server.requested.wait(30)
        assert [name for name in leftovers(out) if name.startswith(".cifar-10-binary.tar.gz.")]
        time.sleep(0.2)  # into the read of the body
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()
    assert proc.returncode == 143, err
    assert "terminated by SIGTERM" in err and "Traceback" not in err
    assert list(out.parent.iterdir()) == []  # no cache, no temp file, no prepared folder


def test_run_stage_turns_sigterm_into_cleanup_and_exit_143(tmp_path, capsys):
    out = tmp_path / "out.json"
    out.write_text("stale")
    with pytest.raises(SystemExit) as exit_info:
        cli.run_stage(lambda: os.kill(os.getpid(), signal.SIGTERM) or time.sleep(10), [out])
    assert exit_info.value.code == 143 and not out.exists()
    assert "terminated by SIGTERM" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler lives only as long as the stage


def test_temps_left_by_a_killed_run_are_removed_at_the_next_start(tmp_path):
    data = tmp_path / "data"
    (data / ".prepared.0123abcd.tmp").mkdir(parents=True)  # the prepared folder being written
    (data / ".prepared.0123abcd.tmp" / "train_images.npy").write_bytes(bytes(1000))
    (data / ".prepared.89abcdef.old" / "prepared").mkdir(parents=True)  # an earlier version's swap
    (data / ".cifar-10-binary.tar.gz.k2j_x9aq.part").write_bytes(bytes(1000))  # an earlier version's download
    (data / ".cifar-10-binary.tar.gz.4567cdef.tmp").write_bytes(bytes(1000))
    (data / ".prepared.notes").write_text("not a temp name: stays")
    tree = write_tree(tmp_path / "tree", good_tree())
    prepare(DataParams(source="folder", path=str(tree)), data / "prepared")
    assert sorted(p.name for p in data.iterdir()) == [".prepared.notes", "prepared"]


def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def read_only(*args, **kwargs):
    raise OSError(errno.EROFS, os.strerror(errno.EROFS))


@pytest.mark.parametrize("target, error, reason", [
    ((np, "save"), no_space, "No space left on device"),  # while a file is written
    ((os, "fsync"), no_space, "No space left on device"),  # while it is flushed to disk
    ((os, "mkdir"), read_only, "Read-only file system"),  # the temp folder cannot be made
])
def test_write_errors_name_the_output_and_the_reason(tmp_path, capsys, target, error, reason):
    tree = write_tree(tmp_path / "tree", good_tree())
    out = tmp_path / "out" / "prepared"
    download_fails(tmp_path, capsys, {"source": "folder", "path": str(tree)},
                   f"error: cannot write {out}: {reason}", inject=lambda mp: mp.setattr(*target, error))


def test_full_disk_during_the_download_names_the_cache(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror.tar.gz"
    mirror.write_bytes(os.urandom(4096))
    out = tmp_path / "data" / "prepared"
    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(WriteError, match="cannot write .*cifar-10-binary.tar.gz: No space left on device"):
        prepare(DataParams(checksum="none"), out, download_url=mirror.as_uri())
    assert list(out.parent.iterdir()) == []


def test_only_write_errors_become_write_errors(tmp_path):
    target = tmp_path / "metrics.json"
    with pytest.raises(WriteError, match=f"cannot write {target}: No space left on device"), atomic_open(target):
        no_space()
    with pytest.raises(FileNotFoundError), atomic_open(target):
        raise FileNotFoundError(errno.ENOENT, "an input the writer was reading")
    assert list(tmp_path.iterdir()) == []
