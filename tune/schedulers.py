"""How a sweep schedules its trials: how many run at once, and ASHA (resumable) or PBT over the guarded objective."""

from __future__ import annotations

from data_loader import storage
from maskgan.config import RunConfig
from tune.guard import TIME_ATTR
from tune.space import Space, SweepError

DATA_CPU_RESERVE = 1.0  # CPUs left free for Ray Data's read tasks (1 CPU each) when trials run on CPUs
ASHA_STATE = "asha_state.pkl"  # in the sweep folder: the ASHA scheduler's state after its last decision


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
    restores trials but not scheduler state (its controller never calls `TrialScheduler.save`/`restore`), so
    after `--resume` a fresh ASHA would compare the remaining trials only with each other. So the scheduler
    saves itself with its own public `save` to `state_uri` after every decision, and `restore`s from it before
    its first decision after an unpickle (tuner.pkl holds the scheduler as it was before any result)."""
    import os
    import tempfile

    from ray.tune.schedulers import ASHAScheduler

    class ResumableASHA(ASHAScheduler):
        def __init__(self, state_uri: str, **kwargs):
            super().__init__(**kwargs)
            self._state_uri = state_uri
            self._loaded = False

        def __setstate__(self, state):  # unpickled from tuner.pkl on restore: read the saved state again
            self.__dict__.update(state)
            self._loaded = False

        def _load(self):
            if self._loaded:
                return
            self._loaded = True
            loc = storage.resolve(self._state_uri)
            if not storage.exists(loc):
                return
            with tempfile.TemporaryDirectory() as d:
                path = os.path.join(d, ASHA_STATE)
                with open(path, "wb") as f:
                    f.write(storage.read_bytes(loc))
                self.restore(path)

        def _save(self):
            with tempfile.TemporaryDirectory() as d:
                path = os.path.join(d, ASHA_STATE)
                self.save(path)
                with open(path, "rb") as f:
                    storage.write_bytes(storage.resolve(self._state_uri), f.read())

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


def make_scheduler(kind: str, space: Space, sweep_uri: str | None = None):
    """Tune's scheduler for `--scheduler kind` (asha, pbt, none); SweepError for an unknown one."""
    if kind == "none":
        return None
    if kind == "asha":
        # max_t one past the last epoch: a trial that runs all its epochs ends by itself (its trainer shuts its
        # workers down); only trials stopped early are killed.
        return _resumable_asha(storage.join_uri(sweep_uri or ".", ASHA_STATE), time_attr=TIME_ATTR,
                               max_t=space.base.train.epochs + 1,
                               grace_period=min(space.asha["grace_period"], space.base.train.epochs),
                               reduction_factor=space.asha["reduction_factor"])
    if kind == "pbt":
        from ray import tune

        # Every perturbation_interval epochs, a trial in the bottom quarter restarts from a top-quarter trial's
        # checkpoint (see trial._adopt) with its learning rates and lambda resampled (25 %) or scaled by 0.8 / 1.2.
        mutations = {k: (tune.loguniform if k.endswith("_lr") else tune.uniform)(low, high)
                     for k, (low, high) in space.pbt["mutations"].items()}
        return _pbt_before_the_last_epoch(space.base.train.epochs, space.pbt["min_improvement"], time_attr=TIME_ATTR,
                                          perturbation_interval=space.pbt["perturbation_interval"],
                                          hyperparam_mutations=mutations, quantile_fraction=0.25,
                                          resample_probability=0.25)
    raise SweepError(f"--scheduler {kind}: unknown (asha, pbt, none)")


def _pbt_before_the_last_epoch(epochs: int, min_improvement: float = 0.0, **kwargs):
    """Tune's PopulationBasedTraining, except
    - at a trial's last report (its final epoch): an exploit there would restart the trial only to copy the
      donor's final checkpoint over its own run and train nothing after it, so the trial's row would be a copy of
      the donor's and its own result lost;
    - with `min_improvement` > 0, a bottom-quarter trial is replaced only while every top-quarter trial's objective
      is better than its own by more than that. Tune's rule replaces the bottom quarter at every interval however
      close the scores are: two equally good trials then clone each other back and forth, and each clone is a
      restart (a new Train run)."""
    from ray.tune.schedulers import PopulationBasedTraining, TrialScheduler

    # Tune's PBT has no margin (no upstream issue or option as of Ray 2.60): the split into quarters is its
    # private `_quantiles`, narrowed below. Refuse rather than silently drop the margin if a Ray upgrade renames it;
    # remove this when Tune's PBT takes a margin of its own.
    if min_improvement > 0 and not callable(getattr(PopulationBasedTraining, "_quantiles", None)):
        raise SweepError("pbt.min_improvement: this Ray's PopulationBasedTraining has no _quantiles to narrow; "
                         "set it to 0")

    class PBTBeforeTheLastEpoch(PopulationBasedTraining):
        def on_trial_result(self, tune_controller, trial, result):
            if result.get(TIME_ATTR, 0) >= epochs:
                return TrialScheduler.CONTINUE
            return super().on_trial_result(tune_controller, trial, result)

        def _quantiles(self):
            lower, upper = super()._quantiles()
            if min_improvement <= 0 or not upper:
                return lower, upper
            # scores are Tune's: higher is better whatever the mode (the objective times -1 under "min")
            weakest_donor = min(self._trial_state[t].last_score for t in upper)
            return [t for t in lower if weakest_donor - self._trial_state[t].last_score > min_improvement], upper

    return PBTBeforeTheLastEpoch(**kwargs)
