"""PNG plots for reports: matplotlib on its file-only backend, figures written atomically."""

from __future__ import annotations

import io
from pathlib import Path

from mixforge.workspace import atomic_write_bytes


def pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display: reports are files
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    pyplot().close(fig)
    atomic_write_bytes(path, buf.getvalue())
