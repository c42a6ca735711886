"""Tensor helpers every layer shares: images as floats, a trunk's features (aligned from landmarks for a zoo
trunk), the head's cosine logits and its L1 term, and unwrapping a DDP module."""

from __future__ import annotations

import torch
from torch import nn


def unwrap(module: nn.Module) -> nn.Module:
    return module.module if hasattr(module, "module") else module


def to_float_images(x: torch.Tensor) -> torch.Tensor:
    """uint8 [B,S,S,C] (or [B,S,S]) -> float [B,C,S,S] in [0,1]."""
    if x.dim() == 3:
        x = x.unsqueeze(-1)
    return x.permute(0, 3, 1, 2).float().div_(255.0)


def logits(head: nn.Module, probe_feats: torch.Tensor, gallery_feats: torch.Tensor, scale: float) -> torch.Tensor:
    """One head forward over probes and gallery together (DDP allows one forward per backward).

    The cosines are taken in fp32 even under autocast: bf16 keeps ~3 significant digits, and scale * cos
    would carry errors of ~0.05 into every logit. (A no-op in fp32.)"""
    emb = head(torch.cat([probe_feats.to(gallery_feats.dtype), gallery_feats]))
    if emb.dtype in (torch.float16, torch.bfloat16):
        emb = emb.float()
    probe, gallery = emb[: probe_feats.shape[0]], emb[probe_feats.shape[0]:]
    with torch.autocast(emb.device.type, enabled=False):
        return scale * probe @ gallery.T


def l1(head: nn.Module) -> torch.Tensor:
    # Mean |w| rather than the sum, so lambda means the same for any layer size (the sum over 917k weights
    # would swamp the cross-entropy at the paper's lambda = 0.01).
    params = [p for p in unwrap(head).parameters() if p.requires_grad]
    return sum(p.abs().sum() for p in params) / sum(p.numel() for p in params)


def features(trunk: nn.Module, images: torch.Tensor, landmarks: torch.Tensor | None = None) -> torch.Tensor:
    """A trunk's features of photos: a zoo trunk (maskgan.models.zoo_surrogate) aligns each photo from its landmarks
    [N,68,2] (the batch's `landmarks`, NaN where unknown); a facenet trunk sees the photo as it is."""
    if not getattr(trunk, "needs_landmarks", False):
        return trunk(images)
    if landmarks is None:
        landmarks = torch.full((images.shape[0], 68, 2), float("nan"), device=images.device)
    return trunk(images, landmarks)


@torch.no_grad()
def trunk_features(trunk: nn.Module, images: torch.Tensor, batch_size: int = 64,
                   landmarks: torch.Tensor | None = None) -> torch.Tensor:
    """float [N,3,S,S] in [0,1] -> [N,1792] (a zoo trunk's: [N,F], aligned from `landmarks`), in batches."""
    return torch.cat([features(trunk, images[i:i + batch_size],
                               None if landmarks is None else landmarks[i:i + batch_size])
                      for i in range(0, images.shape[0], batch_size)])


def head_optimizer(head: nn.Module, lr: float) -> torch.optim.Optimizer:
    """The recogniser head's optimiser: Adam at `lr`, over the underlying parameters (wrapped or not). The training
    step's head and the adaptive defender's both come from here."""
    return torch.optim.Adam(unwrap(head).parameters(), lr=lr)
