"""Training on Ray Train: the worker loop (`train_loop_per_worker`) and the driver (`fit`).

Only the worker touches `ray.train`'s per-worker API; only the driver builds Ray configs. The worker calls
the one `train_step` from maskgan.objective.
"""

from __future__ import annotations

import functools
import logging
import tempfile
import time
from dataclasses import dataclass

import numpy as np
import torch

from data_loader import shards, storage, stream
from maskgan import assembly
from maskgan.config import RunConfig, from_dict
from maskgan.evaluate import score_set
from maskgan.models.recognizer import FEATURE_DIM
from maskgan.objective import (HEAD_TERMS, Models, Optimizers, accelerate, amp, to_float_images, train_step,
                               trunk_features, unwrap)

VAL_ROWS = ("unmasked", "original_mask", "generated")


class RunExistsError(RuntimeError):
    user_error = True


class StorageFullError(RuntimeError):
    """The run's storage ran out of space; the checkpoints written before are intact."""

    user_error = True


# ---- worker -----------------------------------------------------------------------------------------------


def _to_device(array: np.ndarray, device) -> torch.Tensor:
    """Host array -> device tensor with its dtype (uint8 images cross as uint8: a quarter of float32's bytes,
    made float on the device). Pinned on CUDA, so the copy overlaps the kernels the host queues next."""
    t = torch.from_numpy(np.ascontiguousarray(array))
    if torch.device(device).type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def constants(raw: dict, projector, trunk, experiment: str, device, autocast=None) -> dict:
    """A decoded numpy batch -> what the step needs of each image: masked (uint8, on the device), label, the
    projector's alpha, and the trunk features of the real photos that the experiment's head terms use.

    The projector and trunk are frozen, so alpha and the features are constants of the image: a worker whose
    rows stay resident (`ResidentShard`) computes them once per run, a streaming worker once per epoch; the
    step itself never runs the projector or a trunk pass on real photos."""
    masked_u8 = _to_device(raw["masked"], device)
    out = {"masked_u8": masked_u8, "label": _to_device(raw["label"].astype(np.int64), device)}
    masked = to_float_images(masked_u8)
    terms = HEAD_TERMS[experiment]
    with torch.no_grad(), amp(device, autocast):
        out["alpha"] = projector(masked)
        if "unmasked" in terms:
            out["feats_unmasked"] = trunk(to_float_images(_to_device(raw["unmasked"], device)))
        if "original_mask" in terms:
            out["feats_masked"] = trunk(masked)
    return out


def step_tensors(c: dict) -> dict:
    """`constants`' output -> the step's batch (masked as float [B,3,S,S] in [0,1], converted on the device)."""
    batch = {k: v for k, v in c.items() if k != "masked_u8"}
    batch["masked"] = to_float_images(c["masked_u8"])
    return batch


def step_batch(raw: dict, projector, trunk, experiment: str, device, autocast=None) -> dict:
    """Decoded numpy batch -> the step's tensors: projector alpha, and real-photo trunk features when the
    experiment's head terms need them (constants: the projector and trunk are frozen)."""
    return step_tensors(constants(raw, projector, trunk, experiment, device, autocast))


class ResidentShard:
    """This worker's rows with their constants, kept on its device after the first epoch it streams.

    Later epochs draw batches from here, in a fresh random order each epoch, instead of from Ray Data, and
    never recompute alpha or features: the GPU is fed from its own memory (the issue measured a naive Ray
    Data feed at ~71-85 % of a GPU-resident one). Trade-offs: after the first epoch each worker keeps the rows
    it was given (together the workers still see every row once per epoch; the shuffle within a worker is
    global rather than a local buffer), and a worker holds its share in device memory, so this is used only
    when the whole share fits `train.resident_gib`, decided from the manifest before the first batch (the
    same on every worker). Otherwise every epoch streams, memory stays flat in dataset size, and the
    constants are recomputed once per epoch.
    """

    def __init__(self, capacity: int):
        self.capacity = capacity  # rows this worker may keep; 0: stream every epoch
        self.rows = 0
        self.ready = False
        self.overflow = False
        self._store: dict[str, torch.Tensor] = {}

    @staticmethod
    def row_bytes(size: int, experiment: str, autocast) -> int:
        eb = 4 if autocast is None else torch.finfo(autocast).bits // 8
        feats = sum(t in HEAD_TERMS[experiment] for t in ("unmasked", "original_mask"))
        return size * size * 3 + size * size * eb + feats * FEATURE_DIM * eb + 8

    def add(self, c: dict) -> None:
        """Keep one batch of `constants`' output (preallocated once: no concatenation peak)."""
        if self.overflow or self.capacity == 0:
            return
        n = int(c["label"].shape[0])
        if self.rows + n > self.capacity:  # more rows than the manifest promised: give up, keep streaming
            self.overflow, self._store = True, {}
            return
        if not self._store:
            self._store = {k: torch.empty((self.capacity, *v.shape[1:]), dtype=v.dtype, device=v.device)
                           for k, v in c.items()}
        for k, v in c.items():
            self._store[k][self.rows:self.rows + n] = v
        self.rows += n

    def seal(self, agree=lambda ok: ok) -> bool:
        """End of the filling epoch: resident from now on if every worker filled its store (`agree` reduces
        the flag over workers: one that streamed alone would wait forever on Ray Data's split)."""
        if agree(not self.overflow and self.rows > 0):
            self._store = {k: v[:self.rows] for k, v in self._store.items()}
            self.ready = True
        else:
            self._store, self.capacity = {}, 0
        return self.ready

    def batches(self, batch_size: int, seed: int):
        """(step batch, seconds spent assembling it) over every resident row, in a seeded random order."""
        order = torch.randperm(self.rows, generator=torch.Generator().manual_seed(seed))
        order = order.to(self._store["label"].device)
        for i in range(0, self.rows, batch_size):
            t0 = time.perf_counter()
            idx = order[i:i + batch_size]
            batch = step_tensors({k: v.index_select(0, idx) for k, v in self._store.items()})
            yield batch, time.perf_counter() - t0


def _resident_capacity(cfg: RunConfig, size: int, world_size: int, device, autocast, log=None) -> int:
    """Rows this worker may keep resident (its share of the train set), or 0 when that does not fit."""
    budget = cfg.train.resident_gib
    device = torch.device(device)
    if budget == "auto":
        budget = 0.4 * torch.cuda.get_device_properties(device).total_memory / 2**30 if device.type == "cuda" else 0.0
    if budget <= 0 or cfg.train.epochs < 2:
        return 0
    root = assembly.data_root(cfg)
    total = sum(int(s["rows"]) for s in shards.set_shards(root, shards.read_manifest(root), "train"))
    rows = -(-total // world_size)
    need = rows * ResidentShard.row_bytes(size, cfg.objective.experiment, autocast) / 2**30
    if need > budget:
        if log:
            log(f"[{cfg.train.name}] streaming every epoch: a worker's {rows} rows need {need:.2f} GiB "
                f"resident, train.resident_gib allows {budget:.2f}")
        return 0
    return rows


def _all_workers_agree(flag: bool, device) -> bool:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flag
    t = torch.tensor([int(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def _streamed_batches(shard, cfg: RunConfig, epoch: int, projector, trunk, device, autocast, resident, stats):
    """(step batch, seconds waited for data) from Ray Data; each batch's constants are kept in `resident`
    when given; rows of corrupt shards are counted in `stats` and never used."""
    for raw, waited in stream.timed_batches(shard, cfg.data.batch_size, cfg.data.shuffle_buffer,
                                            cfg.data.prefetch_batches, seed=cfg.train.seed + epoch, stats=stats):
        c = constants(raw, projector, trunk, cfg.objective.experiment, device, autocast)
        if resident is not None:
            resident.add(c)
        yield step_tensors(c), waited


def train_loop_per_worker(loop_config: dict) -> None:
    import ray.train
    import ray.train.torch

    _quiet_train_console()
    cfg = from_dict(loop_config["run"])
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    device = ray.train.torch.get_device()
    torch.manual_seed(cfg.train.seed * 1000 + rank)
    torch.set_num_threads(max(1, int(cfg.train.cpus_per_worker)))

    size = assembly.image_size(cfg)
    rec = assembly.load_recognizer(cfg.model.recognizer_weights, device, cfg.data.endpoint_url)
    projector = assembly.load_projector(cfg.model.projector, device, cfg.data.endpoint_url)
    gallery_feats, _ = assembly.gallery(cfg, rec.trunk, device)
    generator = assembly.generator_from_arch(assembly.arch(cfg, size))
    head = rec.head

    start_epoch = 0
    state, how = _starting_state(cfg, size)
    if state is not None:
        generator.load_state_dict(state["generator"])
        head.load_state_dict(state["head"])
        start_epoch = state["epoch"] + 1
        if rank == 0:
            print(f"[{cfg.train.name}] {how} the checkpoint of epoch {start_epoch}", flush=True)

    train_head = cfg.objective.experiment != "exp0"
    generator = ray.train.torch.prepare_model(generator)
    if train_head:
        head = ray.train.torch.prepare_model(head)
    g_opt = torch.optim.Adam(unwrap(generator).parameters(), lr=cfg.objective.g_lr, betas=(0.5, 0.999))
    h_opt = torch.optim.Adam(unwrap(head).parameters(), lr=cfg.objective.head_lr) if train_head else None
    if state is not None:
        g_opt.load_state_dict(state["g_opt"])
        if h_opt is not None and state["h_opt"]:
            h_opt.load_state_dict(state["h_opt"])
        # The learning rates are this config's, not the saved ones: the same on a resume, the mutated ones
        # when PBT starts a trial from another's checkpoint; Adam's moments carry over either way.
        _set_lr(g_opt, cfg.objective.g_lr)
        _set_lr(h_opt, cfg.objective.head_lr)
    models = accelerate(Models(generator=generator, trunk=rec.trunk, head=head, latent_dim=cfg.model.latent_dim),
                        device, cfg.train.precision, cfg.train.compile)
    opts = Optimizers(generator=g_opt, head=h_opt)
    shard = ray.train.get_dataset_shard("train")
    metrics_sink = _metrics_sink(cfg.train.name) if rank == 0 else None
    resident = ResidentShard(_resident_capacity(cfg, size, ctx.get_world_size(), device, models.autocast,
                                                log=print if rank == 0 else None))

    for epoch in range(start_epoch, cfg.train.epochs):
        unwrap(generator).train()
        t0, wait, images, sums, steps, data_stats = time.perf_counter(), 0.0, 0, {}, 0, {}
        filling = resident.capacity > 0 and not resident.ready and epoch < cfg.train.epochs - 1
        if resident.ready:
            batches = resident.batches(cfg.data.batch_size, seed=(cfg.train.seed * 1000 + rank) * 100_000 + epoch)
        else:
            batches = _streamed_batches(shard, cfg, epoch, projector, rec.trunk, device, models.autocast,
                                        resident if filling else None, data_stats)
        drew_resident = resident.ready
        for batch, waited in batches:
            wait += waited
            out = train_step(models, opts, batch, gallery_feats, cfg.objective)
            for k, v in out.items():
                sums[k] = sums.get(k, 0.0) + v
            images += int(batch["label"].shape[0])
            steps += 1
        if filling and resident.seal(lambda ok: _all_workers_agree(ok, device)) and rank == 0:
            print(f"[{cfg.train.name}] later epochs draw from the {resident.rows} rows resident on {device}", flush=True)
        elapsed = time.perf_counter() - t0
        metrics = {k: v / max(steps, 1) for k, v in sums.items()}
        metrics.update({"epoch": epoch, "train/images": images, "train/images_per_s": images / max(elapsed, 1e-9),
                        "train/data_wait_s": wait, "train/epoch_s": elapsed,
                        "train/resident": float(drew_resident),  # 1: batches came from rows kept on the device
                        "data/skipped_rows": data_stats.get("skipped_rows", 0)})
        if data_stats.get("skipped_rows"):
            print(f"[{cfg.train.name}] warning: worker {rank} skipped {data_stats['skipped_rows']} rows of shards "
                  f"that failed their checksum (see the Ray Data logs for which)", flush=True)
        if rank == 0:
            metrics.update(_validate(cfg, rec.trunk, head, projector, generator, gallery_feats, device))
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = None
            if rank == 0:
                assembly.save_checkpoint(tmp, cfg=cfg, size=size, epoch=epoch, generator=unwrap(generator),
                                         head=unwrap(head), g_opt=g_opt, h_opt=h_opt, metrics=metrics)
                checkpoint = ray.train.Checkpoint.from_directory(tmp)
            t_up = time.perf_counter()
            ray.train.report(metrics, checkpoint=checkpoint,
                             checkpoint_upload_fn=functools.partial(_upload_checkpoint, run_location(cfg)))
            if rank == 0:
                metrics["checkpoint/upload_s"] = time.perf_counter() - t_up
        if metrics_sink is not None:
            metrics_sink.log(metrics, step=epoch)
        if rank == 0:
            print(_progress_line(cfg, epoch, metrics), flush=True)
    if metrics_sink is not None:
        metrics_sink.close()


def _starting_state(cfg: RunConfig, size: int) -> tuple[dict | None, str]:
    """(state, how) a worker starts from: the newest checkpoint in the run folder that verifies (a resume, a
    worker-failure restart, a PBT clone `checkpoint_pbt_*`), else `train.init_from`'s, else (None, "").

    The run folder, not `ray.train.get_checkpoint()`: every checkpoint Train knows is there, and so is one our
    upload hook wrote just before the driver was killed, which Train never recorded (no
    checkpoint_manager_snapshot.json entry) and would not offer. `fit` only starts over existing checkpoints
    when resuming. A torn newest checkpoint is named and the previous good one used."""
    run = run_location(cfg)
    if storage.exists(run) and assembly.list_checkpoints(run):
        state, _ = assembly.latest_checkpoint(run, log=lambda m: print(f"[{cfg.train.name}] {m}", flush=True))
        where, how = "resume", "resumed from"
    elif cfg.train.init_from:
        state = assembly.read_checkpoint(storage.resolve(cfg.train.init_from, cfg.data.endpoint_url))
        where, how = f"train.init_from {cfg.train.init_from}", f"started from {cfg.train.init_from}:"
    else:
        return None, ""
    assembly.check_resume_arch(state, cfg, size, where)
    return state, how


def _set_lr(opt, lr: float) -> None:
    if opt is not None:
        for group in opt.param_groups:
            group["lr"] = lr


def _upload_checkpoint(run: storage.Location, checkpoint, dir_name: str):
    """Ray Train's upload hook: our write-then-commit upload with retries, instead of a plain directory copy
    (whose file order is arbitrary, so a torn copy could carry its commit marker). Ray requires the result
    to live on its own storage filesystem object, so the upload goes through that one."""
    import ray.train

    ctx = ray.train.get_context().get_storage()
    dest = storage.Location(ctx.storage_filesystem, f"{ctx.experiment_fs_path}/{dir_name}", run.join(dir_name).uri)
    assembly.upload_checkpoint(checkpoint.path, dest, log=lambda m: print(m, flush=True))
    return ray.train.Checkpoint(path=dest.path, filesystem=dest.fs)


def _quiet_train_console() -> None:
    # Ray Train logs every report at INFO to the console (and to its log files, which keep everything);
    # the per-epoch progress line says what a user needs, so the console handler shows warnings only.
    for handler in logging.getLogger("ray.train").handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.setLevel(logging.WARNING)


def _validate(cfg, trunk, head, projector, generator, gallery_feats, device) -> dict:
    """Quick per-epoch scoring of val identities (for Tune and progress); `maskgan evaluate` is the full one."""
    if cfg.train.val_probes == 0:
        return {}
    root = assembly.data_root(cfg)
    unwrap(generator).eval()
    with torch.no_grad():
        gallery_emb = unwrap(head)(gallery_feats)
    scored = score_set(root, "val", VAL_ROWS, max_probes=cfg.train.val_probes, seed=cfg.train.seed,
                       trunk=trunk, head=head, projector=projector, generator=generator,
                       latent_dim=cfg.model.latent_dim, gallery_emb=gallery_emb, device=device)
    unwrap(generator).train()
    return {f"acc/val/{row}": float(v.mean()) for row, v in scored.items() if v.size}


def _metrics_sink(run_name: str):
    try:
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


# ---- driver -----------------------------------------------------------------------------------------------


@dataclass
class FitResult:
    run_uri: str
    metrics: dict
    checkpoint_uri: str | None


def run_location(cfg: RunConfig) -> storage.Location:
    return storage.resolve(cfg.train.storage, cfg.data.endpoint_url).join(cfg.train.name)


def ensure_ray() -> None:
    import ray

    if not ray.is_initialized():
        # RAY_ADDRESS (set by `ray job submit` and on cluster nodes) attaches to the cluster; else a local Ray.
        ray.init(log_to_driver=True, configure_logging=False)


def fit(cfg: RunConfig, resume: bool = False, callbacks=None, log=print) -> FitResult:
    """Run (or resume) training under a TorchTrainer; returns where the run lives and its last metrics."""
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    cfg = _absolute_paths(cfg)
    run = run_location(cfg)
    has_checkpoints = storage.exists(run) and bool(assembly.list_checkpoints(run))
    if has_checkpoints and not resume:
        raise RunExistsError(f"{run.uri} already holds a run; pass --resume to continue it, "
                             f"or choose another train.name")
    if resume and not has_checkpoints:
        log(f"nothing to resume at {run.uri}: starting a new run")
    if cfg.train.init_from and not has_checkpoints:
        # Verified here (checksum, architecture) so a bad URI is one line, not a failure in every worker.
        src = storage.resolve(cfg.train.init_from, cfg.data.endpoint_url)
        if not storage.exists(src):
            raise assembly.CheckpointError(f"train.init_from: {src.uri} not found")
        state = assembly.read_checkpoint(src)
        assembly.check_resume_arch(state, cfg, assembly.image_size(cfg), f"train.init_from {src.uri}")
        log(f"starting {run.uri} from {src.uri} (after its epoch {state['epoch'] + 1})")
    if resume and has_checkpoints:
        state, loc = assembly.latest_checkpoint(run, log=log)
        assembly.check_resume_arch(state, cfg, assembly.image_size(cfg), loc.uri)
        log(f"resuming {run.uri} after epoch {state['epoch'] + 1} ({loc.uri})")
    ensure_ray()
    use_gpu = cfg.train.use_gpu
    if use_gpu == "auto":
        use_gpu = ray.cluster_resources().get("GPU", 0) >= 1
    storage_root = storage.resolve(cfg.train.storage, cfg.data.endpoint_url)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"run": cfg.to_dict()},
        scaling_config=ray.train.ScalingConfig(
            num_workers=cfg.train.num_workers, use_gpu=bool(use_gpu),
            resources_per_worker={"CPU": cfg.train.cpus_per_worker, **({"GPU": 1} if use_gpu else {})}),
        run_config=ray.train.RunConfig(
            name=cfg.train.name, storage_path=storage_root.path, storage_filesystem=storage_root.fs,
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.train.num_to_keep),
            failure_config=ray.train.FailureConfig(max_failures=cfg.train.max_failures),
            callbacks=callbacks or None),
        datasets={"train": stream.training_dataset(cfg.data.uri, cfg.data.endpoint_url, cfg.train.seed)},
    )
    try:
        result = trainer.fit()
    except Exception as e:
        if "No space left on device" in _chain_text(e):
            kept = [str(epoch + 1) for epoch, _ in assembly.list_checkpoints(run)]
            state = f"checkpoints of epochs {', '.join(kept)} are intact" if kept else "no checkpoint was completed"
            raise StorageFullError(f"{run.uri}: no space left on device while writing a checkpoint; {state} "
                                   f"(free space, then rerun with --resume)") from None
        raise
    storage.write_text(run.join("config.yaml"), _yaml(cfg.to_dict()))
    ckpt = result.checkpoint
    return FitResult(run.uri, dict(result.metrics or {}), _uri_of(storage_root, ckpt.path) if ckpt else None)


def _absolute_paths(cfg: RunConfig) -> RunConfig:
    """Relative local paths in a config mean the driver's working directory; Ray workers run elsewhere."""
    import os

    def fix(value: str) -> str:
        if not value or "://" in value or os.path.isabs(value) or value in ("random", "vggface2", "casia-webface"):
            return value
        return os.path.abspath(value)

    return cfg.replace(data={"uri": fix(cfg.data.uri)}, train={"storage": fix(cfg.train.storage)},
                       model={"projector": fix(cfg.model.projector),
                              "recognizer_weights": fix(cfg.model.recognizer_weights)})


def _chain_text(e: BaseException) -> str:
    """The messages of an exception and everything it wraps (Ray nests worker errors several levels deep)."""
    parts, seen = [], set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        parts.append(f"{type(e).__name__}: {e}")
        e = e.__cause__ or e.__context__ or getattr(e, "cause", None)
    return "\n".join(parts)


def _uri_of(root: storage.Location, path: str) -> str:
    return ("s3://" + path) if root.is_s3 else path


def _yaml(d: dict) -> str:
    import yaml

    return yaml.safe_dump(d, sort_keys=False)
