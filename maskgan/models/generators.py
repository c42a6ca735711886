"""Generator registry: a latent vector -> one RGB mask design in [0, 1], in mask space (height x width).

A design is a flat picture of the mask's front panel (maskgan.design.physical: the template, 2:1 width:height), not a
full-frame image: `hw` is physical.design_hw(image size), e.g. (64, 128) for 128x128 photos. What the generator
draws is exactly what is printed and what the warp places on each face.

Conditional generators (`cond_fc3`, `cond_conv`) also take the wearer: forward(z, cond), where cond
is the trunk features [B,1792] of the wearer's own unmasked photo, so each person gets their own design.
Unconditional ones keep forward(z). `is_conditional` is what the rest of the code asks; `universal` draws the
designs a conditional generator makes for no one in particular (the train gallery's mean face, which it stores).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from maskgan.config import GENERATORS  # the one list of names (model.generator validates against it)
from maskgan.models.recognizer import FEATURE_DIM


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


COND_WIDTH = 32  # the wearer's features are projected to this many inputs, concatenated with the latent
CONDITIONAL = {"cond_fc3": "fc3", "cond_conv": "conv"}  # conditional name -> the unconditional body it wraps


class Conditioned(nn.Module):
    """A generator body fed [z, project(standardised cond)]: the latent plus the wearer, projected small.

    Face features are alike (pooled non-negative activations: two people's cosine is typically far above 0.9),
    so the wearer enters as how their features differ from the train gallery's: per feature, minus the
    gallery's mean and over its std (`cond_mean`, `cond_std`: buffers saved with the weights, set by the worker
    through `set_cond_stats`), then layer-normed (no affine) to unit scale like z's entries, and projected
    (initialised N(0, 1/1792): outputs of unit scale, where PyTorch's default would start at a third of it).
    The mean face is the zero vector: the universal designs (`universal`) are made for it.
    """

    conditional = True

    def __init__(self, body: nn.Module):
        super().__init__()
        self.project = nn.Linear(FEATURE_DIM, COND_WIDTH)
        nn.init.normal_(self.project.weight, std=FEATURE_DIM ** -0.5)
        nn.init.zeros_(self.project.bias)
        self.body = body
        self.hw = body.hw
        self.register_buffer("cond_mean", torch.zeros(FEATURE_DIM))
        self.register_buffer("cond_std", torch.ones(FEATURE_DIM))

    def forward(self, z: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        if cond is None:
            raise ValueError("a conditional generator needs cond: the trunk features [B, 1792] of each wearer's "
                             "unmasked photo (generators.universal makes designs for no one in particular)")
        if cond.shape != (z.shape[0], FEATURE_DIM):
            raise ValueError(f"cond: expected [{z.shape[0]}, {FEATURE_DIM}] (one feature row per latent), "
                             f"got {list(cond.shape)}")
        c = (cond.to(self.cond_mean.dtype) - self.cond_mean) / self.cond_std
        c = self.project(F.layer_norm(c, (FEATURE_DIM,)))
        return self.body(torch.cat([z, c.to(z.dtype)], 1))


def is_conditional(generator: nn.Module) -> bool:
    """Whether `generator` (possibly DDP-wrapped) takes the wearer's features."""
    return getattr(getattr(generator, "module", generator), "conditional", False)


def universal(generator: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """Designs from latents z for no one in particular: generator(z) for an unconditional generator; for a
    conditional one, its designs for the train gallery's mean face (`cond_mean`)."""
    g = getattr(generator, "module", generator)
    if not is_conditional(g):
        return generator(z)
    return generator(z, g.cond_mean.to(z.dtype).expand(z.shape[0], -1))


@torch.no_grad()
def set_cond_stats(generator: nn.Module, gallery_feats: torch.Tensor) -> None:
    """A conditional generator's feature statistics, from the TRAIN gallery's features [N,1792] (nothing of a
    val/test identity); a no-op for an unconditional generator. One identity gives std 0: kept at 1 there."""
    g = getattr(generator, "module", generator)
    if not is_conditional(g):
        return
    feats = gallery_feats.float().to(g.cond_mean.device)
    g.cond_mean.copy_(feats.mean(0))
    std = feats.std(0) if feats.shape[0] > 1 else torch.ones_like(g.cond_std)
    g.cond_std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))


def build_generator(name: str, latent_dim: int, hidden: int, hw: tuple[int, int], cell_px: int = 1) -> nn.Module:
    """The one way to build a generator: `hw` is the design's (height, width) in mask space, `cell_px` the side
    of one colour cell in design pixels."""
    hw = (int(hw[0]), int(hw[1]))
    if name in CONDITIONAL:
        return Conditioned(build_generator(CONDITIONAL[name], latent_dim + COND_WIDTH, hidden, hw, cell_px))
    if name == "fc3":
        return FC(latent_dim, hidden, 3, hw, cell_px)
    if name == "fc_deep":
        return FC(latent_dim, max(hidden // 2, 8), 8, hw, cell_px)  # thin and deep
    if name == "conv":
        return Conv(latent_dim, hidden, hw, cell_px)
    raise ValueError(f"unknown generator {name!r} (allowed: {', '.join(GENERATORS)})")
