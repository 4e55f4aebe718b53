"""Tiny drawing kit shared by the ``images/draw_*.py`` scripts (boxes, arrows, labels)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

# The diagrams ship inside the course package, where the notebooks find them.
IMAGES = Path(__file__).resolve().parent.parent / "helpers" / "images"
COLORS = {
    "input": "#dbeafe",
    "cell": "#fde68a",
    "output": "#dcfce7",
    "gate": "#fecaca",
    "state": "#e9d5ff",
    "edge": "#1f2937",
}


def canvas(width: float, height: float):
    """A blank figure with data coordinates 0..width, 0..height (1 unit = 1 inch)."""
    fig = plt.figure(figsize=(width, height))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.axis("off")
    return fig, ax


def box(ax, x, y, text, width=1.0, height=0.6, color="cell", fontsize=11):
    """A rounded box centred at (x, y) with ``text`` inside."""
    ax.add_patch(
        FancyBboxPatch(
            (x - width / 2, y - height / 2),
            width,
            height,
            boxstyle="round,pad=0.02,rounding_size=0.08",
            facecolor=COLORS.get(color, color),
            edgecolor=COLORS["edge"],
            linewidth=1.4,
        )
    )
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize)


def arrow(ax, start, end, text=None, offset=(0.0, 0.12), style="-|>", color="edge", rad=0.0):
    """An arrow from ``start`` to ``end`` with an optional label near its middle."""
    ax.add_patch(
        FancyArrowPatch(
            start,
            end,
            arrowstyle=style,
            mutation_scale=14,
            linewidth=1.4,
            color=COLORS.get(color, color),
            connectionstyle=f"arc3,rad={rad}",
        )
    )
    if text:
        mx, my = (start[0] + end[0]) / 2 + offset[0], (start[1] + end[1]) / 2 + offset[1]
        ax.text(mx, my, text, ha="center", va="bottom", fontsize=10)


def save(fig, name: str) -> Path:
    """Write ``helpers/images/<name>.png`` at a fixed resolution, no timestamps in its metadata."""
    path = IMAGES / f"{name}.png"
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)
    print(f"wrote {path.relative_to(IMAGES.parent.parent)}")
    return path
