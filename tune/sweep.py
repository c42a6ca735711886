"""Ray Tune sweeps over `maskgan.training.train`: one trial = one `train.fit` run (the same TorchTrainer as `maskgan train`).

A search space file (tune/spaces/*.yaml) is a base RunConfig plus axes keyed by dotted config fields:

    name: paper                     # the sweep's folder under --storage (default: base train.storage)
    base: {data: ..., model: ..., objective: ..., train: ...}     # a RunConfig mapping, validated
    grid:       {objective.experiment: [exp0, exp1, exp2, exp3]}  # every value (tune.grid_search)
    choice:     {data.batch_size: [8, 16]}                        # sampled per trial
    loguniform: {objective.g_lr: [1.0e-3, 3.0e-2]}                # sampled, [low, high]
    uniform:    {objective.l1_lambda: [0.0, 0.05]}
    asha: {grace_period: 1, reduction_factor: 2}
    pbt:  {perturbation_interval: 1, mutations: {objective.g_lr: [1.0e-3, 1.0e-1], ...}, min_improvement: 0.0}
    guard: {rows: [unmasked, original_mask], min_ratio: 0.5, min_accuracy: 0.0}
    max_concurrent_trials: null     # default: from the cluster's GPUs (or CPUs)

Layout of a sweep folder `{storage}/{name}/`: Tune's own state (experiment_state-*.json, tuner.pkl, one
`trial_{id}` folder per trial), `sweep.json` (the resolved space), `runs/{trial_id}/` (each trial's train run:
checkpoints, guard.json, report.json/md/html, designs.png) and `results.csv`, `results.md`, `paper_table.md`,
`index.html` (tune/index_page.py: the trials table, thumbnails, overlaid curves, links to each report.html).
Trial ids are Tune's, kept across `--resume`, so a restarted trial continues its own run folder.

Scheduling metric: `objective` = `acc/val/generated` (lower is better) while the recogniser still recognises
people: for each guard row (default `unmasked` and `original_mask`), `acc/val/{row}` >= max(min_accuracy,
min_ratio x the same accuracy before training, measured by the trial on the same probes). A trial whose
recogniser collapsed reports the worst value, 1.0, so a design that "wins" because the head forgot everyone
never wins. (`original_mask` is guarded too: a head that no longer recognises masked faces at all scores
0 % on generated masks without any design working.)

Rooms: tune/space.py (the file above), tune/guard.py (the objective), tune/trial.py (one trial, PBT adoption),
tune/schedulers.py (ASHA, PBT, concurrency), tune/results.py (the tables); this file only drives them.
"""

from __future__ import annotations

import copy
import json
import threading

from cluster.ray_workarounds import free_leaked_placement_groups, keep_credentials_out_of_trials
from data_loader import ranges, storage
from data_loader.ray_session import ensure_ray
from maskgan import config as mconfig
from maskgan.config import RunConfig
from maskgan.run import preflight as run_preflight
from maskgan.run.provenance import code_version
from tune import index_page, results, schedulers
from tune.guard import METRIC
from tune.space import Space, SweepError, load_space, param_space, parse_space
from tune.trial import TRIAL_RESOURCES, trial


def sweep_location(space: Space, storage_uri: str | None) -> storage.Location:
    return storage.resolve(storage_uri or space.base.train.storage, space.base.data.endpoint_url).join(space.name)


def run(space_path: str, storage_uri: str | None = None, num_samples: int = 1, scheduler: str = "asha",
        resume: bool = False, log=print, address: str | None = None) -> dict:
    """Run (or resume) a sweep under `storage_uri` (the CLI's --storage); evaluate every trial's run; write
    results.csv/.md and paper_table.md. `address`: the Ray to join (else RAY_ADDRESS, else a local one)."""
    space = with_absolute_paths(load_space(space_path))
    ranges.check("--num-samples", num_samples, "[1, 100000]", integer=True)  # the CLI flag's range
    loc = sweep_location(space, storage_uri)
    meta_loc = loc.join("sweep.json")
    if resume:
        space, scheduler = saved_sweep(meta_loc, loc)
    elif storage.exists(meta_loc):
        raise SweepError(f"{loc.uri} already holds a sweep; pass --resume to continue it, or change the space's "
                         "name or --storage")
    check_scheduler(space, scheduler)
    preflight(space.base)
    ensure_ray(address, log=log)
    keep_credentials_out_of_trials()  # Tune would put the AWS keys in every trial's runtime_env, which Ray logs
    freeing = free_placement_groups_of_killed_drivers(log)
    runs = loc.join("runs")
    if not resume:
        storage.write_text(meta_loc, json.dumps({"space": space.to_dict(), "scheduler": scheduler,
                                                 "num_samples": num_samples, "space_file": space_path,
                                                 "code_version": code_version(), "runs": runs.uri}, indent=1))
    tuner = make_tuner(space, scheduler, num_samples, resume, loc, runs, storage_uri, log)
    grid = tuner.fit()
    # bounded (its waits end by themselves: cluster/ray_workarounds.py); not waited for when fit raised (Ctrl-C)
    freeing.join()
    rows = results.collect(grid, space, runs, log=log)
    results.write_tables(loc, rows, space)
    index_page.write_index_page(loc, rows, space, runs)
    log(f"results: {loc.join('results.md').uri} ({len(rows)} trials)")
    return {"sweep": loc.uri, "rows": rows}


def saved_sweep(meta_loc: storage.Location, loc: storage.Location) -> tuple[Space, str]:
    """(space, scheduler) as the sweep being resumed saved them in its sweep.json."""
    if not storage.exists(meta_loc):
        raise SweepError(f"nothing to resume at {loc.uri} (no sweep.json): run without --resume")
    saved = json.loads(storage.read_text(meta_loc))
    return parse_space(saved["space"], meta_loc.uri), saved["scheduler"]


def check_scheduler(space: Space, scheduler: str) -> None:
    """Refuse an unavailable scheduler, or a PBT that could never perturb, before anything is written."""
    schedulers.make_scheduler(scheduler, space)
    if scheduler == "pbt" and space.pbt["perturbation_interval"] >= space.base.train.epochs:
        raise SweepError(f"pbt.perturbation_interval: {space.pbt['perturbation_interval']} epochs, but "
                         f"train.epochs is {space.base.train.epochs}: PBT would never perturb a trial")


def free_placement_groups_of_killed_drivers(log) -> threading.Thread:
    """A driver killed mid-sweep (the usual reason for --resume) can leave a trial's worker CPUs reserved for
    good, and the sweep would wait forever for Ray Data's read tasks: free them, beside the sweep. The freeing
    waits for a dead driver's actors to go and, while a job ended in the last minutes, keeps looking for 15 s
    (a group can register late); done before trials were scheduled, that held every sweep started soon after
    any job ended for 15 s. Trials wait for CPUs a leaked group holds until it is freed, so nothing is lost by
    scheduling meanwhile. Best effort: a failure here (e.g. no dashboard, so no state API) must not stop the
    sweep. Returns the started thread: join it when the trials are done."""

    def free() -> None:
        try:
            free_leaked_placement_groups(log=log)
        except Exception as e:
            log(f"warning: could not check for placement groups left by killed drivers: "
                f"{str(e).splitlines()[0][:200]}")

    thread = threading.Thread(target=free, name="free-leaked-placement-groups", daemon=True)
    thread.start()
    return thread


def make_tuner(space: Space, scheduler: str, num_samples: int, resume: bool, loc: storage.Location,
               runs: storage.Location, storage_uri: str | None, log):
    """Tune's Tuner over `trial`: restored from the sweep folder when resuming and Tune saved state there,
    else a new one (also for a resumed sweep whose driver stopped before Tune saved anything)."""
    import ray
    from ray import tune

    sweep_args = {"space": space.to_dict(), "runs": runs.uri, "sweep": loc.uri}
    trainable = tune.with_resources(tune.with_parameters(trial, sweep=sweep_args), TRIAL_RESOURCES)
    if resume and tune.Tuner.can_restore(loc.path, storage_filesystem=loc.fs):
        log(f"resuming sweep {loc.uri} (finished trials are kept; unfinished ones continue from their checkpoints)")
        return tune.Tuner.restore(loc.path, trainable, resume_errored=True, storage_filesystem=loc.fs)
    if resume:
        log(f"{loc.uri}: the driver stopped before Tune saved any state; starting the saved sweep afresh")
    concurrent = space.max_concurrent_trials or schedulers.max_concurrent_trials(space.base, ray.cluster_resources())
    log(f"sweep {space.name}: {len(space.axes)} axes ({', '.join(space.axes) or 'none'}), "
        f"scheduler {scheduler}, up to {concurrent} trials at once -> {loc.uri}")
    root = storage.resolve(storage_uri or space.base.train.storage, space.base.data.endpoint_url)
    return tune.Tuner(
        trainable,
        param_space=param_space(space),
        tune_config=tune.TuneConfig(metric=METRIC, mode="min",
                                    scheduler=schedulers.make_scheduler(scheduler, space, loc.uri),
                                    num_samples=num_samples, max_concurrent_trials=concurrent,
                                    trial_name_creator=lambda t: t.trial_id, trial_dirname_creator=_trial_dirname),
        run_config=tune.RunConfig(name=space.name, storage_path=root.path, storage_filesystem=root.fs,
                                  failure_config=tune.FailureConfig(max_failures=0)),
    )


def _trial_dirname(t) -> str:
    return f"trial_{t.trial_id}"


def with_absolute_paths(space: Space) -> Space:
    """Local relative paths are the driver's (the user's cwd); trials run elsewhere, so make them absolute."""
    space = copy.copy(space)
    space.base = mconfig.absolute_paths(space.base)
    return space


def preflight(base: RunConfig) -> None:
    """The base's data and weights are there, readable and safe: one line now instead of every trial failing
    the same way later (the train driver's preflight, without a run folder)."""
    run_preflight.inputs(base)
