"""Evaluation: identification accuracy over the FULL gallery, per split, for each way of covering the face
(the rows, and what each probe wears in them: maskgan.design.wearing).

`accuracy` (rank-1, with a probe-bootstrap `ci95`; `chance` is 1 / gallery size) is today's table; `rows`
adds, per row and split, what `maskgan.evaluation.scoring` measures: verification at FAR 1e-2 / 1e-3 (thresholds fixed per
recogniser per run on a held-apart calibration set: maskgan.evaluation.calibration; mean cosine to the own gallery
photo, dodging), rank-1/rank-5, hubness, Wilson and identity-bootstrap intervals, and the paired differences
to `original_mask` and to the best plain control on the same probes. `diversity` says, per split, how much the
K universal designs differ (maskgan.design.diversity: pixels, embeddings, identities, spread of protection).

This fixes the paper's two evaluation bugs: probes are scored against every identity (not the current
batch), and labels index the one gallery that all splits share (train/test ids cannot drift apart).
"""

from __future__ import annotations

import numpy as np
import torch

from data_loader import shards, storage
from maskgan.config import RunConfig
from maskgan.design import design_file, diversity, palette, printability
from maskgan.design.physical import design_hw
from maskgan.design.wearing import (CONTROLS, FOR_PERSON, PHYSICAL, PHYSICAL_CONTROLS, ROWS, UNIVERSAL, UNIVERSAL_K,
                                    designs_png, for_person_latents, mask_space, person_designs, universal_designs,
                                    with_physical_controls, worn)
from maskgan.evaluation import calibration, defender, embedders, scoring, transfer, verdicts
from maskgan.evaluation.validation import score_probes
from maskgan.models.ops import to_float_images, trunk_features, unwrap
from maskgan.run import build, checkpoints


def bootstrap_ci(correct: np.ndarray, n_boot: int = 1000, seed: int = 0) -> list[float]:
    """Today's `ci95`: the probe bootstrap (the identity bootstrap in `rows` is the honest one)."""
    return scoring.probe_bootstrap(correct, n_boot=n_boot, seed=seed)


def split_report(root: storage.Location, split: str, rows, designs: dict | None = None, seed: int = 0,
                 calibrated: dict | None = None, distinct: list[int] | None = None, **models) -> dict:
    """One split, scored on `rows` (which must include unmasked and original_mask) and on fixed `designs`.

    Verification thresholds: `calibrated`, this recogniser's run-wide thresholds from the held-apart
    calibration set (maskgan.evaluation.calibration). Without one (data with no calibration or adapt set) they fall back
    to this split's impostor pairs of UNMASKED photos (marked held_apart: false). Design-wearing probes never
    enter a calibration, so an attack cannot move its own bar. Designs named 'universal/<i>' are aggregated
    into a `universal` row (mean, worst, best over the `distinct` ones: every design when None)."""
    designs = designs or {}
    names = list(rows) + list(designs)
    scored, impostor = score_probes(root, split, names, seed=seed, designs=designs, **models)
    kept = {g: distinct for g in (UNIVERSAL, PHYSICAL)} if distinct is not None else None
    out = scoring.summarise_rows(scored, scoring.calibrated(impostor) if calibrated is None else calibrated,
                                 int(models["gallery_emb"].shape[0]), list(designs),
                                 (UNIVERSAL, PHYSICAL, FOR_PERSON), seed=seed, distinct=kept, controls=tuple(CONTROLS))
    return {**out, "scored": scored}


@torch.no_grad()
def split_diversity(root: storage.Location, split: str, fixed: torch.Tensor, probes: int = diversity.PROBES,
                    **models) -> dict:
    """The K designs' diversity (maskgan.design.diversity) on the first `probes` probes of `split`: pixels, the
    trunk-and-head embedding of each probe wearing each design, the identities they are sent to."""
    batch = next(shards.iter_set(root, split, columns=["label", "size", "masked"]))
    masked = to_float_images(torch.from_numpy(batch["masked"][:probes])).to(models["device"])
    trunk, head = models["trunk"], unwrap(models["head"])
    return diversity.measure(fixed, masked, mask_space(models["projector"], masked),
                             lambda faces: head(trunk_features(trunk, faces)), worn, models["gallery_emb"])


@torch.no_grad()
def across_people(root: storage.Location, split: str, z: torch.Tensor, probes: int = diversity.PROBES,
                  **models) -> dict:
    """A conditional generator's designs for the first `probes` people of `split` from one latent z [1, D]:
    how much they differ (pixel diversity, 0 when it ignores the wearer), and whether the same person gets the
    same design again (max |difference| of a second pass; 0 for a deterministic generator)."""
    batch = next(shards.iter_set(root, split, columns=["label", "size", "unmasked"]))
    unmasked = to_float_images(torch.from_numpy(batch["unmasked"][:probes])).to(models["device"])
    cond = trunk_features(models["trunk"], unmasked)
    designs = person_designs(models["generator"], z, cond)
    again = person_designs(models["generator"], z, cond)
    return {"people": int(designs.shape[0]), "pixel": diversity.pixel_diversity(designs),
            "same_person_max_diff": float((designs - again).abs().max())}


def score_design(root: storage.Location, split: str, design: torch.Tensor, seed: int = 0,
                 calibrated: dict | None = None, **models) -> dict:
    """The full row (verification, hubness, intervals, paired vs original_mask and the best plain control) of
    ONE given design worn by every probe of `split`, e.g. a PNG read back from disk through design_from_png, at
    the run's thresholds (`calibrated`, else calibrated here as evaluation calibrates them)."""
    if calibrated is None:
        calibrated = run_calibration(root, models)[1]
    return split_report(root, split, ("unmasked", "original_mask", *CONTROLS), {"design": design}, seed=seed,
                        calibrated=calibrated, **models)["rows"]["design"]


def run_calibration(root: storage.Location, models: dict) -> tuple:
    """(the held-apart calibration photos, the attacked recogniser's run-wide thresholds, the frozen trunk's
    features of those photos: another head on the same trunk, the defender's, calibrates from them), or
    (None, None, None) when the data has no calibration set (scorers then calibrate per split)."""
    photos = calibration.load_photos(root)
    if photos is None:
        return None, None, None
    feats = calibration.features(photos, lambda x: trunk_features(models["trunk"], x), models["device"])
    with torch.no_grad():
        emb = unwrap(models["head"])(feats.to(models["device"])).cpu()
    return photos, calibration.from_embeddings(photos, emb), feats


def load_models(state: dict, ckpt_loc: storage.Location, device) -> tuple[RunConfig, storage.Location, dict]:
    """(config, data root, the `models` every scorer takes) of one checkpoint: the head and generator it holds."""
    cfg = checkpoints.config_of(state)
    root = build.data_root(cfg)
    parts = build.build(cfg, device, root)
    rec = parts.recognizer
    rec.head.load_state_dict(state["head"])
    checkpoints.check_surrogates(state, cfg, ckpt_loc.uri)
    for s, saved in zip(parts.surrogates, state.get("surrogates", [])):
        s.head.load_state_dict(saved["head"])
    generator = checkpoints.generator_from_checkpoint(state, ckpt_loc.uri).to(device).eval()
    with torch.no_grad():
        gallery_emb = rec.head(parts.gallery_feats)
    models = dict(trunk=rec.trunk, head=rec.head, projector=parts.projector, generator=generator,
                  latent_dim=state["arch"]["latent_dim"], gallery_emb=gallery_emb, device=device,
                  physical=cfg.physical)
    return cfg, root, {**models, "_parts": parts}


def _scorers(models: dict) -> dict:
    return {k: v for k, v in models.items() if not k.startswith("_")}


def evaluate_checkpoint(state: dict, ckpt_loc: storage.Location, log=print, splits=shards.SPLITS,
                        universal_k: int = UNIVERSAL_K, defender_steps: int | None = None,
                        cache_dir: str | None = None, recognizers=()) -> dict:
    """The report of exactly this checkpoint (nothing written; `_designs_png` holds designs.png's bytes).
    With cfg.eval.held_out, `recognizers` holds the recogniser x row matrix of the held-out splits (dlib's
    descriptors cached under `cache_dir`, else a temporary folder). `defender_steps` None: cfg.eval's."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cfg, root, models = load_models(state, ckpt_loc, device)
    parts, models = models["_parts"], _scorers(models)
    manifest = shards.read_manifest(root)
    cfg = with_held_out(cfg, recognizers)
    cal_photos, calibrated, cal_feats = run_calibration(root, models)
    if calibrated is None:
        log("warning: the data has no calibration or adapt set: thresholds are calibrated per split on the "
            "split's own unmasked photos (not held apart)")
    fixed = universal_designs(models["generator"], models["latent_dim"], universal_k, seed=cfg.train.seed,
                              device=device)
    unique = diversity.distinct_designs(fixed) if universal_k else {"kept": [], "distinct": 0, "warning": ""}
    if unique["warning"]:
        log(f"warning: {unique['warning']}")
    designs = {f"{UNIVERSAL}/{i}": d.unsqueeze(0) for i, d in enumerate(fixed)}
    # conditional generators: every probe of every split (val/test identities never trained on included) also
    # wears its own design, from the universal rows' latents (the universal rows: the mean train-gallery face)
    person = for_person_latents(models["generator"], models["latent_dim"], universal_k, cfg.train.seed, device)
    accuracy: dict = {r: {"ci95": {}} for r in ROWS}
    rows: dict = {r: {} for r in (*ROWS, UNIVERSAL, PHYSICAL, *PHYSICAL_CONTROLS, *([FOR_PERSON] if person else []))}
    impostors: dict = {}
    spread: dict = {}  # per split: how the K universal designs differ
    # A split with no probes (a small identity tree's stable-hash split can leave one empty) has nothing to
    # score: it is left out and said so, rather than reported as NaN rows or failing where a batch is expected.
    present = [s for s in splits if s in manifest["sets"] and manifest["sets"][s]["rows"]]
    for split in sorted(set(splits) & set(manifest["sets"]) - set(present)):
        log(f"{split}: no probes in the data; not scored")
    scored_before = {}
    for split in present:
        log(f"evaluating {split} probes ({manifest['sets'][split]['rows']}) x {len(ROWS)} rows "
            f"+ {universal_k} universal designs ({unique['distinct']} distinct) ...")
        result = split_report(root, split, ROWS, {**with_physical_controls(designs, split), **person},
                              seed=cfg.train.seed, calibrated=calibrated, distinct=unique["kept"], **models)
        scored_before[split] = result
        for row in ROWS:
            correct = result["scored"][row].correct
            accuracy[row][split] = float(correct.mean()) if correct.size else float("nan")
            accuracy[row]["ci95"][split] = bootstrap_ci(correct)
        for row, summary in result["rows"].items():
            rows.setdefault(row, {})[split] = summary
        impostors[split] = result["impostors"]
        if universal_k:
            spread[split] = {**split_diversity(root, split, fixed, **models), "protection_spread":
                             diversity.protection_spread([rows[UNIVERSAL][split]["per_design"][i]
                                                          for i in unique["kept"]])}
            if person:
                spread[split]["across_people"] = across_people(root, split, person[f"{FOR_PERSON}/0"], **models)
    rows = {r: v for r, v in rows.items() if v}
    n = int(models["gallery_emb"].shape[0])
    thr = (calibrated or next(iter(impostors.values()), {"thresholds": {}}))["thresholds"]
    report = {
        "recognizer_weights": cfg.model.recognizer_weights,
        "recognizer": parts.recognizer.desc,
        "illustrative_only": not parts.recognizer.desc.get("pretrained", False),
        # MaskedFace-Net data: each probe is its gallery photo with a mask drawn on (data_loader.prepare)
        "self_match": bool(manifest.get("self_match", False)),
        # what the attacked facenet saw of each photo (data.face_crop): a face box (fractions) or the whole photo
        "face_crop": {"mode": cfg.data.face_crop, "box": parts.recognizer.trunk.face_box},
        "experiment": cfg.objective.experiment,
        "generator": state["arch"]["generator"],
        "epoch": state["epoch"],
        "checkpoint": ckpt_loc.uri,
        "data": cfg.data.uri,
        "gallery_size": n,
        "chance": 1.0 / n,
        "accuracy": accuracy,
        "rows": rows,
        "impostors": impostors,
        # thresholds fixed per recogniser per run (maskgan.evaluation.calibration), with their pair counts
        "calibration": {"attacked": calibrated or {"held_apart": False, "source": "per-split unmasked probes"}},
        "diversity": spread,
        "fars": list(thr),
        "hub_share": scoring.HUB_SHARE,
        "universal_k": universal_k,
        "universal_distinct": {k: unique[k] for k in ("kept", "distinct", "min_distance", "warning") if k in unique},
        "universal_seed": cfg.train.seed,  # universal_designs(generator, latent_dim, k, seed) rebuilds them exactly
    }
    report["printability"] = printability.report(
        printability.design_rows(models["generator"], models["latent_dim"], fixed[unique["kept"]], CONTROLS,
                                 seed=cfg.train.seed), palette.load(cfg.objective.palette))
    held_out = [s for s in present if s != "train"]
    if cfg.eval.held_out and held_out:
        columns = [embedders.attacked(models["trunk"], models["head"], f"{cfg.model.recognizer_weights} trunk + the "
                                      "head the generator attacked")]
        columns += [embedders.attacked(s.trunk, s.head, f"surrogate {s.spec}: its trunk + the "
                                       "head the generator attacked with the others", name=s.spec)
                    for s in parts.surrogates]
        columns += [embedders.from_spec(s, device, cfg.data.endpoint_url, cache_dir,
                                        build.face_crop(cfg.data.face_crop, s, manifest, root.uri), root)
                    for s in cfg.eval.held_out]
        report["recognizers"] = transfer.matrix(root, held_out, designs, columns, cfg.eval.max_probes,
                                                cfg.train.seed, models["projector"], device, log=log,
                                                calibration_photos=cal_photos, distinct=unique["kept"], controls=True,
                                                known={"attacked": calibrated} if calibrated else None)
        report["calibration"].update({n: c["calibration"] for n, c in report["recognizers"]["columns"].items()
                                      if n != "attacked"})
    steps = cfg.eval.defender_steps if defender_steps is None else defender_steps
    if steps and held_out and "train" in manifest["sets"]:
        report["after_defender"] = defender.after_defender(
            defender.DefenderRun(root, parts, cfg, models, fixed[unique["kept"]], held_out, steps, cal_photos,
                                 cal_feats),
            lambda split, **adapted: split_report(root, split, ROWS, with_physical_controls(designs, split),
                                                  seed=cfg.train.seed, distinct=unique["kept"], **adapted),
            scored_before, log)
    report["verdicts"] = verdicts.all_verdicts(report, "test" if "test" in present else (present or ["-"])[-1])
    report["_designs_png"] = designs_png(root, models, seed=cfg.train.seed)
    return report


def with_held_out(cfg: RunConfig, recognizers) -> RunConfig:
    """cfg with `recognizers` (evaluate --recognizers) added to eval.held_out, validated like the config's own
    (one that the run attacked is refused in one line)."""
    extra = [s for s in recognizers if s not in cfg.eval.held_out]
    return cfg.replace(eval={"held_out": [*cfg.eval.held_out, *extra]}) if extra else cfg


def score_design_file(run_uri: str, design_uri: str, log=print, splits=shards.SPLITS) -> dict:
    """{split: the full row} of the design PNG at `design_uri` (read back from disk or s3://), worn by every probe
    of every split, scored by the run's latest checkpoint. A PNG of another size is one line naming the file."""
    loc = storage.resolve(design_uri)
    design = design_file.read(design_uri)[0]  # the one design-file reader (print and check use it too), first
    run = storage.resolve(run_uri)
    state, ckpt_loc = checkpoints.latest_checkpoint(run, log=log)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cfg, root, models = load_models(state, ckpt_loc, device)
    models = _scorers(models)
    design = design.to(device)
    h, w = design_hw(build.image_size(root))
    if tuple(design.shape[-2:]) != (h, w):
        raise shards.ShardError(f"{loc.uri}: design is {design.shape[-1]}x{design.shape[-2]} pixels, this run's "
                                f"mask-space designs are {w}x{h}")
    manifest = shards.read_manifest(root)
    calibrated = run_calibration(root, models)[1]
    return {split: score_design(root, split, design, seed=cfg.train.seed, calibrated=calibrated, **models)
            for split in splits if split in manifest["sets"]}
