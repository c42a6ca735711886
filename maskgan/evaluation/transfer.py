"""Do the designs transfer? The recogniser x row matrix: the same probes, wearing the same universal designs and
the plain controls, scored by the recogniser the generator attacked and by held-out ones it never saw
(maskgan.evaluation.embedders).

Each recogniser is its own deployed system: it embeds the probes and the gallery (unmasked gallery photos, each
its own twin) itself, and its verification thresholds are fixed for the run on ITS impostor pairs of the
held-apart calibration photos (maskgan.evaluation.calibration; per split on its unmasked probes when the data has none).
Every number comes from the functions maskgan.evaluation.evaluate uses (scoring.summarise_rows), so the attacked column here
is evaluate's ruler on the first `max_probes` probes.

The transfer line of a recogniser: universal dodging minus original_mask dodging on the same probes, with its
identity-bootstrap interval, and the same minus the best plain control's. Positive: the designs make this
recogniser reject its own people more often than the plain mask (or a plain panel) does; around 0: they do not
transfer.
"""

from __future__ import annotations

import numpy as np
import torch

from data_loader import shards, storage
from maskgan.design.wearing import CONTROLS, PROBE_COLUMNS, UNIVERSAL, probe_photos, worn
from maskgan.evaluation import calibration, scoring
from maskgan.evaluation.embedders import Embedder
from maskgan.models.ops import to_float_images
from maskgan.models.zoo_surrogate import landmarks_column

ROWS = ("unmasked", "original_mask")  # the rows every column needs: calibration fallback and the paired baseline


@torch.no_grad()
def gallery_embeddings(root: storage.Location, embedders: list[Embedder], device) -> dict:
    """{name: (emb [G,D] in label order, found [G])} of the gallery's unmasked photos, each its own twin."""
    parts: dict = {e.name: ([], []) for e in embedders}
    labels = []
    for batch in shards.iter_set(root, "gallery", columns=["label", "size", "unmasked", *_landmarks(embedders)]):
        photos = to_float_images(torch.from_numpy(batch["unmasked"])).to(device)
        labels.append(batch["label"])
        marks = landmarks_column(batch, len(photos)) if _landmarks(embedders) else None
        for e in embedders:
            emb, found = e.embed(photos, photos, marks) if e.wants_landmarks else e.embed(photos, photos)
            parts[e.name][0].append(emb.float().cpu())
            parts[e.name][1].append(np.asarray(found, bool))
    order = np.argsort(np.concatenate(labels))
    return {n: (torch.cat(embs)[torch.from_numpy(order)], np.concatenate(found)[order])
            for n, (embs, found) in parts.items()}


@torch.no_grad()
def score_recognizers(root: storage.Location, split: str, designs: dict, embedders: list[Embedder],
                      max_probes: int, seed: int, projector, device, gallery: dict | None = None,
                      calibrated: dict | None = None, distinct: list[int] | None = None,
                      controls: bool = False) -> dict:
    """{recogniser name: {impostors, rows, found}} for the first `max_probes` probes of `split`, on the rows
    unmasked, original_mask, the plain controls and each fixed design of `designs` ({'universal/<i>':
    [1,3,h,w]}, worn in mask space); the `distinct` universal designs aggregated into a `universal` row as
    evaluate.split_report does. `calibrated`: {name: that recogniser's run-wide thresholds}; `controls`: score
    the plain controls too (each delta is then also taken against the best of them)."""
    gallery = gallery if gallery is not None else gallery_embeddings(root, embedders, device)
    designs = {**(_control_designs(designs) if controls else {}), **designs}
    names = list(ROWS) + list(designs)
    parts = {e.name: {r: [] for r in names} for e in embedders}
    impostors = {e.name: [] for e in embedders}
    found = {e.name: [] for e in embedders}
    rngs = {e.name: np.random.default_rng(seed) for e in embedders}
    for batch in shards.iter_first(root, split, max_probes, PROBE_COLUMNS + _landmarks(embedders)):
        masked, unmasked, space = probe_photos(batch, projector, device)
        label = batch["label"].astype(np.int64)
        marks = landmarks_column(batch, len(label)) if _landmarks(embedders) else None
        for row in names:
            imgs = {"unmasked": unmasked, "original_mask": masked}.get(row)
            if imgs is None:
                imgs = worn(masked, space, designs[row].to(device))
            for e in embedders:
                emb, f = e.embed(imgs, unmasked, marks) if e.wants_landmarks else e.embed(imgs, unmasked)
                sims = (emb.float().cpu() @ gallery[e.name][0].T).numpy()
                parts[e.name][row].append(scoring.probe_scores(sims, label))
                if row == "unmasked":
                    impostors[e.name].append(scoring.impostor_similarities(sims, label, rngs[e.name]))
                    found[e.name].append(np.asarray(f, bool))
    out = {}
    for e in embedders:
        scored = {r: scoring.ProbeScores.concat(v) for r, v in parts[e.name].items()}
        imp = np.concatenate(impostors[e.name]) if impostors[e.name] else np.zeros(0, np.float32)
        cal = (calibrated or {}).get(e.name)
        result = scoring.summarise_rows(scored, imp if cal is None else cal, int(gallery[e.name][0].shape[0]),
                                        list(designs), (UNIVERSAL,), seed=seed,
                                        distinct=None if distinct is None else {UNIVERSAL: distinct},
                                        controls=tuple(CONTROLS))
        result = {k: v for k, v in result.items() if not k.startswith("_")}
        if e.reports_found:
            probes = np.concatenate(found[e.name]) if found[e.name] else np.zeros(0, bool)
            result["found"] = {"probes": float(probes.mean()) if probes.size else float("nan"),
                               "gallery": float(gallery[e.name][1].mean())}
        out[e.name] = result
    return out


def _control_designs(designs: dict) -> dict:
    """The plain controls as flat panels shaped like the designs ({} when there is no design to copy)."""
    some = next(iter(designs.values()), None)
    if some is None:
        return {}
    return {c: torch.tensor(rgb, device=some.device).view(1, 3, 1, 1).expand_as(some).clone()
            for c, rgb in CONTROLS.items()}


def _calibration_embed(e: Embedder):
    """e's embeddings of unmasked calibration photos (each its own twin; a zoo model also gets the landmarks)."""
    if e.wants_landmarks:
        return lambda x, marks: e.embed(x, x, marks)[0]
    return lambda x: e.embed(x, x)[0]


def _landmarks(embedders: list[Embedder]) -> list[str]:
    """["landmarks"] when a column aligns from the data's landmarks (a zoo model), else []."""
    return ["landmarks"] if any(e.wants_landmarks for e in embedders) else []


def transfer_line(rows: dict) -> dict:
    """{dodging@<far>: {diff, identity95}}: universal minus original_mask dodging on the same probes; and under
    `vs_best_control`, universal minus the best plain control (`control` names it)."""
    uni = rows.get(UNIVERSAL, {})
    out = {k: v for k, v in uni.get("paired_vs_original_mask", {}).items() if k.startswith("dodging@")}
    best = uni.get("paired_vs_best_control")
    if best:
        out["vs_best_control"] = {"control": best["control"],
                                  **{k: v for k, v in best["diff"].items() if k.startswith("dodging@")}}
    return out


def matrix(root: storage.Location, splits, designs: dict, embedders: list[Embedder], max_probes: int, seed: int,
           projector, device, log=print, calibration_photos=None, distinct: list[int] | None = None,
           controls: bool = False, known: dict | None = None) -> dict:
    """report["recognizers"]: per recogniser (attacked first) its role, label, its run-wide calibration (from
    `calibration_photos`, when the data has them; `known`: {name: a calibration already made}) and per split
    its rows and transfer line; `order` lists the columns."""
    log(f"recognisers: {', '.join(e.name for e in embedders)} on the first {max_probes} probes of "
        f"{', '.join(splits)} ...")
    gallery = gallery_embeddings(root, embedders, device)
    out: dict = {"order": [e.name for e in embedders], "max_probes": max_probes, "columns": {}}
    cal = dict(known or {})
    for e in embedders:
        if calibration_photos is not None and e.name not in cal:
            cal[e.name] = calibration.calibrate(calibration_photos, _calibration_embed(e), device,
                                                with_landmarks=e.wants_landmarks)
        out["columns"][e.name] = {"role": e.role, "desc": e.desc, "splits": {}, "transfer": {},
                                  "calibration": cal.get(e.name)}
        if e.provenance is not None:  # a real recogniser: where its weights came from, under which terms
            out["columns"][e.name]["provenance"] = e.provenance
    for split in splits:
        scored = score_recognizers(root, split, designs, embedders, max_probes, seed, projector, device, gallery,
                                   cal or None, distinct, controls)
        for name, result in scored.items():
            col = out["columns"][name]
            col["splits"][split] = result
            col["transfer"][split] = transfer_line(result["rows"])
    return out
