"""benchmarks/lr_grid.py: the plan (picks and grid merged), the keys, the table, and the command on a tiny
CPU setting: it writes its table, figure and one record per run, skips what an earlier call wrote, finishes
what a killed call left, and never reuses a result made with other settings."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from benchmarks import lr_grid
from onecycle import pipeline
from onecycle.device import Runtime
from onecycle.params import parse_params
from tests.conftest import ROOT
from tests.pipeline import image_folder, tiny_params

# A tiny CPU setting: 4-channel network, 160 images, 1 epoch, a 12-batch sweep (about 1 s a run).
# One torch thread: on a shared 2-core machine two threads of so small a step wait on each other (2-10x slower).
TINY = ["--width", "4", "--epochs", "1", "--range-iters", "12", "--seeds", "1", "--threads", "1"]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> tuple[Path, Path]:
    """(params file, prepared folder) for a synthetic image folder, prepared by the download stage."""
    root = tmp_path_factory.mktemp("grid")
    folder = image_folder(root / "images", n_train=160, n_test=40)
    params = root / "params.yaml"
    params.write_text(yaml.safe_dump(tiny_params(folder)))
    subprocess.run(pipeline.command("download", params, root), check=True, capture_output=True, timeout=120)
    return params, pipeline.outputs("download", root)["data/prepared"]


def grid_call(prepared: tuple[Path, Path], out: Path, *extra: str) -> int:
    params, data = prepared
    return lr_grid.main(["--params", str(params), "--data", str(data), "--out", str(out), *TINY, *extra])


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.glob("*.json"))}


def ran(output: str) -> tuple[int, int, int]:
    """(trainings run, range tests run, records reused) from the command's last line."""
    found = re.search(r"^this call: (\d+) trainings and (\d+) range tests run .*; (\d+) written by an earlier call "
                      r"were reused", output, re.MULTILINE)
    assert found, output[-2000:]
    return int(found[1]), int(found[2]), int(found[3])


# ----------------------------------------------------------------------------- pure pieces


def test_plan_merges_a_pick_equal_to_a_grid_lr_and_trains_picks_at_their_own_seed():
    picks = {
        0: {"edge": 0.08 * (1 + 1e-12), "spike": 0.031},  # edge: the grid's 0.08 within 1e-9 relative
        1: {"edge": 0.08, "spike": 0.031},
        2: {"edge": 0.08, "spike": 0.05},
    }
    points = lr_grid.plan_points([0.02, 0.08], [0, 1, 2], picks)
    assert [p.max_lr for p in points] == [0.02, 0.031, 0.05, 0.08]
    by_lr = {p.max_lr: p for p in points}
    assert by_lr[0.08].source() == "grid; edge (seed 0,1,2)" and by_lr[0.08].seeds == [0, 1, 2]
    assert by_lr[0.031].source() == "spike (seed 0,1)" and by_lr[0.031].seeds == [0, 1]
    assert by_lr[0.05].seeds == [2] and by_lr[0.02].source() == "grid"
    # 1e-6 relative apart is not the same LR: two runs
    assert len(lr_grid.plan_points([0.08], [0], {0: {"edge": 0.08 * (1 + 1e-6)}})) == 2


def test_settings_key_changes_with_what_training_reads_not_with_seed_lr_or_speed_knobs(tmp_path):
    raw = tiny_params(tmp_path)
    rt = Runtime(torch.device("cpu"), "fp32", True)

    def key(digest: str = "data", **changes) -> str:
        changed = json.loads(json.dumps(raw))
        for name, value in changes.items():
            section, _, field = name.partition("__")
            changed[section][field] = value
        return lr_grid.settings_key(parse_params(changed), "train_onecycle", rt, digest)

    base = key()
    assert key(train__epochs=3) != base and key(model__width=16) != base and key(data__train_samples=100) != base
    assert key("other data") != base
    assert lr_grid.settings_key(parse_params(raw), "train_onecycle", Runtime(torch.device("cpu"), "bf16", True),
                                "data") != base
    assert key(train__max_lr=0.3) == base and key(train__num_workers=4) == base
    assert lr_grid.settings_key(parse_params(raw | {"seed": 7}), "train_onecycle", rt, "data") == base


def test_table_gives_mean_and_sample_sd_over_seeds_and_each_rule_at_its_own_picks():
    def run(seed: int, acc: float | None) -> dict:
        status = "finished" if acc is not None else "diverged"
        return {"seed": seed, "status": status, "final_test_acc": acc, "best_test_acc": acc, "seconds": 10.0}

    points = lr_grid.plan_points([0.04], [0, 1, 2], {0: {"edge": 0.04}, 1: {"edge": 0.3}, 2: {"edge": 0.04}})
    points[0].runs = [run(0, 70.0), run(1, 72.0), run(2, 74.0)]
    points[1].runs = [run(1, None)]
    tests = {0: {"suggestions": {"edge": 0.04}}, 1: {"suggestions": {"edge": 0.3}}, 2: {"suggestions": {"edge": 0.04}}}
    text = lr_grid.table(points, tests)
    assert "| 0.04 | grid; edge (seed 0,2) | 3 | 72.00 ± 2.00 | 72.00 | 10 |" in text
    assert "| 0.3 | edge (seed 1) | 1 (1 diverged) | — |" in text
    # the rule's own runs: seeds 0 and 2 at 0.04 (70, 74), seed 1 diverged at 0.3
    assert "| edge | 0: 0.04, 1: 0.3, 2: 0.04 | 3 (1 diverged) | 72.00 ± 2.83 |" in text


# ----------------------------------------------------------------------------- the command


def test_bad_input_stops_before_any_run_with_exit_2(prepared, tmp_path, capsys):
    params, _ = prepared
    assert grid_call((params, tmp_path / "nowhere"), tmp_path / "out") == 2
    assert "error: " in capsys.readouterr().err and not (tmp_path / "out").exists()
    assert grid_call(prepared, tmp_path / "out", "--set", "seed=5") == 2  # the grid sets the seeds itself
    assert "--seeds" in capsys.readouterr().err


@pytest.mark.slow
def test_grid_writes_table_figure_and_runs_then_a_second_call_runs_nothing(prepared, tmp_path, capsys):
    out = tmp_path / "out"
    assert grid_call(prepared, out, "--grid", "0.02,0.08") == 0
    first = capsys.readouterr().out
    (test,) = [json.loads(p.read_text()) for p in (out / "range_tests").glob("*.json")]
    picks = test["suggestions"]
    assert picks, "the range test recorded no rule's pick"
    runs = snapshot(out / "runs")
    records = [json.loads(b) for b, _ in runs.values()]
    expected = lr_grid.plan_points([0.02, 0.08], [1], {1: picks})
    assert len(runs) == len(expected)  # one run per distinct LR (picks equal to a grid LR merged)
    assert {r["seed"] for r in records} == {1} and all(len(r["history"]) == 1 for r in records)
    table = (out / "table.md").read_text()
    assert (out / "accuracy_vs_max_lr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for record in records:  # each row shows its own run's accuracy (one seed: no sd)
        assert f"| {record['max_lr']:.4g} |" in table and f"| {record['final_test_acc']:.2f} |" in table
    for rule, lr in picks.items():  # every rule the range test named, with its pick trained
        assert f"| {rule} | 1: {lr:.4g} | 1 |" in table
        assert any(lr_grid.same_lr(r["max_lr"], lr) for r in records)
    assert "scale: SHORTENED" in table and "1 epochs of 160 train images" in table and "width 4" in table
    assert table in first and ran(first) == (len(expected), 1, 0)

    assert grid_call(prepared, out, "--grid", "0.02,0.08") == 0
    second = capsys.readouterr().out
    assert ran(second) == (0, 0, len(expected) + 1)
    assert snapshot(out / "runs") == runs  # not one record rewritten
    assert (out / "table.md").read_text() == table  # rewritten from the same records

    lost = sorted(runs)[0]
    (out / "runs" / lost).unlink()  # as if the call had been cut short before this run
    assert grid_call(prepared, out, "--grid", "0.02,0.08") == 0
    assert ran(capsys.readouterr().out) == (1, 0, len(expected))
    assert sorted(snapshot(out / "runs")) == sorted(runs)


@pytest.mark.slow
def test_a_killed_call_with_workers_is_finished_by_the_next_and_keeps_what_it_wrote(prepared, tmp_path, capsys):
    """--jobs 2 (two worker processes, the GPU's way), killed as a whole (its process group, as Ctrl-C or a
    lost machine would) once its first run is written; the next call reuses every run written, runs the rest."""
    params, data = prepared
    lrs = ["0.005", "0.01", "0.02", "0.04", "0.08", "0.16"]
    out, grid = tmp_path / "out", ["--grid", ",".join(lrs), "--grid-only"]
    argv = [sys.executable, str(ROOT / "benchmarks" / "lr_grid.py"), "--params", str(params), "--data", str(data),
            "--out", str(out), *TINY, *grid, "--jobs", "2"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 150
        while not list((out / "runs").glob("*.json")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the command and its workers
        stderr = proc.communicate(timeout=30)[1].decode()
    kept = snapshot(out / "runs")
    assert 1 <= len(kept) < len(lrs), f"{len(kept)} runs written before the kill:\n{stderr[-3000:]}"
    assert "queued: max LR 0.005, seed 1" in stderr and all(json.loads(b)["jobs"] == 2 for b, _ in kept.values())
    assert grid_call(prepared, out, *grid) == 0
    assert ran(capsys.readouterr().out) == (len(lrs) - len(kept), 0, len(kept))
    after = snapshot(out / "runs")
    assert len(after) == len(lrs) and all(after[name] == kept[name] for name in kept)


@pytest.mark.slow
def test_changed_settings_are_not_reused(prepared, tmp_path, capsys):
    out = tmp_path / "out"
    assert grid_call(prepared, out, "--grid", "0.05,0.1", "--grid-only") == 0
    old = snapshot(out / "runs")
    assert ran(capsys.readouterr().out) == (2, 0, 0)
    assert grid_call(prepared, out, "--grid", "0.05,0.1", "--grid-only", "--epochs", "2") == 0
    assert ran(capsys.readouterr().out) == (2, 0, 0)  # nothing of the 1-epoch runs reused
    new = {name: json.loads(b) for name, (b, _) in snapshot(out / "runs").items() if name not in old}
    assert len(new) == 2 and all(len(r["history"]) == 2 for r in new.values())
    assert all(snapshot(out / "runs")[name] == old[name] for name in old)  # the old results left as they were
    assert "2 epochs of 160 train images" in (out / "table.md").read_text()
