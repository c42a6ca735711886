"""Evaluation: identification accuracy over the FULL gallery, per split, for each way of covering the face.

Rows: `unmasked` (the probe photo without a mask), `original_mask` (as photographed), `generated` (the
generator's designs composited into the mask region), and control designs in the same region: `blue`,
`black`, `white`, `noise` (uniform noise). Each accuracy comes with a bootstrap 95 % interval; `chance` is
1 / gallery size.

This fixes the paper's two evaluation bugs: probes are scored against every identity (not the current
batch), and labels index the one gallery that all splits share (train/test ids cannot drift apart).
"""

from __future__ import annotations

import io
import json

import numpy as np
import torch

from data_loader import shards, storage
from maskgan import assembly
from maskgan.config import RunConfig
from maskgan.models.projector import composite
from maskgan.objective import identify, to_float_images, trunk_features, unwrap

ROWS = ("unmasked", "original_mask", "generated", "blue", "black", "white", "noise")
CONTROLS = {"blue": (140 / 255, 190 / 255, 225 / 255), "black": (0.0, 0.0, 0.0), "white": (1.0, 1.0, 1.0)}


@torch.no_grad()
def row_images(row: str, masked, unmasked, alpha, generator, latent_dim: int, gen: torch.Generator):
    if row == "unmasked":
        return unmasked
    if row == "original_mask":
        return masked
    n, _, s, _ = masked.shape
    if row == "generated":
        z = torch.randn(n, latent_dim, generator=gen).to(masked.device)
        d = unwrap(generator)(z)
    elif row == "noise":
        d = torch.rand(n, 3, s, s, generator=gen).to(masked.device)
    else:
        d = torch.tensor(CONTROLS[row], device=masked.device).view(1, 3, 1, 1).expand(n, 3, s, s)
    return composite(masked, alpha, d)


@torch.no_grad()
def score_batch(batch: dict, rows, *, trunk, head, projector, generator, latent_dim, gallery_emb,
                gen: torch.Generator, device) -> dict[str, np.ndarray]:
    """Per-probe correctness (bool) for each row, for one decoded batch."""
    masked = to_float_images(torch.from_numpy(batch["masked"])).to(device)
    unmasked = to_float_images(torch.from_numpy(batch["unmasked"])).to(device)
    alpha = projector(masked)
    label = torch.from_numpy(batch["label"].astype(np.int64)).to(device)
    out = {}
    for row in rows:
        imgs = row_images(row, masked, unmasked, alpha, generator, latent_dim, gen)
        pred = identify(head, trunk_features(trunk, imgs), gallery_emb)
        out[row] = (pred == label).cpu().numpy()
    return out


def score_set(root: storage.Location, set_name: str, rows, max_probes: int | None = None, seed: int = 0,
              **models) -> dict[str, np.ndarray]:
    gen = torch.Generator().manual_seed(seed)
    acc: dict[str, list] = {r: [] for r in rows}
    seen = 0
    for batch in shards.iter_set(root, set_name, columns=["label", "size", "masked", "unmasked"]):
        if max_probes is not None:
            batch = {k: v[: max_probes - seen] for k, v in batch.items()}
            if len(batch["label"]) == 0:
                break
        # projector alpha is needed for every design row; computed inside score_batch
        for row, ok in score_batch(batch, rows, gen=gen, **models).items():
            acc[row].append(ok)
        seen += len(batch["label"])
        if max_probes is not None and seen >= max_probes:
            break
    return {r: np.concatenate(v) if v else np.zeros(0, bool) for r, v in acc.items()}


def bootstrap_ci(correct: np.ndarray, n_boot: int = 1000, seed: int = 0) -> list[float]:
    if correct.size == 0:
        return [float("nan"), float("nan")]
    rng = np.random.default_rng(seed)
    means = rng.choice(correct.astype(np.float64), size=(n_boot, correct.size), replace=True).mean(1)
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def evaluate_run(run_uri: str, log=print, splits=shards.SPLITS) -> dict:
    """Full evaluation of a run's latest good checkpoint; writes report.json, report.md, designs.png."""
    run = storage.resolve(run_uri)
    state, ckpt_loc = assembly.latest_checkpoint(run, log=log)
    cfg = assembly.config_of(state)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    root = assembly.data_root(cfg)
    parts = assembly.build(cfg, device, root)
    rec, projector, gallery_feats = parts.recognizer, parts.projector, parts.gallery_feats
    rec.head.load_state_dict(state["head"])
    generator = assembly.generator_from_checkpoint(state, ckpt_loc.uri).to(device).eval()
    with torch.no_grad():
        gallery_emb = rec.head(gallery_feats)
    manifest = shards.read_manifest(root)
    models = dict(trunk=rec.trunk, head=rec.head, projector=projector, generator=generator,
                  latent_dim=state["arch"]["latent_dim"], gallery_emb=gallery_emb, device=device)

    accuracy: dict = {r: {"ci95": {}} for r in ROWS}
    for split in splits:
        if split not in manifest["sets"]:
            continue
        log(f"evaluating {split} probes ({manifest['sets'][split]['rows']}) x {len(ROWS)} rows ...")
        scored = score_set(root, split, ROWS, seed=cfg.train.seed, **models)
        for row in ROWS:
            accuracy[row][split] = float(scored[row].mean()) if scored[row].size else float("nan")
            accuracy[row]["ci95"][split] = bootstrap_ci(scored[row])
    n = int(gallery_emb.shape[0])
    report = {
        "recognizer_weights": cfg.model.recognizer_weights,
        "recognizer": rec.desc,
        "illustrative_only": not rec.desc.get("pretrained", False),
        "experiment": cfg.objective.experiment,
        "generator": state["arch"]["generator"],
        "epoch": state["epoch"],
        "checkpoint": ckpt_loc.uri,
        "data": cfg.data.uri,
        "gallery_size": n,
        "chance": 1.0 / n,
        "accuracy": accuracy,
    }
    storage.write_text(run.join("report.json"), json.dumps(report, indent=1, sort_keys=True))
    storage.write_text(run.join("report.md"), report_markdown(report))
    storage.write_bytes(run.join("designs.png"), designs_png(root, models, seed=cfg.train.seed))
    return report


def report_markdown(report: dict) -> str:
    lines = [f"# maskgan report: {report['experiment']} / {report['generator']} (epoch {report['epoch']})", ""]
    if report["illustrative_only"]:
        lines += ["**Illustrative only:** the recogniser has no real pretrained weights "
                  f"({report['recognizer_weights']}); these numbers say nothing about real face recognition.", ""]
    lines += [f"Identification accuracy over a gallery of {report['gallery_size']} identities "
              f"(chance {report['chance']:.2%}); 95 % bootstrap intervals in brackets.", "",
              "| row | train | val | test |", "|---|---|---|---|"]
    for row in ROWS:
        acc = report["accuracy"][row]
        cells = []
        for split in shards.SPLITS:
            if split in acc:
                lo, hi = acc["ci95"][split]
                cells.append(f"{acc[split]:.1%} [{lo:.1%}, {hi:.1%}]")
            else:
                cells.append("–")
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    lines += ["", "Rows: `unmasked` no mask; `original_mask` as photographed; `generated` the generator's designs in "
              "the mask region; `blue`/`black`/`white`/`noise` control designs in the same region.", ""]
    return "\n".join(lines)


@torch.no_grad()
def designs_png(root: storage.Location, models: dict, n: int = 8, seed: int = 0) -> bytes:
    """A grid: original masked faces (top) above the same faces wearing generated designs (bottom)."""
    from PIL import Image

    set_name = "test" if "test" in shards.read_manifest(root)["sets"] else "train"
    batch = next(shards.iter_set(root, set_name, columns=["label", "size", "masked", "unmasked"]))
    batch = {k: v[:n] for k, v in batch.items()}
    device = models["device"]
    masked = to_float_images(torch.from_numpy(batch["masked"])).to(device)
    alpha = models["projector"](masked)
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(masked.shape[0], models["latent_dim"], generator=gen).to(device)
    faces = composite(masked, alpha, unwrap(models["generator"])(z))
    top = torch.cat(list(masked), 2)
    bottom = torch.cat(list(faces), 2)
    grid = (torch.cat([top, bottom], 1).clamp(0, 1) * 255).byte().permute(1, 2, 0).cpu().numpy()
    buf = io.BytesIO()
    Image.fromarray(grid).save(buf, format="PNG")
    return buf.getvalue()
