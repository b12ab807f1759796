"""Every matplotlib figure of the pipeline, drawn from plain numbers and saved atomically as PNG.

`dvc plots show` puts each PNG on its page at its natural size, so every figure is at most 800 px
wide (PAGE_WIDTH_IN at DPI, plus the 0.1 in that savefig pads each side with): it fits a laptop's
browser window without scrolling sideways.
"""

from __future__ import annotations

import io as _io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: stages run headless, on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402

from onecycle import io  # noqa: E402

DPI = 100  # pixels per inch of the saved PNGs
PAGE_WIDTH_IN = 7.8  # the widest figure, in inches: 800 px at DPI with savefig's padding


def save_figure(fig: "plt.Figure", path: str | Path, dpi: int = DPI) -> None:
    """Render to memory, then write atomically; the figure is closed either way."""
    try:
        buffer = _io.BytesIO()
        fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(fig)
    io.write_bytes(path, buffer.getvalue())


def plot_training(history, path: str | Path) -> None:
    """Accuracy, loss and LR against epoch, from the per-epoch history of train_onecycle.

    One panel above the other on a shared epoch axis, so the three read down at the page's width."""
    epochs = [h.epoch for h in history]
    fig, (acc, loss, lr) = plt.subplots(3, 1, figsize=(PAGE_WIDTH_IN, 8), sharex=True, layout="constrained")
    acc.plot(epochs, [h.train_acc for h in history], "o-", label="train")
    acc.plot(epochs, [h.test_acc for h in history], "o-", label="test")
    acc.set(ylabel="accuracy (%)", title="Accuracy")
    loss.plot(epochs, [h.train_loss for h in history], "o-", label="train")
    loss.plot(epochs, [h.test_loss for h in history], "o-", label="test")
    loss.set(ylabel="cross-entropy", title="Loss")
    lr.plot(epochs, [h.lr for h in history], "o-", color="tab:green")
    lr.set(xlabel="epoch", ylabel="LR at the epoch's last step", title="One-cycle LR")
    for ax in (acc, loss):
        ax.legend()
    for ax in (acc, loss, lr):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))  # epochs are whole
    save_figure(fig, path)


def plot_confusion(counts, classes: list[str], path: str | Path) -> None:
    """Confusion matrix, rows actual, columns predicted, each cell the count (colour: row share)."""
    share = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    size = min(PAGE_WIDTH_IN, max(5.0, 0.6 * len(classes) + 2))  # 0.6 in a class, within the page
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set(xlabel="predicted", ylabel="actual", title="Confusion matrix (test set)")
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if share[i, j] > 0.5 else "black")
    save_figure(fig, path)


TITLE_GAP = 0.12  # inches between the grid's title and its first row (and between rows): ~12 px at DPI


def mistakes_figure(images, actual: list[str], predicted: list[str], confidence) -> "plt.Figure":
    """A grid of misclassified images (uint8 NHWC) titled 'actual → predicted (confidence)'.

    Constrained layout keeps the figure title clear of the first row's titles (tight_layout ignored
    the suptitle, and the two touched), with TITLE_GAP between them."""
    n = len(images)
    cols = min(6, max(n, 1))
    rows = max(1, -(-n // cols))
    cell = PAGE_WIDTH_IN / 6  # six columns fill the page's width
    fig, axes = plt.subplots(rows, cols, figsize=(cell * cols, (cell + 0.35) * rows + 0.5), squeeze=False,
                             layout="constrained")
    fig.get_layout_engine().set(h_pad=TITLE_GAP)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, a, p, c in zip(axes.flat, images, actual, predicted, confidence):
        ax.imshow(img, interpolation="nearest")
        ax.set_title(f"{a} → {p}\n({100 * c:.0f}%)", fontsize=8)
    if n == 0:
        axes[0, 0].text(0.5, 0.5, "no mistakes", ha="center", va="center")
    fig.suptitle("Most confident mistakes (actual → predicted)")
    return fig


def plot_mistakes(images, actual: list[str], predicted: list[str], confidence, path: str | Path) -> None:
    """`mistakes_figure`, saved as PNG."""
    save_figure(mistakes_figure(images, actual, predicted, confidence), path)


# ----------------------------------------------------------------------------- LR range test

LABEL_FONTSIZE = 8  # points: the suggestions' labels
LABEL_GAP = 1.6 * LABEL_FONTSIZE  # points between neighbouring labels: one line of text and its backing box
LABEL_SHIFT = 2.0  # points between a label and its line


def plot_lr_range(
    lrs: Sequence[float],
    losses: Sequence[float],
    smoothed: Sequence[float],
    suggestions: Mapping[str, float],
    chosen: str,
    path: str | Path,
    fallbacks: Mapping[str, str] | None = None,
) -> None:
    """`lr_range_figure`, saved as PNG."""
    save_figure(lr_range_figure(lrs, losses, smoothed, suggestions, chosen, fallbacks), path)


def lr_range_figure(
    lrs: Sequence[float],
    losses: Sequence[float],
    smoothed: Sequence[float],
    suggestions: Mapping[str, float],
    chosen: str,
    fallbacks: Mapping[str, str] | None = None,
) -> "plt.Figure":
    """The LR range test: raw and smoothed loss against LR (log axis), every suggestion marked.

    Each suggested LR gets a vertical line labelled with its rules and value, and a point where it
    meets the smoothed curve. Rules that suggest the same LR share one line and one label
    ("steepest = valley 0.00079"); labels of LRs close together are moved apart so none overprints
    another. `chosen` (a key of `suggestions`) is drawn red, solid and bold; a rule in `fallbacks`
    (rule -> why it fell back) is dotted and labelled "(fallback)". The y-axis stops a quarter of
    the fall above the starting loss, so the explosion at the end does not flatten the curve; the
    y label says so when points are cut off. Non-finite losses (the row of a NaN stop) are left out.
    """
    fallbacks = fallbacks or {}
    x = np.asarray(lrs, dtype=float)
    raw = np.where(np.isfinite(losses), np.asarray(losses, dtype=float), np.nan)
    smooth = np.where(np.isfinite(smoothed), np.asarray(smoothed, dtype=float), np.nan)
    fig, ax = plt.subplots(figsize=(PAGE_WIDTH_IN, 5))
    ax.plot(x, raw, color="tab:blue", alpha=0.3, linewidth=0.8, label="loss (per batch)")
    ax.plot(x, smooth, color="tab:blue", linewidth=2, label="smoothed loss")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("training loss")
    ax.set_title("LR range test")
    ax.grid(True, which="both", alpha=0.2)

    groups = _coinciding(suggestions, chosen)
    finite = np.isfinite(smooth) & np.isfinite(x) & (x > 0)
    others = iter(["tab:green", "tab:purple", "tab:brown", "tab:orange", "tab:olive", "tab:cyan", "tab:pink"])
    styles = []
    for lr, names in groups.items():
        is_chosen, fell_back = chosen in names, all(name in fallbacks for name in names)
        color = "tab:red" if is_chosen else next(others, "tab:gray")
        styles.append((color, is_chosen, fell_back))
        ax.axvline(lr, color=color, linestyle="-" if is_chosen else ":" if fell_back else "--",
                   linewidth=2 if is_chosen else 1)
        if finite.sum() >= 2 and x[finite][0] <= lr <= x[finite][-1]:
            y = float(np.interp(np.log(lr), np.log(x[finite]), smooth[finite]))
            ax.plot([lr], [y], "o", color=color, markersize=9 if is_chosen else 6, zorder=5)

    ax.set_xlim(ax.get_xlim())  # fixed now, so the labels can be placed in points
    width_pt = ax.get_position().width * fig.get_figwidth() * 72
    natural = [_axes_points(ax, lr) for lr in groups]
    for (lr, names), (color, is_chosen, fell_back), at, here in zip(
            groups.items(), styles, _spread_labels(natural, LABEL_GAP, width_pt), natural):
        # upright, just left of its line (LABEL_SHIFT), so the label's backing box leaves the line in view
        ax.annotate(_pick_label(names, lr, chosen, fallbacks), xy=(lr, 0.98),
                    xycoords=ax.get_xaxis_transform(),  # x in data (the LR), y in axes fractions
                    xytext=(at - here - LABEL_SHIFT, 0), textcoords="offset points",
                    rotation=90, ha="right", va="top", fontsize=LABEL_FONTSIZE, color=color,
                    fontweight="bold" if is_chosen else "normal", fontstyle="italic" if fell_back else "normal",
                    bbox={"boxstyle": "square,pad=0.1", "facecolor": "white", "edgecolor": "none", "alpha": 0.75})

    limits = _lr_range_ylim(raw, smooth)
    if limits is not None:
        ax.set_ylim(*limits)
        if np.nanmax(np.concatenate([raw, smooth])) > limits[1]:
            ax.set_ylabel(f"training loss (cut off above {limits[1]:.3g})")
    ax.legend(loc="lower left", fontsize=8)  # the curves; each suggestion is named on its line
    return fig


def _coinciding(suggestions: Mapping[str, float], chosen: str) -> dict[float, list[str]]:
    """{LR: the rules that suggest it}, by rising LR, the chosen rule first among its group."""
    groups: dict[float, list[str]] = {}
    for name in sorted(suggestions, key=lambda n: (n != chosen, n)):
        groups.setdefault(suggestions[name], []).append(name)
    return dict(sorted(groups.items()))


def _pick_label(names: list[str], lr: float, chosen: str, fallbacks: Mapping[str, str]) -> str:
    """'edge 0.3 (chosen)', 'valley 0.00053 (fallback)', 'steepest = valley 0.00079 (valley: fallback)'."""
    notes = []
    if chosen in names:
        notes.append("chosen" if len(names) == 1 else f"{chosen} chosen")
    fell = [name for name in names if name in fallbacks]
    if fell:
        notes.append("fallback" if len(names) == 1 else f"{', '.join(fell)}: fallback")
    return f"{' = '.join(names)} {lr:.2g}" + (f" ({'; '.join(notes)})" if notes else "")


def _axes_points(ax: "plt.Axes", lr: float) -> float:
    """How far `lr` lies from the axes' left edge, in points (log x axis, limits already fixed)."""
    left, right = (math.log(v) for v in ax.get_xlim())
    width_pt = ax.get_position().width * ax.figure.get_figwidth() * 72
    return (math.log(lr) - left) / (right - left) * width_pt


def _spread_labels(positions: Sequence[float], gap: float, right: float) -> list[float]:
    """`positions` (rising, in points) moved as little as possible so neighbours are >= `gap` apart,
    none beyond `right` (the axes' right edge) where there is room.

    A label is a line of text turned upright, one `gap` wide, ending at its position: labels this far
    apart never overprint each other."""
    out: list[float] = []
    for pos in positions:  # push right past the left neighbour
        out.append(pos if not out else max(pos, out[-1] + gap))
    bound = right
    for i in reversed(range(len(out))):  # then back inside the axes, pushing left neighbours along
        out[i] = min(out[i], bound)
        bound = out[i] - gap
    return out


def _lr_range_ylim(raw: "np.ndarray", smooth: "np.ndarray") -> tuple[float, float] | None:
    """(bottom, top): from just under the lowest loss to a quarter of the fall above the start.

    .dvc/plots/lr_range.json computes the same limits for the DVC chart."""
    curve = smooth[np.isfinite(smooth)]
    values = np.concatenate([raw[np.isfinite(raw)], curve])
    if len(curve) < 2:
        return None
    i_min = int(np.argmin(curve))
    top = float(np.max(curve[: i_min + 1]))  # the loss before it fell: the start of the curve
    low = float(np.min(values))
    fall = top - float(curve[i_min])
    if fall <= 0:
        return None  # never fell: let matplotlib scale it
    top += 0.25 * fall
    return low - 0.05 * (top - low), top
