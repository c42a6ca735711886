"""Photos for the `maskgan check` tests, all from installed packages (nothing downloaded): two real people
(scikit-image's astronaut, Eileen Collins; matplotlib's Grace Hopper), each as three photos (crops, exposure, a
mirror image), and a crowd of synthetic people (data_loader.synth, with landmark sidecars). A stand-in zoo model
(a small random CNN behind the zoo contract, differentiable) for what needs gradients or no fetched weights."""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageEnhance
from torch import nn

from maskgan.models.zoo import Alignment, ZooModel


def astronaut() -> Image.Image:
    import skimage.data

    return Image.fromarray(skimage.data.astronaut())


def grace_hopper() -> Image.Image:
    import matplotlib

    return Image.open(os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg")).convert("RGB")


def variants(im: Image.Image, n: int = 3) -> list[Image.Image]:
    """n photos of one person: the photo, then tighter crops, other exposures, a mirror image."""
    w, h = im.size
    out = [im]
    for k in range(1, n):
        c = im.crop((int(w * 0.03 * k), int(h * 0.02 * k), w - int(w * 0.02 * k), h - int(h * 0.03 * (n - 1 - k))))
        c = ImageEnhance.Brightness(c).enhance(1 + 0.1 * (k - 1))
        out.append(c.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if k == 2 else c)
    return out


def save(folder, images) -> None:
    os.makedirs(folder, exist_ok=True)
    for i, im in enumerate(images):
        im.save(os.path.join(folder, f"{i}.png"))


def crowd(folder, people: int = 10, photos: int = 2) -> str:
    from data_loader import synth

    synth.write_identity_tree(str(folder), people, photos, seed=1, size=160, log=lambda *_: None)
    return str(folder)


class StandIn(ZooModel):
    """A small random CNN behind the zoo contract (aligned ArcFace chips, L2-normalised): a recogniser of
    nothing in particular, but differentiable and always there."""

    name, dim, alignment = "stand-in", 64, Alignment("arcface", 112)

    def __init__(self, seed: int = 3):
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Conv2d(3, 16, 5, 2, 2), nn.ReLU(), nn.Conv2d(16, 32, 5, 2, 2), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(512, 64))
        self.requires_grad_(False)

    def forward(self, aligned: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(aligned * 2 - 1), dim=1)


def png_bytes(array: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG")
    return buf.getvalue()
