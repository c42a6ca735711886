"""The recogniser guard: a trial ranks by how well its designs fool the recogniser only while that recogniser still
recognises people (see tune/sweep.py). Floors come from the untouched recogniser's accuracy on the same probes.
"""

from __future__ import annotations

import json

from data_loader import storage
from maskgan.config import RunConfig
from maskgan.evaluation.scorer import Scorer
from maskgan.evaluation.validation import score_set
from maskgan.run import build
from tune.space import GUARD_ROWS, Guard

METRIC = "objective"  # what the schedulers rank (mode min)
TIME_ATTR = "epochs_done"  # epochs finished in the trial's train run (survives restarts, unlike Tune's iteration)


def guard_floors(baseline: dict, guard: Guard) -> dict:
    """{row: the lowest val accuracy that still counts as a working recogniser}."""
    return {row: max(guard.min_accuracy, guard.min_ratio * float(baseline.get(row) or 0.0)) for row in guard.rows}


def guard_ok(metrics: dict, floors: dict) -> bool:
    return all(isinstance(metrics.get(f"acc/val/{row}"), (int, float)) and metrics[f"acc/val/{row}"] >= floor
               for row, floor in floors.items())


def guarded(metrics: dict, floors: dict) -> dict:
    """The scheduling metrics for one report: epochs done, whether the recogniser survived, the objective."""
    generated = metrics.get("acc/val/generated")
    ok = generated is not None and guard_ok(metrics, floors)
    return {TIME_ATTR: int(metrics.get("epoch", -1)) + 1, "guard/ok": bool(ok),
            METRIC: float(generated) if ok else 1.0}


def accuracy_before_training(cfg: RunConfig, rows=GUARD_ROWS) -> dict:
    """Val accuracy of the untouched recogniser on the rows that need no generator: the same probes (count,
    seed) the worker scores each epoch, so the guard compares like with like."""
    import torch


    torch.set_num_threads(1)
    device = torch.device("cpu")
    root = build.data_root(cfg)
    parts = build.build(cfg, device, root)
    rec = parts.recognizer
    scorer = Scorer.of(rec.trunk, rec.head, parts.projector, parts.gallery_feats, device,
                       latent_dim=cfg.model.latent_dim)
    scored = score_set(root, "val", list(rows), scorer, max_probes=cfg.train.val_probes, seed=cfg.train.seed)
    return {row: float(v.mean()) if v.size else 0.0 for row, v in scored.items()}


def cached_baseline(cfg: RunConfig, rows, sweep_uri: str) -> dict:
    """accuracy_before_training, computed once per sweep for each (data, recogniser, probes) and shared by
    the trials (it scores val probes through the full recogniser, on the trial's CPU)."""
    import hashlib

    key = {"data": cfg.data.uri, "recognizer": cfg.model.recognizer_weights, "probes": cfg.train.val_probes,
           "seed": cfg.train.seed, "rows": sorted(rows)}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    loc = storage.resolve(sweep_uri, cfg.data.endpoint_url).join(f"guard_baseline-{digest}.json")
    if storage.exists(loc):
        cached = json.loads(storage.read_text(loc))
        if cached.get("key") == key:
            return cached["accuracy"]
    accuracy = accuracy_before_training(cfg, rows)
    storage.write_text(loc, json.dumps({"key": key, "accuracy": accuracy}))
    return accuracy
