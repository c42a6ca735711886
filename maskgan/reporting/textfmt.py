"""The small formatters every report text shares (report.md, the recogniser matrix, the demo's headline)."""

from __future__ import annotations

SPLITS = ("train", "val", "test")
ROLE = {"train": "the generator's own identities", "val": "selection set: checkpoints are chosen on it",
        "test": "the figure to quote"}


def _pct(x) -> str:
    return "–" if x is None or x != x else f"{x:.1%}"


def _ci(iv) -> str:
    return "" if not iv or iv[0] != iv[0] else f" [{iv[0]:.0%}, {iv[1]:.0%}]"


def _row_figures(s: dict, far: str) -> tuple[float, float, float]:
    """(dodging at `far`, rank-1, top identity share) of a row summary; a universal row gives its mean."""
    if "designs" in s:
        m = s["mean"]
        return m[f"dodging@{far}"], m["rank1"], m["top_share"]
    return s["verification"]["dodging"][far], s["verification"]["rank1"], s["hubness"].get("top_share")


def _ci_pts(iv) -> str:
    return "" if not iv or iv[0] != iv[0] else f" [{iv[0] * 100:+.0f}, {iv[1] * 100:+.0f}]"


def _cos(x) -> str:
    return "–" if x is None or x != x else f"{x:.2f}"


def _cos3(x) -> str:
    return "–" if x is None or x != x else f"{x:.3f}"
