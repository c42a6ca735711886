"""Fixtures for the sweep/export tests: the CI search space pointed at the session's tiny synthetic assets."""

from __future__ import annotations

import os

import pytest
import yaml

SPACES = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "tune", "spaces")


def space_over_assets(assets, path, **changes) -> str:
    """tune/spaces/ci.yaml with data and weights pointing at the test assets; written to `path`."""
    with open(os.path.join(SPACES, "ci.yaml")) as f:
        data = yaml.safe_load(f)
    base = data["base"]
    base["data"]["uri"] = str(assets / "data")
    base["model"]["recognizer_weights"] = str(assets / "recognizer.pt")
    base["model"]["projector"] = str(assets / "projector.pt")
    for key, value in changes.items():
        data[key] = value
    with open(path, "w") as f:
        yaml.safe_dump(data, f, sort_keys=False)
    return str(path)


@pytest.fixture
def ci_space(assets, tmp_path):
    return space_over_assets(assets, tmp_path / "ci.yaml")


@pytest.fixture(scope="session")
def make_space(assets):
    """make_space(path, **top_level_changes) -> path of ci.yaml over the assets."""
    return lambda path, **changes: space_over_assets(assets, path, **changes)
