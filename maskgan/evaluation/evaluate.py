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

import dataclasses
from dataclasses import dataclass

import torch

from data_loader import shards, storage
from maskgan.config import RunConfig
from maskgan.design import design_file, diversity, palette, printability
from maskgan.design.physical import design_hw
from maskgan.design.wearing import (CONTROLS, FOR_PERSON, PHYSICAL, PHYSICAL_CONTROLS, ROWS, UNIVERSAL,
                                    for_person_latents, mask_space, person_designs, universal_designs,
                                    with_physical_controls, worn)
from maskgan.evaluation import defender, embedders, scoring, transfer, verdicts
from maskgan.evaluation.result import Report
from maskgan.evaluation.scorer import Loaded, RunCalibration, Scorer, TrunkMemo, load, run_calibration
from maskgan.evaluation.validation import score_probes
from maskgan.models.ops import to_float_images, trunk_features
from maskgan.run import build, checkpoints


def split_report(root: storage.Location, split: str, rows, scorer: Scorer, designs: dict | None = None,
                 seed: int = 0, calibrated: dict | None = None, distinct: list[int] | None = None) -> dict:
    """One split, scored on `rows` (which must include unmasked and original_mask) and on fixed `designs`.

    Verification thresholds: `calibrated`, this recogniser's run-wide thresholds from the held-apart
    calibration set (maskgan.evaluation.calibration). Without one (data with no calibration or adapt set) they fall back
    to this split's impostor pairs of UNMASKED photos (marked held_apart: false). Design-wearing probes never
    enter a calibration, so an attack cannot move its own bar. Designs named 'universal/<i>' are aggregated
    into a `universal` row (mean, worst, best over the `distinct` ones: every design when None)."""
    designs = designs or {}
    names = list(rows) + list(designs)
    scored, impostor = score_probes(root, split, names, scorer, designs=designs, seed=seed)
    kept = {g: distinct for g in (UNIVERSAL, PHYSICAL)} if distinct is not None else None
    out = scoring.summarise_rows(scored, scoring.calibrated(impostor) if calibrated is None else calibrated,
                                 scorer.gallery_size, list(designs), (UNIVERSAL, PHYSICAL, FOR_PERSON), seed=seed,
                                 distinct=kept, controls=tuple(CONTROLS))
    return {**out, "scored": scored}


@torch.no_grad()
def split_diversity(root: storage.Location, split: str, fixed: torch.Tensor, scorer: Scorer,
                    probes: int = diversity.PROBES) -> dict:
    """The K designs' diversity (maskgan.design.diversity) on the first `probes` probes of `split`: pixels, the
    trunk-and-head embedding of each probe wearing each design, the identities they are sent to."""
    batch = next(shards.iter_set(root, split, columns=["label", "size", "masked"]))
    masked = to_float_images(torch.from_numpy(batch["masked"][:probes])).to(scorer.device)
    return diversity.measure(fixed, masked, mask_space(scorer.projector, masked), scorer.embed, worn,
                             scorer.gallery_emb)


@torch.no_grad()
def across_people(root: storage.Location, split: str, z: torch.Tensor, scorer: Scorer,
                  probes: int = diversity.PROBES) -> dict:
    """A conditional generator's designs for the first `probes` people of `split` from one latent z [1, D]:
    how much they differ (pixel diversity, 0 when it ignores the wearer), and whether the same person gets the
    same design again (max |difference| of a second pass; 0 for a deterministic generator)."""
    batch = next(shards.iter_set(root, split, columns=["label", "size", "unmasked"]))
    unmasked = to_float_images(torch.from_numpy(batch["unmasked"][:probes])).to(scorer.device)
    cond = trunk_features(scorer.trunk, unmasked)
    designs = person_designs(scorer.generator, z, cond)
    again = person_designs(scorer.generator, z, cond)
    return {"people": int(designs.shape[0]), "pixel": diversity.pixel_diversity(designs),
            "same_person_max_diff": float((designs - again).abs().max())}


def score_design(root: storage.Location, split: str, design: torch.Tensor, scorer: Scorer, seed: int = 0,
                 calibrated: dict | None = None) -> dict:
    """The full row (verification, hubness, intervals, paired vs original_mask and the best plain control) of
    ONE given design worn by every probe of `split`, e.g. a PNG read back from disk through design_from_png, at
    the run's thresholds (`calibrated`, else calibrated here as evaluation calibrates them)."""
    if calibrated is None:
        calibrated = run_calibration(root, scorer).attacked
    return split_report(root, split, ("unmasked", "original_mask", *CONTROLS), scorer, {"design": design},
                        seed=seed, calibrated=calibrated)["rows"]["design"]


# ---- evaluate_checkpoint, step by step ------------------------------------------------------------------------


@dataclass
class Universal:
    """The K universal designs a run is judged on: `fixed` [K,3,h,w]; `unique` (diversity.distinct_designs: which
    of them are distinct); `designs` {'universal/<i>': [1,3,h,w]}; `person` {'for_person/<i>': latent} for a
    conditional generator (each probe wears the design made from its own photo), else {}."""

    fixed: torch.Tensor
    unique: dict
    designs: dict
    person: dict


@dataclass
class SplitScores:
    """What the splits' loop gathers: report.json's accuracy, rows, impostors and diversity, and each split's
    result with the attacked head (`before`: the defender's paired deltas compare with it)."""

    accuracy: dict
    rows: dict
    impostors: dict
    spread: dict
    before: dict


def _universal(loaded: Loaded, k: int, log) -> Universal:
    s, seed = loaded.scorer, loaded.cfg.train.seed
    fixed = universal_designs(s.generator, s.latent_dim, k, seed=seed, device=s.device)
    unique = diversity.distinct_designs(fixed) if k else {"kept": [], "distinct": 0, "warning": ""}
    if unique["warning"]:
        log(f"warning: {unique['warning']}")
    # conditional generators: every probe of every split (val/test identities never trained on included) also
    # wears its own design, from the universal rows' latents (the universal rows: the mean train-gallery face)
    person = for_person_latents(s.generator, s.latent_dim, k, seed, s.device)
    return Universal(fixed, unique, {f"{UNIVERSAL}/{i}": d.unsqueeze(0) for i, d in enumerate(fixed)}, person)


def _present(manifest: dict, splits, log) -> list[str]:
    """The splits that have probes. A split with none (a small identity tree's stable-hash split can leave one
    empty) has nothing to score: it is left out and said so, rather than reported as NaN rows or failing where a
    batch is expected."""
    present = [s for s in splits if s in manifest["sets"] and manifest["sets"][s]["rows"]]
    for split in sorted(set(splits) & set(manifest["sets"]) - set(present)):
        log(f"{split}: no probes in the data; not scored")
    return present


def _score_splits(loaded: Loaded, cal: RunCalibration, uni: Universal, present: list[str], log) -> SplitScores:
    """Every present split on every row and universal design, with the designs' diversity per split."""
    s, root, k = loaded.scorer, loaded.root, len(uni.fixed)
    rows_out: dict = {r: {} for r in (*ROWS, UNIVERSAL, PHYSICAL, *PHYSICAL_CONTROLS,
                                      *([FOR_PERSON] if uni.person else []))}
    out = SplitScores({r: {"ci95": {}} for r in ROWS}, rows_out, {}, {}, {})
    for split in present:
        log(f"evaluating {split} probes ({loaded.manifest['sets'][split]['rows']}) x {len(ROWS)} rows "
            f"+ {k} universal designs ({uni.unique['distinct']} distinct) ...")
        result = split_report(root, split, ROWS, s, {**with_physical_controls(uni.designs, split), **uni.person},
                              seed=loaded.cfg.train.seed, calibrated=cal.attacked, distinct=uni.unique["kept"])
        out.before[split] = result
        for row in ROWS:
            correct = result["scored"][row].correct
            out.accuracy[row][split] = float(correct.mean()) if correct.size else float("nan")
            out.accuracy[row]["ci95"][split] = scoring.probe_bootstrap(correct)  # the identity bootstrap: `rows`
        for row, summary in result["rows"].items():
            out.rows.setdefault(row, {})[split] = summary
        out.impostors[split] = result["impostors"]
        if k:
            per_design = out.rows[UNIVERSAL][split]["per_design"]
            out.spread[split] = {**split_diversity(root, split, uni.fixed, s), "protection_spread":
                                 diversity.protection_spread([per_design[i] for i in uni.unique["kept"]])}
            if uni.person:
                out.spread[split]["across_people"] = across_people(root, split, uni.person[f"{FOR_PERSON}/0"], s)
    out.rows = {r: v for r, v in out.rows.items() if v}
    return out


def _summary(state: dict, ckpt_loc: storage.Location, loaded: Loaded, cal: RunCalibration, uni: Universal,
             scores: SplitScores) -> dict:
    """report.json's keys from the scores (the recogniser matrix, defender and verdicts are added after)."""
    cfg, rec, n = loaded.cfg, loaded.parts.recognizer, loaded.scorer.gallery_size
    thr = (cal.attacked or next(iter(scores.impostors.values()), {"thresholds": {}}))["thresholds"]
    return {
        "recognizer_weights": cfg.model.recognizer_weights,
        "recognizer": rec.desc,
        "illustrative_only": not rec.desc.get("pretrained", False),
        # MaskedFace-Net data: each probe is its gallery photo with a mask drawn on (data_loader.prepare)
        "self_match": bool(loaded.manifest.get("self_match", False)),
        # what the attacked facenet saw of each photo (data.face_crop): a face box (fractions) or the whole photo
        "face_crop": {"mode": cfg.data.face_crop, "box": rec.trunk.face_box},
        "experiment": cfg.objective.experiment,
        "generator": state["arch"]["generator"],
        "epoch": state["epoch"],
        "checkpoint": ckpt_loc.uri,
        "data": cfg.data.uri,
        "gallery_size": n,
        "chance": 1.0 / n,
        "accuracy": scores.accuracy,
        "rows": scores.rows,
        "impostors": scores.impostors,
        # thresholds fixed per recogniser per run (maskgan.evaluation.calibration), with their pair counts
        "calibration": {"attacked": cal.attacked or {"held_apart": False, "source": "per-split unmasked probes"}},
        "diversity": scores.spread,
        "fars": list(thr),
        "hub_share": scoring.HUB_SHARE,
        "universal_k": len(uni.fixed),
        "universal_distinct": {k: uni.unique[k] for k in ("kept", "distinct", "min_distance", "warning")
                               if k in uni.unique},
        "universal_seed": cfg.train.seed,  # universal_designs(generator, latent_dim, k, seed) rebuilds them exactly
        "printability": printability.report(
            printability.design_rows(loaded.scorer.generator, loaded.scorer.latent_dim,
                                     uni.fixed[uni.unique["kept"]], CONTROLS, seed=cfg.train.seed),
            palette.load(cfg.objective.palette)),
    }


def _recognizer_matrix(loaded: Loaded, cal: RunCalibration, uni: Universal, held_out: list[str],
                       cache_dir: str | None, log) -> dict:
    """report["recognizers"]: the attacked head, each surrogate and each eval.held_out recogniser on the held-out
    splits (transfer.matrix)."""
    cfg, s, root = loaded.cfg, loaded.scorer, loaded.root
    columns = [embedders.attacked(s.trunk, s.head, f"{cfg.model.recognizer_weights} trunk + the head the "
                                  "generator attacked")]
    columns += [embedders.attacked(g.trunk, g.head, f"surrogate {g.spec}: its trunk + the "
                                   "head the generator attacked with the others", name=g.spec)
                for g in loaded.parts.surrogates]
    columns += [embedders.from_spec(spec, s.device, cfg.data.endpoint_url, cache_dir,
                                    build.face_crop(cfg.data.face_crop, spec, loaded.manifest, root.uri), root)
                for spec in cfg.eval.held_out]
    return transfer.matrix(root, held_out, uni.designs, columns, cfg.eval.max_probes, cfg.train.seed, s.projector,
                           s.device, log=log, calibration_photos=cal.photos, distinct=uni.unique["kept"],
                           controls=True, known={"attacked": cal.attacked} if cal.attacked else None)


def _after_defender(loaded: Loaded, cal: RunCalibration, uni: Universal, held_out: list[str], steps: int,
                    before: dict, log) -> dict:
    """report["after_defender"]: the held-out splits again, scored by a head that adapted to the designs."""
    seed, kept = loaded.cfg.train.seed, uni.unique["kept"]
    run = defender.DefenderRun(loaded.root, loaded.parts, loaded.cfg, loaded.scorer, uni.fixed[kept], held_out,
                               steps, cal)
    return defender.after_defender(
        run, lambda split, adapted, calibrated: split_report(
            loaded.root, split, ROWS, adapted, with_physical_controls(uni.designs, split), seed=seed,
            calibrated=calibrated, distinct=kept),
        before, log)


def evaluate_checkpoint(state: dict, ckpt_loc: storage.Location, log=print, splits=shards.SPLITS,
                        universal_k: int | None = None, defender_steps: int | None = None,
                        cache_dir: str | None = None, recognizers=()) -> Report:
    """The Report of exactly this checkpoint (nothing written): report.json's dict and what it was scored with.
    With cfg.eval.held_out, `recognizers` holds the recogniser x row matrix of the held-out splits (dlib's
    descriptors cached under `cache_dir`, else a temporary folder). `universal_k`, `defender_steps` None: cfg.eval's."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    loaded = load(state, ckpt_loc, device)
    loaded = dataclasses.replace(loaded, cfg=with_held_out(loaded.cfg, recognizers))
    cfg, manifest = loaded.cfg, loaded.manifest
    cal = run_calibration(loaded.root, loaded.scorer, manifest)
    if cal.attacked is None:
        log("warning: the data has no calibration or adapt set: thresholds are calibrated per split on the "
            "split's own unmasked photos (not held apart)")
    uni = _universal(loaded, cfg.eval.universal_k if universal_k is None else universal_k, log)
    present = _present(manifest, splits, log)
    held_out = [s for s in present if s != "train"]
    # the defender scores the held-out splits again, with its own head on the same frozen trunk and on the same
    # images: their trunk features are kept for it
    loaded = dataclasses.replace(loaded, scorer=dataclasses.replace(loaded.scorer, memo=TrunkMemo(held_out)))
    scores = _score_splits(loaded, cal, uni, present, log)
    report = _summary(state, ckpt_loc, loaded, cal, uni, scores)
    if cfg.eval.held_out and held_out:
        report["recognizers"] = _recognizer_matrix(loaded, cal, uni, held_out, cache_dir, log)
        report["calibration"].update({n: c["calibration"] for n, c in report["recognizers"]["columns"].items()
                                      if n != "attacked"})
    steps = cfg.eval.defender_steps if defender_steps is None else defender_steps
    if steps and held_out and "train" in manifest["sets"]:
        report["after_defender"] = _after_defender(loaded, cal, uni, held_out, steps, scores.before, log)
    report["verdicts"] = verdicts.all_verdicts(report, "test" if "test" in present else (present or ["-"])[-1])
    return Report(report, loaded, uni.fixed)


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
    loaded = load(state, ckpt_loc, device)
    design = design.to(device)
    h, w = design_hw(build.image_size(loaded.root))
    if tuple(design.shape[-2:]) != (h, w):
        raise shards.ShardError(f"{loc.uri}: design is {design.shape[-1]}x{design.shape[-2]} pixels, this run's "
                                f"mask-space designs are {w}x{h}")
    calibrated = run_calibration(loaded.root, loaded.scorer, loaded.manifest).attacked
    return {split: score_design(loaded.root, split, design, loaded.scorer, seed=loaded.cfg.train.seed,
                                calibrated=calibrated)
            for split in splits if split in loaded.manifest["sets"]}
