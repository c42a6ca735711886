"""A zoo recogniser whose network is a converted graph (`onnx_graph.GraphNet`) plus its own input normalisation.

The three npm ports (faceplugin, expo, hse) differ only in their graph, their alignment and how their reference
pipeline turns 8-bit pixels into network input; `InputNorm` states the latter, so each model file is a few lines
of facts about its package rather than a copy of this class.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from maskgan.models.zoo.base import Alignment
from maskgan.models.zoo.model import ZooModel
from maskgan.models.zoo.onnx_graph import GraphNet, GraphSpec


@dataclass(frozen=True)
class InputNorm:
    """network input = (pixel255 in `order` - mean) / std, per channel (mean given in `order`)."""

    order: str  # "RGB" or "BGR": the channel order the network was trained on
    mean: tuple[float, float, float]
    std: float

    def __post_init__(self):
        if self.order not in ("RGB", "BGR") or not self.std > 0:
            raise ValueError(f"InputNorm: order must be RGB or BGR and std > 0, got {self.order}, {self.std}")


class GraphRecogniser(ZooModel):
    def __init__(self, name: str, dim: int, alignment: Alignment, norm: InputNorm, spec: GraphSpec):
        super().__init__()
        self.name, self.dim, self.alignment, self.norm = name, dim, alignment, norm
        self.net = GraphNet(spec)
        self.register_buffer("mean", torch.tensor(norm.mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def network_input(self, aligned: torch.Tensor) -> torch.Tensor:
        """[N, 3, s, s] RGB in [0, 1] -> what the converted graph takes (its reference pipeline's input)."""
        size = self.alignment.size
        if aligned.dim() != 4 or aligned.shape[1] != 3 or tuple(aligned.shape[2:]) != (size, size):
            raise ValueError(f"{self.name}: expected aligned faces [N, 3, {size}, {size}], got {list(aligned.shape)}")
        x = aligned * 255.0
        if self.norm.order == "BGR":
            x = x.flip(1)
        return (x - self.mean) / self.norm.std

    def raw(self, aligned: torch.Tensor) -> torch.Tensor:
        """The graph's own output (not normalised), [N, dim]."""
        return self.net(self.network_input(aligned)).reshape(aligned.shape[0], -1)

    def forward(self, aligned: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.raw(aligned), dim=1)
