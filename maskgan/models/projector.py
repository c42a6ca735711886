"""Projector: a masked photo -> the transparency (alpha) of its facemask, so a design can be worn there (maskgan.design.physical
warps it onto the region the alpha marks).

Two architectures, both five 3x3 convolutions with ReLUs and a sigmoid:
  paper    the paper's channels (6, 12, 18, 24, 1): a receptive field of 11 px. Enough for masks of one colour
           (synthetic data, MaskedFace-Net), where the colour alone marks the mask.
  dilated  dilations (1, 2, 4, 8, 1) and channels (16, 24, 32, 32, 1): a receptive field of 33 px, so a pixel is
           judged by where it sits on the face, not only by its colour. Masks drawn from landmarks
           (`data prepare --identities`) come in six colours and four textures, some close to skin or background:
           there the paper's projector reached IoU 0.37 at 10 epochs and this one 0.93 at 25 (docs/data.md).
`auto` (the training default) picks dilated for identity-folder data and paper otherwise. A checkpoint records its
architecture; checkpoints from before it was recorded are the paper's.
"""

from __future__ import annotations

import torch
from torch import nn

ARCHS = {"paper": ((6, 12, 18, 24, 1), (1, 1, 1, 1, 1)),
         "dilated": ((16, 24, 32, 32, 1), (1, 2, 4, 8, 1))}


def arch_for(manifest: dict, arch: str = "auto") -> str:
    """`auto` -> the architecture for the data the manifest describes; an explicit name is checked and kept."""
    if arch == "auto":
        return "dilated" if manifest.get("source", {}).get("kind") == "identities" else "paper"
    if arch not in ARCHS:
        raise ValueError(f"projector architecture {arch!r}: expected auto, {', '.join(ARCHS)}")
    return arch


class Projector(nn.Module):
    def __init__(self, arch: str = "paper"):
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"projector architecture {arch!r}: expected one of {', '.join(ARCHS)}")
        self.arch = arch
        layers: list[nn.Module] = []
        cin = 3
        channels, dilations = ARCHS[arch]
        for i, (cout, d) in enumerate(zip(channels, dilations)):
            layers.append(nn.Conv2d(cin, cout, 3, padding=d, dilation=d))
            if i < len(channels) - 1:
                layers.append(nn.ReLU())
            cin = cout
        self.net = nn.Sequential(*layers)

    def forward(self, masked: torch.Tensor) -> torch.Tensor:
        """masked: [B,3,S,S] in [0,1] -> alpha [B,1,S,S] in [0,1].

        Inputs are centred on 0: from [0,1] the small net trained unreliably (held-out IoU anywhere from 0 to
        0.87 over seeds at 10 epochs), from [-1,1] it reaches 0.95-0.98."""
        return torch.sigmoid(self.net(masked * 2 - 1))
