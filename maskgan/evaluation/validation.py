"""Scoring probes with a run's models: per-probe scores of each row (what each probe wears: maskgan.design.wearing)
against the full gallery. The per-epoch validation score of the training worker and every split of evaluation go
through `score_batch`, so training and evaluation measure the same thing."""

from __future__ import annotations

import numpy as np
import torch

from data_loader import shards, storage
from maskgan.design.wearing import (FOR_PERSON, ORIGINAL_PHYSICAL, PHYSICAL, PHYSICAL_SUFFIX, PROBE_COLUMNS,
                                    person_designs, probe_photos, row_images, worn, worn_physically)
from maskgan.evaluation import scoring
from maskgan.models.generators import is_conditional
from maskgan.models.ops import trunk_features, unwrap


@torch.no_grad()
def score_batch(batch: dict, rows, *, trunk, head, projector, generator, latent_dim, gallery_emb,
                gen: torch.Generator, device, designs: dict | None = None,
                rng: np.random.Generator | None = None, batch_index: int = 0,
                physical=None) -> tuple[dict[str, scoring.ProbeScores], np.ndarray]:
    """Per-probe scores of each row for one decoded batch, and the impostor similarities of its unmasked photos.

    A row named in `designs` wears that one fixed design ([1,3,h,w] in [0,1], mask space) on every probe; a
    `PHYSICAL/<i>` row wears it through the held-out physical transforms (seeded by batch_index and i); a
    `FOR_PERSON/<i>` entry holds a latent [1, latent_dim] instead, and each probe wears the design a conditional
    generator makes from it and the probe's own unmasked photo. Every physical row of a batch (designs and
    their paired controls, ORIGINAL_PHYSICAL included) draws from the one seed of batch_index."""
    masked, unmasked, space = probe_photos(batch, projector, device)
    label = batch["label"].astype(np.int64)
    designs = designs or {}
    # a conditional generator's cond: the trunk features of each probe's own unmasked photo
    cond = trunk_features(trunk, unmasked) if generator is not None and is_conditional(generator) else None
    out, impostor = {}, np.zeros(0, np.float32)
    for row in rows:
        if row.startswith(FOR_PERSON + "/"):
            imgs = worn(masked, space, person_designs(generator, designs[row].to(device), cond))
        elif row.startswith(PHYSICAL + "/") or row.endswith(PHYSICAL_SUFFIX):
            design = None if row == ORIGINAL_PHYSICAL else designs[row].to(device)
            imgs = worn_physically(masked, space, design, batch_index, physical)
        elif row in designs:
            imgs = worn(masked, space, designs[row].to(device))
        else:
            imgs = row_images(row, masked, unmasked, space, generator, latent_dim, gen, cond)
        sims = (unwrap(head)(trunk_features(trunk, imgs)).float() @ gallery_emb.float().T).cpu().numpy()
        out[row] = scoring.probe_scores(sims, label)
        if row == "unmasked":
            impostor = scoring.impostor_similarities(sims, label, rng or np.random.default_rng(0))
    return out, impostor


def score_probes(root: storage.Location, set_name: str, rows, max_probes: int | None = None, seed: int = 0,
                 designs: dict | None = None, **models) -> tuple[dict[str, scoring.ProbeScores], np.ndarray]:
    """Every probe of a set (or the first `max_probes`), scored on each row; plus its impostor similarities."""
    gen, rng = torch.Generator().manual_seed(seed), np.random.default_rng(seed)
    parts: dict[str, list] = {r: [] for r in rows}
    impostors = []
    for index, batch in enumerate(shards.iter_first(root, set_name, max_probes, PROBE_COLUMNS)):
        scored, impostor = score_batch(batch, rows, gen=gen, designs=designs, rng=rng, batch_index=index, **models)
        for row, s in scored.items():
            parts[row].append(s)
        impostors.append(impostor)
    imp = np.concatenate(impostors) if impostors else np.zeros(0, np.float32)
    return {r: scoring.ProbeScores.concat(v) for r, v in parts.items()}, imp


def score_set(root: storage.Location, set_name: str, rows, max_probes: int | None = None, seed: int = 0,
              **models) -> dict[str, np.ndarray]:
    """Per-probe identification correctness (bool) of each row: the quick per-epoch score."""
    scored, _ = score_probes(root, set_name, rows, max_probes=max_probes, seed=seed, **models)
    return {r: s.correct for r, s in scored.items()}
