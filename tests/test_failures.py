"""Bad input gets a clear error naming the problem, a non-zero exit, and no output left behind.

Each case runs a real stage's `main()` (in this process, for speed) with explicit paths in a
temporary folder, and asserts exit code 2, words of the message, and that none of the stage's
outputs exist afterwards (stale outputs are planted first, so "removed" is tested, not assumed).
"""

from __future__ import annotations

import io
import json
import runpy
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from onecycle import data, pipeline
from onecycle.model import build_model
from onecycle.params import DataParams
from tests.pipeline import image_folder, tiny_params

def stage_argv(stage: str, params_file: Path, tmp: Path, prepared: Path) -> tuple[list[str], dict[str, Path]]:
    """The stage's command from dvc.yaml (without the interpreter), outputs under tmp/out; its outputs."""
    inputs = {"download": {}, "lr_range_test": {"data/prepared": prepared},
              "train_onecycle": {"data/prepared": prepared, "metrics/max_lr.json": tmp / "max_lr.json"},
              "evaluate": {"data/prepared": prepared, "models/model.pt": tmp / "model.pt"}}[stage]
    argv = pipeline.command(stage, params_file, tmp / "out", inputs)[1:]
    return argv, pipeline.outputs(stage, tmp / "out")


def stage_fails(stage: str, params_file: Path, tmp: Path, prepared: Path, capsys, *words: str,
                code: int = 2) -> str:
    """Run `stage` in this process on `params_file`: exit `code`, `error:` and `words` in stderr, no
    traceback, and none of its outputs (planted stale first) left behind. Returns stderr."""
    argv, outputs = stage_argv(stage, params_file, tmp, prepared)
    for path in outputs.values():
        path.parent.mkdir(parents=True, exist_ok=True)
        if stage == "download":
            path.mkdir(exist_ok=True)
            (path / "stale.npy").write_bytes(b"stale")
        else:
            path.write_text("stale")
    saved = sys.argv
    sys.argv = argv
    try:
        with pytest.raises(SystemExit) as exit_info:
            runpy.run_path(argv[0], run_name="__main__")
    finally:
        sys.argv = saved
    err = capsys.readouterr().err
    assert exit_info.value.code == code, err
    assert "error: " in err and "Traceback" not in err, err
    for word in words:
        assert word in err, f"{word!r} not in: {err}"
    left = [name for name, path in outputs.items() if path.exists()]
    assert not left, f"{stage} left {left} behind"
    return err


def run_stage(stage: str, params: dict | str, tmp: Path, prepared: Path, capsys) -> str:
    """Write `params` to a file and run the stage expecting exit 2 (stage_fails); its stderr."""
    params_file = tmp / "params.yaml"
    params_file.write_text(params if isinstance(params, str) else yaml.safe_dump(params))
    return stage_fails(stage, params_file, tmp, prepared, capsys)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return image_folder(tmp_path_factory.mktemp("images"), n_train=60, n_test=20, classes=3)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, folder) -> Path:
    out = tmp_path_factory.mktemp("prep") / "prepared"
    data.prepare(DataParams(source="folder", path=str(folder)), out)
    return out


@pytest.fixture
def params(folder) -> dict:
    raw = tiny_params(folder)
    raw["train"]["epochs"] = 1
    raw["lr_range_test"]["num_iter"] = 5
    return raw


def edit(raw: dict, section: str, **values) -> dict:
    raw[section].update(values)
    return raw


# ----------------------------------------------------------------------------- params

PARAM_CASES = [
    ("train_onecycle", lambda p: edit(p, "train", bogus=1), ["unknown key train.bogus"]),
    ("train_onecycle", lambda p: edit(p, "train", epochs="ten"), ["train.epochs", "integer"]),
    ("lr_range_test", lambda p: edit(p, "lr_range_test", start_lr=0.0), ["lr_range_test.start_lr", "between 1e-10"]),
    ("lr_range_test", lambda p: edit(p, "lr_range_test", start_lr=1.0, end_lr=0.5), ["end_lr", "start_lr"]),
    ("train_onecycle", lambda p: edit(p, "train", max_lr=-1.0), ["train.max_lr"]),
    ("train_onecycle", lambda p: edit(p, "train", batch_size=0), ["train.batch_size"]),
    ("train_onecycle", lambda p: edit(p, "train", epochs=0), ["train.epochs"]),
    ("train_onecycle", lambda p: edit(p, "train", pct_start=1.5), ["train.pct_start", "(0, 1)"]),
    ("train_onecycle", lambda p: edit(p, "train", optimizer="lion"), ["train.optimizer", "sgd"]),
    ("download", lambda p: edit(p, "data", source="mnist"), ["data.source", "folder"]),
    ("evaluate", lambda p: edit(p, "train", device="tpu"), ["train.device", "cuda"]),
    ("evaluate", lambda p: edit(p, "train", precision="int8"), ["train.precision", "bf16"]),
    ("lr_range_test", lambda p: edit(p, "augment", train=[{"NoSuchTransform": {}}]), ["NoSuchTransform"]),
    ("lr_range_test", lambda p: edit(p, "augment", train=[{"HorizontalFlip": {"p": 2}}]), ["HorizontalFlip", "p"]),
    ("train_onecycle", lambda p: edit(p, "augment", train=[{"RandomCrop": {"heigth": 32}}]), ["RandomCrop", "heigth"]),
]


@pytest.mark.parametrize(("stage", "change", "words"), PARAM_CASES)
def test_bad_params(stage, change, words, params, tmp_path, prepared, capsys):
    (tmp_path / "max_lr.json").write_text('{"max_lr": 0.05}')
    err = run_stage(stage, change(params), tmp_path, prepared, capsys)
    for word in words:
        assert word in err


def test_malformed_params_yaml(tmp_path, prepared, capsys):
    err = run_stage("train_onecycle", "train: {epochs: [1,\n", tmp_path, prepared, capsys)
    assert "not valid YAML" in err


# ----------------------------------------------------------------------------- data


def tar_with(path: Path, members: dict[str, bytes], link: tuple[str, str] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
        if link:
            info = tarfile.TarInfo(link[0])
            info.type, info.linkname = tarfile.SYMTYPE, link[1]
            tar.addfile(info)
    return path


def png(size: int = 32, mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (size, size), 128 if mode == "L" else (10, 20, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def good_tree() -> dict[str, bytes]:
    return {f"{split}/{c}/{i}.png": png() for split in ("train", "test") for c in ("cat", "dog") for i in range(2)}


class Evil:
    def __reduce__(self):
        return (exec, ("open('PWNED', 'w').write('ran')",))


DATA_CASES = [
    ("missing path", lambda t: str(t / "nowhere.tar.gz"), "folder", ["does not exist"]),
    ("truncated archive", lambda t: _truncated(t), "folder", ["truncated.tar.gz"]),
    ("dot-dot member", lambda t: str(tar_with(t / "a.tar.gz", good_tree() | {"train/cat/../../../evil.png": png()})),
     "folder", [".."]),
    ("absolute member", lambda t: str(tar_with(t / "a.tar.gz", good_tree() | {"/etc/evil.png": png()})),
     "folder", ["/etc/evil.png"]),
    ("link out", lambda t: str(tar_with(t / "a.tar.gz", good_tree(), ("train/cat/x.png", "/etc/passwd"))),
     "folder", ["link"]),
    ("non-image", lambda t: str(tar_with(t / "a.tar.gz", good_tree() | {"train/cat/notes.png": b"hello"})),
     "folder", ["notes.png"]),
    ("wrong size", lambda t: str(tar_with(t / "a.tar.gz", good_tree() | {"train/dog/big.png": png(40)})),
     "folder", ["big.png", "32x32"]),
    ("wrong mode", lambda t: str(tar_with(t / "a.tar.gz", good_tree() | {"test/dog/gray.png": png(32, "L")})),
     "folder", ["gray.png"]),
    ("different classes", lambda t: str(tar_with(t / "a.tar.gz", good_tree() | {"test/bird/0.png": png()})),
     "folder", ["bird"]),
    ("empty class", lambda t: _empty_class(t), "folder", ["empty"]),
    ("code in a pickle", lambda t: _evil_pickle(t), "archive", ["refused"]),
]


def _truncated(tmp: Path) -> str:
    whole = tar_with(tmp / "whole.tar.gz", good_tree()).read_bytes()
    (tmp / "truncated.tar.gz").write_bytes(whole[: len(whole) // 2])
    return str(tmp / "truncated.tar.gz")


def _empty_class(tmp: Path) -> str:
    for name, payload in good_tree().items():
        (tmp / "tree" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp / "tree" / name).write_bytes(payload)
    (tmp / "tree" / "train" / "bird").mkdir()
    (tmp / "tree" / "test" / "bird").mkdir()
    (tmp / "tree" / "test" / "bird" / "0.png").write_bytes(png())
    return str(tmp / "tree")


def _evil_pickle(tmp: Path) -> str:
    import pickle

    batch = pickle.dumps({b"data": Evil(), b"labels": [0]}, protocol=2)
    meta = pickle.dumps({b"label_names": [b"a"]}, protocol=2)
    members = {f"cifar-10-batches-py/data_batch_{i}": batch for i in range(1, 6)}
    members |= {"cifar-10-batches-py/test_batch": batch, "cifar-10-batches-py/batches.meta": meta}
    return str(tar_with(tmp / "cifar-10-python.tar.gz", members))


@pytest.mark.parametrize(("case", "make", "source", "words"), DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_bad_data(case, make, source, words, params, tmp_path, prepared, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # an executed payload would write PWNED here
    params["data"].update(source=source, path=make(tmp_path), checksum="none")
    err = run_stage("download", params, tmp_path, prepared, capsys)
    for word in words:
        assert word in err
    assert not (tmp_path / "PWNED").exists()


def test_checksum_mismatch(params, tmp_path, prepared, capsys):
    archive = tar_with(tmp_path / "a.tar.gz", good_tree())
    params["data"].update(source="folder", path=str(archive), checksum="sha256:" + "0" * 64)
    err = run_stage("download", params, tmp_path, prepared, capsys)
    assert "0" * 64 in err


# ----------------------------------------------------------------------------- artifacts


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (None, ["not found", "dvc repro"]),
        ('{"max_lr": 0.0', ["not valid JSON"]),
        ('{"max_lr": NaN}', ["max_lr", "positive finite"]),
        ('{"max_lr": -0.1}', ["max_lr", "positive finite"]),
        ('{"method": "spike"}', ["no max_lr"]),
    ],
    ids=["missing", "corrupted", "nan", "negative", "no key"],
)
def test_bad_max_lr_file(content, words, params, tmp_path, prepared, capsys):
    if content is not None:
        (tmp_path / "max_lr.json").write_text(content)
    err = run_stage("train_onecycle", params, tmp_path, prepared, capsys)
    for word in words:
        assert word in err


def test_model_of_another_width(params, tmp_path, prepared, capsys):
    torch.save(build_model(16, 3).state_dict(), tmp_path / "model.pt")
    err = run_stage("evaluate", params, tmp_path, prepared, capsys)
    assert "width 8" in err and "model.width" in err


def test_model_file_with_code_is_refused(params, tmp_path, prepared, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"weights": Evil()}, tmp_path / "model.pt")
    err = run_stage("evaluate", params, tmp_path, prepared, capsys)
    assert "refused" in err
    assert not (tmp_path / "PWNED").exists()


def test_model_file_damaged(params, tmp_path, prepared, capsys):
    (tmp_path / "model.pt").write_bytes(b"not a zip file")
    err = run_stage("evaluate", params, tmp_path, prepared, capsys)
    assert "damaged" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_requested_where_there_is_none(params, tmp_path, prepared, capsys):
    (tmp_path / "max_lr.json").write_text('{"max_lr": 0.05}')
    err = run_stage("train_onecycle", edit(params, "train", device="cuda"), tmp_path, prepared, capsys)
    assert "no CUDA device" in err and "train.device" in err


def test_diverging_training_stops_and_writes_no_model(params, tmp_path, prepared, capsys):
    # The largest max LR allowed (params.MAX_LR), from the first step on (div_factor 1), in fp16: the weights
    # grow tenfold and more a step until the fp16 activations overflow to inf, and the loss to NaN.
    (tmp_path / "max_lr.json").write_text('{"max_lr": 10.0}')
    params["train"].update(batch_size=16, pct_start=0.6, div_factor=1.0, precision="fp16")
    err = run_stage("train_onecycle", params, tmp_path, prepared, capsys)
    assert "epoch 0" in err and "batch" in err and "lower train.max_lr" in err


def test_subset_smaller_than_the_class_count(params, tmp_path, capsys):
    images = image_folder(tmp_path / "images", n_train=24, n_test=12, classes=12)
    twelve = tmp_path / "prepared-12-classes"
    data.prepare(DataParams(source="folder", path=str(images)), twelve)
    err = run_stage("lr_range_test", edit(params, "data", train_samples=10), tmp_path, twelve, capsys)
    assert "data.train_samples: asks for 10 images but there are 12 classes" in err


def test_damaged_prepared_data(params, tmp_path, prepared, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "classes.json").write_text(json.dumps(["a", "b", "c"]))
    np.save(broken / "train_images.npy", np.zeros((3, 8, 8, 3), np.uint8))
    err = run_stage("lr_range_test", params, tmp_path, broken, capsys)
    assert "dvc repro download" in err
