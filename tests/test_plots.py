"""The charts: the PNGs (onecycle/plots.py), the picks file (onecycle/range_result.py), the DVC charts
(dvc.yaml's plots, .dvc/plots/*.json) and the offline page DVC draws them on (onecycle/plots_template.py).

The DVC charts are checked twice: their text, rendered to SVG by vl-convert (the same vega and
vega-lite the page inlines), and the page itself, drawn by headless Chromium with the network cut.
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from onecycle import io, plots, plots_template
from onecycle.lr_range import SweepResult
from onecycle.range_result import PICKS_COLUMNS, write_curve, write_picks
from tests.conftest import ROOT
from tests.pipeline import dvc, project_copy, run, tiny_params

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
NEVER_PREDICTED = "cat"  # a class no test image is predicted as: DVC's own confusion template drops it
HISTORY_COLUMNS = ["epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc", "seconds"]  # train_onecycle's
PAGE_WIDTH_PX = 800


def sweep_curve(n: int = 60) -> SweepResult:
    """A range test's curve: flat, a dip near LR 1e-2, then the blow-up past 0.3 (LR 1e-5 to 1)."""
    lrs = np.logspace(-5, 0, n)
    decade = np.log10(lrs)
    noise = np.random.default_rng(0).normal(0, 0.05, n)
    losses = 2.3 - 0.8 * np.exp(-((decade + 2) ** 2)) + np.where(decade > -0.5, 40 * (decade + 0.5) ** 2, 0) + noise
    smoothed = np.convolve(np.pad(losses, 2, mode="edge"), np.ones(5) / 5, mode="valid")
    return SweepResult(iterations=list(range(n)), lrs=list(lrs), losses=list(losses), smoothed=list(smoothed),
                       stop_reason="diverged", stop_iteration=n - 1)


def picks_of(sweep: SweepResult) -> dict[str, float]:
    """Every rule's pick, two of them on one LR (as steepest and valley often are)."""
    at = dict(edge=40, spike=38, steepest=30, valley=30, minimum=36)
    return {rule: sweep.lrs[i] for rule, i in at.items()}


# ----------------------------------------------------------------------------- the PNGs


def png_width(path: Path) -> int:
    return int.from_bytes(path.read_bytes()[16:20], "big")  # the IHDR chunk's width


def test_every_png_fits_the_page_dvc_draws(tmp_path):
    class Epoch:  # what plot_training reads of train_onecycle's history
        def __init__(self, epoch: int) -> None:
            self.epoch, self.lr = epoch, 0.4 * min(epoch, 5) / 5
            self.train_acc, self.test_acc, self.train_loss, self.test_loss = 10 + 3 * epoch, 9 + 3 * epoch, 2.0, 2.1

    sweep = sweep_curve()
    rng = np.random.default_rng(0)
    plots.plot_lr_range(sweep.lrs, sweep.losses, sweep.smoothed, picks_of(sweep), "edge", tmp_path / "lr_range.png")
    plots.plot_training([Epoch(e) for e in range(24)], tmp_path / "training.png")
    plots.plot_confusion(rng.integers(0, 100, (10, 10)), CLASSES, tmp_path / "confusion.png")
    plots.plot_mistakes(rng.integers(0, 255, (12, 32, 32, 3), dtype=np.uint8), CLASSES + CLASSES[:2],
                        CLASSES[2:] + CLASSES[:4], rng.random(12), tmp_path / "misclassified.png")
    widths = {path.name: png_width(path) for path in tmp_path.glob("*.png")}
    assert len(widths) == 4 and max(widths.values()) <= PAGE_WIDTH_PX, widths


def label_boxes(fig) -> dict[str, object]:
    """{text: its bounding box in pixels} of the suggestions' labels, once drawn."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    return {t.get_text(): t.get_window_extent(renderer) for t in ax.texts}


def test_suggestion_labels_never_overprint_and_say_which_is_which():
    sweep = sweep_curve()
    picks = picks_of(sweep) | {"minimum": sweep.lrs[31]}  # the next LR: its line beside steepest = valley
    fig = plots.lr_range_figure(sweep.lrs, sweep.losses, sweep.smoothed, picks, "edge",
                                fallbacks={"valley": "no valley: fell back to steepest"})
    try:
        boxes = label_boxes(fig)
    finally:
        plots.plt.close(fig)
    lr = picks["valley"]
    assert set(boxes) == {f"edge {picks['edge']:.2g} (chosen)", f"spike {picks['spike']:.2g}",
                          f"steepest = valley {lr:.2g} (valley: fallback)", f"minimum {picks['minimum']:.2g}"}
    for (a, box_a), (b, box_b) in itertools.combinations(boxes.items(), 2):
        assert not box_a.overlaps(box_b), (a, b)


def test_a_lone_fallback_is_marked_as_one():
    sweep = sweep_curve()
    fig = plots.lr_range_figure(sweep.lrs, sweep.losses, sweep.smoothed, {"edge": sweep.lrs[40], "valley": sweep.lrs[20]},
                                "edge", fallbacks={"valley": "no valley"})
    try:
        assert f"valley {sweep.lrs[20]:.2g} (fallback)" in label_boxes(fig)
    finally:
        plots.plt.close(fig)


def test_misclassified_title_clears_the_first_row():
    rng = np.random.default_rng(0)
    fig = plots.mistakes_figure(rng.integers(0, 255, (12, 32, 32, 3), dtype=np.uint8), CLASSES + CLASSES[:2],
                                CLASSES[2:] + CLASSES[:4], rng.random(12))
    try:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        title = fig._suptitle.get_window_extent(renderer)
        first_row = [ax.title.get_window_extent(renderer) for ax in fig.axes[:6]]
    finally:
        plots.plt.close(fig)
    gap = title.y0 - max(box.y1 for box in first_row)  # pixels, y up
    assert gap >= title.height / 2, f"the title is {gap:.1f} px above the first row's titles"  # was 1.8 to 5.6


# ----------------------------------------------------------------------------- the picks file


def test_picks_file_holds_every_rule_where_it_meets_the_curve(tmp_path):
    sweep = sweep_curve()
    picks = picks_of(sweep) | {"minimum": 2.0}  # beyond the sweep: no point on the curve
    write_picks(tmp_path / "picks.csv", sweep, picks, "spike", {"valley": "no valley, so steepest's"})
    with open(tmp_path / "picks.csv", newline="") as handle:
        rows = {row["rule"]: row for row in csv.DictReader(handle)}
    assert list(next(iter(rows.values()))) == PICKS_COLUMNS and set(rows) == set(picks)
    assert [rule for rule, row in rows.items() if row["chosen"] == "1"] == ["spike"]
    assert float(rows["edge"]["lr"]) == picks["edge"]
    assert float(rows["edge"]["smoothed_loss"]) == pytest.approx(sweep.smoothed[40])
    assert rows["minimum"]["smoothed_loss"] == ""
    assert rows["valley"]["fallback"] == "no valley, so steepest's" and rows["edge"]["fallback"] == ""


# ----------------------------------------------------------------------------- the offline page


@pytest.fixture(scope="module")
def page() -> str:
    return plots_template.build_page()


def test_page_inlines_the_libraries_and_loads_nothing(page):
    assert page.count("{plot_divs}") == 1 and page.count("{refresh_tag}") == 1
    assert "{scripts}" not in page  # where DVC would write its CDN <script src=...> tags
    assert not re.search(r"<script[^>]*\bsrc=", page)
    assert "window.vegaEmbed=" in page.replace(" ", "")
    versions = plots_template.library_versions()
    assert {name: v.split(".")[0] for name, v in versions.items()} == {"vega": "5", "vega-lite": "5", "vega-embed": "6"}
    assert all(f"{name} {version}" in page for name, version in versions.items())


def test_dvc_config_names_a_generated_page_git_ignores():
    path = plots_template.configured_path(ROOT)
    assert path.parent == ROOT / ".dvc"
    for ignored in [path, ROOT / "dvc_plots" / "index.html"]:
        assert run(["git", "check-ignore", "-q", str(ignored)], ROOT, check=False).returncode == 0, ignored


# ----------------------------------------------------------------------------- the DVC charts


def write_outputs(proj: Path, chosen: str, epochs: int) -> None:
    """What the stages write for `dvc plots`, from made-up numbers, through the project's own writers."""
    sweep = sweep_curve()
    picks = picks_of(sweep)
    write_curve(proj / "plots/lr_losses.csv", sweep)
    write_picks(proj / "plots/lr_picks.csv", sweep, picks, chosen, {"valley": "no valley"})
    plots.plot_lr_range(sweep.lrs, sweep.losses, sweep.smoothed, picks, chosen, proj / "plots/lr_range.png",
                        fallbacks={"valley": "no valley"})
    io.write_csv(proj / "plots/train_history.csv", HISTORY_COLUMNS,
                 [[e, 0.1, 2 - 0.1 * e, 20 + 5 * e, 2.1 - 0.1 * e, 18 + 5 * e, 1.0] for e in range(epochs)])
    io.write_csv(proj / "plots/confusion.csv", ["actual", "predicted"],  # three images a class, cats taken for dogs
                 [[name, "dog" if name == NEVER_PREDICTED else name] for name in CLASSES for _ in range(3)])
    schedule = proj / "dvclive/plots/metrics/schedule"  # what DVCLive writes: the one-cycle shape per step
    io.write_text(schedule / "lr.tsv", "step\tlr\n" + "".join(f"{k}\t{0.01 * min(k, 5)}\n" for k in range(10 * epochs)))
    io.write_text(schedule / "momentum.tsv", "step\tmomentum\n" + "".join(
        f"{k}\t{0.95 - 0.02 * min(k, 5)}\n" for k in range(10 * epochs)))
    counts = np.eye(len(CLASSES), dtype=int)
    plots.plot_confusion(counts, CLASSES, proj / "plots/confusion.png")
    plots.plot_training([], proj / "plots/training.png")
    plots.plot_mistakes(np.zeros((0, 32, 32, 3), np.uint8), [], [], [], proj / "plots/misclassified.png")


@pytest.fixture(scope="module")
def project(tmp_path_factory, page):
    """A copy of the project with the committed .dvc/config and its page, and its plots in two revisions:
    HEAD (edge chosen, 2 epochs) and the workspace (spike chosen, 3 epochs)."""
    proj = project_copy(tmp_path_factory.mktemp("plots") / "p", tiny_params(Path("unused")))
    shutil.copy2(ROOT / ".dvc" / "config", proj / ".dvc" / "config")
    io.write_text(plots_template.configured_path(proj), page)
    write_outputs(proj, "edge", epochs=2)
    run(["git", "add", "-f", "plots", "dvclive"], proj)  # in git, not DVC's cache: `plots diff` reads them at HEAD all the same
    run(["git", "commit", "-qm", "plots"], proj)
    write_outputs(proj, "spike", epochs=3)
    return proj


def svg_texts(spec: dict) -> list[str]:
    """The text of every label, title and legend entry of a chart, rendered by vl-convert."""
    import vl_convert

    svg = vl_convert.vegalite_to_svg(spec, vl_version=plots_template.VEGA_LITE)
    return re.findall(r"<text[^>]*>([^<]*)</text>", svg)


def chart_specs(proj: Path, *command: str) -> dict[str, dict]:
    shown = json.loads(dvc("plots", *command, "--json", cwd=proj).stdout)["data"]
    return {name: entries[0]["content"] for name, entries in shown.items() if entries[0]["type"] == "vega"}


@pytest.mark.slow
def test_dvc_charts_mark_the_picks_clip_like_the_png_and_keep_every_class(project):
    specs = chart_specs(project, "show")
    range_test = svg_texts(specs["LR range test (loss against LR, log scale)"])
    sweep = sweep_curve()
    legend = [t for t in range_test if t.split(" ")[0] in picks_of(sweep)]  # "spike 0.015 (chosen)"
    assert {t.split(" ")[0] for t in legend} == set(picks_of(sweep))
    assert [t.split(" ")[0] for t in legend if t.endswith("(chosen)")] == ["spike"]
    assert [t.split(" ")[0] for t in legend if t.endswith("(fallback)")] == ["valley"]
    top = plots._lr_range_ylim(np.array(sweep.losses), np.array(sweep.smoothed))[1]
    assert f"loss cut off above {top:.3g}" in range_test  # the PNG's limit

    for name in ["Accuracy by epoch", "Loss by epoch", "One-cycle LR by epoch"]:
        texts = svg_texts(specs[name])
        epoch_labels = texts[: texts.index("epoch")]  # the x axis is drawn first, its title after its labels
        assert epoch_labels == ["0", "1", "2"], (name, epoch_labels)

    confusion = svg_texts(specs["Confusion matrix (test set)"])
    assert all(confusion.count(name) == 2 for name in CLASSES), confusion  # on both axes, the unpredicted one too

    diff = svg_texts(chart_specs(project, "diff", "HEAD")["LR range test (loss against LR, log scale)"])
    assert {t.split(" ")[1] for t in diff if t.endswith("(chosen)")} == {"edge", "spike"}  # "HEAD: edge 0.3 (chosen)"


# ----------------------------------------------------------------------------- drawn offline in Chromium


@pytest.fixture(scope="module")
def chromium() -> str:
    """Chromium's command; skips where there is none, except under CI, which must run this test.
    (Module-scoped and named first in the test, so a skip comes before the project is built.)"""
    found = next(filter(None, map(shutil.which, ["chromium", "chromium-browser", "google-chrome"])), None)
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("no chromium under CI: .ci/run installs Debian's chromium for the offline render test")
        pytest.skip("no chromium (Debian: apt-get install chromium): the offline render of `dvc plots` is not checked")
    return found


def offline(command: list[str]) -> list[str]:
    """`command` with no network: in a namespace of its own where we may make one (root), and through a
    proxy that does not exist with no name resolving either way."""
    cut = ["--proxy-server=127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND"]
    unshare = shutil.which("unshare")
    if os.geteuid() == 0 and unshare and subprocess.run([unshare, "-n", "true"], capture_output=True).returncode == 0:
        return [unshare, "-n", *command, *cut]
    return [*command, *cut]


CHARTS = 7  # dvc.yaml's vega charts: range test, accuracy, loss, LR by epoch, LR and momentum by step, confusion


def charts_drawn(chromium: str, page: Path, profile: Path) -> tuple[int, int]:
    """(charts on the page, charts drawn): vegaEmbed calls in the page, and canvases after it ran."""
    dom = subprocess.run(offline([chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
                                  "--virtual-time-budget=15000", "--dump-dom", page.as_uri()]),
                         capture_output=True, text=True, timeout=120, check=True).stdout
    return page.read_text().count("vegaEmbed('#"), dom.count("<canvas")


@pytest.mark.slow
def test_every_chart_draws_offline_in_chromium(chromium, project, tmp_path):
    dvc("plots", "show", "-o", str(tmp_path / "show"), cwd=project)
    dvc("plots", "diff", "HEAD", "-o", str(tmp_path / "diff"), cwd=project)
    # DVC's own page, which loads the libraries from a CDN: none of its charts may draw, or the network was not cut
    (tmp_path / "dvc_default.html").write_text("<html><head>{scripts}</head><body>{plot_divs}</body></html>")
    dvc("plots", "show", "-o", str(tmp_path / "cdn"), "--html-template", str(tmp_path / "dvc_default.html"), cwd=project)
    assert charts_drawn(chromium, tmp_path / "cdn" / "index.html", tmp_path / "profile") == (CHARTS, 0)
    assert charts_drawn(chromium, tmp_path / "show" / "index.html", tmp_path / "profile") == (CHARTS, CHARTS)
    assert charts_drawn(chromium, tmp_path / "diff" / "index.html", tmp_path / "profile") == (CHARTS, CHARTS)
