"""Training on Ray Train: the worker loop (`train_loop_per_worker`) and the driver (`fit`).

Only the worker touches `ray.train`'s per-worker API; only the driver builds Ray configs. The worker calls
the one `train_step` from maskgan.objective.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass

import numpy as np
import torch

from data_loader import storage, stream
from maskgan import assembly
from maskgan.config import RunConfig, from_dict
from maskgan.evaluate import score_set
from maskgan.objective import HEAD_TERMS, Models, Optimizers, to_float_images, train_step, trunk_features, unwrap

VAL_ROWS = ("unmasked", "original_mask", "generated")


class RunExistsError(RuntimeError):
    user_error = True


# ---- worker -----------------------------------------------------------------------------------------------


def step_batch(raw: dict, projector, trunk, experiment: str, device) -> dict:
    """Decoded numpy batch -> the step's tensors: projector alpha, and real-photo trunk features when the
    experiment's head terms need them (constants: the projector and trunk are frozen)."""
    masked = to_float_images(torch.from_numpy(raw["masked"])).to(device, non_blocking=True)
    with torch.no_grad():
        batch = {"masked": masked, "alpha": projector(masked),
                 "label": torch.from_numpy(raw["label"].astype(np.int64)).to(device)}
        terms = HEAD_TERMS[experiment]
        if "unmasked" in terms:
            batch["feats_unmasked"] = trunk(to_float_images(torch.from_numpy(raw["unmasked"])).to(device))
        if "original_mask" in terms:
            batch["feats_masked"] = trunk(masked)
    return batch


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
    resumed = ray.train.get_checkpoint()
    state = None
    if resumed is not None:
        with resumed.as_directory() as d:
            loc = storage.resolve(d)
            state = assembly.read_checkpoint(loc)
        assembly.check_resume_arch(state, cfg, size, "resume")
        generator.load_state_dict(state["generator"])
        head.load_state_dict(state["head"])
        start_epoch = state["epoch"] + 1
        if rank == 0:
            print(f"[{cfg.train.name}] resumed from the checkpoint of epoch {start_epoch}", flush=True)

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
    models = Models(generator=generator, trunk=rec.trunk, head=head, latent_dim=cfg.model.latent_dim)
    opts = Optimizers(generator=g_opt, head=h_opt)
    shard = ray.train.get_dataset_shard("train")
    metrics_sink = _metrics_sink(cfg.train.name) if rank == 0 else None

    for epoch in range(start_epoch, cfg.train.epochs):
        unwrap(generator).train()
        t0, wait, images, sums, steps = time.perf_counter(), 0.0, 0, {}, 0
        for raw, waited in stream.timed_batches(shard, cfg.data.batch_size, cfg.data.shuffle_buffer,
                                                cfg.data.prefetch_batches, seed=cfg.train.seed + epoch):
            wait += waited
            out = train_step(models, opts, step_batch(raw, projector, rec.trunk, cfg.objective.experiment, device),
                             gallery_feats, cfg.objective)
            for k, v in out.items():
                sums[k] = sums.get(k, 0.0) + v
            images += len(raw["label"])
            steps += 1
        elapsed = time.perf_counter() - t0
        metrics = {k: v / max(steps, 1) for k, v in sums.items()}
        metrics.update({"epoch": epoch, "train/images": images, "train/images_per_s": images / max(elapsed, 1e-9),
                        "train/data_wait_s": wait, "train/epoch_s": elapsed})
        if rank == 0:
            metrics.update(_validate(cfg, rec.trunk, head, projector, generator, gallery_feats, device))
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = None
            if rank == 0:
                assembly.save_checkpoint(tmp, cfg=cfg, size=size, epoch=epoch, generator=unwrap(generator),
                                         head=unwrap(head), g_opt=g_opt, h_opt=h_opt, metrics=metrics)
                checkpoint = ray.train.Checkpoint.from_directory(tmp)
            t_up = time.perf_counter()
            ray.train.report(metrics, checkpoint=checkpoint)
            if rank == 0:
                metrics["checkpoint/upload_s"] = time.perf_counter() - t_up
        if metrics_sink is not None:
            metrics_sink.log(metrics, step=epoch)
        if rank == 0:
            print(_progress_line(cfg, epoch, metrics), flush=True)


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

    run = run_location(cfg)
    has_checkpoints = storage.exists(run) and bool(assembly.list_checkpoints(run))
    if has_checkpoints and not resume:
        raise RunExistsError(f"{run.uri} already holds a run; pass --resume to continue it, "
                             f"or choose another train.name")
    if resume and not has_checkpoints:
        log(f"nothing to resume at {run.uri}: starting a new run")
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
    result = trainer.fit()
    storage.write_text(run.join("config.yaml"), _yaml(cfg.to_dict()))
    ckpt = result.checkpoint
    return FitResult(run.uri, dict(result.metrics or {}), _uri_of(storage_root, ckpt.path) if ckpt else None)


def _uri_of(root: storage.Location, path: str) -> str:
    return ("s3://" + path) if root.is_s3 else path


def _yaml(d: dict) -> str:
    import yaml

    return yaml.safe_dump(d, sort_keys=False)
