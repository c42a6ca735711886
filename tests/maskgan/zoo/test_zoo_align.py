"""ArcFace and loose alignment against scikit-image's own similarity fit and warp (the reference for what
insightface's norm_crop does with OpenCV), five_points, and gradients through the warp. No dlib needed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import data, transform

from maskgan.models.zoo import Alignment, align

ASTRONAUT_FACE = ((180, 60), (290, 200))  # a box around her face, (x0, y0), (x1, y1)


def _landmarks(seed: int) -> np.ndarray:
    """A plausible 68-point face inside the astronaut's face box, jittered (float pixels)."""
    rng = np.random.default_rng(seed)
    mean = np.stack([np.array(align._DLIB_MEAN_X), np.array(align._DLIB_MEAN_Y)], 1)
    lm = np.concatenate([np.stack([np.linspace(0, 1, 17), 0.5 + 0.5 * np.sin(np.linspace(0, np.pi, 17))], 1),
                         mean])
    (x0, y0), (x1, y1) = ASTRONAUT_FACE
    angle = rng.uniform(-0.3, 0.3)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    centred = (lm - 0.5) @ rot.T * (x1 - x0) * rng.uniform(0.7, 1.0)
    return (centred + [(x0 + x1) / 2, (y0 + y1) / 2] + rng.normal(0, 1.0, lm.shape)).astype(np.float32)


@pytest.fixture(scope="module")
def photo():
    return data.astronaut().astype(np.float64) / 255


def _skimage_chip(photo: np.ndarray, tform, size: int) -> np.ndarray:
    return transform.warp(photo, tform.inverse, output_shape=(size, size), order=1, mode="constant", cval=0)


def _ours(photo: np.ndarray, lm: np.ndarray, alignment: Alignment) -> np.ndarray:
    images = torch.from_numpy(photo).permute(2, 0, 1)[None].float()
    return align.align(images, torch.from_numpy(lm)[None], alignment)[0].permute(1, 2, 0).double().numpy()


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("size", [112, 96])
def test_arcface_matches_skimage_similarity_warp(photo, seed, size):
    lm = _landmarks(seed)
    five = align.five_points(torch.from_numpy(lm)[None])[0].numpy()
    tform = transform.SimilarityTransform.from_estimate(five, np.array(align.ARCFACE_112) * size / 112)
    diff = np.abs(_ours(photo, lm, Alignment("arcface", size)) - _skimage_chip(photo, tform, size))
    assert diff[1:-1, 1:-1].max() < 2e-3, f"arcface chip off by {diff.max() * 255:.2f}/255"
    # planted bug: the template for 112 px used at `size` without scaling is a different chip
    if size != 112:
        wrong = transform.SimilarityTransform.from_estimate(five, np.array(align.ARCFACE_112))
        assert np.abs(_ours(photo, lm, Alignment("arcface", size)) - _skimage_chip(photo, wrong, size)).mean() > 0.02


def test_five_points_order():
    lm = torch.from_numpy(_landmarks(0))[None]
    five = align.five_points(lm)[0]
    left_eye, right_eye, nose, mouth_left, mouth_right = five
    assert torch.allclose(left_eye, lm[0, 36:42].mean(0)) and torch.allclose(nose, lm[0, 30])
    assert left_eye[0] < right_eye[0] and mouth_left[0] < mouth_right[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_left[1], mouth_right[1])


@pytest.mark.parametrize("padding", [0.0, 0.3])
def test_loose_is_an_upright_square_around_the_landmarks(photo, padding):
    lm = _landmarks(3)
    lo, hi = lm.min(0).astype(np.float64), lm.max(0).astype(np.float64)
    side = (hi - lo).max() * (1 + 2 * padding)
    start = (lo + hi) / 2 - side / 2
    size = 224
    # a resize of the square [start, start + side) to size x size: pixel centres at start + (i + 0.5) * step - 0.5
    tform = transform.AffineTransform(scale=side / size, translation=start + side / size / 2 - 0.5).inverse
    diff = np.abs(_ours(photo, lm, Alignment("loose", size, padding)) - _skimage_chip(photo, tform, size))
    assert diff[1:-1, 1:-1].max() < 2e-3


def test_gradient_flows_through_every_alignment(photo):
    lm = torch.from_numpy(_landmarks(4))[None]
    for alignment in (Alignment("dlib_chip", 150, 0.25), Alignment("arcface", 112), Alignment("loose", 224, 0.2)):
        images = torch.from_numpy(photo).permute(2, 0, 1)[None].float().requires_grad_(True)
        align.align(images, lm, alignment).sum().backward()
        grad = images.grad[0].sum(0)
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0, alignment.kind
        (x0, y0), (x1, y1) = ASTRONAUT_FACE
        assert grad[y0:y1, x0:x1].abs().sum() > 0.5 * grad.abs().sum(), f"{alignment.kind}: gradient off the face"


def test_bad_input_is_one_line():
    with pytest.raises(ValueError, match=r"landmarks68 \(1, 5, 2\)"):
        align.align(torch.zeros(1, 3, 64, 64), torch.zeros(1, 5, 2), Alignment("arcface", 112))
    with pytest.raises(ValueError, match="alignment kind 'tight'"):
        align.align(torch.zeros(1, 3, 64, 64), torch.zeros(1, 68, 2), Alignment("tight", 112))
