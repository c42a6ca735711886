"""Scoring probes with a run's models: per-probe scores of each row (what each probe wears: maskgan.design.wearing)
against the full gallery. The per-epoch validation score of the training worker and every split of evaluation go
through `score_batch`, so training and evaluation measure the same thing."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from data_loader import shards, storage
from maskgan.design.wearing import (FOR_PERSON, ORIGINAL_PHYSICAL, PHYSICAL, PHYSICAL_SUFFIX, PROBE_COLUMNS,
                                    person_designs, probe_photos, row_images, worn, worn_physically)
from maskgan.evaluation import scoring
from maskgan.evaluation.scorer import Scorer
from maskgan.models.generators import is_conditional
from maskgan.models.ops import trunk_features


@dataclass
class Draws:
    """The seeded randomness of one scoring pass over a set: the generated rows' latents (`gen`) and the
    impostor pairs' picks (`rng`), both from the one seed, so a pass is reproducible probe for probe."""

    gen: torch.Generator
    rng: np.random.Generator

    @classmethod
    def seeded(cls, seed: int) -> "Draws":
        return cls(torch.Generator().manual_seed(seed), np.random.default_rng(seed))


@torch.no_grad()
def score_batch(batch: dict, rows, scorer: Scorer, draws: Draws, designs: dict | None = None,
                batch_index: int = 0, set_name: str | None = None) -> tuple[dict[str, scoring.ProbeScores], np.ndarray]:
    """Per-probe scores of each row for one decoded batch, and the impostor similarities of its unmasked photos.

    A row named in `designs` wears that one fixed design ([1,3,h,w] in [0,1], mask space) on every probe; a
    `PHYSICAL/<i>` row wears it through the held-out physical transforms (seeded by batch_index and i); a
    `FOR_PERSON/<i>` entry holds a latent [1, latent_dim] instead, and each probe wears the design a conditional
    generator makes from it and the probe's own unmasked photo. Every physical row of a batch (designs and
    their paired controls, ORIGINAL_PHYSICAL included) draws from the one seed of batch_index. `set_name` names
    the batch's images (set, batch_index, row) for the scorer's memo of trunk features."""
    s = scorer
    masked, unmasked, space = probe_photos(batch, s.projector, s.device)
    label = batch["label"].astype(np.int64)
    designs = designs or {}
    # a conditional generator's cond: the trunk features of each probe's own unmasked photo
    cond = trunk_features(s.trunk, unmasked) if s.generator is not None and is_conditional(s.generator) else None
    out, impostor = {}, np.zeros(0, np.float32)
    for row in rows:
        if row.startswith(FOR_PERSON + "/"):
            imgs = worn(masked, space, person_designs(s.generator, designs[row].to(s.device), cond))
        elif row.startswith(PHYSICAL + "/") or row.endswith(PHYSICAL_SUFFIX):
            design = None if row == ORIGINAL_PHYSICAL else designs[row].to(s.device)
            imgs = worn_physically(masked, space, design, batch_index, s.physical)
        elif row in designs:
            imgs = worn(masked, space, designs[row].to(s.device))
        else:
            imgs = row_images(row, masked, unmasked, space, s.generator, s.latent_dim, draws.gen, cond)
        key = None if set_name is None else (set_name, batch_index, row)
        sims = (s.embed(imgs, key).float() @ s.gallery_emb.float().T).cpu().numpy()
        out[row] = scoring.probe_scores(sims, label)
        if row == "unmasked":
            impostor = scoring.impostor_similarities(sims, label, draws.rng)
    return out, impostor


def score_probes(root: storage.Location, set_name: str, rows, scorer: Scorer, designs: dict | None = None,
                 max_probes: int | None = None, seed: int = 0) -> tuple[dict[str, scoring.ProbeScores], np.ndarray]:
    """Every probe of a set (or the first `max_probes`), scored on each row; plus its impostor similarities."""
    draws = Draws.seeded(seed)
    parts: dict[str, list] = {r: [] for r in rows}
    impostors = []
    for index, batch in enumerate(shards.iter_first(root, set_name, max_probes, PROBE_COLUMNS)):
        scored, impostor = score_batch(batch, rows, scorer, draws, designs, batch_index=index, set_name=set_name)
        for row, s in scored.items():
            parts[row].append(s)
        impostors.append(impostor)
    imp = np.concatenate(impostors) if impostors else np.zeros(0, np.float32)
    return {r: scoring.ProbeScores.concat(v) for r, v in parts.items()}, imp


def score_set(root: storage.Location, set_name: str, rows, scorer: Scorer, max_probes: int | None = None,
              seed: int = 0) -> dict[str, np.ndarray]:
    """Per-probe identification correctness (bool) of each row: the quick per-epoch score."""
    scored, _ = score_probes(root, set_name, rows, scorer, max_probes=max_probes, seed=seed)
    return {r: s.correct for r, s in scored.items()}
