"""The HSE faceres port (tfjs graph, float16 weights -> torch, batch norm folded) against outputs stored from
TensorFlow.js in node (references/make_references.py)."""
from __future__ import annotations

import torch
from zoo_ports_support import TOLERANCE, build_or_skip, input_gradient, load_reference, port_error

SIZE = 224


def test_matches_stored_tensorflow_js_outputs_on_real_photos_and_crops():
    model = build_or_skip("hse")
    imgs, raw = load_reference("hse", SIZE)
    assert model.dim == 1024 and model.alignment.size == SIZE
    assert port_error(model, imgs, raw) < TOLERANCE  # measured 2026-12-06: 1e-6
    assert port_error(model, imgs, raw, flip_channels=True) > 100 * TOLERANCE  # BGR is pinned by the reference


def test_input_gradient_is_finite_and_nonzero():
    grad = input_gradient(build_or_skip("hse"), SIZE)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
