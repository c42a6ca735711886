"""An adaptive defender: the recogniser's vendor, after the masks appear in the wild, fine-tunes on them.

White-box figures score the head the generator attacked. A deployed system would see the printed designs and
adapt: here a fresh copy of the recogniser head fine-tunes for `eval.defender_steps` Adam steps at
`eval.defender_lr` on TRAIN identities wearing the distinct universal designs (and, so it keeps working on
everyone else, their unmasked and original-mask photos), against the train identities' gallery only.
Evaluation then scores every row of val/test again with the adapted head, at the adapted head's own thresholds
(calibrated on the held-apart set like every recogniser): a design that still dodges it protects beyond the
one recogniser it was trained against.

It shows its work: its loss curve (and whether it stayed flat: then it learned nothing and its table says
nothing), its rank-1 on its own training designs before and after, and a paired identity-bootstrap interval on
every before/after delta (the same probes, scored by the attacked and by the adapted head).

The pieces are the training step's: `ops.logits` (one head forward over probes and gallery), its
cross-entropy + lambda * L1 (`ops.l1`), and the head optimiser the training step uses (`ops.head_optimizer`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from data_loader import shards, storage
from maskgan.config import ObjectiveConfig, RunConfig
from maskgan.design.wearing import PROBE_COLUMNS, probe_photos, worn
from maskgan.evaluation import calibration, scoring
from maskgan.evaluation.scorer import RunCalibration, Scorer
from maskgan.models.ops import head_optimizer, l1, logits, trunk_features, unwrap
from maskgan.run.build import Parts, TrainGallery

STEPS = 100  # the defender's default fine-tuning steps (config: eval.defender_steps)
LR = 1e-4  # its default Adam rate (config: eval.defender_lr): the GAN's head rate
BATCH = 64
# A loss curve whose last tenth is within this fraction of its first tenth is flat: the defender learned nothing.
FLAT = 0.05


@torch.no_grad()
def design_features(root: storage.Location, designs: torch.Tensor, scorer: Scorer,
                    max_probes: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Trunk features of every train probe wearing each design, plus its unmasked and original-mask photo:
    the defender's training set (features are constants: the trunk is frozen). Labels: full-gallery ones."""
    feats, labels = [], []
    for batch in shards.iter_first(root, "train", max_probes, PROBE_COLUMNS):
        masked, unmasked, space = probe_photos(batch, scorer.projector, scorer.device)
        label = torch.from_numpy(batch["label"].astype("int64"))
        views = [unmasked, masked] + [worn(masked, space, d.to(scorer.device).unsqueeze(0)) for d in designs]
        for images in views:
            feats.append(trunk_features(scorer.trunk, images))
            labels.append(label)
    return torch.cat(feats), torch.cat(labels).to(scorer.device)


def adapt_head(head, generator, feats: torch.Tensor, labels: torch.Tensor, train_gallery: TrainGallery,
               cfg: ObjectiveConfig, steps: int = STEPS, seed: int = 0, log=None, lr: float | None = None,
               curve: list | None = None):
    """A fresh copy of `head` fine-tuned for `steps` on (feats, labels) against the train gallery, with Adam at
    `lr` (None: the GAN's head rate, objective.head_lr). `head` itself is untouched. `curve`, when given,
    receives the cross-entropy of every step (`generator`: only for the optimiser factory's signature).

    The copy stays in eval mode while it trains: its BatchNorm keeps the deployed statistics, so it trains as
    it is scored (refitting the statistics to design-wearing train faces shifted every embedding, and a rate
    of 1e-3 memorised the train identities: both sent held-out identities' rank-1 to 0 on a planted case)."""
    defender = copy.deepcopy(unwrap(head))
    defender.requires_grad_(True)
    # The one optimiser factory (its head optimiser, Adam, at `lr`); the generator's optimiser is discarded.
    rate = cfg.head_lr if lr is None else lr
    opt = head_optimizer(defender, rate)
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
        if curve is not None:
            curve.append(float(ce.item()))
        if log and (step + 1) % 50 == 0:
            log(f"defender step {step + 1}/{steps}: cross-entropy {ce.item():.3f}")
    return defender.requires_grad_(False)


def loss_summary(curve: list[float], classes: int, flat: float = FLAT) -> dict:
    """The curve thinned to at most 50 points, its first and last tenth's means, and whether the defender
    learned nothing: its loss stayed flat (last within `flat` of first, relatively) or ended no better than
    guessing among `classes` identities (cross-entropy log(classes), less `flat` of it). Falling from an
    overconfident start to that floor is not learning who anyone is."""
    chance = float(np.log(max(classes, 1)))
    if not curve:
        return {"curve": [], "chance": chance, "flat": True, "sentence": "the defender took no steps"}
    tenth = max(1, len(curve) // 10)
    first, last = float(np.mean(curve[:tenth])), float(np.mean(curve[-tenth:]))
    stayed = abs(first - last) <= flat * max(abs(first), 1e-12)
    at_chance = last >= (1 - flat) * chance
    stride = max(1, len(curve) // 50)
    if stayed or at_chance:
        why = "stayed flat" if stayed else f"ended no better than chance (log {classes} = {chance:.3f})"
        sentence = (f"loss {first:.3f} -> {last:.3f}: it {why}, so the defender learned nothing from these designs "
                    "and its table shows no adaptation")
    else:
        sentence = f"loss {first:.3f} -> {last:.3f} (chance: {chance:.3f})"
    return {"curve": curve[::stride], "every": stride, "first": first, "last": last, "chance": chance,
            "flat": bool(stayed or at_chance), "sentence": sentence}


@torch.no_grad()
def own_accuracy(head, feats: torch.Tensor, labels: torch.Tensor, train_gallery: TrainGallery) -> float:
    """Rank-1 over the train gallery on the defender's own training set (feats, full-gallery labels)."""
    h = unwrap(head)
    target = train_gallery.remap[labels]
    keep = target >= 0
    pred = (h(feats[keep]) @ h(train_gallery.feats).T).argmax(1)
    return float((pred == target[keep]).float().mean()) if keep.any() else float("nan")


@dataclass
class DefenderRun:
    """What the defender trains and is scored with: the data, the run's parts (its gallery features) and config,
    the attacked scorer, the distinct universal designs [K,3,h,w], the splits to score, its steps, and the run's
    calibration (the held-apart photos and the frozen trunk's features of them, when the data has them)."""

    root: storage.Location
    parts: Parts
    cfg: RunConfig
    scorer: Scorer
    designs: torch.Tensor
    splits: list
    steps: int
    calibration: RunCalibration


def _adapted_calibration(run: DefenderRun, head) -> dict | None:
    """The adapted head is its own recogniser: its own run-wide thresholds (None without a calibration set)."""
    cal = run.calibration
    if cal.photos is None:
        return None
    with torch.no_grad():
        emb = head(cal.features.to(run.scorer.device)).cpu()
    return calibration.from_embeddings(cal.photos, emb)


def after_defender(run: DefenderRun, score_split, before: dict, log=print) -> dict:
    """Every row of run.splits again, scored by a head that fine-tuned on train identities wearing the designs.
    `score_split(split, scorer, calibrated)` scores one split (maskgan.evaluation.evaluate.split_report);
    `before`: {split: its result with the attacked head}, for the paired before/after deltas."""
    s, cfg = run.scorer, run.cfg
    log(f"defender: a fresh head fine-tunes {run.steps} steps (rate {cfg.eval.defender_lr:g}) on train identities "
        f"wearing the {len(run.designs)} distinct universal designs ...")
    train_gallery = TrainGallery.of(run.root, run.parts.gallery_feats)
    feats, labels = design_features(run.root, run.designs, s)
    curve: list = []
    head = adapt_head(s.head, s.generator, feats, labels, train_gallery, cfg.objective, steps=run.steps,
                      seed=cfg.train.seed, log=log, lr=cfg.eval.defender_lr, curve=curve)
    adapted = s.with_head(head, run.parts.gallery_feats)
    cal = _adapted_calibration(run, head)
    loss = loss_summary(curve, len(train_gallery.feats))
    log(f"defender: {loss['sentence']}")
    out: dict = {"steps": run.steps, "lr": cfg.eval.defender_lr, "designs": len(run.designs), "trained_on": "train",
                 "loss": loss, "calibration": cal,
                 "own_designs_rank1": {"before": own_accuracy(s.head, feats, labels, train_gallery),
                                       "after": own_accuracy(head, feats, labels, train_gallery),
                                       "photos": int(len(feats))},
                 "rows": {}, "impostors": {}}
    for split in run.splits:
        result = score_split(split, adapted, cal)
        for row, summary in result["rows"].items():
            b = before.get(split)
            if b is not None and row in b["_values"]:
                summary["paired_vs_before"] = scoring.paired(result["_values"][row], b["_values"][row],
                                                             b["_label"], seed=cfg.train.seed)
            out["rows"].setdefault(row, {})[split] = summary
        out["impostors"][split] = result["impostors"]
    return out
