"""Differentiable face alignment for the zoo: 68 landmarks -> each model's template, one affine warp.

`align(images, landmarks68, alignment)` estimates, per photo, the similarity transform that the model's own
reference pipeline uses (dlib's get_face_chip_details for "dlib_chip", the ArcFace 5-point template for "arcface",
a loose square for "loose"), and samples the photo through it with `F.grid_sample`, so the result is
differentiable with respect to the images.
"""
from __future__ import annotations

import torch

from maskgan.models.zoo import Alignment


def five_points(landmarks68: torch.Tensor) -> torch.Tensor:
    """[N, 68, 2] -> [N, 5, 2] in ArcFace order: left eye centre, right eye centre (image left/right), nose tip,
    left mouth corner, right mouth corner."""
    raise NotImplementedError


def align(images: torch.Tensor, landmarks68: torch.Tensor, alignment: Alignment) -> torch.Tensor:
    """images float [N, 3, H, W] in [0, 1], landmarks68 [N, 68, 2] pixels -> [N, 3, size, size]."""
    raise NotImplementedError
