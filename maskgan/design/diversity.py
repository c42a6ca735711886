"""How much a generator's designs differ: in pixels, in what they do to a face's embedding, in which
identities they send a probe to; and the mode-seeking term that pushes them apart in training.

The paper's last open point is that designs sampled from the latent space "do not vary much within a given
model". One design worn by thousands is one signature a vendor can learn, so evaluation measures it here.

Every function takes designs as [K,3,h,w] with any h, w (full frame or a mask-space panel alike) and knows
nothing of storage or models: `embed` (images -> embeddings) and `wear` (masked, alpha, one design [1,3,h,w] ->
faces) are passed in by maskgan.evaluation.evaluate, so the probes wear the designs exactly as its universal rows do, and
the tests plant a stub embedder.

The term (Mao et al., "Mode Seeking Generative Adversarial Networks", CVPR 2019): for latents z1, z2,
lz = mean|G(z1) - G(z2)| / mean|z1 - z2|, and the generator adds 1 / (lz + eps) to its loss, so it is paid for
image distance per unit of latent distance. Pairs are the batch's first half against its second half.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from maskgan.design import physical

EPS = 1e-5  # MSGAN's eps: keeps 1 / lz finite for a fully collapsed generator
# Two designs closer than this (mean |difference| per pixel, [0, 1] scale) are one design printed twice: about
# 1 % of the range, below what a printer or camera keeps apart (8-bit rounding alone is 0.2 %).
SAME_DESIGN = 0.01
PROBES = 8  # probes per split for the feature and identity measures: K x PROBES extra trunk passes per split


def _pairs(k: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.triu_indices(k, k, offset=1).unbind(0)


@torch.no_grad()
def pixel_diversity(designs: torch.Tensor) -> float:
    """Mean over pairs of designs of their mean absolute pixel difference ([0, 1] scale): 0 for K identical
    designs, about 1/3 for independent uniform noise. nan for fewer than two designs (no pair to compare)."""
    k = designs.shape[0]
    if k < 2:
        return float("nan")
    flat = designs.reshape(k, -1).float()
    i, j = _pairs(k)
    return float((flat[i] - flat[j]).abs().mean())


@torch.no_grad()
def distinct_designs(designs: torch.Tensor, tol: float = SAME_DESIGN) -> dict:
    """Which of K designs [K,3,h,w] are distinct: identical bytes, or a mean |difference| per pixel below
    `tol`, make one design (the first of them is kept). {"kept": indices, "distinct": n, "of": K,
    "min_distance": the smallest pairwise distance, "warning": a sentence when fewer than K are distinct}.
    Every "mean over the designs" is over the kept ones: four prints of two designs are two designs."""
    k = designs.shape[0]
    flat = designs.reshape(k, -1).float().cpu()
    kept: list[int] = []
    for i in range(k):
        if all(not torch.equal(flat[i], flat[j]) and float((flat[i] - flat[j]).abs().mean()) >= tol for j in kept):
            kept.append(i)
    dist = [float((flat[i] - flat[j]).abs().mean()) for i, j in zip(*_pairs(k))] if k > 1 else []
    warning = ""
    if len(kept) < k:
        warning = (f"only {len(kept)} distinct of {k} universal designs (the smallest pairwise difference is "
                   f"{min(dist):.4f} per pixel); figures over the designs count each distinct design once")
    return {"kept": kept, "distinct": len(kept), "of": k, "min_distance": min(dist) if dist else float("nan"),
            "tolerance": tol, "warning": warning}


@torch.no_grad()
def worn_embeddings(designs: torch.Tensor, masked: torch.Tensor, alpha: torch.Tensor, embed, wear) -> torch.Tensor:
    """[P,K,D]: each of P probes wearing each of K designs, embedded. `wear(masked, alpha, design[1,3,h,w])`
    composites one design onto every probe; `embed(faces)` gives [P,D]."""
    return torch.stack([embed(wear(masked, alpha, d.unsqueeze(0))).float() for d in designs], 1)


def feature_spread(emb: torch.Tensor) -> float:
    """Mean over probes of the mean pairwise cosine distance (1 - cos) between one probe's K embeddings."""
    k = emb.shape[1]
    if k < 2:
        return float("nan")
    unit = F.normalize(emb.float(), dim=-1)
    i, j = _pairs(k)
    # clamp: identical embeddings give 1 - cos of about -1e-8 in fp32 (a distance is never negative)
    return float((1 - (unit[:, i] * unit[:, j]).sum(-1)).clamp(min=0).mean())


def identity_counts(emb: torch.Tensor, gallery_emb: torch.Tensor) -> torch.Tensor:
    """[P]: per probe, how many distinct identities (nearest gallery embedding by cosine) its K designs give."""
    pred = (F.normalize(emb.float(), dim=-1) @ F.normalize(gallery_emb.float(), dim=-1).T).argmax(-1)  # [P,K]
    return torch.tensor([len(torch.unique(row)) for row in pred])


def feature_diversity(designs, masked, alpha, embed, wear) -> float:
    """How differently the designs move a face's embedding: mean pairwise cosine distance between the K
    embeddings of one probe wearing each design, averaged over the probes."""
    return feature_spread(worn_embeddings(designs, masked, alpha, embed, wear))


def distinct_identities(designs, masked, alpha, embed, wear, gallery_emb) -> dict:
    """Per probe, how many distinct identities the K designs send it to: {"mean", "max"} over the probes."""
    counts = identity_counts(worn_embeddings(designs, masked, alpha, embed, wear), gallery_emb)
    return {"mean": float(counts.float().mean()), "max": int(counts.max())}


def measure(designs, masked, alpha, embed, wear, gallery_emb) -> dict:
    """The three measures from one set of embeddings (one trunk pass per probe and design), for report.json,
    with how many of the K are distinct (`distinct_designs`): a mean over pairs that mixes zeros from copies
    with large differences reads as diverse, so the figures travel as "n distinct of K" with the smallest pair."""
    unique = distinct_designs(designs)
    emb = worn_embeddings(designs, masked, alpha, embed, wear)
    counts = identity_counts(emb, gallery_emb)
    return {"designs": int(designs.shape[0]), "distinct": unique["distinct"], "min_distance": unique["min_distance"],
            "warning": unique["warning"], "probes": int(masked.shape[0]), "pixel": pixel_diversity(designs),
            "feature": feature_spread(emb),
            "distinct_identities": {"mean": float(counts.float().mean()), "max": int(counts.max())}}


def protection_spread(per_design: list[dict]) -> dict:
    """max - min over the designs of each figure the universal row summarises (scoring.flat's keys): how much
    protection depends on which design a wearer happens to print."""
    out = {}
    for key in per_design[0] if per_design else ():
        vals = torch.tensor([d[key] for d in per_design], dtype=torch.float64)
        vals = vals[torch.isfinite(vals)]
        out[key] = float(vals.max() - vals.min()) if vals.numel() else float("nan")
    return out


def mode_seeking(designs: torch.Tensor, z: torch.Tensor, eps: float = EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """(1 / (lz + eps), lz): MSGAN's term and its ratio, pairing the batch's first half with its second half.
    lz is per pair mean|G(z1) - G(z2)| / mean|z1 - z2|, averaged over the pairs; an odd batch's last design
    sits out. Needs at least two designs."""
    n = designs.shape[0] // 2
    if n == 0:
        raise ValueError("mode_seeking: needs a batch of at least 2 designs")
    d, zf = (physical.at_least_fp32(t.reshape(t.shape[0], -1)) for t in (designs, z))
    lz = ((d[:n] - d[n:2 * n]).abs().mean(1) / (zf[:n] - zf[n:2 * n]).abs().mean(1)).mean()
    return 1 / (lz + eps), lz


def wearer_seeking(mine: torch.Tensor, others: torch.Tensor, eps: float = EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """(1 / (lc + eps), lc) for a conditional generator: mine[i] and others[i] are designs from ONE latent for two
    different wearers; lc is their mean absolute pixel difference (averaged over the pairs). The mode-seeking
    term pays for distance per unit of latent distance, which a conditional generator can earn from the latent
    alone; this one pays it for differing across people. Not divided by the wearers' feature distance: trunk
    features of different faces are nearly parallel (cosine 0.9997 with a random trunk), so that ratio would
    be dominated by the noise of a tiny denominator."""
    a, b = (physical.at_least_fp32(t.reshape(t.shape[0], -1)) for t in (mine, others))
    lc = (a - b).abs().mean(1).mean()
    return 1 / (lc + eps), lc
