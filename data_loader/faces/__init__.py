"""Synthetic people: who they are (people), where their parts and 68 landmarks lie under a pose (geometry), and
how a photo of them is painted (draw). `take` is the one entry point the dataset writers use."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data_loader.faces import draw, geometry
from data_loader.faces.people import Person, Shot, person, shot

__all__ = ["Person", "Shot", "Photo", "person", "shot", "take"]


@dataclass
class Photo:
    """One photo: unmasked and masked uint8 [S, S, 3] (pixel-aligned), the mask's alpha uint8 [S, S] and the
    68 landmarks float32 [68, 2] in its pixels (exact: the points the parts were drawn from)."""

    unmasked: np.ndarray
    masked: np.ndarray
    alpha: np.ndarray
    landmarks: np.ndarray
    shot: Shot


def take(p: Person, rng: np.random.Generator, size: int, varied_mask: bool = False, s: Shot | None = None) -> Photo:
    """A new photo of p (a new Shot drawn from rng unless given), with and without a mask."""
    s = shot(rng) if s is None else s
    img, light = draw.photo(p, s, size)
    pts = geometry.landmarks68(p, s, size)
    masked, alpha = draw.with_mask(img, light, pts, draw.mask_fill(rng, varied_mask, size), s)
    noise = rng.normal(0, s.noise, img.shape)
    return Photo(unmasked=np.clip(img + noise, 0, 255).astype(np.uint8),
                 masked=np.clip(masked + noise, 0, 255).astype(np.uint8),
                 alpha=np.rint(alpha * 255).astype(np.uint8), landmarks=pts.astype(np.float32), shot=s)
