"""Every matplotlib figure of the pipeline, drawn from plain numbers and saved atomically as PNG."""

from __future__ import annotations

import io as _io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: stages run headless, on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402

from onecycle import io  # noqa: E402


def save_figure(fig: "plt.Figure", path: str | Path, dpi: int = 120) -> None:
    """Render to memory, then write atomically; the figure is closed either way."""
    try:
        buffer = _io.BytesIO()
        fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(fig)
    io.write_bytes(path, buffer.getvalue())
