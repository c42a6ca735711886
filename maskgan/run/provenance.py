"""Where the running code comes from, recorded next to what it produced (sweep.json, export model cards)."""

from __future__ import annotations

import os
import subprocess


def code_version() -> str:
    """`git describe` of this checkout, else the installed package version."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        out = subprocess.run(["git", "describe", "--always", "--tags", "--dirty"], cwd=here, capture_output=True,
                             text=True, timeout=10)
        if out.returncode == 0 and out.stdout.strip():
            return f"git {out.stdout.strip()}"
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        from importlib.metadata import version

        return f"maskgan {version('maskgan')}"
    except Exception:
        return "unknown"
