"""Every matplotlib figure of the pipeline, drawn from plain numbers and saved atomically as PNG."""

from __future__ import annotations

import io as _io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: stages run headless, on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402

from onecycle import io  # noqa: E402


def save_figure(fig: "plt.Figure", path: str | Path, dpi: int = 120) -> None:
    """Render to memory, then write atomically; the figure is closed either way."""
    try:
        buffer = _io.BytesIO()
        fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(fig)
    io.write_bytes(path, buffer.getvalue())


def plot_training(history, path: str | Path) -> None:
    """Accuracy, loss and LR against epoch, from the per-epoch history of train_onecycle."""
    epochs = [h.epoch for h in history]
    fig, (acc, loss, lr) = plt.subplots(1, 3, figsize=(15, 4))
    acc.plot(epochs, [h.train_acc for h in history], "o-", label="train")
    acc.plot(epochs, [h.test_acc for h in history], "o-", label="test")
    acc.set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy")
    loss.plot(epochs, [h.train_loss for h in history], "o-", label="train")
    loss.plot(epochs, [h.test_loss for h in history], "o-", label="test")
    loss.set(xlabel="epoch", ylabel="cross-entropy", title="Loss")
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
    import numpy as np

    share = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    size = max(5.0, 0.6 * len(classes) + 2)
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


def plot_mistakes(images, actual: list[str], predicted: list[str], confidence, path: str | Path) -> None:
    """A grid of misclassified images (uint8 NHWC) titled 'actual → predicted (confidence)'."""
    n = len(images)
    cols = min(6, max(n, 1))
    rows = max(1, -(-n // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.5 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, a, p, c in zip(axes.flat, images, actual, predicted, confidence):
        ax.imshow(img, interpolation="nearest")
        ax.set_title(f"{a} → {p}\n({100 * c:.0f}%)", fontsize=8)
    if n == 0:
        axes[0, 0].text(0.5, 0.5, "no mistakes", ha="center", va="center")
    fig.suptitle("Most confident mistakes (actual → predicted)")
    fig.tight_layout()
    save_figure(fig, path)


# ----------------------------------------------------------------------------- LR range test

import numpy as _np  # noqa: E402
from collections.abc import Mapping as _Mapping, Sequence as _Sequence  # noqa: E402


def plot_lr_range(
    lrs: _Sequence[float],
    losses: _Sequence[float],
    smoothed: _Sequence[float],
    suggestions: _Mapping[str, float],
    chosen: str,
    path: str | Path,
) -> None:
    """The LR range test: raw and smoothed loss against LR (log axis), every suggestion marked.

    Each suggestion gets a vertical line labelled with its name and value, and a point where it
    meets the smoothed curve; `chosen` (a key of `suggestions`) is drawn red, solid and bold.
    The y-axis stops a quarter of the fall above the starting loss, so the explosion at the end
    does not flatten the curve; the y label says so when points are cut off. Non-finite losses
    (the row of a NaN stop) are left out of the lines.
    """
    x = _np.asarray(lrs, dtype=float)
    raw = _np.where(_np.isfinite(losses), _np.asarray(losses, dtype=float), _np.nan)
    smooth = _np.where(_np.isfinite(smoothed), _np.asarray(smoothed, dtype=float), _np.nan)
    fig, ax = plt.subplots(figsize=(8, 5))
    ax.plot(x, raw, color="tab:blue", alpha=0.3, linewidth=0.8, label="loss (per batch)")
    ax.plot(x, smooth, color="tab:blue", linewidth=2, label="smoothed loss")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("training loss")
    ax.set_title("LR range test")
    ax.grid(True, which="both", alpha=0.2)

    finite = _np.isfinite(smooth) & _np.isfinite(x) & (x > 0)
    others = iter(["tab:green", "tab:purple", "tab:brown", "tab:orange", "tab:olive", "tab:cyan", "tab:pink"])
    label_at = ax.get_xaxis_transform()  # x in data (the LR), y in axes fractions (0 bottom, 1 top)
    for name, lr in suggestions.items():
        is_chosen = name == chosen
        color = "tab:red" if is_chosen else next(others, "tab:gray")
        weight = "bold" if is_chosen else "normal"
        text = f"{name} {lr:.2g}" + (" (chosen)" if is_chosen else "")
        ax.axvline(lr, color=color, linestyle="-" if is_chosen else "--", linewidth=2 if is_chosen else 1, label=text)
        # the label runs up beside its line, so labels of neighbouring suggestions do not collide
        ax.text(lr, 0.98, f" {text}", transform=label_at, rotation=90, ha="right", va="top",
                fontsize=8, color=color, fontweight=weight)
        if finite.sum() >= 2 and x[finite][0] <= lr <= x[finite][-1]:
            y = float(_np.interp(_np.log(lr), _np.log(x[finite]), smooth[finite]))
            ax.plot([lr], [y], "o", color=color, markersize=9 if is_chosen else 6, zorder=5)

    limits = _lr_range_ylim(raw, smooth)
    if limits is not None:
        ax.set_ylim(*limits)
        if _np.nanmax(_np.concatenate([raw, smooth])) > limits[1]:
            ax.set_ylabel(f"training loss (cut off above {limits[1]:.3g})")
    ax.legend(loc="lower left", fontsize=8)
    save_figure(fig, path)


def _lr_range_ylim(raw: "_np.ndarray", smooth: "_np.ndarray") -> tuple[float, float] | None:
    """(bottom, top): from just under the lowest loss to a quarter of the fall above the start."""
    curve = smooth[_np.isfinite(smooth)]
    values = _np.concatenate([raw[_np.isfinite(raw)], curve])
    if len(curve) < 2:
        return None
    i_min = int(_np.argmin(curve))
    top = float(_np.max(curve[: i_min + 1]))  # the loss before it fell: the start of the curve
    low = float(_np.min(values))
    fall = top - float(curve[i_min])
    if fall <= 0:
        return None  # never fell: let matplotlib scale it
    top += 0.25 * fall
    return low - 0.05 * (top - low), top
