"""Generator registry: a latent vector -> one RGB mask design in [0, 1], size x size."""

from __future__ import annotations

import torch
from torch import nn


class FC(nn.Module):
    """Fully connected: latent -> `depth` hidden layers of `hidden` units -> 3*S*S sigmoid.

    fc3 is the paper's: 100-d N(0,1) latent, 3 layers of 32 units, a 128x128 RGB output.
    """

    def __init__(self, latent_dim: int, hidden: int, depth: int, size: int):
        super().__init__()
        layers: list[nn.Module] = []
        width = latent_dim
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.LeakyReLU(0.2)]
            width = hidden
        layers += [nn.Linear(width, 3 * size * size)]
        self.net = nn.Sequential(*layers)
        self.size = size

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(z)).view(-1, 3, self.size, self.size)


class Conv(nn.Module):
    """Transposed-convolution upsampler: latent -> 4x4 feature map -> doubled until `size`."""

    def __init__(self, latent_dim: int, hidden: int, size: int):
        super().__init__()
        if size & (size - 1) or size < 8:
            raise ValueError(f"conv generator needs a power-of-two image size >= 8, got {size}")
        steps = size.bit_length() - 3  # 4 -> size
        ch = [max(hidden * 2 ** (steps - i), 8) for i in range(steps + 1)]
        self.fc = nn.Linear(latent_dim, ch[0] * 16)
        blocks: list[nn.Module] = []
        for i in range(steps):
            out = ch[i + 1] if i < steps - 1 else 3
            blocks.append(nn.ConvTranspose2d(ch[i], out, 4, stride=2, padding=1))
            if i < steps - 1:
                blocks += [nn.BatchNorm2d(out), nn.LeakyReLU(0.2)]
        self.net = nn.Sequential(*blocks)
        self.c0 = ch[0]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(self.fc(z).view(-1, self.c0, 4, 4)))


def build_generator(name: str, latent_dim: int, hidden: int, size: int) -> nn.Module:
    if name == "fc3":
        return FC(latent_dim, hidden, 3, size)
    if name == "fc_deep":
        return FC(latent_dim, max(hidden // 2, 8), 8, size)  # thin and deep
    if name == "conv":
        return Conv(latent_dim, hidden, size)
    raise ValueError(f"unknown generator {name!r} (allowed: fc3, fc_deep, conv)")
