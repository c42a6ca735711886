"""Fixtures for the sweep/export tests: the CI search space pointed at the session's tiny synthetic assets."""

from __future__ import annotations

import os

import pytest
import yaml

SPACES = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "tune", "spaces")


def collapsed_recognizer(assets) -> str:
    """The planted collapse of ci.yaml: the assets' recogniser with its trunk's last BatchNorm zeroed (scale and
    shift), so every photo's trunk features are zeros and any head embeds every face to one vector. The trunk is
    frozen in every experiment, so no trial's training undoes it (a collapsed head did recover under exp2)."""
    import re

    import torch

    path = assets / "recognizer_collapsed.pt"
    if not path.exists():
        d = torch.load(assets / "recognizer.pt", weights_only=True)
        state = d["state_dict"]
        last = max(int(m.group(1)) for k in state if (m := re.fullmatch(r"body\.(\d+)\.running_var", k)))
        state[f"body.{last}.weight"].zero_()
        state[f"body.{last}.bias"].zero_()
        d["meta"] = {**d["meta"], "planted": "collapsed trunk: every face has the same features"}
        tmp = path.with_suffix(".tmp")
        torch.save(d, tmp)
        os.replace(tmp, path)
    return str(path)


def space_over_assets(assets, path, **changes) -> str:
    """tune/spaces/ci.yaml with data and weights pointing at the test assets (its recogniser axis: the assets'
    recogniser and its planted collapse) and no defender; written to `path`."""
    with open(os.path.join(SPACES, "ci.yaml")) as f:
        data = yaml.safe_load(f)
    base = data["base"]
    base["data"]["uri"] = str(assets / "data")
    base["model"]["recognizer_weights"] = str(assets / "recognizer.pt")
    base["model"]["projector"] = str(assets / "projector.pt")
    # Every trial's run is evaluated (and an export evaluates its checkpoint): no defender, since no sweep test
    # reads its table (its real length: test_train_e2e.py; its behaviour: test_eval_honesty.py). 100 steps made
    # the four trials' evaluations most of a sweep test's time; 5 steps still cost 6 s of each 27 s evaluation.
    # Three universal designs, not eight: every one is scored on every split of every trial (measured on the test
    # assets: one trial's evaluation 53 s with eight, 37 s with three).
    base.setdefault("eval", {}).update(defender_steps=0, universal_k=3)
    for key, value in changes.items():
        data[key] = value
    if "model.recognizer_weights" in data.get("grid", {}):  # whatever it listed: the assets' pair
        data["grid"]["model.recognizer_weights"] = [str(assets / "recognizer.pt"), collapsed_recognizer(assets)]
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
