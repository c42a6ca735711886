"""Curves as PNG bytes, drawn with matplotlib's Agg backend (no display, no fonts fetched: its own DejaVu)."""

from __future__ import annotations

import io


def curves_png(series: dict[str, list[tuple[float, float]]], title: str, ylabel: str = "",
               width_in: float = 5.2, height_in: float = 3.0) -> bytes:
    """One axes, one line per named series of (x, y) points (x: epochs completed)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(width_in, height_in), dpi=100)
    ax = fig.add_subplot()
    for name, points in series.items():
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker="o", markersize=3, linewidth=1.4, label=name)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("epochs completed", fontsize=9)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if ylabel:
        ax.set_ylabel(ylabel, fontsize=9)
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.3)
    if any(series.values()):
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
