"""The science: identification against a gallery, the experiments, and THE training step.

Identification: a photo's embedding is compared (cosine) with the embeddings of one unmasked photo of every
identity (the gallery, all splits); the nearest is the prediction. Training uses the same geometry as a
softmax: logit_i = scale * cos(probe, gallery_i), cross-entropy against the true identity.

The step: the generator makes one design per image, the design is composited into the mask region (alpha
from the frozen projector), the frozen trunk embeds it, and
  - the generator MAXIMISES the recogniser's cross-entropy on those faces;
  - the recogniser head MINIMISES cross-entropy + lambda * L1 on the mixture the experiment names:
        exp0: nothing (frozen)       exp1: generated-mask faces
        exp2: + unmasked faces       exp3: + original-mask faces

`train_step` is pure: models, optimisers, a batch and the config in; a flat dict of floats out. No Ray, no
rank checks. The local run, the Ray Train worker, Tune trials, the benchmark and the tests all call it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from maskgan.config import ObjectiveConfig
from maskgan.models.projector import composite

HEAD_TERMS = {"exp0": (), "exp1": ("generated",), "exp2": ("generated", "unmasked"),
              "exp3": ("generated", "unmasked", "original_mask")}


@dataclass
class Models:
    generator: nn.Module  # possibly DDP-wrapped
    trunk: nn.Module  # frozen
    head: nn.Module  # possibly DDP-wrapped; trained unless exp0
    latent_dim: int


@dataclass
class Optimizers:
    generator: torch.optim.Optimizer
    head: torch.optim.Optimizer | None  # None for exp0


def unwrap(module: nn.Module) -> nn.Module:
    return module.module if hasattr(module, "module") else module


def to_float_images(x: torch.Tensor) -> torch.Tensor:
    """uint8 [B,S,S,C] (or [B,S,S]) -> float [B,C,S,S] in [0,1]."""
    if x.dim() == 3:
        x = x.unsqueeze(-1)
    return x.permute(0, 3, 1, 2).float().div_(255.0)


def logits(head: nn.Module, probe_feats: torch.Tensor, gallery_feats: torch.Tensor, scale: float) -> torch.Tensor:
    """One head forward over probes and gallery together (DDP allows one forward per backward)."""
    emb = head(torch.cat([probe_feats, gallery_feats]))
    probe, gallery = emb[: probe_feats.shape[0]], emb[probe_feats.shape[0]:]
    return scale * probe @ gallery.T


def l1(head: nn.Module) -> torch.Tensor:
    # Mean |w| rather than the sum, so lambda means the same for any layer size (the sum over 917k weights
    # would swamp the cross-entropy at the paper's lambda = 0.01).
    params = [p for p in unwrap(head).parameters() if p.requires_grad]
    return sum(p.abs().sum() for p in params) / sum(p.numel() for p in params)


def design(generator: nn.Module, n: int, latent_dim: int, device) -> torch.Tensor:
    return generator(torch.randn(n, latent_dim, device=device))


def train_step(models: Models, opts: Optimizers, batch: dict, gallery_feats: torch.Tensor,
               cfg: ObjectiveConfig) -> dict[str, float]:
    """One adversarial step. batch: masked [B,3,S,S] float, alpha [B,1,S,S] float (projector output), label [B];
    for exp2/exp3 also feats_unmasked / feats_masked [B,1792] (trunk features of the real photos: constants,
    computed once outside the step)."""
    masked, alpha, label = batch["masked"], batch["alpha"], batch["label"]
    n = masked.shape[0]
    head = unwrap(models.head)

    # Generator: maximise the cross-entropy of the recogniser as deployed (eval mode). The head is a
    # constant here (its own update comes from its own loss below): its parameters leave this graph.
    head.eval()
    head.requires_grad_(False)
    faces = composite(masked, alpha, design(models.generator, n, models.latent_dim, masked.device))
    feats = models.trunk(faces)
    gen_logits = logits(head, feats, gallery_feats, cfg.cosine_scale)
    gen_ce = F.cross_entropy(gen_logits, label)
    opts.generator.zero_grad(set_to_none=True)
    (-gen_ce).backward()
    opts.generator.step()
    head.requires_grad_(True)

    out = {
        "train/gen_ce": gen_ce.item(),
        "train/gen_acc": (gen_logits.argmax(1) == label).float().mean().item(),
    }
    terms = HEAD_TERMS[cfg.experiment]
    if not terms:
        out["train/head_loss"] = 0.0
        return out

    # Recogniser head: minimise cross-entropy on the experiment's mixture + lambda * L1.
    parts = {"generated": feats.detach(), "unmasked": batch.get("feats_unmasked"),
             "original_mask": batch.get("feats_masked")}
    probe = torch.cat([parts[t] for t in terms])
    head.train()
    head_logits = logits(models.head, probe, gallery_feats, cfg.cosine_scale)
    ce = F.cross_entropy(head_logits, label.repeat(len(terms)))
    head_loss = ce + cfg.l1_lambda * l1(models.head)
    opts.head.zero_grad(set_to_none=True)
    head_loss.backward()
    opts.head.step()
    head.eval()
    out["train/head_ce"] = ce.item()
    out["train/head_loss"] = head_loss.item()
    return out


# ---- identification (evaluation uses the same embedding as training) -------------------------------------


@torch.no_grad()
def trunk_features(trunk: nn.Module, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """float [N,3,S,S] in [0,1] -> [N,1792], in batches."""
    return torch.cat([trunk(images[i:i + batch_size]) for i in range(0, images.shape[0], batch_size)])


@torch.no_grad()
def identify(head: nn.Module, probe_feats: torch.Tensor, gallery_emb: torch.Tensor) -> torch.Tensor:
    """Predicted gallery index (= label) of each probe: the nearest gallery embedding (head(gallery feats))."""
    return (unwrap(head)(probe_feats) @ gallery_emb.T).argmax(1)
