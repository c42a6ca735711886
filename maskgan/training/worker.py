"""The Ray Train worker loop: `train_loop_per_worker`, the only user of the per-worker `ray.train` API.

Each worker builds its models from the run config (maskgan.run.checkpoints), starts from the run's newest verified
checkpoint when there is one, then per epoch: draws batches (streamed from Ray Data, or from the rows it
keeps on its device, maskgan.training.feed), runs the one `train_step`, and reports metrics with a checkpoint that
rank 0 writes and uploads write-then-commit. The driver is maskgan.training.train.
"""

from __future__ import annotations

import functools
import logging
import math
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from data_loader import shards, storage
from maskgan.config import RunConfig, from_dict
from maskgan.design import palette, physical
from maskgan.evaluation.scorer import Scorer
from maskgan.evaluation.validation import score_set
from maskgan.models.generators import set_cond_stats
from maskgan.models.ops import unwrap
from maskgan.run import build, checkpoints
from maskgan.training import feed, resume
from maskgan.training.objective import Models, Optimizers, accelerate, make_optimizers, train_step

VAL_ROWS = ("unmasked", "original_mask", "generated")
SKIPPED_NAMED = 5  # skipped shards named in a too-few-rows error; the rest are counted


class RunStoppedError(RuntimeError):
    """The run cannot go on usefully (its losses are not finite, or too few rows could be read); no
    checkpoint was written for the epoch that found it."""

    user_error = True


def train_loop_per_worker(loop_config: dict) -> None:
    """loop_config: {"run": the run config as a dict, "run_uri": the run folder the driver resolved, and
    optionally "progress": a ray.util.queue.Queue the driver prints progress lines from}."""
    try:
        _train(loop_config)
    except Exception as e:
        # A traceback is not pickled with its exception; this one travels to the driver as an attribute
        # (pickled with the exception's __dict__), and the driver writes it to the run's log file.
        try:
            e.worker_traceback = traceback.format_exc()
        except AttributeError:  # an exception type that takes no attributes: the driver has Ray's excerpt
            pass
        raise


@dataclass
class Worker:
    """What one Ray Train worker builds once and every epoch uses."""

    cfg: RunConfig
    rank: int
    device: torch.device
    root: storage.Location  # the data
    run: storage.Location  # the run folder the driver resolved
    size: int  # the prepared images' side
    parts: build.Parts
    train_gallery: build.TrainGallery  # training sees train identities only
    models: Models
    opts: Optimizers
    shard: object  # this worker's Ray Data shard of the train set
    resident: feed.ResidentShard  # the rows it keeps on its device once they fit
    say: Callable[[str], None] | None  # rank 0's progress lines; None on the other ranks


def _train(loop_config: dict) -> None:
    _quiet_train_console()
    global _progress_queue
    _progress_queue = loop_config.get("progress")
    w, start_epoch = _setup(loop_config)
    cfg, rank = w.cfg, w.rank
    metrics_sink = _metrics_sink(cfg.train.name) if rank == 0 else None
    for epoch in range(start_epoch, cfg.train.epochs):
        unwrap(w.models.generator).train()
        metrics, skipped_shards = _train_epoch(w, epoch)
        _stop_if_broken(cfg, w.run, w.root, epoch, metrics, skipped_shards)
        # The epoch's rows over every worker: the same whatever the worker count (an elastic restart changes it)
        metrics["train/rows"] = sum(_gather_from_workers(metrics["train/images"]))
        if rank == 0:
            metrics.update(_validate(cfg, w.root, w.parts, w.models, w.device))
        _report(cfg, w.run, rank, w.size, epoch, w.models, w.opts, metrics)
        if metrics_sink is not None:
            metrics_sink.log(metrics, step=epoch)
        if rank == 0:
            _tell(_progress_line(cfg, epoch, metrics))
    if metrics_sink is not None:
        metrics_sink.close()


def _setup(loop_config: dict) -> tuple[Worker, int]:
    """The worker's models (from the starting checkpoint when there is one, wrapped for DDP), optimisers and
    data sources; and the first epoch to train."""
    import ray.train
    import ray.train.torch

    cfg = from_dict(loop_config["run"])
    ctx = ray.train.get_context()
    rank, world_size = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    torch.manual_seed(cfg.train.seed * 1000 + rank)
    torch.set_num_threads(max(1, int(cfg.train.cpus_per_worker)))
    say = functools.partial(_say, cfg) if rank == 0 else None

    # Each URI resolved once in this process; Locations are passed down from here.
    root = build.data_root(cfg)
    run = storage.resolve(loop_config["run_uri"], cfg.data.endpoint_url)
    size = build.image_size(root)
    parts = build.build(cfg, device, root)
    train_gallery = build.TrainGallery.of(root, parts.gallery_feats)
    start = checkpoints.starting_checkpoint(cfg, run, root, log=functools.partial(_say, cfg))
    models, opts, start_epoch = _models(cfg, rank, device, size, parts, train_gallery, start, say)
    resident = feed.ResidentShard(feed.resident_capacity(cfg, root, size, world_size, device, models.autocast,
                                                         log=_tell if rank == 0 else None))
    return Worker(cfg, rank, device, root, run, size, parts, train_gallery, models, opts,
                  ray.train.get_dataset_shard("train"), resident, say), start_epoch


def _models(cfg: RunConfig, rank: int, device, size: int, parts: build.Parts, train_gallery: build.TrainGallery,
            start: checkpoints.Start | None, say) -> tuple[Models, Optimizers, int]:
    """The step's models and optimisers, loaded from `start` (before DDP wraps them), and the first epoch."""
    import ray.train.torch

    generator = checkpoints.generator_from_arch(checkpoints.arch(cfg, size))
    head = parts.recognizer.head
    start_epoch = resume.load_weights(start, generator, head, cfg, say, parts.surrogates)
    # a conditional generator sees a wearer as their features' distance from the train gallery's (docs/diversity.md)
    set_cond_stats(generator, train_gallery.feats)
    generator = ray.train.torch.prepare_model(generator)
    s_heads = [s.head for s in parts.surrogates]
    if cfg.objective.experiment != "exp0":  # DDP wraps only modules that train
        head = ray.train.torch.prepare_model(head)
        s_heads = [ray.train.torch.prepare_model(h) for h in s_heads]
    # Each surrogate trains against its own trunk's features of the train identities' gallery photos.
    surrogates = tuple(replace(s, head=h, gallery_feats=train_gallery.select(s.gallery_feats))
                       for s, h in zip(parts.surrogates, s_heads))
    opts = make_optimizers(generator, head, cfg.objective, surrogates)
    resume.load_optimizers(start, opts, cfg)
    models = accelerate(Models(generator=generator, trunk=parts.recognizer.trunk, head=head,
                               latent_dim=cfg.model.latent_dim,
                               palette=palette.load(cfg.objective.palette).tensor(device), eot=_eot(cfg, rank),
                               surrogates=surrogates),
                        device, cfg.train.precision, cfg.train.compile)
    return models, opts, start_epoch


# The driver's progress queue (loop_config["progress"]): a line put there is printed once by the driver, whether or
# not Ray forwards this worker's output (only with --verbose: data_loader/ray_session.py).
_progress_queue = None


def _tell(line: str) -> None:
    """One progress line for the user: to the driver's queue, else (a caller without one) this worker's stdout."""
    import ray.exceptions

    if _progress_queue is not None:
        try:
            _progress_queue.put(line)
            return
        except ray.exceptions.RayError:  # the driver went away: the line still reaches Ray's log files
            pass
    print(line, flush=True)


def _say(cfg: RunConfig, message: str) -> None:
    _tell(f"[{cfg.train.name}] {message}")


def _train_epoch(w: Worker, epoch: int) -> tuple[dict, list[str]]:
    """One epoch of steps; its metrics (means of the step's scalars, throughput, where the batches came from)
    and the paths of the shards whose rows were skipped (they failed their checksum)."""
    cfg, rank, device, resident, models = w.cfg, w.rank, w.device, w.resident, w.models
    t0, wait, images, sums, steps, data_stats = time.perf_counter(), 0.0, 0, {}, 0, {}
    filling = resident.capacity > 0 and not resident.ready and epoch < cfg.train.epochs - 1
    if resident.ready:
        batches = resident.batches(cfg.data.batch_size, seed=(cfg.train.seed * 1000 + rank) * 100_000 + epoch)
    else:
        batches = feed.streamed_batches(w.shard, cfg, epoch, w.parts.projector, w.parts.recognizer.trunk, device,
                                        models.autocast, resident if filling else None, data_stats,
                                        tuple(s.trunk for s in models.surrogates))
    drew_resident = resident.ready
    for batch, waited in batches:
        wait += waited
        out = train_step(models, w.opts, w.train_gallery.batch(batch), w.train_gallery.feats, cfg.objective)
        for k, v in out.items():
            sums[k] = sums.get(k, 0.0) + v
        images += int(batch["label"].shape[0])
        steps += 1
    if filling and resident.seal(lambda ok: feed.all_workers_agree(ok, device)) and w.say:
        w.say(f"later epochs draw from the {resident.rows} rows resident on {device}")
    elapsed = time.perf_counter() - t0
    metrics = {k: v / max(steps, 1) for k, v in sums.items()}
    metrics.update({"epoch": epoch, "train/images": images, "train/images_per_s": images / max(elapsed, 1e-9),
                    "train/data_wait_s": wait, "train/epoch_s": elapsed,
                    "train/resident": float(drew_resident),  # 1: batches came from rows kept on the device
                    "data/skipped_rows": data_stats.get("skipped_rows", 0)})
    if data_stats.get("skipped_rows"):
        _say(cfg, f"warning: worker {rank} skipped {data_stats['skipped_rows']} rows of shards that failed "
                  f"their checksum: {', '.join(data_stats['skipped_shards'])}")
    return metrics, data_stats.get("skipped_shards", [])


def _stop_if_broken(cfg: RunConfig, run: storage.Location, root: storage.Location, epoch: int, metrics: dict,
                    skipped_shards: list[str]) -> None:
    """Fail the run, before its epoch's checkpoint is written, when a loss is not finite on any worker or the
    workers together read fewer than train.min_rows_fraction of the manifest's train rows. Every worker
    sees the same gathered facts and raises the same error (a worker that reported alone would wait forever)."""
    mine = {"nonfinite": {k: v for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v)},
            "skipped_rows": int(metrics.get("data/skipped_rows", 0)), "skipped_shards": skipped_shards}
    every = _gather_from_workers(mine)
    nonfinite = next((w["nonfinite"] for w in every if w["nonfinite"]), None)
    if nonfinite:
        key, value = next(iter(nonfinite.items()))
        raise RunStoppedError(f"{run.uri}: {key} is {value} in epoch {epoch + 1}, so the run stops and no "
                              f"checkpoint of that epoch is written; last good checkpoint: {_last_good(run)}")
    skipped = sum(w["skipped_rows"] for w in every)
    if not skipped:
        return
    total = sum(int(s["rows"]) for s in shards.set_shards(root, shards.read_manifest(root), "train"))
    read = total - skipped
    if read < cfg.train.min_rows_fraction * total:
        names = sorted({p for w in every for p in w["skipped_shards"]})
        prefix = "s3://" if root.is_s3 else ""
        listed = ", ".join(prefix + p for p in names[:SKIPPED_NAMED])
        more = f" and {len(names) - SKIPPED_NAMED} more" if len(names) > SKIPPED_NAMED else ""
        raise RunStoppedError(f"{root.uri}: epoch {epoch + 1} read {read} of the manifest's {total} train rows "
                              f"({read / max(total, 1):.0%}), below train.min_rows_fraction "
                              f"{cfg.train.min_rows_fraction:g}; {skipped} rows were skipped, of {len(names)} "
                              f"shards that failed their checksum: {listed}{more}")


def _gather_from_workers(obj) -> list:
    """`obj` of every worker, in rank order ([obj] outside distributed runs): a small picklable object."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [obj]
    every = [None] * dist.get_world_size()
    dist.all_gather_object(every, obj)
    return every


def _last_good(run: storage.Location) -> str:
    kept = checkpoints.list_checkpoints(run)
    return kept[-1][1].uri if kept else "none"


def _report(cfg: RunConfig, run: storage.Location, rank: int, size: int, epoch: int, models: Models,
            opts: Optimizers, metrics: dict) -> None:
    """Every rank reports the epoch's metrics; rank 0 writes the checkpoint into a fresh temporary folder and
    Train hands it to `_upload_checkpoint`. Adds checkpoint/upload_s to rank 0's `metrics`."""
    import ray.train

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = None
        if rank == 0:
            trained = checkpoints.Trained(unwrap(models.generator), unwrap(models.head), opts.generator, opts.head,
                                          [(s.spec, unwrap(s.head), o) for s, o in zip(models.surrogates, opts.surrogates)])
            checkpoints.save_checkpoint(tmp, cfg=cfg, size=size, epoch=epoch, trained=trained, metrics=metrics)
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
        t_up = time.perf_counter()
        ray.train.report(metrics, checkpoint=checkpoint,
                         checkpoint_upload_fn=functools.partial(_upload_checkpoint, run))
        if rank == 0:
            metrics["checkpoint/upload_s"] = time.perf_counter() - t_up


def _upload_checkpoint(run: storage.Location, checkpoint, dir_name: str):
    """Ray Train's upload hook: our write-then-commit upload with retries, instead of a plain directory copy
    (whose file order is arbitrary, so a torn copy could carry its commit marker). Ray requires the result
    to live on its own storage filesystem object, so the upload goes through that one."""
    import ray.train

    ctx = ray.train.get_context().get_storage()
    dest = storage.Location(ctx.storage_filesystem, f"{ctx.experiment_fs_path}/{dir_name}", run.join(dir_name).uri)
    checkpoints.upload_checkpoint(checkpoint.path, dest, log=_tell)
    return ray.train.Checkpoint(path=dest.path, filesystem=dest.fs)


def _quiet_train_console() -> None:
    # The driver sets Ray Train's console to warnings (RunConfig.logging_config); a failed training function is
    # still logged at ERROR with its whole traceback, by every rank. The driver reports it instead, as one
    # line naming the run's failure.log (or with Ray's excerpt, for a bug), so the console drops that record;
    # Ray Train's log files keep it.
    for handler in logging.getLogger("ray.train").handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.addFilter(_not_the_training_traceback)


def _not_the_training_traceback(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("Error in training function")


def _validate(cfg: RunConfig, root: storage.Location, parts: build.Parts, models: Models, device) -> dict:
    """Quick per-epoch scoring of val identities (for Tune and progress); `maskgan evaluate` is the full one."""
    if cfg.train.val_probes == 0:
        return {}
    generator, head = models.generator, models.head
    unwrap(generator).eval()
    scorer = Scorer.of(parts.recognizer.trunk, head, parts.projector, parts.gallery_feats, device, generator,
                       cfg.model.latent_dim)
    scored = score_set(root, "val", VAL_ROWS, scorer, max_probes=cfg.train.val_probes, seed=cfg.train.seed)
    unwrap(generator).train()
    return {f"acc/val/{row}": float(v.mean()) for row, v in scored.items() if v.size}


def _eot(cfg: RunConfig, rank: int):
    if not cfg.physical.enabled:
        return None
    return physical.EOT(cfg.physical, run_seed=cfg.train.seed, rank=rank)


def _metrics_sink(run_name: str):
    try:  # optional: Prometheus export needs Ray's metrics agent (ray[default])
        from maskgan.metrics import TrainMetrics
    except ImportError:
        return None
    return TrainMetrics(run_name)


def _progress_line(cfg: RunConfig, epoch: int, m: dict) -> str:
    parts = [f"[{cfg.train.name}] epoch {epoch + 1}/{cfg.train.epochs}",
             f"gen_ce {m.get('train/gen_ce', float('nan')):.3f}",
             f"{m['train/images_per_s']:.1f} img/s", f"data wait {m['train/data_wait_s']:.1f}s"]
    for row in VAL_ROWS:
        if f"acc/val/{row}" in m:
            parts.append(f"val {row} {m[f'acc/val/{row}']:.1%}")
    return " | ".join(parts)
