"""Ray Tune sweeps over `maskgan.train`: one trial = one `train.fit` run (the same TorchTrainer as `maskgan train`).

A search space file (tune/spaces/*.yaml) is a base RunConfig plus axes keyed by dotted config fields:

    name: paper                     # the sweep's folder under --storage (default: base train.storage)
    base: {data: ..., model: ..., objective: ..., train: ...}     # a RunConfig mapping, validated
    grid:       {objective.experiment: [exp0, exp1, exp2, exp3]}  # every value (tune.grid_search)
    choice:     {data.batch_size: [8, 16]}                        # sampled per trial
    loguniform: {objective.g_lr: [1.0e-3, 3.0e-2]}                # sampled, [low, high]
    uniform:    {objective.l1_lambda: [0.0, 0.05]}
    asha: {grace_period: 1, reduction_factor: 2}
    pbt:  {perturbation_interval: 1, mutations: {objective.g_lr: [1.0e-3, 1.0e-1], ...}}
    guard: {rows: [unmasked, original_mask], min_ratio: 0.5, min_accuracy: 0.0}
    max_concurrent_trials: null     # default: from the cluster's GPUs (or CPUs)

Layout of a sweep folder `{storage}/{name}/`: Tune's own state (experiment_state-*.json, tuner.pkl, one
`trial_{id}` folder per trial), `sweep.json` (the resolved space), `runs/{trial_id}/` (each trial's train run:
checkpoints, guard.json, report.json/md, designs.png) and `results.csv`, `results.md`, `paper_table.md`.
Trial ids are Tune's, kept across `--resume`, so a restarted trial continues its own run folder.

Scheduling metric: `objective` = `acc/val/generated` (lower is better) while the recogniser still recognises
people: for each guard row (default `unmasked` and `original_mask`), `acc/val/{row}` >= max(min_accuracy,
min_ratio x the same accuracy before training, measured by the trial on the same probes). A trial whose
recogniser collapsed reports the worst value, 1.0, so a design that "wins" because the head forgot everyone
never wins. (`original_mask` is guarded too: a head that no longer recognises masked faces at all scores
0 % on generated masks without any design working.)
"""

from __future__ import annotations

import copy
import csv
import io
import json
import math
import typing
from dataclasses import dataclass, field

import data_loader.storage as storage_mod
from data_loader import storage
from maskgan import config as mconfig
from maskgan.config import ConfigError, RunConfig

METRIC = "objective"  # what the schedulers rank (mode min)
TIME_ATTR = "epochs_done"  # epochs finished in the trial's train run (survives restarts, unlike Tune's iteration)
AXES = ("grid", "choice", "loguniform", "uniform")
TOP_KEYS = ("name", "base", *AXES, "asha", "pbt", "guard", "max_concurrent_trials")
# Set by the sweep itself, or fixed for the whole sweep (resources, the ASHA/PBT horizon): not axes.
NOT_AXES = ("train.name", "train.storage", "train.num_workers", "train.cpus_per_worker", "train.use_gpu",
            "train.epochs", "train.init_from")
PBT_DEFAULT_MUTATIONS = ("objective.g_lr", "objective.head_lr", "objective.l1_lambda")
DATA_CPU_RESERVE = 1.0  # CPUs left free for Ray Data's read tasks (1 CPU each) when trials run on CPUs
# The trial itself only waits on its TorchTrainer: no CPU, a little logical memory. Even 0.01 CPU per trial
# would leave 0.98 of 2 CPUs next to two 0.5-CPU workers, and Ray Data's 1-CPU read tasks would never start.
TRIAL_RESOURCES = {"CPU": 0, "memory": 128 * 1024 * 1024}
GUARD_ROWS = ("unmasked", "original_mask")
REPORT_ROWS = ("unmasked", "original_mask", "generated", "blue", "black", "white", "noise")
PAPER_ROWS = (  # (label, report row, split); the paper's Table 5
    ("training accuracy", "generated", "train"),
    ("testing accuracy", "generated", "test"),
    ("MaskedFace-Net accuracy (original mask, test)", "original_mask", "test"),
    ("FFHQ accuracy (unmasked, test)", "unmasked", "test"),
)
PAPER_TABLE5 = {"training accuracy": ("6.2%", "15%", "23.8%", "0.6%"),
                "testing accuracy": ("0%", "0%", "0%", "0%"),
                "MaskedFace-Net accuracy (original mask, test)": ("85%", "65.1%", "73.6%", "85.4%"),
                "FFHQ accuracy (unmasked, test)": ("100%", "99%", "100%", "100%")}


class SpaceError(ConfigError):
    """A search space file is wrong; one line naming the file and the key."""

    user_error = True


class SweepError(RuntimeError):
    user_error = True


# ---- search space -----------------------------------------------------------------------------------------


@dataclass
class Guard:
    rows: tuple = ("unmasked", "original_mask")  # val accuracy rows that must not collapse
    min_ratio: float = 0.5  # each must stay >= this x its value before training ...
    min_accuracy: float = 0.0  # ... and >= this absolute floor


@dataclass
class Space:
    name: str
    base: RunConfig
    grid: dict = field(default_factory=dict)  # dotted field -> list of values
    choice: dict = field(default_factory=dict)  # dotted field -> list of values
    loguniform: dict = field(default_factory=dict)  # dotted field -> [low, high]
    uniform: dict = field(default_factory=dict)  # dotted field -> [low, high]
    asha: dict = field(default_factory=lambda: {"grace_period": 1, "reduction_factor": 2})
    pbt: dict = field(default_factory=dict)  # perturbation_interval, mutations {field: [low, high]}
    guard: Guard = field(default_factory=Guard)
    max_concurrent_trials: int | None = None

    @property
    def axes(self) -> list[str]:
        return [k for kind in AXES for k in getattr(self, kind)]

    def to_dict(self) -> dict:
        return {"name": self.name, "base": self.base.to_dict(), "grid": self.grid, "choice": self.choice,
                "loguniform": self.loguniform, "uniform": self.uniform, "asha": self.asha, "pbt": self.pbt,
                "guard": {"rows": list(self.guard.rows), "min_ratio": self.guard.min_ratio,
                          "min_accuracy": self.guard.min_accuracy},
                "max_concurrent_trials": self.max_concurrent_trials}


def _field_type(dotted: str):
    section, _, name = dotted.partition(".")
    sections = typing.get_type_hints(RunConfig)
    if section not in sections or not name or "." in name:
        raise SpaceError(f"{dotted}: not a config field (write section.field, e.g. objective.g_lr)")
    hints = typing.get_type_hints(sections[section])
    if name not in hints:
        raise SpaceError(f"{dotted}: unknown field (allowed in {section}: {', '.join(hints)})")
    return hints[name]


def apply(base: RunConfig, values: dict) -> RunConfig:
    """base with dotted overrides {"objective.g_lr": 0.01, ...}; validated like a config file."""
    sections: dict = {}
    for dotted, value in values.items():
        _field_type(dotted)
        section, _, name = dotted.partition(".")
        sections.setdefault(section, {})[name] = value
    return base.replace(**sections) if sections else base


def _check_axis(kind: str, base: RunConfig, key: str, spec) -> None:
    where = f"{kind}.{key}"
    try:
        tp = _field_type(key)
    except SpaceError as e:
        raise SpaceError(f"{kind}.{e}") from None
    if key in NOT_AXES:
        raise SpaceError(f"{where}: cannot be swept (set it in base; the sweep fixes names, storage, resources "
                         "and epochs for all trials)")
    if kind in ("grid", "choice"):
        if not isinstance(spec, list) or not spec:
            raise SpaceError(f"{where}: expected a non-empty list of values")
        values = spec
    else:
        if tp is not float:
            raise SpaceError(f"{where}: {kind} needs a float field ({key} is not); use grid or choice")
        if (not isinstance(spec, list) or len(spec) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in spec)):
            raise SpaceError(f"{where}: expected [low, high] numbers, got {spec!r}")
        low, high = spec
        if not low < high:
            raise SpaceError(f"{where}: low must be < high, got {spec!r}")
        if kind == "loguniform" and low <= 0:
            raise SpaceError(f"{where}: loguniform needs low > 0, got {low}")
        values = [float(low), float(high)]
    for v in values:
        try:
            apply(base, {key: v})
        except ConfigError as e:
            raise SpaceError(f"{kind}.{e}") from None


def _number(where: str, value, kind=float, minimum=None):
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (kind is float or isinstance(value, int))
    if not ok or (minimum is not None and value < minimum):
        need = "an integer" if kind is int else "a number"
        raise SpaceError(f"{where}: expected {need}{f' >= {minimum}' if minimum is not None else ''}, got {value!r}")
    return kind(value)


def parse_space(data, source: str = "space") -> Space:
    """Validate a space mapping; errors are one line: '<source>: <key>: what is wrong'."""
    try:
        return _parse(data)
    except ConfigError as e:
        raise SpaceError(f"{source}: {e}") from None


def _parse(data) -> Space:
    if not isinstance(data, dict):
        raise SpaceError(f"expected a mapping with {', '.join(TOP_KEYS)}")
    unknown = [k for k in data if k not in TOP_KEYS]
    if unknown:
        raise SpaceError(f"{unknown[0]}: unknown key (allowed: {', '.join(TOP_KEYS)})")
    name = data.get("name", "sweep")
    if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
        raise SpaceError(f"name: {name!r} must be a plain folder name")
    if "base" not in data:
        raise SpaceError("base: required (a run config mapping, as in configs/debug_cpu.yaml)")
    try:
        base = mconfig.from_dict(data["base"] or {})
    except ConfigError as e:
        raise SpaceError(f"base.{e}") from None
    if base.train.val_probes == 0:
        raise SpaceError("base.train.val_probes: must be > 0 (the schedulers rank trials on validation accuracy)")
    space = Space(name=name, base=base)
    seen: dict = {}
    for kind in AXES:
        axes = data.get(kind) or {}
        if not isinstance(axes, dict):
            raise SpaceError(f"{kind}: expected a mapping of section.field -> values")
        for key, spec in axes.items():
            if key in seen:
                raise SpaceError(f"{kind}.{key}: already an axis under {seen[key]}")
            _check_axis(kind, base, key, spec)
            seen[key] = kind
        setattr(space, kind, {k: list(v) for k, v in axes.items()})
    asha = data.get("asha") or {}
    if not isinstance(asha, dict) or set(asha) - {"grace_period", "reduction_factor"}:
        bad = sorted(set(asha) - {"grace_period", "reduction_factor"}) if isinstance(asha, dict) else ["(not a mapping)"]
        raise SpaceError(f"asha.{bad[0]}: unknown key (allowed: grace_period, reduction_factor)")
    space.asha = {"grace_period": _number("asha.grace_period", asha.get("grace_period", 1), int, 1),
                  "reduction_factor": _number("asha.reduction_factor", asha.get("reduction_factor", 2), float, 1.01)}
    space.pbt = _parse_pbt(data.get("pbt") or {}, base)
    guard = data.get("guard") or {}
    allowed = {"rows", "min_ratio", "min_accuracy"}
    if not isinstance(guard, dict) or set(guard) - allowed:
        bad = sorted(set(guard) - allowed) if isinstance(guard, dict) else ["(not a mapping)"]
        raise SpaceError(f"guard.{bad[0]}: unknown key (allowed: {', '.join(sorted(allowed))})")
    rows = guard.get("rows", list(Guard.rows))
    if not isinstance(rows, list) or not rows or any(r not in GUARD_ROWS for r in rows):
        raise SpaceError(f"guard.rows: {rows!r} must be a non-empty list of {', '.join(GUARD_ROWS)}")
    space.guard = Guard(tuple(rows), _number("guard.min_ratio", guard.get("min_ratio", 0.5), float, 0),
                        _number("guard.min_accuracy", guard.get("min_accuracy", 0.0), float, 0))
    mct = data.get("max_concurrent_trials")
    space.max_concurrent_trials = None if mct is None else _number("max_concurrent_trials", mct, int, 1)
    return space


def _parse_pbt(pbt, base: RunConfig) -> dict:
    if not isinstance(pbt, dict) or set(pbt) - {"perturbation_interval", "mutations"}:
        bad = sorted(set(pbt) - {"perturbation_interval", "mutations"}) if isinstance(pbt, dict) else ["(not a mapping)"]
        raise SpaceError(f"pbt.{bad[0]}: unknown key (allowed: perturbation_interval, mutations)")
    mutations = pbt.get("mutations")
    if mutations is None:  # around the base values: lr x/÷ 10, l1 lambda 1e-3 .. 1e-1
        o = base.objective
        mutations = {"objective.g_lr": [o.g_lr / 10, o.g_lr * 10], "objective.head_lr": [o.head_lr / 10, o.head_lr * 10],
                     "objective.l1_lambda": [1e-3, 1e-1]}
    if not isinstance(mutations, dict) or not mutations:
        raise SpaceError("pbt.mutations: expected a mapping of section.field -> [low, high]")
    for key, spec in mutations.items():
        if key not in PBT_DEFAULT_MUTATIONS:
            raise SpaceError(f"pbt.mutations.{key}: not mutable (allowed: {', '.join(PBT_DEFAULT_MUTATIONS)})")
        _check_axis("pbt.mutations", base, key, spec)
        if key.endswith("_lr") and spec[0] <= 0:  # resampled log-uniformly
            raise SpaceError(f"pbt.mutations.{key}: needs low > 0, got {spec[0]}")
    return {"perturbation_interval": _number("pbt.perturbation_interval", pbt.get("perturbation_interval", 1), int, 1),
            "mutations": {k: [float(v[0]), float(v[1])] for k, v in mutations.items()}}


def load_space(path: str) -> Space:
    import yaml

    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        raise SpaceError(f"{path}: cannot read search space ({e.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise SpaceError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    return parse_space(data, path)


def param_space(space: Space) -> dict:
    """Tune's param_space: one top-level key per axis (dotted names, so PBT can mutate them by name)."""
    from ray import tune

    ps: dict = {}
    for key, values in space.grid.items():
        ps[key] = tune.grid_search(values)
    for key, values in space.choice.items():
        ps[key] = tune.choice(values)
    for key, (low, high) in space.loguniform.items():
        ps[key] = tune.loguniform(low, high)
    for key, (low, high) in space.uniform.items():
        ps[key] = tune.uniform(low, high)
    return ps


def trial_config(space: Space, axes: dict, runs_uri: str, trial_id: str) -> RunConfig:
    """The run config of one trial: base + the trial's axis values, run folder {runs_uri}/{trial_id}."""
    values = {k: v for k, v in axes.items() if "." in k}
    cfg = apply(space.base, values)
    return cfg.replace(train={"storage": runs_uri, "name": trial_id})


# ---- the guard ---------------------------------------------------------------------------------------------


def guard_floors(baseline: dict, guard: Guard) -> dict:
    """{row: the lowest val accuracy that still counts as a working recogniser}."""
    return {row: max(guard.min_accuracy, guard.min_ratio * float(baseline.get(row) or 0.0)) for row in guard.rows}


def guard_ok(metrics: dict, floors: dict) -> bool:
    return all(isinstance(metrics.get(f"acc/val/{row}"), (int, float)) and metrics[f"acc/val/{row}"] >= floor
               for row, floor in floors.items())


def guarded(metrics: dict, floors: dict) -> dict:
    """The scheduling metrics for one report: epochs done, whether the recogniser survived, the objective."""
    generated = metrics.get("acc/val/generated")
    ok = generated is not None and guard_ok(metrics, floors)
    return {TIME_ATTR: int(metrics.get("epoch", -1)) + 1, "guard/ok": bool(ok),
            METRIC: float(generated) if ok else 1.0}


def accuracy_before_training(cfg: RunConfig, rows=("unmasked", "original_mask")) -> dict:
    """Val accuracy of the untouched recogniser on the rows that need no generator: the same probes (count,
    seed) the worker scores each epoch, so the guard compares like with like."""
    import torch

    from maskgan import assembly
    from maskgan.evaluate import score_set

    torch.set_num_threads(1)
    device = torch.device("cpu")
    rec = assembly.load_recognizer(cfg.model.recognizer_weights, device, cfg.data.endpoint_url)
    projector = assembly.load_projector(cfg.model.projector, device, cfg.data.endpoint_url)
    feats, _ = assembly.gallery(cfg, rec.trunk, device)
    with torch.no_grad():
        gallery_emb = rec.head(feats)
    scored = score_set(assembly.data_root(cfg), "val", list(rows), max_probes=cfg.train.val_probes,
                       seed=cfg.train.seed, trunk=rec.trunk, head=rec.head, projector=projector, generator=None,
                       latent_dim=cfg.model.latent_dim, gallery_emb=gallery_emb, device=device)
    return {row: float(v.mean()) if v.size else 0.0 for row, v in scored.items()}


def _cached_baseline(cfg: RunConfig, rows, sweep_uri: str) -> dict:
    """accuracy_before_training, computed once per sweep for each (data, recogniser, probes) and shared by
    the trials (it scores val probes through the full recogniser, on the trial's CPU)."""
    import hashlib

    key = {"data": cfg.data.uri, "recognizer": cfg.model.recognizer_weights, "probes": cfg.train.val_probes,
           "seed": cfg.train.seed, "rows": sorted(rows)}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    loc = storage.resolve(sweep_uri, cfg.data.endpoint_url).join(f"guard_baseline-{digest}.json")
    if storage.exists(loc):
        cached = json.loads(storage.read_text(loc))
        if cached.get("key") == key:
            return cached["accuracy"]
    accuracy = accuracy_before_training(cfg, rows)
    storage.write_text(loc, json.dumps({"key": key, "accuracy": accuracy}))
    return accuracy


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


POINTER = "pointer.json"


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


LINEAGE = "pbt.json"  # in a trial's run folder: the checkpoints PBT cloned into it, oldest first
CLONE_PREFIX = "checkpoint_pbt_"


def _adopt(cfg: RunConfig, run: storage.Location, start: dict, guard: dict, log) -> RunConfig:
    """PBT restarted this trial from another trial's checkpoint: replace this trial's run by a copy of it
    (the weaker trial's past is what PBT discards) and train on from there with this trial's (mutated)
    config. The copy lives in the run as `checkpoint_pbt_<epoch>`, so the trial's evaluation, export and a
    later restart see it like any checkpoint. Idempotent: a restart before the clone reported finds it."""
    import hashlib
    import os
    import tempfile

    from maskgan import assembly

    lineage_loc = run.join(LINEAGE)
    lineage = json.loads(storage.read_text(lineage_loc)) if storage.exists(lineage_loc) else []
    if lineage and lineage[-1]["from"] == start["checkpoint"]:
        return cfg.replace(train={"init_from": lineage[-1]["copy"]})
    src = storage.resolve(start["checkpoint"], cfg.data.endpoint_url)
    try:
        files = {name: storage.read_bytes(src.join(name)) for name in (assembly.META_FILE, assembly.STATE_FILE)}
        # verified before this trial's own run is given up
        if hashlib.sha256(files[assembly.STATE_FILE]).hexdigest() != json.loads(files[assembly.META_FILE])["sha256"]:
            raise assembly.CheckpointError(f"{src.uri}: checksum mismatch")
    except (assembly.CheckpointError, storage.StorageError, OSError, ValueError, KeyError) as e:
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
        assembly.upload_checkpoint(tmp, dest, log=log)  # meta.json last: a torn copy is never taken as complete
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

    from maskgan import assembly, train

    space = parse_space(sweep["space"], "sweep.json")
    trial_id = ray.tune.get_context().get_trial_id()
    cfg = trial_config(space, config, sweep["runs"], trial_id)
    run = train.run_location(cfg)
    log = lambda m: print(f"[{trial_id}] {m}", flush=True)  # noqa: E731

    guard_loc = run.join("guard.json")
    if storage.exists(guard_loc):  # a restarted trial keeps its first baseline
        guard = json.loads(storage.read_text(guard_loc))
    else:
        baseline = _cached_baseline(cfg, space.guard.rows, sweep["sweep"])
        guard = {"before_training": baseline, "floors": guard_floors(baseline, space.guard),
                 "min_ratio": space.guard.min_ratio, "min_accuracy": space.guard.min_accuracy}
        storage.write_text(guard_loc, json.dumps(guard, indent=1))
    floors = guard["floors"]
    start = _tune_start()
    if start is not None and start["run"] != run.uri:
        cfg = _adopt(cfg, run, start, guard, log)
    done = assembly.list_checkpoints(run) if storage.exists(run) else []
    if done and done[-1][0] >= cfg.train.epochs - 1:
        # Finished before the sweep driver went away: report its last epoch again instead of training more.
        meta = json.loads(storage.read_text(done[-1][1].join(assembly.META_FILE)))
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
    from maskgan import train

    train.fit(mconfig.from_dict(cfg_dict), resume=resume, callbacks=[callback],
              log=lambda m: print(f"[{trial_id}] {m}", flush=True))


# ---- the driver --------------------------------------------------------------------------------------------


def max_concurrent_trials(base: RunConfig, resources: dict) -> int:
    """How many trials fit at once: by GPUs on a GPU cluster, else by CPUs (one CPU left to Ray Data)."""
    workers = base.train.num_workers
    cpus = float(resources.get("CPU", 1))
    gpus = float(resources.get("GPU", 0))
    by_cpu = max(1, int((cpus - DATA_CPU_RESERVE) // (workers * base.train.cpus_per_worker)))
    use_gpu = base.train.use_gpu if base.train.use_gpu != "auto" else gpus >= 1
    if use_gpu:
        return max(1, min(int(gpus // workers), by_cpu))
    return by_cpu


def _resumable_asha(state_uri: str, **kwargs):
    """ASHA whose rung records (each trial's objective at each milestone) survive a driver restart: Tune
    restores trials but not scheduler state, so after `--resume` a fresh ASHA would compare the remaining
    trials only with each other. Records go to `asha_state.json` in the sweep folder after every decision."""
    from ray.tune.schedulers import ASHAScheduler

    class ResumableASHA(ASHAScheduler):
        def __init__(self, state_uri: str, **kwargs):
            super().__init__(**kwargs)
            self._state_uri = state_uri
            self._loaded = False

        def __setstate__(self, state):  # unpickled from tuner.pkl on restore: read the records again
            self.__dict__.update(state)
            self._loaded = False

        def _rungs(self):
            return [(b, milestone, recorded) for b, bracket in enumerate(self._brackets)
                    for milestone, recorded in bracket._rungs]

        def _load(self):
            if self._loaded:
                return
            self._loaded = True
            loc = storage.resolve(self._state_uri)
            if not storage.exists(loc):
                return
            saved = {(r["bracket"], r["milestone"]): r["recorded"] for r in json.loads(storage.read_text(loc))}
            for b, milestone, recorded in self._rungs():
                recorded.update(saved.get((b, milestone), {}))

        def _save(self):
            state = [{"bracket": b, "milestone": milestone, "recorded": recorded}
                     for b, milestone, recorded in self._rungs()]
            storage.write_text(storage.resolve(self._state_uri), json.dumps(state))

        def on_trial_add(self, tune_controller, trial):
            self._load()
            super().on_trial_add(tune_controller, trial)

        def on_trial_result(self, tune_controller, trial, result):
            self._load()
            action = super().on_trial_result(tune_controller, trial, result)
            self._save()
            return action

        def on_trial_complete(self, tune_controller, trial, result):
            self._load()
            super().on_trial_complete(tune_controller, trial, result)
            self._save()

    return ResumableASHA(state_uri, **kwargs)


def _scheduler(kind: str, space: Space, sweep_uri: str | None = None):
    if kind == "none":
        return None
    if kind == "asha":
        # max_t one past the last epoch: a trial that runs all its epochs ends by itself (its trainer shuts its
        # workers down); only trials stopped early are killed.
        return _resumable_asha(storage.join_uri(sweep_uri or ".", "asha_state.json"), time_attr=TIME_ATTR,
                               max_t=space.base.train.epochs + 1,
                               grace_period=min(space.asha["grace_period"], space.base.train.epochs),
                               reduction_factor=space.asha["reduction_factor"])
    if kind == "pbt":
        from ray import tune
        from ray.tune.schedulers import PopulationBasedTraining

        # Every perturbation_interval epochs, a trial in the bottom quarter restarts from a top-quarter trial's
        # checkpoint (see _adopt) with its learning rates and lambda resampled (25 %) or scaled by 0.8 / 1.2.
        mutations = {k: (tune.loguniform if k.endswith("_lr") else tune.uniform)(low, high)
                     for k, (low, high) in space.pbt["mutations"].items()}
        return PopulationBasedTraining(time_attr=TIME_ATTR, perturbation_interval=space.pbt["perturbation_interval"],
                                       hyperparam_mutations=mutations, quantile_fraction=0.25,
                                       resample_probability=0.25)
    raise SweepError(f"--scheduler {kind}: unknown (asha, pbt, none)")


def code_version() -> str:
    """`git describe` of this checkout, else the installed package version."""
    import os
    import subprocess

    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        out = subprocess.run(["git", "describe", "--always", "--tags", "--dirty"], cwd=here, capture_output=True,
                             text=True, timeout=10)
        if out.returncode == 0 and out.stdout.strip():
            return f"git {out.stdout.strip()}"
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        from importlib.metadata import version

        return f"maskgan {version('maskgan')}"
    except Exception:
        return "unknown"


def _trial_dirname(t) -> str:
    return f"trial_{t.trial_id}"


def _absolute(uri: str) -> str:
    """Local relative paths are the driver's (the user's cwd); trials run elsewhere, so make them absolute."""
    if not uri or "://" in uri or uri in ("random", *mconfig.PRETRAINED):
        return uri
    return storage.resolve(uri).uri


def with_absolute_paths(space: Space) -> Space:
    b = space.base
    space = copy.copy(space)
    space.base = b.replace(data={"uri": _absolute(b.data.uri)},
                           model={"recognizer_weights": _absolute(b.model.recognizer_weights),
                                  "projector": _absolute(b.model.projector)})
    return space


def _preflight(base: RunConfig) -> None:
    """The base's data and weights exist: one line now instead of every trial failing the same way later."""
    from data_loader import shards

    shards.read_manifest(storage.resolve(base.data.uri, base.data.endpoint_url))
    for field_name, uri in (("model.projector", base.model.projector),
                            ("model.recognizer_weights", base.model.recognizer_weights)):
        if uri in ("", "random", *mconfig.PRETRAINED):
            continue
        if not storage.exists(storage.resolve(uri, base.data.endpoint_url)):
            raise SweepError(f"base.{field_name}: {uri} not found (run `make demo`, or point the space file at "
                             "your weights)")


def free_leaked_placement_groups(timeout_s: float = 60.0, settle_s: float = 1.0, watch_s: float = 15.0,
                                 log=print) -> list[str]:
    """Remove the placement groups that killed drivers left reserved; return their ids (hex).

    Ray removes a job's placement groups when its driver dies, but only those registered at that moment. The
    actors of the job die a few milliseconds later, one ownership level at a time (trial actor, `_fit` task,
    Train controller), and a Train controller that was starting its worker group in between registers its
    placement group after the job's cleanup has run: nothing removes it then, and its CPUs stay reserved for
    the life of the cluster (Ray 2.60; gcs_server.out shows "Marking job as finished. job_id=02000000" followed
    by "Registering placement group ...02000000"). On a 2-CPU cluster a leaked 0.5-CPU worker bundle next to
    two resumed trials' bundles leaves 0.5 CPU, so Ray Data's 1-CPU read tasks never start and the resumed
    sweep waits forever.

    So: wait (up to `timeout_s`) until the non-detached actors of dead jobs are gone, after which no more
    placement groups can come from those jobs; then remove the groups that Ray itself should have removed:
    not detached, created by a dead job, by no actor or by one that is dead. Another live job's groups, and
    groups of detached actors that outlive their job (Serve, ...), are never touched. A request that one of
    those actors sent just before it died can be registered seconds later on a loaded head node, so while a job
    died in the last five minutes, look again every `settle_s` for `watch_s`.
    """
    import time

    import ray
    from ray._private.state import state as gcs
    from ray.core.generated import gcs_pb2
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    deadline = time.monotonic() + timeout_s
    while True:
        jobs = [j for j in gcs.job_table() if j["IsDead"]]
        dead_jobs = {j["JobID"] for j in jobs}
        if not dead_jobs:
            return []
        recent = any(time.time() * 1000 - j["EndTime"] < 300_000 for j in jobs)  # EndTime: ms since the epoch
        actors = gcs.actor_table(None)
        dying = [a for a in actors.values()
                 if a["JobID"] in dead_jobs and not a["IsDetached"] and a["State"] != "DEAD"]
        if not dying:
            break
        if time.monotonic() > deadline:
            log(f"warning: {len(dying)} actor(s) of a dead driver's job still alive after {timeout_s:.0f} s "
                f"({', '.join(sorted({a['ActorClassName'] for a in dying}))}); freeing what they left so far")
            break
        time.sleep(0.5)

    def sweep_once() -> list[str]:
        removed = []
        for raw in gcs._connect_and_get_accessor().get_placement_group_table():
            pg = gcs_pb2.PlacementGroupTableData.FromString(raw)
            if (pg.state == gcs_pb2.PlacementGroupTableData.REMOVED or pg.is_detached
                    or pg.creator_job_id.hex() not in dead_jobs):
                continue
            creator_id = pg.creator_actor_id.hex()  # nil (all f) when a driver or a task created it
            creator = actors.get(creator_id) or (gcs.actor_table(creator_id) if creator_id.strip("f") else {})
            if creator and creator.get("State") != "DEAD":
                continue
            try:
                remove_placement_group(PlacementGroup(ray.PlacementGroupID(pg.placement_group_id)))
            except Exception as e:  # removed meanwhile: nothing left to free
                log(f"warning: could not remove placement group {pg.placement_group_id.hex()}: {e}")
                continue
            removed.append(pg.placement_group_id.hex())
        return removed

    removed = sweep_once()
    watch_until = time.monotonic() + (watch_s if recent else 0)
    while time.monotonic() < watch_until:
        time.sleep(settle_s)
        removed += sweep_once()
    if removed:
        log(f"freed {len(removed)} placement group(s) that a killed driver's job left reserved: {', '.join(removed)}")
    return removed


def sweep_location(space: Space, storage_uri: str | None) -> storage.Location:
    return storage.resolve(storage_uri or space.base.train.storage, space.base.data.endpoint_url).join(space.name)


def run(space_path: str, storage: str | None = None, num_samples: int = 1, scheduler: str = "asha",
        resume: bool = False, log=print) -> dict:
    """Run (or resume) a sweep; evaluate every trial's run; write results.csv/.md and paper_table.md."""
    import ray
    from ray import tune

    from maskgan import train

    storage_uri = storage  # the CLI's --storage; the module is storage_mod inside this function
    space = with_absolute_paths(load_space(space_path))
    if num_samples < 1:
        raise SweepError(f"--num-samples: must be >= 1, got {num_samples}")
    loc = sweep_location(space, storage_uri)
    meta_loc = loc.join("sweep.json")
    if resume:
        if not storage_mod.exists(meta_loc):
            raise SweepError(f"nothing to resume at {loc.uri} (no sweep.json): run without --resume")
        saved = json.loads(storage_mod.read_text(meta_loc))
        space, scheduler = parse_space(saved["space"], meta_loc.uri), saved["scheduler"]
    elif storage_mod.exists(meta_loc):
        raise SweepError(f"{loc.uri} already holds a sweep; pass --resume to continue it, or change the space's "
                         "name or --storage")
    _scheduler(scheduler, space)  # refuse an unavailable scheduler before anything is written
    if scheduler == "pbt" and space.pbt["perturbation_interval"] >= space.base.train.epochs:
        raise SweepError(f"pbt.perturbation_interval: {space.pbt['perturbation_interval']} epochs, but "
                         f"train.epochs is {space.base.train.epochs}: PBT would never perturb a trial")
    _preflight(space.base)
    train.ensure_ray()
    # A driver killed mid-sweep (the usual reason for --resume) can leave a trial's worker CPUs reserved for
    # good; free them before trials are scheduled, or the sweep can wait forever for Ray Data's read tasks.
    # Best effort (it reads Ray's internal GCS tables): a failure here must not stop the sweep.
    try:
        free_leaked_placement_groups(log=log)
    except Exception as e:
        log(f"warning: could not check for placement groups left by killed drivers: {str(e).splitlines()[0][:200]}")
    runs = loc.join("runs")
    if not resume:
        storage_mod.write_text(meta_loc, json.dumps({"space": space.to_dict(), "scheduler": scheduler,
                                                     "num_samples": num_samples, "space_file": space_path,
                                                     "code_version": code_version(),
                                                     "runs": runs.uri}, indent=1))
    sweep_args = {"space": space.to_dict(), "runs": runs.uri, "sweep": loc.uri}
    trainable = tune.with_resources(tune.with_parameters(trial, sweep=sweep_args), TRIAL_RESOURCES)
    if resume and tune.Tuner.can_restore(loc.path, storage_filesystem=loc.fs):
        log(f"resuming sweep {loc.uri} (finished trials are kept; unfinished ones continue from their checkpoints)")
        tuner = tune.Tuner.restore(loc.path, trainable, resume_errored=True, storage_filesystem=loc.fs)
    else:
        if resume:
            log(f"{loc.uri}: the driver stopped before Tune saved any state; starting the saved sweep afresh")
        concurrent = space.max_concurrent_trials or max_concurrent_trials(space.base, ray.cluster_resources())
        log(f"sweep {space.name}: {len(space.axes)} axes ({', '.join(space.axes) or 'none'}), "
            f"scheduler {scheduler}, up to {concurrent} trials at once -> {loc.uri}")
        ps = param_space(space)
        root = storage_mod.resolve(storage_uri or space.base.train.storage, space.base.data.endpoint_url)
        tuner = tune.Tuner(
            trainable,
            param_space=ps,
            tune_config=tune.TuneConfig(metric=METRIC, mode="min", scheduler=_scheduler(scheduler, space, loc.uri),
                                        num_samples=num_samples, max_concurrent_trials=concurrent,
                                        trial_name_creator=lambda t: t.trial_id, trial_dirname_creator=_trial_dirname),
            run_config=tune.RunConfig(name=space.name, storage_path=root.path, storage_filesystem=root.fs,
                                      failure_config=tune.FailureConfig(max_failures=0)),
        )
    grid = tuner.fit()
    rows = collect(grid, space, runs, log=log)
    write_tables(loc, rows, space)
    log(f"results: {loc.join('results.md').uri} ({len(rows)} trials)")
    return {"sweep": loc.uri, "rows": rows}


# ---- results -----------------------------------------------------------------------------------------------


def _evaluate(run_uri: str) -> dict | None:
    """The run's report for its latest checkpoint; reused when report.json is already about that checkpoint."""
    from maskgan import assembly, evaluate

    run = storage.resolve(run_uri)
    if not storage.exists(run) or not assembly.list_checkpoints(run):
        return None
    _, latest = assembly.latest_checkpoint(run, log=lambda *_: None)
    rep_loc = run.join("report.json")
    if storage.exists(rep_loc):
        report = json.loads(storage.read_text(rep_loc))
        if report.get("checkpoint") == latest.uri:
            return report
    return evaluate.evaluate_run(run_uri, log=lambda *_: None)


def collect(grid, space: Space, runs: storage.Location, log=print) -> list[dict]:
    """One row per trial: axes, status, epochs, objective, and the report's accuracy rows on val and test."""
    import ray

    from maskgan import evaluate

    epochs = space.base.train.epochs
    trials = []
    for result in grid:
        m = dict(result.metrics or {})
        trial_id = m.get("trial_id") or result.path.rstrip("/").rsplit("trial_", 1)[-1]
        cfg = result.config or {}
        trials.append((trial_id, cfg, m, result.error))
    trials.sort(key=lambda t: t[0])
    remote = ray.remote(num_cpus=1)(_evaluate)
    refs = [remote.remote(runs.join(tid).uri) for tid, *_ in trials]
    log(f"evaluating {len(refs)} trial runs ...")
    reports = []
    for (tid, *_), ref in zip(trials, refs):
        try:
            reports.append(ray.get(ref))
        except Exception as e:  # one bad run must not lose the table
            log(f"warning: evaluation of {tid} failed: {str(e).splitlines()[0][:200]}")
            reports.append(None)
    rows = []
    for (tid, cfg, m, error), report in zip(trials, reports):
        done = int(m.get(TIME_ATTR, 0) or 0)
        status = "error" if error else ("completed" if done >= epochs else "stopped early")
        row = {"trial": tid, "status": status}
        for key in space.axes:
            row[key] = cfg.get(key)
        for key in space.pbt.get("mutations", {}):  # PBT sets (and mutates) these on every trial
            if key in cfg:
                row[key] = cfg[key]
        row["pbt_from"] = _lineage(runs.join(tid))
        row.update({"epochs": done, "objective": m.get(METRIC), "guard_ok": m.get("guard/ok"),
                    "val_generated_last": m.get("acc/val/generated"), "val_unmasked_last": m.get("acc/val/unmasked")})
        for r in evaluate.ROWS:
            for split in ("val", "test", "train"):
                acc = (report or {}).get("accuracy", {}).get(r, {})
                row[f"{r}/{split}"] = acc.get(split)
                row[f"{r}/{split}/ci95"] = acc.get("ci95", {}).get(split)
        row["run"] = runs.join(tid).uri
        row["illustrative_only"] = (report or {}).get("illustrative_only")
        rows.append(row)
    return rows


def _lineage(run: storage.Location) -> str | None:
    """'<trial>@<epoch>; ...': the checkpoints PBT cloned into this trial's run, oldest first."""
    loc = run.join(LINEAGE)
    if not storage.exists(loc):
        return None
    return "; ".join(f"{e['from_run'].rstrip('/').rsplit('/', 1)[-1]}@{int(e['epoch']) + 1}"
                     for e in json.loads(storage.read_text(loc)))


def _axis_columns(rows: list[dict], space: Space) -> list[str]:
    return [*space.axes, *[k for k in space.pbt.get("mutations", {}) if k not in space.axes
                           and any(k in r for r in rows)]]


def _pct(v) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.1%}"


def _short(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return "–" if v is None else str(v)


def write_tables(loc: storage.Location, rows: list[dict], space: Space) -> None:
    storage.write_text(loc.join("results.csv"), results_csv(rows, space))
    storage.write_text(loc.join("results.md"), results_markdown(rows, space))
    paper = paper_table(rows, space)
    if paper:
        storage.write_text(loc.join("paper_table.md"), paper)


def results_csv(rows: list[dict], space: Space) -> str:
    columns = ["trial", "status", *_axis_columns(rows, space), "epochs", "objective", "guard_ok", "pbt_from"]
    columns += [f"{r}/{s}" for r in REPORT_ROWS for s in ("val", "test")]
    columns += [f"{r}/{s}/ci95" for r in REPORT_ROWS for s in ("val", "test")]
    columns += ["run"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    return buf.getvalue()


def results_markdown(rows: list[dict], space: Space) -> str:
    axes = _axis_columns(rows, space)
    lineage = any(r.get("pbt_from") for r in rows)
    head = ["trial", "status", *axes, "epochs", "objective", *(["cloned from (PBT)"] if lineage else [])]
    head += [f"{r} {s}" for r in REPORT_ROWS for s in ("val", "test")]
    lines = [f"# sweep {space.name}: {len(rows)} trials", "",
             "`objective` = val generated accuracy while the recogniser's unmasked accuracy held up, else 1.0 "
             "(lower is better). Accuracy columns come from `maskgan evaluate` of each trial's last checkpoint.", ""]
    if any(r.get("illustrative_only") for r in rows):
        lines += ["**Illustrative only:** the recogniser has no real pretrained weights.", ""]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in sorted(rows, key=lambda r: (r.get("objective") is None, r.get("objective") or 0, r["trial"])):
        cells = [row["trial"], row["status"], *[_short(row.get(k)) for k in axes], str(row["epochs"]),
                 _short(row.get("objective")), *([row.get("pbt_from") or "–"] if lineage else [])]
        cells += [_pct(row.get(f"{r}/{s}")) for r in REPORT_ROWS for s in ("val", "test")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def paper_table(rows: list[dict], space: Space) -> str | None:
    """The paper's Table 5 (exp0-exp3 columns) from this sweep's fc3 trials: per experiment the trial with the
    best objective; None when the sweep has no fc3 trial with a report."""
    def generator(row):
        return row.get("model.generator", space.base.model.generator)

    def experiment(row):
        return row.get("objective.experiment", space.base.objective.experiment)

    best: dict = {}
    for row in rows:
        if generator(row) != "fc3" or row.get("generated/test") is None:
            continue
        e = experiment(row)
        key = (row.get("objective") if row.get("objective") is not None else 2.0, row["trial"])
        if e not in best or key < best[e][0]:
            best[e] = (key, row)
    if not best:
        return None
    exps = mconfig.EXPERIMENTS
    lines = [f"# The paper's Table 5, reproduced (sweep {space.name}, generator fc3)", "",
             "Per experiment the fc3 trial with the best objective; accuracy over the full gallery with 95 % "
             "bootstrap intervals. Experiments: exp0 generator only; exp1 head fine-tuned on generated-mask faces; "
             "exp2 + unmasked faces; exp3 + original-mask faces.", ""]
    if any(r.get("illustrative_only") for _, r in best.values()):
        lines += ["**Illustrative only:** the recogniser has no real pretrained weights; compare the shape, "
                  "not the numbers.", ""]
    lines += ["| experiment # | " + " | ".join(exps) + " |", "|---|" + "---|" * len(exps)]
    for label, r, split in PAPER_ROWS:
        cells = []
        for e in exps:
            if e not in best:
                cells.append("–")
                continue
            row = best[e][1]
            ci = row.get(f"{r}/{split}/ci95")
            cells.append(_pct(row.get(f"{r}/{split}")) + (f" [{_pct(ci[0])}, {_pct(ci[1])}]" if ci else ""))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("| trial | " + " | ".join(best[e][1]["trial"] if e in best else "–" for e in exps) + " |")
    lines += ["", "The paper's published numbers (Table 5; its test accuracy of 0 % came from the evaluation bugs "
              "this project fixes):", "", "| experiment # | " + " | ".join(exps) + " |", "|---|" + "---|" * len(exps)]
    for label, values in PAPER_TABLE5.items():
        lines.append(f"| {label} | " + " | ".join(values) + " |")
    return "\n".join(lines) + "\n"
