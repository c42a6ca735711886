"""The paper-structured step: the baseline that bench/step.py measures ours against. It lives only here.

The objective is ours (maskgan.training.objective): the design worn in the mask region (the warp from the projector's
alpha), cosine logits against the gallery, the generator ascending the cross-entropy, the head descending
cross-entropy + lambda * L1 on the experiment's mixture. What differs is the structure, as the paper's code
ran it:

- batch 16, fp32, no autocast, no channels_last;
- one design per batch: one latent, the same design on every face;
- the projector runs on every batch (alpha and its warp are recomputed each step, though the projector is
  frozen);
- one full recogniser pass from images per term, each with its own backward: the generator's pass, then one
  per head term (generated, unmasked, original-mask faces), so four for exp3. Real photos go through the
  trunk every step instead of as cached features;
- the whole recogniser left in train mode with gradients on every weight: only the last layer is in the
  optimiser, but each backward computes gradients for the whole trunk, BatchNorm normalises with batch
  statistics and updates its running statistics, dropout is active.

Nothing in maskgan imports this; it exists to be measured.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from maskgan.config import ObjectiveConfig
from maskgan.design import physical
from maskgan.models.ops import l1, logits
from maskgan.models.recognizer import Head, Trunk
from maskgan.training.objective import HEAD_TERMS, make_optimizers

PAPER_BATCH = 16


class PaperRecognizer(nn.Module):
    """InceptionResnetV1 as one trainable module in train mode: trunk -> dropout -> last_linear -> last_bn."""

    def __init__(self, trunk: Trunk, head: Head):
        super().__init__()
        self.trunk = copy.deepcopy(trunk)  # copies: our models stay frozen and in eval mode
        self.head = copy.deepcopy(head)
        self.requires_grad_(True)
        self.trunk.net.train(True)  # Trunk.train() pins eval mode; the paper's net was simply left in train mode
        self.head.train(True)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.trunk.net.dropout(self.trunk(images))


@dataclass
class PaperModels:
    generator: nn.Module
    projector: nn.Module
    recognizer: PaperRecognizer
    latent_dim: int
    g_opt: torch.optim.Optimizer
    h_opt: torch.optim.Optimizer | None


def paper_models(generator: nn.Module, projector: nn.Module, trunk: Trunk, head: Head, latent_dim: int,
                 cfg: ObjectiveConfig) -> PaperModels:
    rec = PaperRecognizer(trunk, head)
    opts = make_optimizers(generator, rec.head, cfg)  # the same optimisers as ours: only the step differs
    return PaperModels(generator, projector, rec, latent_dim, opts.generator, opts.head)


def _ce(m: PaperModels, images: torch.Tensor, label: torch.Tensor, gallery_feats: torch.Tensor,
        cfg: ObjectiveConfig) -> torch.Tensor:
    return F.cross_entropy(logits(m.recognizer.head, m.recognizer.features(images), gallery_feats,
                                  cfg.cosine_scale), label)


def paper_step(m: PaperModels, masked: torch.Tensor, unmasked: torch.Tensor, label: torch.Tensor,
               gallery_feats: torch.Tensor, cfg: ObjectiveConfig) -> dict[str, float]:
    """One step as the paper structured it. masked/unmasked: float [B,3,S,S] in [0,1]; label [B]."""
    design = m.generator(torch.randn(1, m.latent_dim, device=masked.device))  # one design for the batch
    space = physical.mask_warp(m.projector(masked))  # recomputed every step
    faces = physical.wear(masked, space, design.expand(masked.shape[0], -1, -1, -1))

    # Pass 1: the generator ascends the cross-entropy (the backward runs through the whole recogniser).
    gen_ce = _ce(m, faces, label, gallery_feats, cfg)
    m.g_opt.zero_grad()
    if m.h_opt is not None:
        m.h_opt.zero_grad()
    (-gen_ce).backward()
    m.g_opt.step()
    out = {"train/gen_ce": gen_ce.item()}

    # Passes 2..4: one recogniser pass from images per head term, each with its own backward and step.
    images = {"generated": faces.detach(), "unmasked": unmasked, "original_mask": masked}
    for term in HEAD_TERMS[cfg.experiment]:
        loss = _ce(m, images[term], label, gallery_feats, cfg) + cfg.l1_lambda * l1(m.recognizer.head)
        m.h_opt.zero_grad()
        loss.backward()
        m.h_opt.step()
        out[f"train/head_loss/{term}"] = loss.item()
    return out
