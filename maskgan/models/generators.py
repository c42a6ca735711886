"""Generator registry: a latent vector -> one RGB mask design in [0, 1], in mask space (height x width).

A design is a flat picture of the mask's front panel (maskgan.physical: the template, 2:1 width:height), not a
full-frame image: `hw` is physical.design_hw(image size), e.g. (64, 128) for 128x128 photos. What the generator
draws is exactly what is printed and what the warp places on each face.
"""

from __future__ import annotations

import torch
from torch import nn


class FC(nn.Module):
    """Fully connected: latent -> `depth` hidden layers of `hidden` units -> 3*h*w sigmoid.

    fc3 is the paper's: 100-d N(0,1) latent, 3 layers of 32 units (the paper drew 128x128 full frames; here the
    last layer draws the mask panel).
    """

    def __init__(self, latent_dim: int, hidden: int, depth: int, hw: tuple[int, int]):
        super().__init__()
        layers: list[nn.Module] = []
        width = latent_dim
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.LeakyReLU(0.2)]
            width = hidden
        layers += [nn.Linear(width, 3 * hw[0] * hw[1])]
        self.net = nn.Sequential(*layers)
        self.hw = tuple(hw)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(z)).view(-1, 3, *self.hw)


class Conv(nn.Module):
    """Transposed-convolution upsampler: latent -> a 4 x (4 w/h) feature map -> doubled until h x w."""

    def __init__(self, latent_dim: int, hidden: int, hw: tuple[int, int]):
        super().__init__()
        h, w = hw
        if h & (h - 1) or h < 8 or w % h:
            raise ValueError(f"conv generator needs a power-of-two design height >= 8 and a width that is a "
                             f"multiple of it, got {h}x{w}")
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
        return torch.sigmoid(self.net(self.fc(z).view(-1, self.c0, *self.start)))


def build_generator(name: str, latent_dim: int, hidden: int, hw: tuple[int, int]) -> nn.Module:
    """The one way to build a generator: `hw` is the design's (height, width) in mask space."""
    hw = (int(hw[0]), int(hw[1]))
    if name == "fc3":
        return FC(latent_dim, hidden, 3, hw)
    if name == "fc_deep":
        return FC(latent_dim, max(hidden // 2, 8), 8, hw)  # thin and deep
    if name == "conv":
        return Conv(latent_dim, hidden, hw)
    raise ValueError(f"unknown generator {name!r} (allowed: fc3, fc_deep, conv)")
