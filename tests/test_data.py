"""onecycle.data: every source, every refusal, all-or-nothing output, subsets, and the download stage.

The fixtures are built here, tiny and in the official layouts: a binary-version and a
python-version archive (20 train + 10 test images), and a PNG image-folder tree (3 classes) as a
folder and as .tar, .tar.gz, .tar.xz and .zip. No test touches the network: downloads come from
a 127.0.0.1 http server or a file:// URL. One test (`realdata`) prepares the shared JPEG CIFAR-10.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import os
import pickle
import shutil
import struct
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import yaml
from PIL import Image

from onecycle import data
from onecycle.data import DataError, load_split, prepare
from onecycle.params import DataParams

REPO = Path(__file__).resolve().parents[1]
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
FOLDER_CLASSES = ["bird", "cat", "dog"]  # sorted: labels 0, 1, 2


# ----------------------------------------------------------------------------- fixture builders


class Expected(NamedTuple):
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


def random_images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def tiny_cifar(n_train: int, n_test: int, seed: int = 0) -> Expected:
    rng = np.random.default_rng(seed + 1)
    return Expected(
        random_images(n_train, seed), rng.permutation(np.arange(n_train) % 10).astype(np.int64),
        random_images(n_test, seed + 2), rng.permutation(np.arange(n_test) % 10).astype(np.int64),
    )


def add_bytes(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


def official_batches(expected: Expected) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(base name, images, labels) of the 5 train batches and the test batch."""
    images = np.array_split(expected.train_images, 5)
    labels = np.array_split(expected.train_labels, 5)
    batches = [(f"data_batch_{i + 1}", images[i], labels[i]) for i in range(5)]
    return batches + [("test_batch", expected.test_images, expected.test_labels)]


def planes(images: np.ndarray) -> np.ndarray:
    """N x 32 x 32 x 3 -> N x 3072 rows of R, G, B planes: the official layout."""
    return images.transpose(0, 3, 1, 2).reshape(len(images), -1)


def make_binary_archive(path: Path, n_train: int = 20, n_test: int = 10, seed: int = 0) -> Expected:
    expected = tiny_cifar(n_train, n_test, seed)
    with tarfile.open(path, "w:gz") as tar:
        for base, images, labels in official_batches(expected):
            records = np.concatenate([labels.astype(np.uint8)[:, None], planes(images)], axis=1)
            add_bytes(tar, f"cifar-10-batches-bin/{base}.bin", records.tobytes())
        add_bytes(tar, "cifar-10-batches-bin/batches.meta.txt", ("\n".join(CIFAR_CLASSES) + "\n\n").encode())
        add_bytes(tar, "cifar-10-batches-bin/readme.html", b"<html></html>")
    return expected


class Py2Pickler(pickle._Pickler):
    """Pickles bytes and str as Python 2 str (SHORT_BINSTRING/BINSTRING), as cPickle wrote the official batches.

    Python 3's own protocol 2 would route bytes through `_codecs.encode`, a global the official
    files never use (and the loader rightly refuses).
    """

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj: bytes | str) -> None:
        raw = obj if isinstance(obj, bytes) else obj.encode("latin-1")
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str
    dispatch[str] = save_py2_str


def py2_pickle(obj: object) -> bytes:
    buffer = io.BytesIO()
    Py2Pickler(buffer, protocol=2).dump(obj)
    # the official files name numpy 1's module; numpy 2 writes numpy._core
    return buffer.getvalue().replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")


def make_python_archive(path: Path, n_train: int = 20, n_test: int = 10, seed: int = 0,
                        replace: dict[str, bytes] | None = None) -> Expected:
    expected = tiny_cifar(n_train, n_test, seed)
    with tarfile.open(path, "w:gz") as tar:
        for base, images, labels in official_batches(expected):
            batch = {b"batch_label": base.encode(), b"labels": labels.tolist(), b"data": planes(images),
                     b"filenames": [f"{i}.png".encode() for i in range(len(labels))]}
            payload = (replace or {}).get(base) or py2_pickle(batch)
            add_bytes(tar, f"cifar-10-batches-py/{base}", payload)
        meta = {b"label_names": [c.encode() for c in CIFAR_CLASSES], b"num_cases_per_batch": 10000, b"num_vis": 3072}
        add_bytes(tar, "cifar-10-batches-py/batches.meta", py2_pickle(meta))
    return expected


def make_folder_tree(root: Path, n_train: int = 3, n_test: int = 2, seed: int = 0) -> Expected:
    """PNGs (lossless, so pixels can be compared) at root/{train,test}/<class>/NN.png."""
    arrays = []
    for split, n in (("train", n_train), ("test", n_test)):
        images = random_images(n * len(FOLDER_CLASSES), seed + len(arrays))
        for label, name in enumerate(FOLDER_CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in reversed(range(n)):  # written out of order: the result must follow the names
                save_png(folder / f"{i:02d}.png", images[label * n + i])
        arrays += [images, np.repeat(np.arange(len(FOLDER_CLASSES), dtype=np.int64), n)]
    return Expected(*arrays)


def save_png(path: Path, array: np.ndarray) -> None:
    Image.fromarray(array).save(path, format="PNG")


def tar_tree(src: Path, dest: Path, mode: str, top: str = "tiny-png") -> Path:
    with tarfile.open(dest, mode) as tar:
        tar.add(src, arcname=top)
    return dest


def zip_tree(src: Path, dest: Path, top: str = "tiny-png") -> Path:
    with zipfile.ZipFile(dest, "w") as archive:
        for current, dirs, files in sorted(os.walk(src)):
            rel = Path(top) / Path(current).relative_to(src)
            archive.writestr(zipfile.ZipInfo(f"{rel.as_posix()}/"), b"")
            for name in sorted(files):
                archive.write(Path(current) / name, (rel / name).as_posix())
    return dest


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ----------------------------------------------------------------------------- helpers and fixtures


@pytest.fixture
def out(tmp_path: Path) -> Path:
    return tmp_path / "data" / "prepared"


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Expected]:
    root = tmp_path / "tree"
    return root, make_folder_tree(root)


def run_prepare(out: Path, **params) -> dict:
    return prepare(DataParams(**params), out)


def assert_fails(out: Path, *needles: str, **params) -> str:
    """prepare must raise DataError naming every needle, and leave neither out nor a temp folder behind."""
    with pytest.raises(DataError) as info:
        run_prepare(out, **params)
    message = str(info.value)
    for needle in needles:
        assert needle in message, f"{needle!r} not in: {message}"
    assert not out.exists()
    if out.parent.exists():
        assert [p.name for p in out.parent.iterdir() if p.name.startswith(".")] == []
    return message


def assert_prepared(out: Path, expected: Expected, classes: list[str]) -> None:
    for split in ("train", "test"):
        loaded = load_split(out, split, None, seed=0)
        assert loaded.images.dtype == np.uint8 and loaded.labels.dtype == np.int64
        np.testing.assert_array_equal(loaded.images, getattr(expected, f"{split}_images"))
        np.testing.assert_array_equal(loaded.labels, getattr(expected, f"{split}_labels"))
        assert loaded.classes == classes


# ----------------------------------------------------------------------------- official archives


def test_binary_archive_gives_the_images_in_nhwc(tmp_path: Path, out: Path) -> None:
    archive = tmp_path / "cifar-10-binary.tar.gz"
    expected = make_binary_archive(archive)
    manifest = run_prepare(out, source="archive", path=str(archive), checksum="none")
    assert_prepared(out, expected, CIFAR_CLASSES)
    assert sorted(p.name for p in out.iterdir()) == [
        "classes.json", "manifest.json", "test_images.npy", "test_labels.npy", "train_images.npy", "train_labels.npy"]
    assert manifest["format"] == "cifar10-binary"
    assert manifest["source_sha256"] == sha256(archive)
    assert manifest["counts"]["train"] == {"total": 20, "per_class": {c: 2 for c in CIFAR_CLASSES}}
    assert manifest["counts"]["test"]["total"] == 10
    for name, entry in manifest["files"].items():
        assert entry["sha256"] == sha256(out / name)
    assert set(manifest["created_by"]) == {"onecycle", "python", "numpy", "pillow"}


def test_python_archive_gives_the_same_as_binary(tmp_path: Path, out: Path) -> None:
    archive = tmp_path / "cifar-10-python.tar.gz"
    expected = make_python_archive(archive)
    manifest = run_prepare(out, source="archive", path=str(archive), checksum=f"md5:{md5(archive)}")
    assert manifest["format"] == "cifar10-python"
    assert_prepared(out, expected, CIFAR_CLASSES)


def test_extracted_official_folder_is_read_too(tmp_path: Path, out: Path) -> None:
    archive = tmp_path / "cifar-10-binary.tar.gz"
    expected = make_binary_archive(archive)
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path / "extracted", filter="data")
    manifest = run_prepare(out, source="archive", path=str(tmp_path / "extracted"))
    assert_prepared(out, expected, CIFAR_CLASSES)
    assert len(manifest["source_sha256"]) == 64  # of the folder listing


def test_auto_checksum_refuses_a_copy_that_is_not_the_published_archive(tmp_path: Path, out: Path) -> None:
    archive = tmp_path / "cifar-10-binary.tar.gz"
    make_binary_archive(archive)
    assert_fails(out, "checksum mismatch", data.CIFAR10_BINARY_MD5, data.CIFAR10_PYTHON_MD5, f"md5:{md5(archive)}",
                 source="archive", path=str(archive))


@pytest.mark.parametrize("algo", ["md5", "sha256"])
def test_explicit_checksum_passes_or_names_both_digests(tmp_path: Path, out: Path, algo: str) -> None:
    archive = tmp_path / "cifar-10-binary.tar.gz"
    make_binary_archive(archive)
    actual = getattr(hashlib, algo)(archive.read_bytes()).hexdigest()
    run_prepare(out, source="archive", path=str(archive), checksum=f"{algo}:{actual.upper()}")
    shutil.rmtree(out)
    wrong = "0" * len(actual)
    assert_fails(out, f"expected {algo}:{wrong}", f"got {algo}:{actual}", source="archive", path=str(archive),
                 checksum=f"{algo}:{wrong}")


def test_archive_that_is_not_official_names_the_missing_members(tmp_path: Path, out: Path, tree) -> None:
    root, _ = tree
    archive = tar_tree(root, tmp_path / "folder.tar.gz", "w:gz")
    assert_fails(out, "not an official CIFAR-10 archive", "data_batch_1", "data.source: folder",
                 source="archive", path=str(archive), checksum="none")


def test_damaged_binary_batch_is_named(tmp_path: Path, out: Path) -> None:
    archive = tmp_path / "cifar-10-binary.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for base in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            add_bytes(tar, f"cifar-10-batches-bin/{base}.bin", bytes(3073 if base != "data_batch_3" else 3000))
        add_bytes(tar, "cifar-10-batches-bin/batches.meta.txt", "\n".join(CIFAR_CLASSES).encode())
    assert_fails(out, "data_batch_3.bin", "3073-byte records", source="archive", path=str(archive), checksum="none")


class RunsShell:
    """A pickle payload: unpickling it would run a shell command (os.system through __reduce__)."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_pickle_that_would_run_code_is_refused_and_does_not_run(tmp_path: Path, out: Path) -> None:
    control = tmp_path / "plain-pickle-ran-it"
    pickle.loads(py2_pickle(RunsShell(f"touch {control}")), encoding="bytes")
    assert control.exists()  # the payload is real: plain pickle.load runs it
    marker = tmp_path / "pwned"
    evil = py2_pickle({b"data": RunsShell(f"touch {marker}")})
    archive = tmp_path / "cifar-10-python.tar.gz"
    make_python_archive(archive, replace={"data_batch_1": evil})
    assert_fails(out, "data_batch_1", "system", "refused", source="archive", path=str(archive), checksum="none")
    assert not marker.exists()


@pytest.mark.parametrize("module, name", [("numpy", "load"), ("builtins", "eval"), ("_codecs", "encode"),
                                          ("numpy.core.multiarray", "scalar")])
def test_unpickler_allows_only_array_reconstruction(module: str, name: str) -> None:
    with pytest.raises(DataError, match=f"refers to {module}.{name}"):
        data.CifarUnpickler(io.BytesIO(b""), "batch").find_class(module, name)


# ----------------------------------------------------------------------------- image folders


@pytest.mark.parametrize("form", ["folder", "folder-under-top", "tar", "tar.gz", "tar.xz", "zip"])
def test_image_folder_in_every_form(tmp_path: Path, out: Path, tree, form: str) -> None:
    root, expected = tree
    (root / "train" / "cat" / ".DS_Store").write_bytes(b"\0junk")  # hidden files are skipped
    (root / "README.txt").write_text("not under train/ or test/: ignored")
    path = {
        "folder": lambda: root,
        "folder-under-top": lambda: Path(shutil.copytree(root, tmp_path / "outer" / "tiny-png")).parent,
        "tar": lambda: tar_tree(root, tmp_path / "t.tar", "w"),
        "tar.gz": lambda: tar_tree(root, tmp_path / "t.tgz", "w:gz"),
        "tar.xz": lambda: tar_tree(root, tmp_path / "t.tar.xz", "w:xz"),
        "zip": lambda: zip_tree(root, tmp_path / "t.zip"),
    }[form]()
    manifest = run_prepare(out, source="folder", path=str(path))
    assert_prepared(out, expected, FOLDER_CLASSES)
    assert manifest["format"] == "image-folder"
    assert manifest["counts"]["train"]["per_class"] == {"bird": 3, "cat": 3, "dog": 3}
    if path.is_file():
        assert manifest["source_sha256"] == sha256(path)


def test_folder_digest_follows_the_content(tmp_path: Path, tree) -> None:
    root, _ = tree
    first = run_prepare(tmp_path / "a", source="folder", path=str(root))["source_sha256"]
    save_png(root / "test" / "dog" / "00.png", np.zeros((32, 32, 3), np.uint8))
    second = run_prepare(tmp_path / "b", source="folder", path=str(root))["source_sha256"]
    assert len(first) == 64 and first != second


def test_explicit_checksum_of_a_folder_archive(tmp_path: Path, out: Path, tree) -> None:
    root, expected = tree
    archive = tar_tree(root, tmp_path / "t.tar.gz", "w:gz")
    run_prepare(out, source="folder", path=str(archive), checksum=f"sha256:{sha256(archive)}")
    assert_prepared(out, expected, FOLDER_CLASSES)
    shutil.rmtree(out)
    assert_fails(out, "checksum mismatch", f"got md5:{md5(archive)}", source="folder", path=str(archive),
                 checksum="md5:" + "f" * 32)


def test_explicit_checksum_of_a_folder_is_an_error(out: Path, tree) -> None:
    root, _ = tree
    assert_fails(out, "is a folder", "auto or none", source="folder", path=str(root), checksum="md5:" + "0" * 32)


def test_rerun_replaces_the_previous_output_whole(tmp_path: Path, out: Path, tree) -> None:
    root, _ = tree
    run_prepare(out, source="folder", path=str(root))
    (out / "stale.txt").write_text("from an older run")
    archive = tmp_path / "cifar-10-binary.tar.gz"
    expected = make_binary_archive(archive)
    run_prepare(out, source="archive", path=str(archive), checksum="none")
    assert_prepared(out, expected, CIFAR_CLASSES)
    assert not (out / "stale.txt").exists()
    assert [p.name for p in out.parent.iterdir()] == ["prepared"]


def test_missing_path(out: Path, tmp_path: Path) -> None:
    assert_fails(out, f"data.path {tmp_path / 'nowhere.tar.xz'} does not exist", source="folder",
                 path=str(tmp_path / "nowhere.tar.xz"))


def test_empty_class_folder(out: Path, tree) -> None:
    root, _ = tree
    (root / "train" / "eel").mkdir()
    (root / "test" / "eel").mkdir()
    save_png(root / "test" / "eel" / "00.png", random_images(1, 9)[0])
    assert_fails(out, "train/eel", "has no images", source="folder", path=str(root))


def test_empty_class_folder_inside_an_archive(tmp_path: Path, out: Path, tree) -> None:
    root, _ = tree
    (root / "test" / "dog" / "00.png").unlink()
    (root / "test" / "dog" / "01.png").unlink()
    archive = tar_tree(root, tmp_path / "t.tar.gz", "w:gz")
    assert_fails(out, "tiny-png/test/dog", "has no images", source="folder", path=str(archive))


def test_train_and_test_must_have_the_same_classes(out: Path, tree) -> None:
    root, _ = tree
    shutil.rmtree(root / "test" / "cat")
    assert_fails(out, "same class folders", "only in train: ['cat']", source="folder", path=str(root))


@pytest.mark.parametrize("missing", ["train", "test"])
def test_missing_split_folder(out: Path, tree, missing: str) -> None:
    root, _ = tree
    shutil.rmtree(root / missing)
    present = "test" if missing == "train" else "train"
    assert_fails(out, "not an image-folder tree", f"found only {present}/", source="folder", path=str(root))


def test_non_image_file_is_named(out: Path, tree) -> None:
    root, _ = tree
    (root / "train" / "cat" / "notes.txt").write_text("hello")
    assert_fails(out, "notes.txt", "not an image", source="folder", path=str(root))


def test_file_outside_a_class_folder_is_named(tmp_path: Path, out: Path, tree) -> None:
    root, _ = tree
    save_png(root / "train" / "loose.png", random_images(1, 3)[0])
    archive = zip_tree(root, tmp_path / "t.zip")
    assert_fails(out, "tiny-png/train/loose.png", "class folder", source="folder", path=str(archive))


def test_truncated_image_is_named(out: Path, tree) -> None:
    root, _ = tree
    png = root / "test" / "bird" / "01.png"
    png.write_bytes(png.read_bytes()[:200])
    assert_fails(out, str(png), "damaged image", source="folder", path=str(root))


@pytest.mark.parametrize("mode, size, pixel, converted", [
    ("RGB", 16, (10, 20, 30), (10, 20, 30)),
    ("L", 32, 77, (77, 77, 77)),
    ("RGBA", 32, (1, 2, 3, 4), (1, 2, 3)),
])
def test_wrong_mode_or_size_fails_unless_resize(tmp_path: Path, out: Path, tree, mode, size, pixel, converted) -> None:
    root, _ = tree
    odd = root / "train" / "dog" / "01.png"
    Image.new(mode, (size, size), pixel).save(odd)
    assert_fails(out, str(odd), f"{mode} {size}x{size}", "data.resize: true", source="folder", path=str(root))
    run_prepare(out, source="folder", path=str(root), resize=True)
    train = load_split(out, "train", None, seed=0)
    assert train.images.shape == (9, 32, 32, 3)
    assert (train.images[7] == converted).all()  # dog is label 2; 01.png is its second image


# ----------------------------------------------------------------------------- unsafe archives


def folder_tar_with(tmp_path: Path, root: Path, add) -> Path:
    path = tmp_path / "evil.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        tar.add(root, arcname="tiny-png")
        add(tar)
    return path


def symlink(name: str, target: str, kind: bytes = tarfile.SYMTYPE):
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.type, info.linkname = kind, target
        tar.addfile(info)
    return add


@pytest.mark.parametrize("add, needles", [
    (lambda tar: add_bytes(tar, "../evil", b"x"), ["'../evil'", "outside the archive"]),
    (lambda tar: add_bytes(tar, "tiny-png/train/../../evil", b"x"), ["'tiny-png/train/../../evil'", "outside"]),
    (lambda tar: add_bytes(tar, "/tmp/evil", b"x"), ["'/tmp/evil'", "absolute path"]),
    (symlink("tiny-png/train/cat/link.png", "/etc/passwd"), ["'tiny-png/train/cat/link.png'", "symlink", "/etc/passwd"]),
    (symlink("tiny-png/train/cat/hard.png", "tiny-png/train/cat/00.png", tarfile.LNKTYPE), ["hard.png", "hardlink"]),
])
def test_unsafe_tar_members_are_refused(tmp_path: Path, out: Path, tree, add, needles) -> None:
    root, _ = tree
    archive = folder_tar_with(tmp_path, root, add)
    assert_fails(out, str(archive), *needles, source="folder", path=str(archive))


def test_unsafe_members_are_refused_in_official_archives_too(tmp_path: Path, out: Path) -> None:
    archive = tmp_path / "cifar-10-binary.tar.gz"
    make_binary_archive(archive)
    with tarfile.open(archive) as src, tarfile.open(tmp_path / "evil.tar.gz", "w:gz") as dest:
        for member in src.getmembers():  # the same archive plus one hostile member
            dest.addfile(member, src.extractfile(member))
        add_bytes(dest, "../data_batch_1.bin", b"x")
    assert_fails(out, "'../data_batch_1.bin'", source="archive", path=str(tmp_path / "evil.tar.gz"), checksum="none")


@pytest.mark.parametrize("name, needle", [("../evil", "outside the archive"), ("/abs/evil", "absolute path"),
                                          ("C:/evil", "absolute path"), ("link", "symlink")])
def test_unsafe_zip_members_are_refused(tmp_path: Path, out: Path, tree, name: str, needle: str) -> None:
    root, _ = tree
    archive = zip_tree(root, tmp_path / "evil.zip")
    with zipfile.ZipFile(archive, "a") as zf:
        info = zipfile.ZipInfo(name if name != "link" else "tiny-png/train/cat/link.png")
        if name == "link":
            info.external_attr = 0o120777 << 16  # a unix symlink; its content is the target
        zf.writestr(info, "/etc/passwd")
    assert_fails(out, needle, source="folder", path=str(archive))


def test_symlink_inside_a_folder_is_refused(out: Path, tree) -> None:
    root, _ = tree
    (root / "train" / "cat" / "link.png").symlink_to("/etc/passwd")
    assert_fails(out, "link.png", "symlink", source="folder", path=str(root))


@pytest.mark.parametrize("mode, suffix", [("w:gz", ".tar.gz"), ("w:xz", ".tar.xz"), ("zip", ".zip")])
def test_truncated_archive_is_named(tmp_path: Path, out: Path, tree, mode: str, suffix: str) -> None:
    root, _ = tree
    whole = tmp_path / f"whole{suffix}"
    zip_tree(root, whole) if mode == "zip" else tar_tree(root, whole, mode)
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    assert_fails(out, f"cannot read archive {cut}", "damaged or truncated", source="folder", path=str(cut))


@pytest.mark.parametrize("raw, name", [("./a/b.png", "a/b.png"), ("a//b/", "a/b"), ("a\\b", "a/b"), ("..a/b", "..a/b")])
def test_member_names_are_normalized(raw: str, name: str) -> None:
    assert data.member_name(raw, Path("x.tar")) == name


# ----------------------------------------------------------------------------- source cifar10 (download)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server(tmp_path: Path):
    """An http server on 127.0.0.1 serving tmp_path/www; yields (folder, base URL)."""
    www = tmp_path / "www"
    www.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(www)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def no_sleep(monkeypatch) -> list[float]:
    """Record the retry back-off instead of waiting it out."""
    delays: list[float] = []
    monkeypatch.setattr(time, "sleep", delays.append)
    return delays


def test_download_verifies_caches_and_then_works_offline(out: Path, server, no_sleep) -> None:
    www, base = server
    expected = make_binary_archive(www / "cifar-10-binary.tar.gz")
    url = f"{base}/cifar-10-binary.tar.gz"
    manifest = prepare(DataParams(), out, download_url=url, download_md5=md5(www / "cifar-10-binary.tar.gz"))
    assert_prepared(out, expected, CIFAR_CLASSES)
    assert manifest["source"] == "cifar10" and manifest["path"] == url
    cache = out.parent / data.CACHE_NAME
    assert md5(cache) == md5(www / "cifar-10-binary.tar.gz")
    shutil.rmtree(out)
    prepare(DataParams(), out, download_url="http://127.0.0.1:9/", download_md5=md5(cache))  # from the cache
    assert_prepared(out, expected, CIFAR_CLASSES)
    assert no_sleep == []


def test_download_over_file_url(tmp_path: Path, out: Path) -> None:
    archive = tmp_path / "mirror" / "cifar-10-binary.tar.gz"
    archive.parent.mkdir()
    expected = make_binary_archive(archive)
    prepare(DataParams(checksum=f"sha256:{sha256(archive)}"), out, download_url=archive.as_uri())
    assert_prepared(out, expected, CIFAR_CLASSES)


def test_download_with_wrong_checksum_keeps_nothing(out: Path, server, no_sleep) -> None:
    www, base = server
    make_binary_archive(www / "cifar-10-binary.tar.gz")
    with pytest.raises(DataError, match=f"expected md5:{data.CIFAR10_BINARY_MD5}, got md5:{md5(www / 'cifar-10-binary.tar.gz')}"):
        prepare(DataParams(), out, download_url=f"{base}/cifar-10-binary.tar.gz")
    assert not out.exists()
    assert list(out.parent.iterdir()) == []  # neither the cache nor the .part file


def test_offline_says_so_and_how_to_use_a_local_copy(out: Path, no_sleep) -> None:
    start = time.perf_counter()
    with pytest.raises(DataError) as info:
        prepare(DataParams(), out, download_url="http://127.0.0.1:9/cifar-10-binary.tar.gz")
    message = str(info.value)
    for needle in ("after 3 attempts", "no network", "data.source: archive", "cifar-10-binary.tar.gz",
                   "cifar-10-python.tar.gz", "data.source: folder"):
        assert needle in message
    assert no_sleep == [data.DOWNLOAD_BACKOFF_S, 2 * data.DOWNLOAD_BACKOFF_S]
    assert time.perf_counter() - start < 10
    assert not out.exists() and list(out.parent.iterdir()) == []


def test_download_of_a_missing_file_fails_after_retries(out: Path, server, no_sleep) -> None:
    _, base = server
    with pytest.raises(DataError, match="could not download .* after 3 attempts"):
        prepare(DataParams(), out, download_url=f"{base}/nothing-here.tar.gz")


# ----------------------------------------------------------------------------- loading and subsets


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> tuple[Path, Expected]:
    """500 train (50 per class) and 100 test images, prepared."""
    tmp = tmp_path_factory.mktemp("prepared")
    expected = make_binary_archive(tmp / "cifar-10-binary.tar.gz", n_train=500, n_test=100)
    run_prepare(tmp / "prepared", source="archive", path=str(tmp / "cifar-10-binary.tar.gz"), checksum="none")
    return tmp / "prepared", expected


def test_class_quotas_spread_the_remainder_to_the_first_classes() -> None:
    assert data.class_quotas(25, 10).tolist() == [3] * 5 + [2] * 5
    assert data.class_quotas(30, 10).tolist() == [3] * 10
    assert data.class_quotas(4, 3).tolist() == [2, 1, 1]


def test_subset_is_balanced_seeded_and_in_prepared_order(prepared) -> None:
    path, expected = prepared
    subset = load_split(path, "train", 25, seed=7)
    assert np.bincount(subset.labels, minlength=10).tolist() == [3] * 5 + [2] * 5
    indices = data.balanced_subset(expected.train_labels, CIFAR_CLASSES, 25, seed=7)
    assert np.all(np.diff(indices) > 0)  # sorted, no repeats: the prepared order is kept
    np.testing.assert_array_equal(subset.images, expected.train_images[indices])
    np.testing.assert_array_equal(subset.labels, expected.train_labels[indices])
    again = load_split(path, "train", 25, seed=7)
    np.testing.assert_array_equal(again.images, subset.images)
    other = data.balanced_subset(expected.train_labels, CIFAR_CLASSES, 25, seed=8)
    assert not np.array_equal(other, indices)


def test_subset_of_the_whole_split_is_the_whole_split(prepared) -> None:
    path, expected = prepared
    np.testing.assert_array_equal(load_split(path, "test", 100, seed=3).labels, expected.test_labels)


def test_subset_larger_than_the_split(prepared) -> None:
    with pytest.raises(DataError, match="data.test_samples: asks for 101 images but the prepared split has only 100"):
        load_split(prepared[0], "test", 101, seed=0)


def test_subset_needing_more_of_one_class_than_it_has() -> None:
    labels = np.array([0] * 10 + [1] * 2)
    with pytest.raises(DataError, match="needs 5 images of class 'b', but the prepared split has only 2"):
        data.balanced_subset(labels, ["a", "b"], 10, seed=0)


@pytest.mark.parametrize("damage, needle", [
    (lambda p: (p / "test_labels.npy").unlink(), "test_labels.npy"),
    (lambda p: (p / "classes.json").unlink(), "classes.json"),
    (lambda p: (p / "test_images.npy").write_bytes(b"\x93NUMPY garbage"), "ValueError"),
    (lambda p: np.save(p / "test_labels.npy", np.zeros(100, np.int32)), "int32"),
    (lambda p: np.save(p / "test_labels.npy", np.full(100, 10, np.int64)), "labels outside 0..9"),
    (lambda p: np.save(p / "test_images.npy", np.zeros((100, 3, 32, 32), np.uint8)), "(100, 3, 32, 32)"),
    (lambda p: np.save(p / "test_images.npy", np.zeros(3, dtype=object), allow_pickle=True), "pickle"),
])
def test_damaged_prepared_data(tmp_path: Path, prepared, damage, needle: str) -> None:
    path = tmp_path / "copy"
    shutil.copytree(prepared[0], path)
    damage(path)
    with pytest.raises(DataError, match="rerun `dvc repro download`") as info:
        load_split(path, "test", None, seed=0)
    assert needle in str(info.value) and "incomplete or damaged" in str(info.value)


def test_unknown_split(prepared) -> None:
    with pytest.raises(DataError, match="'train' or 'test'"):
        load_split(prepared[0], "val", None, seed=0)


# ----------------------------------------------------------------------------- the stage


def run_stage(tmp_path: Path, data_section: dict) -> tuple[subprocess.CompletedProcess, Path]:
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"seed": 1, "data": data_section}))
    out = tmp_path / "stage-out" / "prepared"
    result = subprocess.run(
        [sys.executable, "stages/download.py", "--params", str(params), "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    return result, out


def test_stage_prepares_a_folder(tmp_path: Path, tree) -> None:
    root, expected = tree
    result, out = run_stage(tmp_path, {"source": "folder", "path": str(root)})
    assert result.returncode == 0, result.stderr
    assert "prepared 9 train + 6 test images, 3 classes" in result.stderr
    assert_prepared(out, expected, FOLDER_CLASSES)


@pytest.mark.parametrize("section, needle", [
    ({"source": "folder", "path": "/nonexistent/cifar.tar.xz"}, "data.path /nonexistent/cifar.tar.xz does not exist"),
    ({"source": "folder", "path": "x", "colour": "red"}, "unknown key data.colour"),
])
def test_stage_exits_2_with_the_error(tmp_path: Path, section: dict, needle: str) -> None:
    result, out = run_stage(tmp_path, section)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and needle in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()


# ----------------------------------------------------------------------------- the real dataset


@pytest.mark.realdata
def test_real_cifar10_jpeg(tmp_path: Path) -> None:
    path = Path(os.environ.get("ONECYCLE_CIFAR10_JPEG", REPO.parent / "shared" / "datasets" / "cifar10-jpeg.tar.xz"))
    if not path.is_file():
        if os.environ.get("ONECYCLE_REQUIRE_REAL_DATA") == "1":
            pytest.fail(f"{path} not found and ONECYCLE_REQUIRE_REAL_DATA=1: set ONECYCLE_CIFAR10_JPEG to the archive")
        pytest.skip(f"{path} not found: set ONECYCLE_CIFAR10_JPEG to cifar10-jpeg.tar.xz to run this test")
    out = tmp_path / "prepared"
    start = time.perf_counter()
    manifest = run_prepare(out, source="folder", path=str(path))
    prepare_s = time.perf_counter() - start
    assert manifest["classes"] == CIFAR_CLASSES
    assert manifest["counts"]["train"] == {"total": 50000, "per_class": {c: 5000 for c in CIFAR_CLASSES}}
    assert manifest["counts"]["test"] == {"total": 10000, "per_class": {c: 1000 for c in CIFAR_CLASSES}}
    start = time.perf_counter()
    train, test = load_split(out, "train", None, seed=0), load_split(out, "test", None, seed=0)
    load_s = time.perf_counter() - start
    assert train.images.shape == (50000, 32, 32, 3) and test.images.shape == (10000, 32, 32, 3)
    assert np.bincount(test.labels).tolist() == [1000] * 10
    assert 100 < train.images.mean() < 150  # natural photos, not blank decodes
    assert load_s < 5, f"loading 60,000 prepared images took {load_s:.1f} s"
    print(f"prepared in {prepare_s:.1f} s, loaded in {load_s:.2f} s")


def test_a_relative_data_path_is_read_from_the_project_even_in_an_experiment_copy(tmp_path: Path) -> None:
    from onecycle.data.sources import resolve_data_path

    project = tmp_path / "proj"
    copy = project / ".dvc" / "tmp" / "exps" / "tmpab12cd"
    copy.mkdir(parents=True)
    for cwd in (project, copy):
        path, base = resolve_data_path("../shared/x.tar", cwd)
        assert base == project.resolve() and path == base / "../shared/x.tar"
    assert resolve_data_path("/abs/x.tar", copy) == (Path("/abs/x.tar"), None)
