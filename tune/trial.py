"""One trial of a sweep: a Tune function trainable that runs the train command's TorchTrainer (`train.fit`).

The trial relays each epoch of its trainer to Tune (metrics, the guarded objective, a pointer checkpoint) and,
under PBT, adopts a stronger trial's checkpoint when Tune restarts it from one.
"""

from __future__ import annotations

import json

from data_loader import storage
from maskgan import config as mconfig
from maskgan.config import RunConfig
from maskgan.run import checkpoints
from maskgan.training import train
from tune.guard import cached_baseline, guard_floors, guarded
from tune.space import parse_space, trial_config

# The trial itself only waits on its TorchTrainer: no CPU, a little logical memory. Even 0.01 CPU per trial
# would leave 0.98 of 2 CPUs next to two 0.5-CPU workers, and Ray Data's 1-CPU read tasks would never start.
TRIAL_RESOURCES = {"CPU": 0, "memory": 128 * 1024 * 1024}
POINTER = "pointer.json"
LINEAGE = "pbt.json"  # in a trial's run folder: the checkpoints PBT cloned into it, oldest first
CLONE_PREFIX = "checkpoint_pbt_"


# ---- the Train -> Tune relay ---------------------------------------------------------------------------------


def _trial_report(floors: dict, queue, run_uri: str):
    """Train V2 callback (runs in the trial's Train controller): rank 0's metrics of each epoch, the guarded
    objective, and the URI of the epoch's checkpoint, handed to the trial through `queue`.

    Ray's TuneReportCallback does this with metrics only (the checkpoint path rides along as a metric), so
    Tune never holds a checkpoint of the trial and PBT has nothing to clone. Here the trial itself reports each
    epoch to Tune with a pointer checkpoint (`pointer.json`: the train checkpoint's URI; a few hundred bytes,
    no second copy of the weights)."""
    from ray.train.v2.api.callback import UserCallback

    class TrialReport(UserCallback):
        def after_report(self, run_context, metrics, checkpoint):
            first = {**metrics[0], **guarded(metrics[0], floors)}
            uri = storage.join_uri(run_uri, checkpoint.path.rstrip("/").rsplit("/", 1)[-1]) if checkpoint else None
            queue.put({"metrics": first, "checkpoint": uri})  # blocks until the trial took the previous one

    return TrialReport()


def _report_to_tune(metrics: dict, checkpoint_uri: str | None, run_uri: str) -> None:
    import os
    import tempfile

    import ray.tune

    if checkpoint_uri is None:
        ray.tune.report(metrics)
        return
    with tempfile.TemporaryDirectory() as d:  # Tune copies it into the trial folder before report returns
        with open(os.path.join(d, POINTER), "w") as f:
            json.dump({"run": run_uri, "checkpoint": checkpoint_uri, "epoch": metrics.get("epoch")}, f)
        ray.tune.report(metrics, checkpoint=ray.tune.Checkpoint.from_directory(d))


def _tune_start() -> dict | None:
    """The pointer Tune restarts this trial from: its own last report, or (PBT) a stronger trial's."""
    import os

    import ray.tune

    ckpt = ray.tune.get_checkpoint()
    if ckpt is None:
        return None
    with ckpt.as_directory() as d:
        path = os.path.join(d, POINTER)
        if not os.path.exists(path):
            return None
        with open(path) as f:
            return json.load(f)


def _relay(queue, fit_ref, run_uri: str) -> None:
    """Report each epoch the trial's trainer hands over until it ends; then raise its error, if any."""
    import ray
    from ray.util.queue import Empty

    while True:
        try:
            item = queue.get(block=True, timeout=1.0)
        except Empty:
            if ray.wait([fit_ref], timeout=0)[0]:
                break
            continue
        _report_to_tune(item["metrics"], item["checkpoint"], run_uri)
    while True:  # the last epoch's item can still be queued when the trainer returns
        try:
            item = queue.get_nowait()
        except Empty:
            break
        _report_to_tune(item["metrics"], item["checkpoint"], run_uri)
    ray.get(fit_ref)


# ---- PBT: adopting a stronger trial's checkpoint ---------------------------------------------------------


def _adopt(cfg: RunConfig, run: storage.Location, start: dict, guard: dict, log) -> RunConfig:
    """PBT restarted this trial from another trial's checkpoint: replace this trial's run by a copy of it
    (the weaker trial's past is what PBT discards) and train on from there with this trial's (mutated)
    config. The copy lives in the run as `checkpoint_pbt_<epoch>`, so the trial's evaluation, export and a
    later restart see it like any checkpoint. Idempotent: a restart before the clone reported finds it."""
    import os
    import tempfile

    lineage_loc = run.join(LINEAGE)
    lineage = json.loads(storage.read_text(lineage_loc)) if storage.exists(lineage_loc) else []
    if lineage and lineage[-1]["from"] == start["checkpoint"]:
        return cfg.replace(train={"init_from": lineage[-1]["copy"]})
    src = storage.resolve(start["checkpoint"], cfg.data.endpoint_url)
    try:
        files = checkpoints.checkpoint_files(src)  # verified (checksum) before this trial's own run is given up
    except (checkpoints.CheckpointError, storage.StorageError, OSError, ValueError, KeyError) as e:
        # e.g. the donor's run already dropped that checkpoint (train.num_to_keep): explore without exploit
        log(f"warning: cannot clone {src.uri} ({str(e).splitlines()[0][:200]}); continuing this trial's own run "
            "with the new config")
        return cfg
    storage.delete_dir(run)
    dest = run.join(f"{CLONE_PREFIX}{int(start['epoch']):04d}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in files.items():
            with open(os.path.join(tmp, name), "wb") as f:
                f.write(data)
        checkpoints.upload_checkpoint(tmp, dest, log=log)  # meta.json last: a torn copy is never taken as complete
    storage.write_text(run.join("guard.json"), json.dumps(guard, indent=1))
    lineage.append({"from": start["checkpoint"], "from_run": start["run"], "epoch": start["epoch"],
                    "copy": dest.uri, "config": cfg.to_dict()["objective"]})
    storage.write_text(lineage_loc, json.dumps(lineage, indent=1))
    log(f"PBT: continuing from {src.uri} (epoch {int(start['epoch']) + 1}) with g_lr {cfg.objective.g_lr:.3g}, "
        f"head_lr {cfg.objective.head_lr:.3g}, l1_lambda {cfg.objective.l1_lambda:.3g}")
    return cfg.replace(train={"init_from": dest.uri})


# ---- the trial (a Tune function trainable that launches the train command's TorchTrainer) -------------------


def trial(config: dict, sweep: dict) -> None:
    """One trial: the run config from base + this trial's axes, the guard's floor, then `train.fit`."""
    import ray
    import ray.tune
    from ray.util.queue import Queue


    space = parse_space(sweep["space"], "sweep.json")
    trial_id = ray.tune.get_context().get_trial_id()
    cfg = trial_config(space, config, sweep["runs"], trial_id)
    run = train.run_location(cfg)
    log = lambda m: print(f"[{trial_id}] {m}", flush=True)  # noqa: E731

    guard_loc = run.join("guard.json")
    if storage.exists(guard_loc):  # a restarted trial keeps its first baseline
        guard = json.loads(storage.read_text(guard_loc))
    else:
        baseline = cached_baseline(cfg, space.guard.rows, sweep["sweep"])
        guard = {"before_training": baseline, "floors": guard_floors(baseline, space.guard),
                 "min_ratio": space.guard.min_ratio, "min_accuracy": space.guard.min_accuracy}
        storage.write_text(guard_loc, json.dumps(guard, indent=1))
    floors = guard["floors"]
    start = _tune_start()
    if start is not None and start["run"] != run.uri:
        cfg = _adopt(cfg, run, start, guard, log)
    done = checkpoints.list_checkpoints(run) if storage.exists(run) else []
    if done and done[-1][0] >= cfg.train.epochs - 1:
        # Finished before the sweep driver went away: report its last epoch again instead of training more.
        meta = checkpoints.read_meta(done[-1][1])
        log(f"already finished ({done[-1][1].uri}); not rerun")
        _report_to_tune({**meta["metrics"], **guarded(meta["metrics"], floors)}, done[-1][1].uri, run.uri)
        return
    # train.fit runs in a child task whose runtime env names this cluster (RAY_ADDRESS): Train's controller and
    # its detached placement-group cleaner inherit it. When a scheduler stops this trial, Tune kills this actor
    # and with it the controller; the cleaner then frees the workers' placement group. Without an address it
    # cannot find the cluster on a machine with several Ray instances, and the stopped trial's workers' CPUs
    # stay reserved for the rest of the session.
    env = {"RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    fit_task = ray.remote(num_cpus=0, max_retries=0, runtime_env={"env_vars": env})(_fit)
    queue = Queue(maxsize=1, actor_options={"num_cpus": 0})
    callback = _trial_report(floors, queue, run.uri)
    _relay(queue, fit_task.remote(cfg.to_dict(), bool(done), callback, trial_id), run.uri)


def _fit(cfg_dict: dict, resume: bool, callback, trial_id: str) -> None:
    train.fit(mconfig.from_dict(cfg_dict), resume=resume, callbacks=[callback],
              log=lambda m: print(f"[{trial_id}] {m}", flush=True))
