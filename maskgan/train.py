"""Training on Ray Train, the driver: `fit` checks where the run starts, builds the TorchTrainer and runs it.

Only the driver builds Ray configs (ScalingConfig, RunConfig); the per-worker loop is maskgan.worker.
"""

from __future__ import annotations

from dataclasses import dataclass

from data_loader import storage, stream
from data_loader.ray_session import ensure_ray
from maskgan import assembly
from maskgan.config import RunConfig, absolute_paths
from maskgan.worker import train_loop_per_worker


class RunExistsError(RuntimeError):
    user_error = True


class StorageFullError(RuntimeError):
    """The run's storage ran out of space; the checkpoints written before are intact."""

    user_error = True


@dataclass
class FitResult:
    run_uri: str
    metrics: dict
    checkpoint_uri: str | None


def run_location(cfg: RunConfig) -> storage.Location:
    return _storage_root(cfg).join(cfg.train.name)


def _storage_root(cfg: RunConfig) -> storage.Location:
    return storage.resolve(cfg.train.storage, cfg.data.endpoint_url)


def fit(cfg: RunConfig, resume: bool = False, callbacks=None, log=print) -> FitResult:
    """Run (or resume) training under a TorchTrainer; returns where the run lives and its last metrics."""
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    cfg = absolute_paths(cfg)
    storage_root = _storage_root(cfg)  # each URI resolved once here, at the edge
    run = storage_root.join(cfg.train.name)
    data = assembly.data_root(cfg)
    has_checkpoints = storage.exists(run) and bool(assembly.list_checkpoints(run))
    if has_checkpoints and not resume:
        raise RunExistsError(f"{run.uri} already holds a run; pass --resume to continue it, "
                             f"or choose another train.name")
    if resume and not has_checkpoints:
        log(f"nothing to resume at {run.uri}: starting a new run")
    # Where the run starts, verified here (checksum, architecture) so a bad checkpoint is one line, not a
    # failure in every worker; the workers ask the same question again to load the weights.
    start = assembly.starting_checkpoint(cfg, run, data, log=log)
    if start is not None and start.resumed:
        log(f"resuming {run.uri} after epoch {start.state['epoch'] + 1} ({start.source})")
    elif start is not None:
        log(f"starting {run.uri} from {start.source} (after its epoch {start.state['epoch'] + 1})")
    ensure_ray()
    use_gpu = cfg.train.use_gpu
    if use_gpu == "auto":
        use_gpu = ray.cluster_resources().get("GPU", 0) >= 1
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"run": cfg.to_dict(), "run_uri": run.uri},
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
