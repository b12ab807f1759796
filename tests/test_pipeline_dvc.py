"""The real `dvc` CLI drives all four stages on tiny data and a narrow model."""

from __future__ import annotations

import json
import sys

import pytest

from tests.pipeline import dvc, image_folder, project_copy, ran_stages, run, tiny_params, write_params

pytestmark = pytest.mark.slow
# README, "Working with DVC": the columns that matter (DVC matches each pattern at the start of a column's name)
CURATED = r"Experiment|metrics/max_lr.json:max_lr|.*\.method|train\.epochs|seed|accuracy"


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    data = image_folder(tmp_path_factory.mktemp("images"))
    params = tiny_params(data)
    proj = project_copy(tmp_path_factory.mktemp("proj") / "p", params)
    out = dvc("repro", cwd=proj).stdout
    assert ran_stages(out) == ["download", "lr_range_test", "train_onecycle", "evaluate"]
    run(["git", "add", "-A"], proj)
    run(["git", "commit", "-qm", "first run"], proj)
    return proj, params


def test_repro_writes_every_output(project):
    proj, _ = project
    for path in ["plots/lr_losses.csv", "metrics/max_lr.json", "plots/lr_range.png", "models/model.pt",
                 "models/model.json", "plots/train_history.csv", "plots/training.png", "metrics/train.json",
                 "metrics/eval.json", "plots/confusion.csv", "plots/confusion.png", "plots/misclassified.png"]:
        assert (proj / path).is_file(), path
    header = (proj / "plots/lr_losses.csv").read_text().splitlines()[0]
    assert header == "iteration,lr,loss,smoothed_loss"
    assert (proj / "plots/train_history.csv").read_text().splitlines()[0] == (
        "epoch,lr,train_loss,train_acc,test_loss,test_acc,seconds")
    eval_metrics = json.loads((proj / "metrics/eval.json").read_text())
    assert eval_metrics["images"] == 50 and 0 <= eval_metrics["accuracy"] <= 100


def test_second_repro_runs_nothing(project):
    proj, _ = project
    assert ran_stages(dvc("repro", cwd=proj).stdout) == []


def test_only_the_stages_that_read_a_changed_param_rerun(project):
    proj, params = project
    try:
        write_params(proj, params | {"evaluate": params["evaluate"] | {"tta": True}})
        assert ran_stages(dvc("repro", cwd=proj).stdout) == ["evaluate"]
        assert "tta" in json.loads((proj / "metrics/eval.json").read_text())
        changed = params | {"evaluate": params["evaluate"] | {"tta": True},
                            "train": params["train"] | {"epochs": 1}}
        write_params(proj, changed)
        assert ran_stages(dvc("repro", cwd=proj).stdout) == ["train_onecycle", "evaluate"]
    finally:  # back to the committed run for the other tests: text outputs from git, cached ones from DVC
        run(["git", "checkout", "--", "."], proj)
        dvc("checkout", cwd=proj)
    assert dvc("status", cwd=proj).stdout.strip().endswith("up to date.")


def test_metrics_params_and_plots_commands(project):
    proj, params = project
    shown = dvc("metrics", "show", cwd=proj).stdout
    assert "metrics/eval.json" in shown and "accuracy" in shown
    write_params(proj, params | {"train": params["train"] | {"weight_decay": 0.0}})
    try:
        assert "train.weight_decay" in dvc("params", "diff", cwd=proj).stdout
        dvc("repro", cwd=proj)
        assert "metrics/train.json" in dvc("metrics", "diff", cwd=proj).stdout
    finally:  # back to the committed run: its text outputs from git, its cached ones from DVC (no retraining)
        run(["git", "checkout", "--", "."], proj)
        dvc("checkout", cwd=proj)
    assert dvc("status", cwd=proj).stdout.strip().endswith("up to date.")
    html_dir = proj / "plots_html"
    dvc("plots", "show", "-o", str(html_dir), cwd=proj)
    html = (html_dir / "index.html").read_text()
    for name in ["LR range test", "Accuracy by epoch", "Loss by epoch", "One-cycle LR", "Confusion matrix",
                 "lr_range.png", "training.png", "confusion.png", "misclassified.png"]:
        assert name in html, name
    assert '"type": "log"' in html or '"type":"log"' in html  # the range test's x axis


def test_experiments_run_and_show(project):
    proj, _ = project
    for seed in (1, 2):  # two seeds of one configuration: test_seeds_aggregate_per_configuration reads them
        dvc("exp", "run", "-S", f"seed={seed}", "-S", "train.epochs=1", cwd=proj)
    table = dvc("exp", "show", "--no-pager", "--csv", cwd=proj).stdout
    header, *rows = table.splitlines()
    assert "train.epochs" in header and "accuracy" in header
    assert len(rows) >= 2
    # the README's curated view: experiment, max LR, rule, epochs, seed, accuracy and nothing else
    curated = dvc("exp", "show", "--no-pager", "--csv", "--drop", ".*", "--keep", CURATED, cwd=proj).stdout
    assert set(curated.splitlines()[0].split(",")) == {
        "Experiment", "metrics/max_lr.json:max_lr", "lr_range_test.method", "train.epochs", "seed", "accuracy"}


def test_a_temp_experiment_reads_a_relative_data_path_from_the_project(project):
    """`--temp` (like queued) experiments run in a copy under .dvc/tmp/exps/: a relative data.path
    still means relative to the project the user runs from."""
    import os

    proj, params = project
    relative = os.path.relpath(params["data"]["path"], proj)
    assert not os.path.isabs(relative)
    out = dvc("exp", "run", "--temp", "-S", f"data.path={relative}", "-S", "train.epochs=1", cwd=proj)
    assert "download" in " ".join(ran_stages(out.stdout))
    table = dvc("exp", "show", "--no-pager", "--csv", cwd=proj).stdout
    assert relative in table


def test_metrics_are_visible_while_training_runs(tmp_path):
    """DVCLive's metrics.json holds epoch 0 while a 3-epoch `dvc repro` is still training."""
    import subprocess
    import time

    from tests.pipeline import env

    data = image_folder(tmp_path / "images", n_train=400, n_test=50)
    params = tiny_params(data)
    params["train"].update(epochs=3, batch_size=16, max_lr=0.05)  # ~1 s or more per epoch here
    proj = project_copy(tmp_path / "p", params)
    dvc("repro", "download", cwd=proj)
    proc = subprocess.Popen([sys.executable, "-m", "dvc", "repro", "train_onecycle"], cwd=proj, env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    live = proj / "dvclive" / "metrics.json"
    seen = None
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            seen = json.loads(live.read_text())
        except (OSError, ValueError):  # not written yet, or caught mid-write (DVCLive writes in place)
            seen = None
        if seen is not None and not (proj / "models" / "model.pt").exists():
            break
        time.sleep(0.05)
    running = proc.poll() is None
    proc.wait(timeout=600)
    assert running and seen is not None, "no DVCLive metrics were seen while training ran"
    assert seen["step"] in (0, 1) and 0 <= seen["test"]["acc"] <= 100 and seen["train"]["loss"] > 0
    assert proc.returncode == 0
    final = json.loads(live.read_text())
    assert final["step"] == 2 and "schedule" not in final  # the per-step LR is a chart, not a metric
    lrs = (proj / "dvclive" / "plots" / "metrics" / "schedule" / "lr.tsv").read_text().splitlines()
    assert lrs[0] == "step\tlr" and len(lrs) == 1 + 3 * 25  # 400 images in batches of 16: 25 steps an epoch


def test_a_fresh_clone_shows_the_committed_metrics_and_plots(project, tmp_path):
    proj, _ = project
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(proj), str(clone)], tmp_path)
    for path in ("metrics/eval.json", "metrics/train.json", "metrics/max_lr.json", "plots/lr_losses.csv",
                 "plots/train_history.csv", "dvclive/metrics.json"):
        assert (clone / path).is_file(), f"{path} is not committed with git"
    assert not (clone / "models" / "model.pt").exists()  # the model stays in DVC's cache
    shown = dvc("metrics", "show", cwd=clone)
    assert "accuracy" in shown.stdout and "failed" not in (shown.stdout + shown.stderr).lower()
    header = dvc("exp", "show", "--no-pager", "--csv", cwd=clone).stdout.splitlines()[0]
    assert "accuracy" in header and "max_lr" in header


def test_seeds_aggregate_per_configuration(project):
    proj, _ = project  # the two experiments of test_experiments_run_and_show (seeds 1 and 2)
    shown = dvc("exp", "show", "--json", cwd=proj).stdout
    import subprocess

    from tests.pipeline import env

    out = subprocess.run([sys.executable, "-m", "onecycle.experiments"], input=shown, cwd=proj, env=env(),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    rows = [line for line in out.stdout.splitlines() if "1, 2" in line]
    assert len(rows) == 1, out.stdout
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert int(cells[2]) >= 2 and "±" in cells[3]  # runs, mean ± sd over the seeds
