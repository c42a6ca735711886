"""The two tiers: `make test-quick` leaves out what starts Ray or runs a whole evaluation (tests/conftest.py marks
those `slow`); a rule that marked nothing, or everything, would make the quick tier a lie either way."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT_CONFTEST = Path(__file__).parent / "conftest.py"


def _evaluates(runner, run):
    return runner.evaluate_run(run, universal_k=3)


def _exports(export, run, out):
    export.export(run, out)


def _scores_one_design(scoring, batch):
    return scoring.score_batch(batch)


class _Item(SimpleNamespace):
    def __init__(self, function, fixtures=(), markers=()):
        super().__init__(function=function, fixturenames=list(fixtures), markers=list(markers))

    def add_marker(self, marker):
        self.markers.append(marker.name)

    def get_closest_marker(self, name):
        return SimpleNamespace(name=name) if name in self.markers else None


@pytest.mark.parametrize(("function", "fixtures", "by_hand", "markers"), [
    (_evaluates, (), [], ["slow", "evaluation"]),
    (_exports, (), [], ["slow", "evaluation"]),
    (_evaluates, ("ray_session",), [], ["slow"]),  # it needs the session's Ray: it stays in the Ray tier
    # marked slow by hand, it starts its own cluster or process: it stays in the Ray tier too
    (_evaluates, (), ["slow"], ["slow", "slow"]),
    (_scores_one_design, ("ray_session",), [], ["slow"]),
    (_scores_one_design, ("assets", "tmp_path"), [], []),
], ids=["whole-evaluation", "export", "evaluation-on-ray", "evaluation-starting-its-own-ray", "ray-fixture", "quick"])
def test_slow_is_what_starts_ray_or_runs_a_whole_evaluation(function, fixtures, by_hand, markers, pytestconfig):
    """`slow`: left out of `make test-quick`; `evaluation`: slow only for its computing (no Ray), so `make test`
    runs it beside the quick tier rather than in the Ray session's run."""
    # the conftest pytest loaded for this session (not a second import of it)
    conftest = next(p for p in pytestconfig.pluginmanager.get_plugins()
                    if Path(getattr(p, "__file__", "") or "-").resolve() == ROOT_CONFTEST.resolve())
    item = _Item(function, fixtures, by_hand)
    conftest.pytest_collection_modifyitems([item])
    assert item.markers == markers
