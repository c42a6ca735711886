"""The Expo MobileFaceNet port (.tflite -> torch) against outputs stored from LiteRT, the package's own runtime
(references/make_references.py; the file hard-codes batch 2, the port runs any batch)."""
from __future__ import annotations

import torch
from zoo_ports_support import TOLERANCE, build_or_skip, input_gradient, load_reference, port_error

SIZE = 112


def test_matches_stored_litert_outputs_on_real_photos_and_crops():
    model = build_or_skip("expo")
    imgs, raw = load_reference("expo", SIZE)
    assert model.dim == 192 and model.alignment.size == SIZE
    assert port_error(model, imgs, raw) < TOLERANCE  # measured 2026-12-06: 7e-7
    assert port_error(model, imgs[:1], raw[:1]) < TOLERANCE  # batch 1, which the .tflite itself cannot run
    assert port_error(model, imgs, raw, flip_channels=True) > 100 * TOLERANCE  # the channel order matters


def test_input_gradient_is_finite_and_nonzero():
    grad = input_gradient(build_or_skip("expo"), SIZE)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
