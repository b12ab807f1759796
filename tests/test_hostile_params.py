"""Hostile and broken params, recipes, artifacts, signals and full disks (issue 13, beyond the data).

Each case is refused with `error:`, exit 2 (143 for SIGTERM), its key words and nothing left
behind, or at unit level with the exception and its words. Stages run in this process as
tests/test_failures.py runs them; where memory or a hang is the danger, in a subprocess whose
peak RSS is read (tests/test_hostile_data.PEAK_RSS). Kinds as the issue numbers them: 1 sizes
that explode, 2 params files accepted without a word, 3 numbers out of range and tracebacks,
4 messages that grow with the input, 5 signals and locks, and full disks.
"""

from __future__ import annotations

import contextlib
import errno
import io as pyio
import json
import logging
import os
import runpy
import signal
import subprocess
import sys
import time
from pathlib import Path

import albumentations as A
import pytest
import torch
import yaml

from onecycle import checkpoint as ckpt
from onecycle import io
from onecycle.augment import MAX_AUGMENT_PIXELS, AugmentError, validate
from onecycle.model import build_model
from onecycle.params import AugmentParams, ParamsError, TrainParams, load_params, parse_params, shown, to_dict
from onecycle.train import check_schedule
from tests.conftest import ROOT
from tests.test_failures import edit, folder, params, prepared, stage_argv, stage_fails  # noqa: F401 (fixtures)
from tests.test_hostile_data import PEAK_RSS

PEAK_RSS_LIMIT_MIB = 200  # the download stage reading params peaks near 45 MiB
MAX_MESSAGE_CHARS = 1000  # the longest message here is ~400 characters


# ----------------------------------------------------------------------------- running a stage


def stage_runs(stage: str, params_file: Path, tmp: Path, prepared: Path) -> None:
    """Run `stage` in this process: it must finish (exit 0) and write every output."""
    argv, outputs = stage_argv(stage, params_file, tmp, prepared)
    saved = sys.argv
    sys.argv = argv
    try:
        runpy.run_path(argv[0], run_name="__main__")
    finally:
        sys.argv = saved
    assert all(path.exists() for path in outputs.values())


def write_params(tmp: Path, raw: dict | str | bytes) -> Path:
    path = tmp / "params.yaml"
    if isinstance(raw, dict):
        raw = yaml.safe_dump(raw)
    path.write_bytes(raw if isinstance(raw, bytes) else raw.encode())
    return path


def trainable(raw: dict) -> dict:
    """test_failures' params (60 images, 1 epoch) with a warm-up: 4 steps of 16 at pct_start 0.5."""
    raw["train"].update(batch_size=16, pct_start=0.5)
    return raw


def checkpoint_of(tmp: Path) -> Path:
    """Where the train stage's command (dvc.yaml's) puts its checkpoint under tmp/out."""
    argv, _ = stage_argv("train_onecycle", tmp / "params.yaml", tmp, tmp)
    return Path(argv[argv.index("--checkpoint") + 1])


def peak_in_subprocess(cmd: list[str], timeout: float = 60) -> tuple[int, str, float, float]:
    """Run `cmd`: (exit code, stderr, peak RSS in MiB, seconds)."""
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", PEAK_RSS, *cmd], cwd=ROOT, capture_output=True, text=True,
                            timeout=timeout)
    return result.returncode, result.stderr, float(result.stdout), time.perf_counter() - start


# ----------------------------------------------------------------------------- kind 1: transforms whose images explode


def _never_runs(*args, **kwargs):
    raise AssertionError("a transform ran: the size check must refuse the recipe before running anything")


HUGE = [
    ("Resize", [{"Resize": {"height": 30000, "width": 30000}}], ["900,000,000 pixels", "30000x30000 out"]),
    ("PadIfNeeded", [{"PadIfNeeded": {"min_height": 30000, "min_width": 30000}}], ["30000x30000 out"]),
    ("PadIfNeeded divisor", [{"PadIfNeeded": {"min_height": None, "min_width": None, "pad_height_divisor": 4096,
                                              "pad_width_divisor": 4096}}], ["4096x4096 out"]),
    ("Pad", [{"Pad": {"padding": 20000}}], ["40032x40032 out"]),
    ("RandomScale", [{"RandomScale": {"scale_limit": 1000}}], ["32032x32032 out"]),
    ("RandomScale NaN", [{"RandomScale": {"scale_limit": float("nan")}}], ["nan pixels"]),
    ("LongestMaxSize", [{"LongestMaxSize": {"max_size": 30000}}], ["30000x30000 out"]),
    ("SmallestMaxSize", [{"SmallestMaxSize": {"max_size_hw": [30000, None]}}], ["30000x30000 out"]),
    ("RandomResizedCrop", [{"RandomResizedCrop": {"size": [30000, 64]}}], ["30000x64 out"]),
    ("CropAndPad inside", [{"CropAndPad": {"percent": 100.0}}], ["41,370,624 pixels", "32x32 out"]),
    ("Affine fit_output", [{"Affine": {"scale": 100, "fit_output": True}}], ["6400x6400 out"]),
    ("MotionBlur kernel", [{"MotionBlur": {"blur_limit": 30001}}], ["900,060,001 pixels"]),
    ("Defocus kernel", [{"Defocus": {"radius": 30000}}], ["3,600,120,001 pixels"]),
    ("ZoomBlur copies", [{"ZoomBlur": {"max_factor": 1000.0}}], ["1,024,000,000 pixels"]),
    ("chained", [{"PadIfNeeded": {"min_height": 1000, "min_width": 1000}}, {"RandomScale": {"scale_limit": 0.5}}],
     ["augment.train[1] RandomScale", "from 1000x1000 ones", "1500x1500 out"]),
]


@pytest.mark.parametrize("name, recipe, words", HUGE, ids=[case[0] for case in HUGE])
def test_transform_making_huge_images_is_refused_before_it_runs(name, recipe, words, monkeypatch):
    monkeypatch.setattr(A.BasicTransform, "__call__", _never_runs)
    with pytest.raises(AugmentError) as info:
        validate(AugmentParams(train=tuple(recipe), backend="albumentations"))
    message = str(info.value)
    for word in [f"{MAX_AUGMENT_PIXELS:,} pixels (1024x1024)", "would make images of up to", *words]:
        assert word in message, message


def test_recipe_at_the_size_limit_is_run_and_accepted():
    validate(AugmentParams(train=({"Resize": {"height": 1024, "width": 1024}}, {"Resize": {"height": 32, "width": 32}}),
                           backend="albumentations"))


def test_perspective_with_fit_output_has_no_bound_and_is_refused():
    with pytest.raises(AugmentError, match="fit_output: true is not supported.*no bound"):
        validate(AugmentParams(train=({"Perspective": {"fit_output": True}},), backend="albumentations"))


def test_resize_to_30000_is_refused_by_the_stage_in_bounded_memory(tmp_path, params, prepared):
    """The example: the stage process peaks far below the 2.7 GB one such image needs."""
    params["augment"]["train"] = [{"Resize": {"height": 30000, "width": 30000}}]
    params_file = write_params(tmp_path, params)
    argv, outputs = stage_argv("lr_range_test", params_file, tmp_path, prepared)
    code, err, peak_mib, _ = peak_in_subprocess([sys.executable, *argv], timeout=300)
    assert code == 2, err
    assert "error: augment.train[0] Resize would make images of up to 900,000,000 pixels" in err
    assert "Traceback" not in err and not any(path.exists() for path in outputs.values())
    assert peak_mib < 1536, f"peak RSS {peak_mib:.0f} MiB"  # 717 MiB measured (torch, albumentations); the image: 2,575


@pytest.mark.parametrize("backend", ["tensor", "albumentations"])
def test_hole_larger_than_the_image_is_refused_up_front_whatever_p(backend, params, tmp_path, prepared, capsys):
    params["augment"].update(backend=backend, train=[
        {"CoarseDropout": {"num_holes_range": [1, 1], "hole_height_range": [40, 40], "hole_width_range": [8, 8],
                           "fill": 0, "p": 0.5}}])
    stage_fails("lr_range_test", write_params(tmp_path, params), tmp_path, prepared, capsys,
                "augment.train[0] CoarseDropout", "hole_height_range starts at 40 px", "32x32", "at most 32")


def test_a_step_failing_only_when_drawn_is_exercised_with_p_forced_to_1():
    with pytest.raises(AugmentError, match=r"augment.train\[0\] XYMasking fails on a 32x32 image"):
        validate(AugmentParams(train=({"XYMasking": {"num_masks_x": 1, "mask_x_length": 40, "p": 0.01}},),
                               backend="albumentations"))


def test_a_size_change_some_of_the_time_is_refused():
    recipe = ({"PadIfNeeded": {"min_height": 40, "min_width": 40, "p": 0.5}}, {"CenterCrop": {"height": 32,
                                                                                           "width": 32}})
    with pytest.raises(AugmentError, match="into 40x40 only with probability p=0.5.*set p: 1"):
        validate(AugmentParams(train=recipe, backend="albumentations"))


def test_crop_larger_than_the_image_is_refused_by_size_before_running(monkeypatch):
    monkeypatch.setattr(A.BasicTransform, "__call__", _never_runs)
    with pytest.raises(AugmentError, match="crop 36x36 is larger than the 32x32 image.*PadIfNeeded"):
        validate(AugmentParams(train=({"RandomCrop": {"height": 36, "width": 36}},), backend="albumentations"))


# ----------------------------------------------------------------------------- kind 2: params files taken silently


def _committed_text() -> str:
    return (ROOT / "params.yaml").read_text()


PARAMS_FILES = [
    ("duplicate section", lambda: _committed_text() + "\ntrain: {epochs: 2}\n",
     ["key 'train' appears twice", "first at line", "DVC refuses"]),
    ("duplicate key", lambda: "train:\n  epochs: 1\n  batch_size: 8\n  epochs: 2\n",
     ["line 4", "key 'epochs' appears twice in one mapping (first at line 2)"]),
    ("empty", lambda: "", ["holds no parameters", "git checkout params.yaml", "{}"]),
    ("only comments", lambda: "# seed: 1\n# train: {epochs: 2}\n", ["holds no parameters"]),
    ("latin-1", lambda: "seed: 1\ndata:\n  path: caf\xe9\n".encode("latin-1"),
     ["is not UTF-8 text", "byte 0xe9 at line 3", "save it as UTF-8"]),
    ("utf-16", lambda: "seed: 1\n".encode("utf-16"), ["is not UTF-8 text", "byte 0xff at line 1"]),
    ("anchor and alias", lambda: "seed: &one 1\nmodel: {width: *one}\n", ["line 1", "anchor &one", "not allowed"]),
    ("merge key", lambda: "base: &b {epochs: 1}\ntrain:\n  <<: *b\n", ["anchor &b"]),
    ("100,000 deep", lambda: "seed: " + "[" * 100_000 + "]" * 100_000 + "\n", ["nested more than 32 levels"]),
    ("5,000-digit integer", lambda: "seed: " + "9" * 5000 + "\n", ["holds a value YAML cannot convert", "4300"]),
    ("over a MiB", lambda: "seed: 1\n#" + "x" * (1 << 20) + "\n", ["1,048,586 bytes", "a few KB"]),
    ("tab-indented", lambda: "train:\n\tepochs: 2\n", ["is not valid YAML", "line 2"]),
    ("number as a key", lambda: "1: 2\nseed: 3\n", ["unknown key 1", "allowed keys in params.yaml"]),
    ("list as the file", lambda: "- seed\n- 1\n", ["params.yaml must be a mapping", "got list"]),
    ("number as an argument name", lambda: "augment:\n  train: [{HorizontalFlip: {1: 0.5}}]\n",
     ["augment.train[0] HorizontalFlip: argument names are words, got 1"]),
]


@pytest.mark.parametrize("name, content, words", PARAMS_FILES, ids=[case[0] for case in PARAMS_FILES])
def test_params_file_refused_with_the_reason(name, content, words, tmp_path, prepared, capsys):
    (tmp_path / "max_lr.json").write_text('{"max_lr": 0.05}')  # so that only the params file can be wrong
    stage_fails("train_onecycle", write_params(tmp_path, content()), tmp_path, prepared, capsys, *words)


def test_the_committed_params_and_an_explicit_empty_mapping_pass_the_strict_loader(tmp_path):
    """The committed params.yaml itself passes the strict loader (no duplicates, no anchors)."""
    assert load_params(ROOT / "params.yaml").seed == 1
    assert load_params(write_params(tmp_path, "{}")) == parse_params({})  # `{}` is every default, on purpose


@pytest.mark.timeout(30)  # reading a FIFO waits for a writer forever
@pytest.mark.parametrize("special", ["fifo", "folder", "dev-zero"])
def test_params_path_naming_a_special_file_is_refused_unread(special, tmp_path, prepared, capsys):
    path = {"fifo": tmp_path / "params.yaml", "folder": tmp_path / "params.d", "dev-zero": Path("/dev/zero")}[special]
    if special == "fifo":
        os.mkfifo(path)
    elif special == "folder":
        path.mkdir()
    elif not path.exists():
        pytest.skip("no /dev/zero here")
    stage_fails("train_onecycle", path, tmp_path, prepared, capsys, f"params file {path} is not a regular file")


# ----------------------------------------------------------------------------- kind 3: numbers out of range


BOUNDS = [
    ({"seed": 10**23}, ["seed must be between 0 and 4,294,967,295", "32-bit", "100000000000000000000000"]),
    ({"seed": -1}, ["seed must be between 0 and 4,294,967,295"]),
    ({"seed": 2**32}, ["seed must be between 0 and 4,294,967,295", "4294967296"]),
    ({"train": {"max_lr": 1e308}}, ["train.max_lr must be between 1e-10 and 10", "1e+308"]),
    ({"train": {"max_lr": 1e-300}}, ["train.max_lr must be between 1e-10 and 10"]),
    ({"train": {"max_lr": 10**400}}, ["train.max_lr must be float or 'auto'", "an integer of 1,329 bits"]),
    ({"lr_range_test": {"end_lr": 1e308}}, ["lr_range_test.end_lr must be between 1e-10 and 10"]),
    ({"lr_range_test": {"start_lr": 1e-300, "end_lr": 1.0}}, ["lr_range_test.start_lr must be between 1e-10"]),
    ({"lr_range_test": {"num_iter": 10**20}}, ["lr_range_test.num_iter must be between 2 and 100,000"]),
    ({"model": {"width": 100_000}}, ["model.width must be between 1 and 512", "1.7 GB"]),
    ({"model": {"width": 0}}, ["model.width must be between 1 and 512"]),
    ({"train": {"epochs": 10**9}}, ["train.epochs must be between 1 and 10,000"]),
    ({"train": {"batch_size": 10**9}}, ["train.batch_size must be between 1 and 65,536"]),
    ({"train": {"div_factor": 1e300}}, ["train.div_factor must be between 1 and 1,000,000"]),
    ({"train": {"div_factor": 0.5}}, ["train.div_factor must be between 1", "above max_lr"]),
    ({"train": {"final_div_factor": 1e300}}, ["train.final_div_factor must be between 1 and 1,000,000,000"]),
    ({"train": {"weight_decay": 1e300}}, ["train.weight_decay must be between 0 and 1"]),
    ({"train": {"num_workers": 10**6}}, ["train.num_workers must be between 0 and 64", "processes"]),
    ({"train": {"nproc_per_node": 1000}}, ["train.nproc_per_node must be between 1 and 64"]),
    ({"train": {"three_phase": True, "pct_start": 0.6}}, ["train.pct_start must be below 0.5 with three_phase"]),
    ({"augment": {"mean": [1e300, 0.5, 0.5]}}, ["augment.mean[0] must be between 0 and 1"]),
    ({"augment": {"std": [1e-300, 0.2, 0.2]}}, ["augment.std[0] must be between 0.001 and 1", "overflow"]),
    ({"evaluate": {"batch_size": 10**9}}, ["evaluate.batch_size must be between 1 and 65,536"]),
    ({"evaluate": {"misclassified": 10**6}}, ["evaluate.misclassified must be between 0 and 120"]),
]


@pytest.mark.parametrize("change, words", BOUNDS, ids=[json.dumps(c[0])[:60] for c in BOUNDS])
def test_number_out_of_range_is_refused_stating_the_range(change, words):
    raw = to_dict(parse_params({}))
    for section, value in change.items():
        if isinstance(value, dict):
            raw[section].update(value)
        else:
            raw[section] = value
    with pytest.raises(ParamsError) as info:
        parse_params(raw)
    for word in words:
        assert word in str(info.value), str(info.value)


@pytest.mark.parametrize("stage, change, words", [
    ("train_onecycle", {"seed": 100000000000000000000000}, ["seed must be between 0 and 4,294,967,295"]),
    ("train_onecycle", {"train": {"max_lr": 1e308}}, ["train.max_lr must be between 1e-10 and 10"]),
    ("evaluate", {"model": {"width": 100000}}, ["model.width must be between 1 and 512"]),
], ids=["seed 1e23", "max_lr 1e308", "width 100000"])
def test_the_issue_examples_exit_2_from_the_stage(stage, change, words, params, tmp_path, prepared, capsys):
    for section, value in change.items():
        params[section] = params[section] | value if isinstance(value, dict) else value
    stage_fails(stage, write_params(tmp_path, params), tmp_path, prepared, capsys, *words)


MAX_LR_FILES = [
    ("1e300", '{"max_lr": 1e300}', ["max_lr in", "must be between 1e-10 and 10", "rerun `dvc repro lr_range_test`"]),
    ("1e-300", '{"max_lr": 1e-300}', ["must be between 1e-10 and 10"]),
    ("1e400", '{"max_lr": 1e400}', ["positive finite number", "inf"]),
    ("100,000 deep", '{"max_lr": ' + "[" * 100_000 + "]" * 100_000 + "}", ["nests values deeper than Python"]),
    ("5,000 digits", '{"max_lr": ' + "9" * 5000 + "}", ["is not valid JSON", "4300"]),
    ("401 digits", '{"max_lr": 1' + "0" * 400 + "}", ["positive finite number, got an integer of 1,329 bits"]),
    ("huge list", '{"max_lr": [' + ", ".join(["1"] * 100_000) + "]}", ["positive finite number, got [1, 1, 1"]),
    ("over a MiB", '{"max_lr": 0.1, "pad": "' + "x" * (1 << 20) + '"}', ["over 1,048,576 bytes"]),
    ("latin-1", b'{"max_lr": 0.1, "method": "\xe9"}', ["is not valid JSON"]),
    ("folder", None, ["is not a regular file"]),
]


@pytest.mark.parametrize("name, content, words", MAX_LR_FILES, ids=[case[0] for case in MAX_LR_FILES])
def test_bad_max_lr_file_is_refused(name, content, words, params, tmp_path, prepared, capsys):
    target = tmp_path / "max_lr.json"
    if content is None:
        target.mkdir()
    else:
        target.write_bytes(content if isinstance(content, bytes) else content.encode())
    err = stage_fails("train_onecycle", write_params(tmp_path, params), tmp_path, prepared, capsys, *words)
    assert len(err) < MAX_MESSAGE_CHARS * 3, len(err)  # the stage's few log lines and one short error


def test_read_json_refuses_deep_nesting_without_a_recursion_error(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(io.ArtifactError, match="nests values deeper than Python can read"):
        io.read_json(path, "test file")


def test_pct_start_leaving_no_warm_up_step_exits_2_naming_what_to_change(params, tmp_path, prepared, capsys):
    """The example: 32 images in batches of 16 for 1 epoch at pct_start 0.5 (OneCycleLR's ZeroDivisionError)."""
    params["data"]["train_samples"] = 32
    params["train"].update(batch_size=16, epochs=1, pct_start=0.5)
    (tmp_path / "max_lr.json").write_text('{"max_lr": 0.05}')
    stage_fails("train_onecycle", write_params(tmp_path, params), tmp_path, prepared, capsys,
                "train.pct_start 0.5 x 2 optimizer steps (1 epoch of 2 batches) leaves no warm-up step",
                "at least 3 steps", "train.epochs", "train.batch_size", "raise train.pct_start above 0.5")


@pytest.mark.parametrize("epochs, steps_per_epoch, pct_start, words", [
    (1, 2, 0.5, ["x 2 optimizer steps", "at least 3 steps"]),  # peak at step 0: ZeroDivisionError in OneCycleLR
    (1, 4, 0.2083, ["x 4 optimizer steps", "at least 5 steps"]),  # peak before step 0: no warm-up, silently
    (1, 1, 0.9, ["x 1 optimizer step (1 epoch of 1 batch)", "at least 2 steps"]),
    (24, 1, 0.04, ["x 24 optimizer steps", "at least 26 steps"]),
])
def test_schedule_without_a_warm_up_step_is_an_error(epochs, steps_per_epoch, pct_start, words):
    with pytest.raises(ParamsError) as info:
        check_schedule(TrainParams(epochs=epochs, pct_start=pct_start), steps_per_epoch)
    for word in ["leaves no warm-up step", *words]:
        assert word in str(info.value), str(info.value)
    if epochs * steps_per_epoch == 1:
        assert "raise train.pct_start" not in str(info.value)  # no pct_start below 1 helps a single step


def test_schedule_with_a_short_warm_up_warns_how_short(caplog):
    with caplog.at_level(logging.WARNING, logger="onecycle.train"):
        check_schedule(TrainParams(epochs=2, pct_start=0.2083), 10)  # peak at step 3.2: 4 steps up
    assert "warm-up of only 4 steps (fewer than 10)" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="onecycle.train"):
        check_schedule(TrainParams(epochs=24, pct_start=0.2083), 391)  # the reference: 1,954 steps up
    assert caplog.records == []


def test_model_whose_weights_are_nan_is_refused_by_evaluate(params, tmp_path, prepared, capsys):
    weights = build_model(params["model"]["width"], 3).state_dict()
    weights = {k: v.float().fill_(float("nan")) if v.is_floating_point() else v for k, v in weights.items()}
    torch.save(weights, tmp_path / "model.pt")
    stage_fails("evaluate", write_params(tmp_path, params), tmp_path, prepared, capsys,
                "outputs NaN or infinite logits", "retrain it with `dvc repro -f train_onecycle`")


# ----------------------------------------------------------------------------- kind 4: messages bounded


def billion_laughs(levels: int = 10) -> str:
    """Under 1 KB of YAML whose last alias expands to 10^levels items."""
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for k in range(1, levels):
        lines.append(f"a{k}: &a{k} [" + ",".join([f"*a{k - 1}"] * 10) + "]")
    lines.append(f"data: {{path: *a{levels - 1}}}")
    return "\n".join(lines) + "\n"


def test_nested_aliases_are_refused_fast_in_bounded_memory_with_a_short_message(tmp_path):
    text = billion_laughs()
    assert len(text) < 1000
    params_file = write_params(tmp_path, text)
    out = tmp_path / "out" / "prepared"
    code, err, peak_mib, seconds = peak_in_subprocess(
        [sys.executable, str(ROOT / "stages" / "download.py"), "--params", str(params_file), "--out", str(out)])
    assert code == 2, err
    assert f"error: {params_file}, line 1: YAML anchor &a0 is not allowed in a params file" in err
    assert len(err) < MAX_MESSAGE_CHARS and "Traceback" not in err
    assert peak_mib < PEAK_RSS_LIMIT_MIB, f"peak RSS {peak_mib:.0f} MiB"
    assert seconds < 20 and not out.exists()


@pytest.mark.parametrize("change", [
    {"train": {"device": "x" * 1_000_000}},  # a long string
    {"train": {"device": list(range(1_000_000))}},  # a long list
    {"train": {"epochs": [[[[[[list(range(1000))]]]]]]}},  # a deep one
    {"train": {"x" * 1_000_000: 1}},  # a long unknown key
    {"augment": {"train": [{"HorizontalFlip": {"p": "y" * 1_000_000}}]}},  # through albumentations' own message
], ids=["string", "list", "nested", "key", "transform argument"])
def test_every_value_printed_in_a_message_is_cut(change):
    raw = to_dict(parse_params({}))
    for section, value in change.items():
        raw[section].update(value)
    with pytest.raises((ParamsError, AugmentError)) as info:
        parsed = parse_params(raw)
        validate(parsed.augment, "albumentations")
    assert len(str(info.value)) < MAX_MESSAGE_CHARS, len(str(info.value))


def test_shown_values_are_short_and_say_what_they_are():
    assert shown(10**23) == "100000000000000000000000"
    assert shown(10**400) == "an integer of 1,329 bits"
    assert len(shown("x" * 10**6)) <= 200 and "..." in shown("x" * 10**6)
    assert shown([1, 2, 3]) == "[1, 2, 3]"


# ----------------------------------------------------------------------------- kind 5: signals and the checkpoint lock


HOLD_LOCK = """
import sys, time
from pathlib import Path
from onecycle import checkpoint
with checkpoint.lock(Path(sys.argv[1])):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_a_lock_held_by_another_process_is_refused_naming_its_pid(tmp_path):
    target = tmp_path / "checkpoints" / "train_onecycle.pt"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(target)], cwd=ROOT, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(ckpt.CheckpointBusy, match=f"being trained by another process \\(pid {holder.pid}\\)"):
            with ckpt.lock(target):
                pass
        holder.kill()  # SIGKILL: no cleanup runs, the kernel still releases the lock
        holder.wait(timeout=30)
        with ckpt.lock(target):  # a stale lock file never blocks
            assert (tmp_path / "checkpoints" / "train_onecycle.pt.lock").read_text() == f"{os.getpid()}\n"
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert not (tmp_path / "checkpoints" / "train_onecycle.pt.lock").exists()  # removed on release


def test_second_training_on_a_locked_checkpoint_exits_2_at_once(params, tmp_path, prepared, capsys):
    (tmp_path / "max_lr.json").write_text('{"max_lr": 0.05}')
    params_file = write_params(tmp_path, trainable(params))
    target = checkpoint_of(tmp_path)
    with ckpt.lock(target):
        stage_fails("train_onecycle", params_file, tmp_path, prepared, capsys,
                    f"error: checkpoint {target} is being trained by another process (pid {os.getpid()})",
                    f"kill {os.getpid()}")
    assert not target.exists()


DIE_WITH_PARENT = """
import subprocess, sys, time
child = subprocess.Popen(sys.argv[2:], stdout=subprocess.DEVNULL, stderr=open(sys.argv[1], "w"))
print(child.pid, flush=True)
time.sleep(300)
"""


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie nobody reaped yet counts as ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's; elsewhere the "
                    "checkpoint lock alone keeps two trainings apart")
def test_training_dies_with_its_parent(params, tmp_path, prepared):
    params = trainable(params)
    params["train"]["epochs"] = 500  # long enough to still be training when its parent is killed
    (tmp_path / "max_lr.json").write_text('{"max_lr": 0.05}')
    argv, outputs = stage_argv("train_onecycle", write_params(tmp_path, params), tmp_path, prepared)
    lock_file = Path(str(checkpoint_of(tmp_path)) + ckpt.LOCK_SUFFIX)
    stderr_file = tmp_path / "stage.stderr"
    parent = subprocess.Popen([sys.executable, "-c", DIE_WITH_PARENT, str(stderr_file), sys.executable, *argv],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        child = int(parent.stdout.readline())
        deadline = time.monotonic() + 240
        while not lock_file.exists() and time.monotonic() < deadline:  # training has begun: fit holds the lock
            time.sleep(0.1)
        assert lock_file.exists(), "the stage never started training"
        parent.kill()  # SIGKILL: the parent cannot pass anything on; the kernel sends the stage SIGTERM
        parent.wait(timeout=30)
        while alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(child), "the stage outlived its parent"
    finally:
        parent.kill()
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
    assert "terminated by SIGTERM" in stderr_file.read_text()
    assert not lock_file.exists() and not any(path.exists() for path in outputs.values())


ORPHANED_ALREADY = """
import os, time
from onecycle import cli
cli.run_stage(lambda: cli.die_with_parent(os.getppid() + 1) or time.sleep(30), [])
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_stage_whose_parent_ended_before_it_asked_ends_at_once():
    result = subprocess.run([sys.executable, "-c", ORPHANED_ALREADY], cwd=ROOT, capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 143 and "terminated by SIGTERM" in result.stderr


# ----------------------------------------------------------------------------- full disk at a checkpoint


class FullDisk(pyio.RawIOBase):
    """A file on a disk with room for `room` bytes: past it, writes raise ENOSPC as the OS would."""

    def __init__(self, room: int) -> None:
        self.room = room

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return len(data)


def test_save_torch_on_a_full_disk_says_so(tmp_path, monkeypatch):
    """torch.save writing into the file itself reported `unexpected pos 704 vs 598`, a RuntimeError."""
    monkeypatch.setattr(io.os, "fdopen", lambda fd, mode: os.close(fd) or pyio.BufferedWriter(FullDisk(1000)))
    target = tmp_path / "model.pt"
    with pytest.raises(io.WriteError, match=f"cannot write {target}: No space left on device"):
        io.save_torch(target, {"w": torch.zeros(100_000)})
    assert list(tmp_path.iterdir()) == []


def test_full_disk_at_a_checkpoint_exits_2_then_the_next_run_trains(params, tmp_path, prepared, capsys,
                                                                    monkeypatch):
    (tmp_path / "max_lr.json").write_text('{"max_lr": 0.05}')
    params_file = write_params(tmp_path, trainable(params))
    target = checkpoint_of(tmp_path)
    real_open = io.atomic_open

    @contextlib.contextmanager
    def full_at_the_checkpoint(path, mode="wb"):
        with real_open(path, mode) as handle:
            yield pyio.BufferedWriter(FullDisk(4096)) if Path(path) == target else handle

    monkeypatch.setattr(io, "atomic_open", full_at_the_checkpoint)
    stage_fails("train_onecycle", params_file, tmp_path, prepared, capsys,
                f"error: cannot write {target}: No space left on device")
    assert sorted(p.name for p in target.parent.iterdir()) == []  # no checkpoint, temp or lock file left
    monkeypatch.undo()
    stage_runs("train_onecycle", params_file, tmp_path, prepared)
    assert not target.exists()  # a finished run removes its checkpoint
