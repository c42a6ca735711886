"""Export the best checkpoint of a run or a sweep to object storage (`maskgan sample` reads it: tune/sample.py).

An export folder (s3://bucket/prefix or a local directory) holds:

    checkpoint/state.pt, checkpoint/meta.json   the checkpoint as training wrote it (generator, head, arch, config)
    designs.png                                 test faces (top) wearing the exported generator's designs (bottom)
    designs/universal_<k>.png                   the K universal designs the report scored, to print
    report.json                                 the evaluation of exactly the exported checkpoint (absent, with a warning, where
                                                it cannot be evaluated: data or weights out of reach)
    samples.png                                 16 raw designs
    SHA256SUMS                                  `sha256  name` of every file above and of model_card.json
    model_card.json                             config, metrics (with 95 % intervals when the run was evaluated),
                                                data manifest checksum, code version, recogniser weights, files

model_card.json is written last and only after every other object was read back and verified, so a folder
without it is an unfinished export; `maskgan sample` refuses it, and verifies SHA256SUMS before loading.
Exporting the same checkpoint again uploads nothing (objects are compared by size and sha256 first), and evaluates
nothing again when the folder already holds this checkpoint's verified export from the same committed code and inputs.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field

from data_loader import shards, storage
from maskgan.config import NAMED_WEIGHTS
from maskgan.design import wearing
from maskgan.evaluation import evaluate
from maskgan.models.generators import universal
from maskgan.models.weights import WeightsError
from maskgan.run import checkpoints
from maskgan.run.build import data_root, load_projector
from maskgan.run.finite import nonfinite_metric, nonfinite_tensor, strict_json
from maskgan.run.provenance import code_version
from tune.export_folder import (CARD, FORMAT, META, STATE, SUMS, ExportError, Inputs, exported_report, read_card,
                                read_sums, same_bytes, sha256, sums_text, verify_objects)
from tune.guard import guard_ok

MB = storage.MB


# ---- choosing the checkpoint -------------------------------------------------------------------------------


@dataclass
class Choice:
    run: storage.Location
    checkpoint: storage.Location
    epoch: int
    metrics: dict
    value: float
    considered: int = 0
    excluded_by_guard: int = 0
    state: dict = field(default_factory=dict, repr=False)


def find_runs(loc: storage.Location) -> list[storage.Location]:
    """A train run (has checkpoints) is itself; a sweep is every run under its runs/ folder."""
    if not storage.exists(loc):
        raise ExportError(f"{loc.uri}: not found")
    if checkpoints.list_checkpoints(loc):
        failed = checkpoints.run_failure(loc)
        if failed:  # its last checkpoints may be fine, but the run did not finish: nothing may treat it as done
            raise ExportError(f"{loc.uri}: the run failed ({failed.get('reason', '?')}); a failed run is never "
                              "exported (fix the cause and rerun it with --resume)")
        return [loc]
    runs = loc.join("runs")
    found = [runs.join(n) for n in storage.list_dir(runs) if not n.startswith(".")] if storage.is_dir(runs) else []
    found = [r for r in found if checkpoints.list_checkpoints(r) and not checkpoints.run_failure(r)]
    if not found:
        raise ExportError(f"{loc.uri}: neither a train run (no checkpoint_* folders) nor a sweep with finished "
                          "epochs (no runs/*/checkpoint_*)")
    return found


def best_checkpoint(run_uri: str, metric: str = "acc/val/generated", log=print) -> Choice:
    """The verified checkpoint with the lowest `metric` in its meta.json, over a run or a sweep. In a sweep,
    checkpoints whose recogniser failed the trial's guard (guard.json: val accuracy of a guarded row below its
    floor) are not eligible. Ties go to the higher unmasked accuracy, then the later epoch."""
    loc = storage.resolve(run_uri)
    candidates, seen, excluded, diverged, available = [], 0, 0, 0, set()
    for run in find_runs(loc):
        guard_loc = run.join("guard.json")
        floors = json.loads(storage.read_text(guard_loc))["floors"] if storage.exists(guard_loc) else None
        for epoch, ckpt in checkpoints.list_checkpoints(run):
            metrics = checkpoints.read_meta(ckpt).get("metrics", {})
            available.update(k for k, v in metrics.items() if isinstance(v, (int, float)))
            value = metrics.get(metric)
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            bad = nonfinite_metric(metrics)
            if bad:  # 0 % generated accuracy from NaN losses is a broken run, not perfect protection
                diverged += 1
                log(f"skipping {ckpt.uri} (epoch {epoch + 1}): {bad}; a diverged checkpoint is never ranked")
                continue
            seen += 1
            unmasked = metrics.get("acc/val/unmasked", 0.0)
            if floors is not None and not guard_ok(metrics, floors):
                excluded += 1
                continue
            candidates.append(((value, -unmasked, -epoch, ckpt.uri), run, ckpt, epoch, metrics, value))
    if not candidates:
        if diverged and not seen:
            raise ExportError(f"{run_uri}: all {diverged} checkpoints reporting {metric} have non-finite metrics "
                              "(the run diverged); nothing to export")
        if seen:
            raise ExportError(f"{run_uri}: all {seen} checkpoints reporting {metric} failed the recogniser guard "
                              "(the recogniser's accuracy collapsed)")
        raise ExportError(f"{run_uri}: no checkpoint reports {metric!r} "
                          f"(checkpoint metrics: {', '.join(sorted(available)) or 'none'})")
    for _, run, ckpt, epoch, metrics, value in sorted(candidates, key=lambda c: c[0]):
        try:
            state = checkpoints.read_checkpoint(ckpt)
        except checkpoints.CheckpointError as e:
            log(f"warning: skipping {e}")
            continue
        bad = nonfinite_tensor(state)
        if bad:
            log(f"skipping {ckpt.uri} (epoch {epoch + 1}): {bad}; a diverged checkpoint is never exported")
            continue
        return Choice(run, ckpt, epoch, metrics, float(value), seen, excluded, state)
    raise ExportError(f"{run_uri}: every candidate checkpoint failed verification or holds non-finite weights")


# ---- what an export holds ----------------------------------------------------------------------------------


def design_grid(generator, latent_dim: int, n: int, seed: int = 0, fmt: str = "PNG",
                where: str = "generator") -> bytes:
    """n designs from the generator (seeded latents) in a near-square grid, encoded as `fmt`. Designs that are
    non-finite or all black come from a broken generator: refused (ExportError naming `where`), never written."""
    import numpy as np
    import torch
    from PIL import Image

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # a conditional generator's: made for the mean train-gallery face (docs/diversity.md)
        designs = universal(generator.eval(), torch.randn(n, latent_dim, generator=gen))
    if not bool(torch.isfinite(designs).all()):
        raise ExportError(f"{where}: the generator's designs are not finite (nan/inf); refusing to write an image")
    designs = designs.clamp(0, 1)
    if float(designs.max()) < 1 / 255:
        raise ExportError(f"{where}: every design is all black (a broken generator); refusing to write an image")
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    h, w = designs.shape[-2:]  # mask-space panels: w wide, h high
    canvas = np.full((rows * h, cols * w, 3), 255, np.uint8)
    for i, d in enumerate((designs * 255).round().byte().permute(0, 2, 3, 1).numpy()):
        r, c = divmod(i, cols)
        canvas[r * h:(r + 1) * h, c * w:(c + 1) * w] = d
    buf = io.BytesIO()
    Image.fromarray(canvas).save(buf, format=fmt)
    return buf.getvalue()


def _faces_png(cfg, generator, latent_dim: int, log) -> bytes | None:
    """Test faces wearing the designs (evaluate's designs.png for this checkpoint); None if data or projector
    cannot be reached from here."""
    import torch


    try:
        projector = load_projector(cfg.model.projector, torch.device("cpu"), cfg.data.endpoint_url)
        return wearing.designs_png(data_root(cfg), generator, latent_dim, projector, torch.device("cpu"),
                                   seed=cfg.train.seed)
    except (storage.StorageError, shards.ShardError, WeightsError) as e:
        log(f"warning: no designs.png (faces wearing the designs): {e}")
        return None


def _file_sha256(uri: str, endpoint) -> str | None:
    try:
        return sha256(storage.read_bytes(storage.resolve(uri, endpoint)))
    except storage.StorageError:
        return None


def _inputs(cfg) -> Inputs:
    manifest_loc = data_root(cfg).join(shards.MANIFEST)
    weights = cfg.model.recognizer_weights
    return Inputs(sha256(storage.read_bytes(manifest_loc)) if storage.exists(manifest_loc) else None,
                  None if weights in NAMED_WEIGHTS else _file_sha256(weights, cfg.data.endpoint_url),
                  _file_sha256(cfg.model.projector, cfg.data.endpoint_url), code_version())


def _report_of(choice: Choice, log) -> dict | None:
    """The run's report.json when it is about the chosen checkpoint, else a fresh evaluation of that one; None
    (with a warning) when that checkpoint cannot be evaluated from here (its data or weights out of reach)."""

    rep_loc = choice.run.join("report.json")
    if storage.exists(rep_loc):
        report = json.loads(storage.read_bytes(rep_loc))
        if report.get("checkpoint") == choice.checkpoint.uri:
            return report
    log(f"evaluating the exported checkpoint {choice.checkpoint.uri} ...")
    try:
        report = evaluate.evaluate_checkpoint(choice.state, choice.checkpoint, log=log).json
    except (storage.StorageError, shards.ShardError, WeightsError) as e:
        log(f"warning: exporting without report.json: the exported checkpoint cannot be evaluated here ({e})")
        return None
    return report


def build(choice: Choice, metric: str, log=print,
          dest: storage.Location | None = None) -> tuple[dict[str, bytes], dict]:
    """(files except the card and SHA256SUMS, the card without its `files` entry). `dest`: where it is going; its
    finished export of this checkpoint lends its report.json (exported_report) instead of a new evaluation."""

    state = choice.state
    cfg = checkpoints.config_of(state)
    generator = checkpoints.generator_from_checkpoint(state, choice.checkpoint.uri)
    latent = state["arch"]["latent_dim"]
    # the checkpoint's own reader: state.pt's bytes checked against the sha256 its meta.json records
    ckpt = checkpoints.checkpoint_files(choice.checkpoint)
    files = {STATE: ckpt[checkpoints.STATE_FILE], META: ckpt[checkpoints.META_FILE]}
    inputs = _inputs(cfg)
    faces = _faces_png(cfg, generator, latent, log)
    if faces is not None:
        files["designs.png"] = faces
    files["samples.png"] = design_grid(generator, latent, 16, seed=cfg.train.seed, where=choice.checkpoint.uri)

    reused = None if dest is None else exported_report(dest, choice.checkpoint.uri, sha256(files[STATE]), inputs)
    if reused is not None:
        log(f"{dest.uri}: its report.json is this checkpoint's evaluation by the same code and inputs; "
            "not evaluated again")
        report = json.loads(reused)
    else:
        report = _report_of(choice, log)  # the evaluation of exactly this checkpoint, shipped as report.json
    report_sha = None
    if report is not None:
        files["report.json"] = raw = reused or json.dumps(report, indent=1, sort_keys=True).encode()
        report_sha = sha256(raw)
    k = (report or {}).get("universal_k", wearing.UNIVERSAL_K)  # seeded as evaluation seeds them
    files.update(wearing.universal_pngs(generator, latent, k, (report or {}).get("universal_seed", cfg.train.seed)))
    weights = cfg.model.recognizer_weights
    card = {
        "format": FORMAT,
        "source": {"run": choice.run.uri, "checkpoint": choice.checkpoint.uri, "epoch": choice.epoch,
                   "state_sha256": sha256(files[STATE]), "report_sha256": report_sha},
        "selection": {"metric": metric, "value": choice.value, "lower_is_better": True,
                      "checkpoints_considered": choice.considered, "excluded_by_guard": choice.excluded_by_guard},
        "arch": state["arch"],
        "config": state["config"],
        "metrics": choice.metrics,
        "evaluation": None if report is None else {
            "checkpoint": report.get("checkpoint"),
            "same_checkpoint": report.get("checkpoint") == choice.checkpoint.uri,
            "epoch": report.get("epoch"), "gallery_size": report.get("gallery_size"), "chance": report.get("chance"),
            "accuracy": report.get("accuracy"),  # accuracy[row][split] and accuracy[row].ci95[split]
            "illustrative_only": report.get("illustrative_only")},
        "data": {"uri": cfg.data.uri, "manifest_sha256": inputs.manifest_sha256},
        "recognizer": {"weights": weights, "sha256": inputs.recognizer_sha256,
                       "description": (report or {}).get("recognizer")},
        "projector": {"uri": cfg.model.projector, "sha256": inputs.projector_sha256},
        "code_version": {"export": inputs.code, "training": _training_code_version(choice.run)},
        "sample": "maskgan sample --from <this folder> --n 16 --out designs.png",
    }
    return files, card


def _training_code_version(run: storage.Location) -> str | None:
    """The sweep driver's code version when the run belongs to a sweep (runs/<trial> under it); else None."""
    try:
        sweep_loc = storage.resolve(run.uri.rsplit("/runs/", 1)[0]).join("sweep.json") if "/runs/" in run.uri else None
        if sweep_loc is not None and storage.exists(sweep_loc):
            return json.loads(storage.read_text(sweep_loc)).get("code_version")
    except (storage.StorageError, json.JSONDecodeError):
        pass
    return None


def _identity(card: dict) -> dict:
    """What makes two exports the same: the checkpoint, the report it carries, the ranking metric."""
    return {"state_sha256": card["source"]["state_sha256"], "report_sha256": card["source"]["report_sha256"],
            "metric": card["selection"]["metric"]}


# ---- export --------------------------------------------------------------------------------------------------


@dataclass
class ExportResult:
    uri: str
    checkpoint: str
    metric: str
    value: float
    uploaded: list[str]
    unchanged: list[str]


def export(run_uri: str, to_uri: str, metric: str = "acc/val/generated", log=print,
           multipart_threshold: int = 64 * MB, multipart_chunksize: int = 16 * MB) -> ExportResult:
    """Upload the best checkpoint of a run or sweep with its model card; idempotent and verified."""
    choice = best_checkpoint(run_uri, metric, log=log)
    log(f"best by {metric} (lower is better): {choice.checkpoint.uri} (epoch {choice.epoch + 1}, "
        f"{metric} = {choice.value:.4g}; {choice.considered} checkpoints considered"
        + (f", {choice.excluded_by_guard} excluded by the recogniser guard" if choice.excluded_by_guard else "") + ")")
    dest = storage.resolve(to_uri)
    files, card = build(choice, metric, log=log, dest=dest)
    parts = storage.Multipart(multipart_threshold, multipart_chunksize)

    existing_card = read_card(dest)
    if existing_card is not None and existing_card.get("format") == FORMAT and _identity(existing_card) == _identity(card):
        # Same checkpoint, same report: the finished export stands if every object still verifies.
        try:
            sums = read_sums(dest)
            verify_objects(dest, sums)
            log(f"{dest.uri}: already holds this export (verified); nothing uploaded")
            return ExportResult(dest.uri, choice.checkpoint.uri, metric, choice.value, [], sorted(sums) + [SUMS])
        except ExportError as e:
            log(f"{dest.uri}: existing export does not verify ({e}); uploading again")
    storage.delete_file(dest.join(CARD))  # from here until the end the folder is visibly unfinished

    card["files"] = {name: {"bytes": len(data), "sha256": sha256(data)} for name, data in sorted(files.items())}
    nulls: dict[str, str] = {}
    card = strict_json(card, nulls=nulls)
    card["nulls"] = nulls  # {field: why it is null} for values that were not finite numbers (from report.json)
    card_bytes = (json.dumps(card, indent=1, sort_keys=True, allow_nan=False) + "\n").encode()
    sums = sums_text({**files, CARD: card_bytes}).encode()
    uploaded, unchanged = [], []
    for name, data in [*sorted(files.items()), (SUMS, sums)]:
        if same_bytes(dest.join(name), data):
            unchanged.append(name)
            continue
        storage.upload(dest.join(name), data, parts, log=log)
        uploaded.append(name)
        log(f"uploaded {dest.join(name).uri} ({len(data) / MB:.1f} MB)")
    written = {**files, SUMS: sums}
    verify_objects(dest, {n: sha256(d) for n, d in written.items()}, sizes={n: len(d) for n, d in written.items()})
    storage.upload(dest.join(CARD), card_bytes, parts, log=log)  # last: its presence means the export is complete
    uploaded.append(CARD)
    verify_objects(dest, {CARD: sha256(card_bytes)}, sizes={CARD: len(card_bytes)})
    log(f"exported to {dest.uri}: {len(uploaded)} objects uploaded, {len(unchanged)} unchanged, all verified")
    return ExportResult(dest.uri, choice.checkpoint.uri, metric, choice.value, uploaded, unchanged)


