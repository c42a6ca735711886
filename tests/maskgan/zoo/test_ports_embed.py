"""The npm ports end to end: `embed(photo, landmarks68)` (alignment + port) on real packaged photos of two people
(the astronaut and Grace Hopper, with seeded crops: conftest's `faces`, landmarks from dlib's 68-point predictor).
Each port must tell the two apart on every pair, and its gradient must reach the photo."""
from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest
import torch

from zoo_ports_support import build_or_skip

if importlib.util.find_spec("dlib") is None and os.environ.get("CI") != "true":
    pytest.skip("dlib extra not installed (the landmarks come from its predictor)", allow_module_level=True)

PORTS = ("faceplugin", "expo", "hse")


def _embed(model, faces):
    out = []
    for _, img, _, lm in faces:
        x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
        with torch.no_grad():
            out.append(model.embed(x, torch.from_numpy(lm)[None])[0])
    return torch.stack(out).numpy()


@pytest.mark.parametrize("name", PORTS)
def test_every_same_person_pair_beats_every_different_person_pair(name, faces):
    ids = np.array([0 if label.startswith("astronaut") else 1 for label, *_ in faces])
    assert len(set(ids)) == 2
    emb = _embed(build_or_skip(name), faces)
    cos = emb @ emb.T
    same = (ids[:, None] == ids[None]) & ~np.eye(len(ids), dtype=bool)
    # measured 2026-12-06: same-person min 0.85-0.91, different-person max 0.22-0.48
    assert cos[same].min() > cos[ids[:, None] != ids[None]].max() + 0.2


@pytest.mark.parametrize("name", PORTS)
def test_embed_gradient_reaches_the_photo(name, faces):
    model = build_or_skip(name)
    _, img, _, lm = faces[0]
    x = (torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255).requires_grad_(True)
    direction = torch.randn(model.dim, generator=torch.Generator().manual_seed(0))
    (model.embed(x, torch.from_numpy(lm)[None]) @ direction).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
