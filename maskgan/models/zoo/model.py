"""ZooModel: a real pretrained recogniser as a torch module, frozen, embedding photos aligned from landmarks."""

from __future__ import annotations

import torch
from torch import nn

from maskgan.models.zoo import align  # the module: tests stand a box warp in for align.align
from maskgan.models.zoo.base import Alignment, Provenance


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
        return self(align.align(images, landmarks68, self.alignment))
