"""Generator registry: a latent vector -> one RGB mask design in [0, 1], in mask space (height x width).

A design is a flat picture of the mask's front panel (maskgan.physical: the template, 2:1 width:height), not a
full-frame image: `hw` is physical.design_hw(image size), e.g. (64, 128) for 128x128 photos. What the generator
draws is exactly what is printed and what the warp places on each face.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def cells(hw: tuple[int, int], cell_px: int) -> tuple[int, int]:
    """The grid of colour cells a generator draws for a design of `hw` with cells of cell_px x cell_px pixels."""
    return math.ceil(hw[0] / cell_px), math.ceil(hw[1] / cell_px)


def _smooth(x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Cells -> design pixels, bilinearly: blocks of colour with soft edges, never per-pixel noise."""
    if tuple(x.shape[-2:]) == tuple(hw):
        return x
    return F.interpolate(x, size=hw, mode="bilinear", align_corners=False)


class FC(nn.Module):
    """Fully connected: latent -> `depth` hidden layers of `hidden` units -> one sigmoid colour per cell.

    fc3 is the paper's: 100-d N(0,1) latent, 3 layers of 32 units (the paper drew 128x128 full frames; here the
    last layer draws the mask panel). With cell_px 1 (the paper's) every pixel is its own output; larger cells
    draw a coarser grid upsampled bilinearly (model.cell_px).
    """

    def __init__(self, latent_dim: int, hidden: int, depth: int, hw: tuple[int, int], cell_px: int = 1):
        super().__init__()
        layers: list[nn.Module] = []
        width = latent_dim
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.LeakyReLU(0.2)]
            width = hidden
        self.grid = cells(hw, cell_px)
        layers += [nn.Linear(width, 3 * self.grid[0] * self.grid[1])]
        self.net = nn.Sequential(*layers)
        self.hw = tuple(hw)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return _smooth(torch.sigmoid(self.net(z)).view(-1, 3, *self.grid), self.hw)


class Conv(nn.Module):
    """Transposed-convolution upsampler: latent -> a 4 x (4 w/h) feature map -> doubled until the cell grid
    (h x w with cell_px 1), then bilinearly to h x w."""

    def __init__(self, latent_dim: int, hidden: int, hw: tuple[int, int], cell_px: int = 1):
        super().__init__()
        self.hw = tuple(hw)
        h, w = cells(hw, cell_px)
        if h & (h - 1) or h < 8 or w % h:
            raise ValueError(f"conv generator needs a power-of-two grid height >= 8 and a width that is a "
                             f"multiple of it, got {h}x{w} (design {hw[0]}x{hw[1]}, cell_px {cell_px})")
        steps = h.bit_length() - 3  # 4 -> h
        ch = [max(hidden * 2 ** (steps - i), 8) for i in range(steps + 1)]
        self.start = (4, 4 * (w // h))
        self.fc = nn.Linear(latent_dim, ch[0] * self.start[0] * self.start[1])
        blocks: list[nn.Module] = []
        for i in range(steps):
            out = ch[i + 1] if i < steps - 1 else 3
            blocks.append(nn.ConvTranspose2d(ch[i], out, 4, stride=2, padding=1))
            if i < steps - 1:
                blocks += [nn.BatchNorm2d(out), nn.LeakyReLU(0.2)]
        self.net = nn.Sequential(*blocks)
        self.c0 = ch[0]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return _smooth(torch.sigmoid(self.net(self.fc(z).view(-1, self.c0, *self.start))), self.hw)


def build_generator(name: str, latent_dim: int, hidden: int, hw: tuple[int, int], cell_px: int = 1) -> nn.Module:
    """The one way to build a generator: `hw` is the design's (height, width) in mask space, `cell_px` the side
    of one colour cell in design pixels."""
    hw = (int(hw[0]), int(hw[1]))
    if name == "fc3":
        return FC(latent_dim, hidden, 3, hw, cell_px)
    if name == "fc_deep":
        return FC(latent_dim, max(hidden // 2, 8), 8, hw, cell_px)  # thin and deep
    if name == "conv":
        return Conv(latent_dim, hidden, hw, cell_px)
    raise ValueError(f"unknown generator {name!r} (allowed: fc3, fc_deep, conv)")
