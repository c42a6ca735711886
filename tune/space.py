"""The search space of a sweep: its file schema (see tune/sweep.py), validation, and what Tune gets from it.

A space file is a base RunConfig plus axes keyed by dotted config fields (`objective.g_lr`); every value an axis
can take is validated like a config file before anything runs, and errors are one line naming the file and key.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field

from data_loader import ranges
from maskgan import config as mconfig
from maskgan.config import ConfigError, RunConfig

AXES = ("grid", "choice", "loguniform", "uniform")
TOP_KEYS = ("name", "base", *AXES, "asha", "pbt", "guard", "max_concurrent_trials")
# Set by the sweep itself, or fixed for the whole sweep (resources, the ASHA/PBT horizon): not axes.
NOT_AXES = ("train.name", "train.storage", "train.num_workers", "train.cpus_per_worker", "train.use_gpu",
            "train.epochs", "train.init_from")
PBT_DEFAULT_MUTATIONS = ("objective.g_lr", "objective.head_lr", "objective.l1_lambda")
GUARD_ROWS = ("unmasked", "original_mask")


class SpaceError(ConfigError):
    """A search space file is wrong; one line naming the file and the key."""

    user_error = True


class SweepError(RuntimeError):
    user_error = True


@dataclass
class Guard:
    rows: tuple = GUARD_ROWS  # val accuracy rows that must not collapse
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
    pbt: dict = field(default_factory=dict)  # perturbation_interval, mutations {field: [low, high]}, min_improvement
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


PBT_KEYS = ("perturbation_interval", "mutations", "min_improvement")


def _parse_pbt(pbt, base: RunConfig) -> dict:
    if not isinstance(pbt, dict) or set(pbt) - set(PBT_KEYS):
        bad = sorted(set(pbt) - set(PBT_KEYS)) if isinstance(pbt, dict) else ["(not a mapping)"]
        raise SpaceError(f"pbt.{bad[0]}: unknown key (allowed: {', '.join(PBT_KEYS)})")
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
    # the objective is an accuracy: a gap of more than 1 could never be met, and PBT would never exploit
    min_improvement = pbt.get("min_improvement", 0.0)
    problem = ranges.problem(min_improvement, "[0, 1)")
    if problem:
        raise SpaceError(f"pbt.min_improvement: {problem}")
    return {"perturbation_interval": _number("pbt.perturbation_interval", pbt.get("perturbation_interval", 1), int, 1),
            "mutations": {k: [float(v[0]), float(v[1])] for k, v in mutations.items()},
            "min_improvement": float(min_improvement)}


def load_space(path: str) -> Space:
    return parse_space(mconfig.read_yaml(path, "search space"), path)


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
