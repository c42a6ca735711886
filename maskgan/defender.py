"""An adaptive defender: the recogniser's vendor, after the masks appear in the wild, fine-tunes on them.

White-box figures score the head the generator attacked. A deployed system would see the printed designs and
adapt: here a fresh copy of the recogniser head fine-tunes for `steps` Adam steps on TRAIN identities wearing
the fixed universal designs (and, so it keeps working on everyone else, their unmasked and original-mask
photos), against the train identities' gallery only. Evaluation then scores every row of val/test again with
the adapted head: a design that still dodges it protects beyond the one recogniser it was trained against.

The pieces are the training step's: `objective.logits` (one head forward over probes and gallery), its
cross-entropy + lambda * L1 (`objective.l1`), and the head optimiser from `objective.make_optimizers`.
"""

from __future__ import annotations

import copy
from dataclasses import replace

import torch
import torch.nn.functional as F

from data_loader import shards, storage
from maskgan.config import ObjectiveConfig
from maskgan.feed import TrainGallery
from maskgan.wearing import PROBE_COLUMNS, probe_photos, worn
from maskgan.objective import l1, logits, make_optimizers, trunk_features, unwrap

STEPS = 100  # the defender's fine-tuning steps (issue 13: "N steps, default e.g. 100")
BATCH = 64


@torch.no_grad()
def design_features(root: storage.Location, designs: torch.Tensor, *, trunk, projector, device,
                    max_probes: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Trunk features of every train probe wearing each design, plus its unmasked and original-mask photo:
    the defender's training set (features are constants: the trunk is frozen). Labels: full-gallery ones."""
    feats, labels = [], []
    for batch in shards.iter_first(root, "train", max_probes, PROBE_COLUMNS):
        masked, unmasked, space = probe_photos(batch, projector, device)
        label = torch.from_numpy(batch["label"].astype("int64"))
        views = [unmasked, masked] + [worn(masked, space, d.to(device).unsqueeze(0)) for d in designs]
        for images in views:
            feats.append(trunk_features(trunk, images))
            labels.append(label)
    return torch.cat(feats), torch.cat(labels).to(device)


def adapt_head(head, generator, feats: torch.Tensor, labels: torch.Tensor, train_gallery: TrainGallery,
               cfg: ObjectiveConfig, steps: int = STEPS, seed: int = 0, log=None):
    """A fresh copy of `head` fine-tuned for `steps` on (feats, labels) against the train gallery, at the GAN's
    head learning rate (objective.head_lr). `head` itself is untouched.

    The copy stays in eval mode while it trains: its BatchNorm keeps the deployed statistics, so it trains as
    it is scored (refitting the statistics to design-wearing train faces shifted every embedding, and a rate
    of 1e-3 memorised the train identities: both sent held-out identities' rank-1 to 0 on a planted case)."""
    defender = copy.deepcopy(unwrap(head))
    defender.requires_grad_(True)
    # The one optimiser factory (its head optimiser, Adam); the generator's optimiser is discarded.
    opt = make_optimizers(generator, defender, replace(cfg, experiment="exp1")).head
    target = train_gallery.remap[labels]
    keep = target >= 0
    feats, target = feats[keep], target[keep]
    gen = torch.Generator().manual_seed(seed)
    defender.eval()
    for step in range(steps):
        idx = torch.randint(len(feats), (min(BATCH, len(feats)),), generator=gen).to(feats.device)
        ce = F.cross_entropy(logits(defender, feats[idx], train_gallery.feats, cfg.cosine_scale), target[idx])
        loss = ce + cfg.l1_lambda * l1(defender)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if log and (step + 1) % 50 == 0:
            log(f"defender step {step + 1}/{steps}: cross-entropy {ce.item():.3f}")
    return defender.requires_grad_(False)
