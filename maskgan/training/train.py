"""Training on Ray Train, the driver: `fit` checks where the run starts, builds the TorchTrainer and runs it.

Only the driver builds Ray configs (ScalingConfig, RunConfig); the per-worker loop is maskgan.training.worker.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
import traceback
from dataclasses import dataclass

from data_loader import storage, stream
from data_loader.ray_session import ensure_ray
from maskgan.config import RunConfig, absolute_paths
from maskgan.run import checkpoints, preflight
from maskgan.training.worker import train_loop_per_worker


class RunExistsError(RuntimeError):
    user_error = True


FAILURE_LOG = "failure.log"  # beside it: the full traceback behind the one line the user saw


class RunFailedError(RuntimeError):
    """A worker's own error (a bad file, non-finite losses, too few rows), one line naming the log file."""

    user_error = True


class NodeLostError(RuntimeError):
    """A Ray node went away with a Train worker on it and the run could not go on without it."""

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


def fit(cfg: RunConfig, resume: bool = False, callbacks=None, log=print, address: str | None = None,
        verbose: bool | None = None) -> FitResult:
    """Run (or resume) training under a TorchTrainer; returns where the run lives and its last metrics.
    `address`: the Ray to join (else RAY_ADDRESS, else a new local instance); `verbose`: Ray's own worker logs on
    this terminal too (else only in Ray's log directory; see ensure_ray). The workers' progress lines come
    through `log`, once each, either way."""
    cfg = absolute_paths(cfg)
    storage_root = _storage_root(cfg)  # each URI resolved once here, at the edge
    run = storage_root.join(cfg.train.name)
    has_checkpoints = storage.exists(run) and bool(checkpoints.list_checkpoints(run))
    if has_checkpoints and not resume:
        raise RunExistsError(f"{run.uri} already holds a run; pass --resume to continue it, "
                             f"or choose another train.name")
    if resume and not has_checkpoints:
        log(f"nothing to resume at {run.uri}: starting a new run")
    # Everything the workers will read, and where the run starts, verified here before Ray starts, so a bad
    # file is one line in seconds, not a failure in every worker; the workers load the same files again.
    start = preflight.run(cfg, run, log=log)
    if start is not None and start.resumed:
        log(f"resuming {run.uri} after epoch {start.state['epoch'] + 1} ({start.source})")
    elif start is not None:
        log(f"starting {run.uri} from {start.source} (after its epoch {start.state['epoch'] + 1})")
    ensure_ray(address, log=log, verbose=verbose)
    with _progress_printer(log) as progress:
        result = _fit_trainer(cfg, run, storage_root, callbacks, progress)
    storage.delete_file(run.join(checkpoints.FAILED_FILE))  # a resumed run that finishes is finished
    storage.write_text(run.join("config.yaml"), _yaml(cfg.to_dict()))
    ckpt = result.checkpoint
    return FitResult(run.uri, dict(result.metrics or {}), _uri_of(storage_root, ckpt.path) if ckpt else None)


def _fit_trainer(cfg: RunConfig, run: storage.Location, storage_root: storage.Location, callbacks, progress):
    """Build the TorchTrainer and run it; a failure becomes one line naming the run's failure.log."""
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    use_gpu = cfg.train.use_gpu
    if use_gpu == "auto":
        use_gpu = ray.cluster_resources().get("GPU", 0) >= 1
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"run": cfg.to_dict(), "run_uri": run.uri, "progress": progress},
        scaling_config=_scaling(cfg, bool(use_gpu)),
        run_config=ray.train.RunConfig(
            name=cfg.train.name, storage_path=storage_root.path, storage_filesystem=storage_root.fs,
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.train.num_to_keep),
            failure_config=ray.train.FailureConfig(max_failures=cfg.train.max_failures),
            # Ray Train's INFO lines on the console (every report, the failure policy's decision with the
            # worker tracebacks) repeat what the progress line and our one-line error say; its log files
            # keep every level.
            logging_config=ray.train.LoggingConfig(log_level="WARNING"),
            callbacks=callbacks or None),
        datasets={"train": stream.training_dataset(cfg.data.uri, cfg.data.endpoint_url, cfg.train.seed)},
    )
    try:
        return trainer.fit()
    except Exception as e:
        if "No space left on device" in _chain_text(e):
            message = (f"{run.uri}: no space left on device while writing a checkpoint; {_kept(run)} "
                       f"(free space, then rerun with --resume)")
            _mark_failed(run, message, _chain_text(e))
            raise StorageFullError(message) from None
        _raise_failure(run, e)


@contextlib.contextmanager
def _progress_printer(log):
    """A queue (a zero-CPU Ray actor) the workers put their progress lines on, and a thread that prints them with
    `log` while Train runs: each line once, on the driver, whether or not Ray forwards worker output."""
    import ray
    from ray.util.queue import Empty, Queue
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    # On the driver's own node: a queue placed on a worker's node would die with it, and every line after a lost
    # node (the restart, the epochs that finish the run) with the queue.
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    queue = Queue(actor_options={"num_cpus": 0, "scheduling_strategy": here})
    finished = threading.Event()

    def pump():
        while True:
            try:
                log(queue.get(timeout=0.5))
            except Empty:
                if finished.is_set():
                    return  # drained after the run ended
            except ray.exceptions.RayError:
                return  # the queue's actor is gone (the cluster went away): nothing more to print

    thread = threading.Thread(target=pump, name="train-progress", daemon=True)
    thread.start()
    try:
        yield queue
    finally:
        finished.set()
        thread.join(timeout=30)
        with contextlib.suppress(ray.exceptions.RayError):
            queue.shutdown()


def _scaling(cfg: RunConfig, use_gpu: bool):
    """Ray Train's ScalingConfig: a fixed worker count, or (train.min_workers) an elastic range that a restart
    after a lost node fits to the capacity left; placement and the per-worker custom resource as configured."""
    import ray.train

    t = cfg.train
    resources = {"CPU": t.cpus_per_worker, **({"GPU": 1} if use_gpu else {}),
                 **({t.worker_resource: 1} if t.worker_resource else {})}
    workers = (t.min_workers, t.num_workers) if t.min_workers else t.num_workers
    return ray.train.ScalingConfig(num_workers=workers, use_gpu=use_gpu, resources_per_worker=resources,
                                   placement_strategy=t.placement)


def _kept(run: storage.Location) -> str:
    kept = [str(epoch + 1) for epoch, _ in checkpoints.list_checkpoints(run)]
    return f"checkpoints of epochs {', '.join(kept)} are intact" if kept else "no checkpoint was completed"


def _raise_failure(run: storage.Location, e: Exception):
    """Mark the run failed, put the full traceback in its log file, and raise: a worker lost with its node, or
    the worker's own user error, as one line naming that file (Ray Train wraps it in a WorkerGroupError of every
    rank's traceback), any other failure as it came (a bug: its traceback is the report)."""
    lost = _lost_node(e)
    if lost is not None:
        message = (f"{run.uri}: {lost}; {_kept(run)} (rerun with --resume when the cluster holds "
                   f"train.num_workers workers again, or set train.min_workers to go on with fewer)")
        log_uri = _mark_failed(run, message, "".join(traceback.format_exception(e)))
        raise NodeLostError(f"{message} (traceback: {log_uri})") from None
    worker_error = _worker_user_error(e)
    if worker_error is None:
        first = next(iter((getattr(e, "worker_failures", None) or {}).values()), e)
        _mark_failed(run, f"{type(first).__name__}: {(str(first).strip().splitlines() or [''])[0][:300]}",
                     getattr(first, "worker_traceback", None) or "".join(traceback.format_exception(e)))
        raise e
    log_uri = _mark_failed(run, str(worker_error),
                           getattr(worker_error, "worker_traceback", None) or "".join(traceback.format_exception(e)))
    raise RunFailedError(f"{worker_error} (traceback: {log_uri})") from None


# Ray's ActorDiedError text when the actor's node died (ray/exceptions.py builds it from the GCS's death cause).
_NODE_DIED = re.compile(r"its node has died\. Node Id: ([0-9a-f]+)")
_NODE_IP = re.compile(r"^\s*ip: (\S+)$", re.M)


def _lost_node(e: BaseException) -> str | None:
    """'Train worker R was lost with its Ray node ID (IP)' when a worker died because its node did, else None."""
    for rank, error in sorted((getattr(e, "worker_failures", None) or {}).items()):
        text = str(error)
        node = _NODE_DIED.search(text)
        if node:
            ip = _NODE_IP.search(text)
            where = f" ({ip.group(1)})" if ip else ""
            return f"Train worker {rank} was lost with its Ray node {node.group(1)}{where}"
    return None


def _worker_user_error(e: BaseException) -> BaseException | None:
    """The first user error (`user_error = True`) a worker raised, by rank, inside Ray Train's wrapping."""
    for error in dict(sorted((getattr(e, "worker_failures", None) or {}).items())).values():
        if getattr(error, "user_error", False):
            return error
    return None


def _mark_failed(run: storage.Location, reason: str, details: str) -> str:
    """Write FAILED.json (the reason) and failure.log (the details) into the run folder; the log's URI. Best
    effort: when the run's storage is what failed, the log goes to a local file and no marker is written."""
    log_loc = run.join(FAILURE_LOG)
    try:
        storage.write_text(log_loc, details)
        storage.write_text(run.join(checkpoints.FAILED_FILE), json.dumps(
            {"reason": reason, "log": log_loc.uri, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
            indent=1))
        return log_loc.uri
    except (storage.StorageError, OSError):
        import tempfile

        with tempfile.NamedTemporaryFile("w", prefix="maskgan-failure-", suffix=".log", delete=False) as f:
            f.write(details)
        return f.name


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
