"""Differentiable face alignment for the zoo: 68 landmarks -> each model's template, one affine warp.

`align(images, landmarks68, alignment)` estimates, per photo, the similarity transform that the model's own
reference pipeline uses (dlib's get_face_chip_details for "dlib_chip", the ArcFace 5-point template for "arcface",
a loose square for "loose"), and samples the photo through it with `F.grid_sample`, so the result is
differentiable with respect to the images. The transforms depend on the landmarks only (never differentiated:
landmarks come from the unmasked twin).

Pixel convention: integer coordinates are pixel centres (dlib's and OpenCV's), so landmark (x, y) = (10, 20) is
the centre of column 10, row 20, and chip pixel (c, r) samples the photo at A @ (c, r, 1).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from maskgan.models.zoo.base import Alignment

# dlib's mean face: chip coordinates in [0, 1] of iBUG points 17..67, as in dlib's get_face_chip_details
# (dlib/image_transforms/interpolation.h, Boost Software License). Data, needed verbatim to cut dlib's chips.
_DLIB_MEAN_X = (
    0.000213256, 0.0752622, 0.18113, 0.29077, 0.393397, 0.586856, 0.689483, 0.799124, 0.904991, 0.98004, 0.490127,
    0.490127, 0.490127, 0.490127, 0.36688, 0.426036, 0.490127, 0.554217, 0.613373, 0.121737, 0.187122, 0.265825,
    0.334606, 0.260918, 0.182743, 0.645647, 0.714428, 0.793132, 0.858516, 0.79751, 0.719335, 0.254149, 0.340985,
    0.428858, 0.490127, 0.551395, 0.639268, 0.726104, 0.642159, 0.556721, 0.490127, 0.423532, 0.338094, 0.290379,
    0.428096, 0.490127, 0.552157, 0.689874, 0.553364, 0.490127, 0.42689)
_DLIB_MEAN_Y = (
    0.106454, 0.038915, 0.0187482, 0.0344891, 0.0773906, 0.0773906, 0.0344891, 0.0187482, 0.038915, 0.106454,
    0.203352, 0.307009, 0.409805, 0.515625, 0.587326, 0.609345, 0.628106, 0.609345, 0.587326, 0.216423, 0.178758,
    0.179852, 0.231733, 0.245099, 0.244077, 0.231733, 0.179852, 0.178758, 0.216423, 0.244077, 0.245099, 0.780233,
    0.745405, 0.727388, 0.742578, 0.727388, 0.745405, 0.780233, 0.864805, 0.902192, 0.909281, 0.902192, 0.864805,
    0.784792, 0.778746, 0.785343, 0.778746, 0.784792, 0.824182, 0.831803, 0.824182)
# The points dlib fits: nose, eyes, outer mouth (upper half and corners), inner upper lip. dlib leaves out the
# eyebrows (17-26) and the lower lip (55-59, 65-67), which move with expression.
DLIB_CHIP_POINTS = tuple(i for i in range(27, 68) if not (55 <= i <= 59 or 65 <= i <= 67))
# The ArcFace (insightface) 112 x 112 template: eye centres, nose tip, mouth corners, image-left first.
ARCFACE_112 = ((38.2946, 51.6963), (73.5318, 51.5014), (56.0252, 71.7366), (41.5493, 92.3655), (70.7299, 92.2041))
KINDS = ("dlib_chip", "arcface", "loose")


def five_points(landmarks68: torch.Tensor) -> torch.Tensor:
    """[N, 68, 2] -> [N, 5, 2] in ArcFace order: left eye centre, right eye centre (image left/right), nose tip,
    left mouth corner, right mouth corner."""
    lm = landmarks68
    return torch.stack([lm[:, 36:42].mean(1), lm[:, 42:48].mean(1), lm[:, 30], lm[:, 48], lm[:, 54]], dim=1)


def _similarity(src: torch.Tensor, dst: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares similarity dst ~ z * src + t over points as complex numbers ([N, K, 2] each): z [N] (scale
    and rotation), t [N]. In 2-D this is exactly Umeyama's solution (dlib's find_similarity_transform,
    skimage's SimilarityTransform): both minimise the same squared error over scale x rotation x translation."""
    s = torch.view_as_complex(src.double().contiguous())
    d = torch.view_as_complex(dst.double().contiguous())
    sc, dc = s - s.mean(1, keepdim=True), d - d.mean(1, keepdim=True)
    z = (sc.conj() * dc).sum(1) / (sc.abs() ** 2).sum(1)
    return z, d.mean(1) - z * s.mean(1)


def _affine(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """[N] complex z, t -> [N, 2, 3] real matrices of p -> z * p + t."""
    a, b = z.real, z.imag
    return torch.stack([torch.stack([a, -b, t.real], -1), torch.stack([b, a, t.imag], -1)], 1)


def _dlib_fit(landmarks68: torch.Tensor, size: int, padding: float) -> tuple[torch.Tensor, torch.Tensor]:
    """dlib's chip placement: (centre [N] complex, photo pixel step per chip pixel [N] complex: scale and angle).

    dlib fits the mean face (scaled into the padded chip) to the landmarks, keeps the fit's angle and scale, and
    spans the chip's first to last pixel across a (size * scale - 1) wide rectangle around the fitted centre, so
    the pixel step is (size * scale - 1) / (size - 1), not the fit's scale."""
    idx = torch.tensor(DLIB_CHIP_POINTS)
    mean = torch.tensor([_DLIB_MEAN_X, _DLIB_MEAN_Y], dtype=torch.float64).T[idx - 17]
    chip = ((padding + mean) / (2 * padding + 1) * size).expand(landmarks68.shape[0], -1, -1)
    z, t = _similarity(chip, landmarks68.detach()[:, idx])
    return z * complex(size / 2, size / 2) + t, (size * z.abs() - 1) / (size - 1) * (z / z.abs())


def _chip_affine(centre: torch.Tensor, step: torch.Tensor, size: int) -> torch.Tensor:
    return _affine(step, centre - step * complex((size - 1) / 2, (size - 1) / 2))


def dlib_chip_transform(landmarks68: torch.Tensor, size: int, padding: float) -> torch.Tensor:
    """[N, 2, 3]: chip pixel -> photo pixel, as dlib.get_face_chip_details(shape68, size, padding) and
    extract_image_chip place it (for faces at most about twice the chip's size: see `_dlib_pyramid_chip`)."""
    return _chip_affine(*_dlib_fit(landmarks68, size, padding), size)


def _pyramid_depth(step: complex, size: int) -> int:
    """How many times dlib halves the photo before cutting a chip: until the chip's rectangle, halved once more,
    would hold at most size x size pixels (pyramid_down<2>'s rect_down: p / 2 - (1.25, 0.75))."""
    side, depth = abs(step) * (size - 1) + 1, 0
    while ((side - 1) / 2 + 1) ** 2 > size * size:
        side, depth = (side - 1) / 2 + 1, depth + 1
    return depth


def _lround(v: float) -> int:  # C's lround (halves away from zero), as dlib rounds its crop; Python's round is
    return int(math.floor(v + 0.5)) if v >= 0 else -int(math.floor(-v + 0.5))  # banker's


def _dlib_pyramid_chip(image: torch.Tensor, centre: complex, step: complex, size: int, depth: int) -> torch.Tensor:
    """One chip of a face over twice the chip's size, cut as dlib does it: the photo is cropped around the chip
    (grown by 2, 6, 14... pixels and rounded as dlib rounds), halved `depth` times by its 5x5 [1 4 6 4 1]
    pyramid filter, and the chip is sampled from the last level through the rectangle mapped down with dlib's
    rect_down, whose (1.25, 0.75) offset the filter does not share (this reproduces dlib, offset and all)."""
    _, h, w = image.shape
    half = abs(step) * (size - 1) / 2
    rot = step / abs(step)
    corners = [centre + rot * complex(dx, dy) for dx in (-half, half) for dy in (-half, half)]
    grow = 2.0
    for _ in range(depth):
        grow = grow * 2 + 2
    left = _lround(max(min(c.real for c in corners) - grow, 0))
    top = _lround(max(min(c.imag for c in corners) - grow, 0))
    right = _lround(min(max(c.real for c in corners) + grow, w - 1))
    bottom = _lround(min(max(c.imag for c in corners) + grow, h - 1))
    level = image[:, top:bottom + 1, left:right + 1][None]
    taps = torch.tensor([1.0, 4, 6, 4, 1], dtype=image.dtype, device=image.device)
    kernel = (taps[:, None] * taps[None, :] / 256).expand(level.shape[1], 1, 5, 5)
    lo, hi = centre - complex(left, top) - complex(half, half), centre - complex(left, top) + complex(half, half)
    for _ in range(depth):
        level = F.conv2d(level, kernel, stride=2, groups=level.shape[1])
        lo, hi = lo / 2 - complex(1.25, 0.75), hi / 2 - complex(1.25, 0.75)
    level_step = rot * (hi.real - lo.real) / (size - 1)
    transform = _chip_affine(torch.tensor([(lo + hi) / 2]), torch.tensor([level_step]), size)
    return warp(level, transform, size, dlib_edges=True)[0]


def align_dlib_chip(images: torch.Tensor, landmarks68: torch.Tensor, size: int, padding: float) -> torch.Tensor:
    centre, step = _dlib_fit(landmarks68, size, padding)
    chips = warp(images, _chip_affine(centre, step, size), size, dlib_edges=True)
    depths = [_pyramid_depth(complex(s), size) for s in step.tolist()]
    if max(depths) == 0:
        return chips
    return torch.stack([chip if d == 0 else _dlib_pyramid_chip(images[i], complex(centre[i]), complex(step[i]),
                                                               size, d)
                        for i, (chip, d) in enumerate(zip(chips, depths))])


def arcface_transform(landmarks68: torch.Tensor, size: int) -> torch.Tensor:
    """[N, 2, 3]: chip pixel -> photo pixel, the inverse of the similarity that carries the 5 points onto the
    ArcFace template scaled to `size` (the fit is photo -> template, as insightface's norm_crop estimates it)."""
    template = torch.tensor(ARCFACE_112, dtype=torch.float64) * (size / 112.0)
    z, t = _similarity(five_points(landmarks68.detach()), template.expand(landmarks68.shape[0], -1, -1))
    return _affine(1 / z, -t / z)


def loose_transform(landmarks68: torch.Tensor, size: int, padding: float) -> torch.Tensor:
    """[N, 2, 3]: chip pixel -> photo pixel for an upright square around the landmarks' box, its side
    (1 + 2 * padding) x the box's longer side, resized to size x size (pixel centres as a resize places them)."""
    lm = landmarks68.detach().double()
    lo, hi = lm.min(1).values, lm.max(1).values
    side = (hi - lo).max(1).values * (1 + 2 * padding)
    step = side / size
    start = (lo + hi) / 2 - side[:, None] / 2 + step[:, None] / 2 - 0.5  # centre of chip pixel 0, in photo pixels
    zero = torch.zeros_like(step)
    return torch.stack([torch.stack([step, zero, start[:, 0]], -1), torch.stack([zero, step, start[:, 1]], -1)], 1)


def chip_transform(landmarks68: torch.Tensor, alignment: Alignment) -> torch.Tensor:
    if alignment.kind == "dlib_chip":
        return dlib_chip_transform(landmarks68, alignment.size, alignment.padding)
    if alignment.kind == "arcface":
        return arcface_transform(landmarks68, alignment.size)
    if alignment.kind == "loose":
        return loose_transform(landmarks68, alignment.size, alignment.padding)
    raise ValueError(f"alignment kind {alignment.kind!r}: expected one of {', '.join(KINDS)}")


def warp(images: torch.Tensor, transform: torch.Tensor, size: int, dlib_edges: bool = False) -> torch.Tensor:
    """Sample images [N, C, H, W] at transform [N, 2, 3] (chip pixel -> photo pixel) into [N, C, size, size];
    bilinear, zeros outside the photo (dlib_edges: also within the last pixel, as dlib's chips are)."""
    n, _, h, w = images.shape
    # affine_grid works in normalised coordinates (align_corners=True: -1 and 1 are the first and last pixel
    # centres): theta = to_normalised(photo) . transform . from_normalised(chip).
    out_from_norm = torch.tensor([[(size - 1) / 2, 0, (size - 1) / 2], [0, (size - 1) / 2, (size - 1) / 2],
                                  [0, 0, 1]], dtype=torch.float64)
    in_to_norm = torch.tensor([[2 / max(w - 1, 1), 0, -1], [0, 2 / max(h - 1, 1), -1]], dtype=torch.float64)
    full = torch.cat([transform.double(), torch.tensor([[[0, 0, 1]]], dtype=torch.float64).expand(n, -1, -1)], 1)
    theta = (in_to_norm @ full @ out_from_norm).to(images.dtype).to(images.device)
    grid = F.affine_grid(theta, [n, images.shape[1], size, size], align_corners=True)
    chips = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    if not dlib_edges:  # as OpenCV's warpAffine with a constant border: the edge pixel fades into zeros
        return chips
    # dlib gives 0 wherever a bilinear neighbour is outside the photo, where grid_sample would blend the edge
    # pixel with zeros over the last pixel: zero that band too.
    x, y = (grid[..., 0] + 1) * (max(w - 1, 1) / 2), (grid[..., 1] + 1) * (max(h - 1, 1) / 2)
    inside = (x >= -1e-4) & (x < w - 1 - 1e-4) & (y >= -1e-4) & (y < h - 1 - 1e-4)
    return chips * inside[:, None].to(chips.dtype)


def align(images: torch.Tensor, landmarks68: torch.Tensor, alignment: Alignment) -> torch.Tensor:
    """images float [N, 3, H, W] in [0, 1], landmarks68 [N, 68, 2] pixels -> [N, 3, size, size]."""
    if images.ndim != 4 or landmarks68.shape != (images.shape[0], 68, 2):
        raise ValueError(f"align: images {tuple(images.shape)} and landmarks68 {tuple(landmarks68.shape)}: "
                         "expected [N, C, H, W] and [N, 68, 2]")
    if alignment.kind == "dlib_chip":
        return align_dlib_chip(images, landmarks68.cpu(), alignment.size, alignment.padding)
    return warp(images, chip_transform(landmarks68.cpu(), alignment), alignment.size)
