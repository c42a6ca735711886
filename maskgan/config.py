"""Typed run configuration, validated once at the edge.

Every knob lives in one visible tree with its unit or reason. `load()` accepts YAML or JSON, rejects unknown
keys and wrong types with a one-line error naming the field (typos are the common case), and checks the
cross-field rules. Everything downstream trusts a RunConfig. The resolved config is stored in every
checkpoint; on resume the architecture comes from the checkpoint.

Named recipes (`debug_cpu`, `h200_x8`) stand in for new flags.
"""

from __future__ import annotations

import dataclasses
import json
import os
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Union

EXPERIMENTS = ("exp0", "exp1", "exp2", "exp3")

# Pretrained recogniser weights by name: facenet-pytorch's release files (the one list of names and where
# each comes from; maskgan.models.weights downloads them).
PRETRAINED = {
    "vggface2": "https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/20180402-114759-vggface2.pt",
    "casia-webface": "https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/20180408-102900-casia-webface.pt",
}


class ConfigError(ValueError):
    """One line: which field, what is wrong, what is allowed."""

    user_error = True


@dataclass
class DataConfig:
    uri: str = "demo_out/data"  # prepared shards: local dir or s3://bucket/prefix
    endpoint_url: str | None = None  # S3-compatible endpoint (MinIO, moto); else AWS_ENDPOINT_URL
    batch_size: int = 32  # images per worker per step
    shuffle_buffer: int = 256  # rows in each worker's local shuffle buffer (file order is shuffled too)
    prefetch_batches: int = 2  # batches Ray Data prepares ahead of the step


@dataclass
class ModelConfig:
    generator: Literal["fc3", "fc_deep", "conv"] = "fc3"  # registry name; fc3 is the paper's
    latent_dim: int = 100  # the paper samples 100-d N(0,1)
    hidden: int = 32  # units per hidden layer (fc3: 32, as in the paper)
    recognizer_weights: str = "random"  # vggface2 | casia-webface | random | path | s3:// URI
    projector: str = ""  # projector checkpoint (local path or s3://) from `maskgan projector train`


@dataclass
class ObjectiveConfig:
    experiment: Literal["exp0", "exp1", "exp2", "exp3"] = "exp1"
    l1_lambda: float = 0.01  # weight of the L1 term on the recogniser head (paper: 0.01; mean |w|)
    g_lr: float = 1e-2  # generator Adam learning rate (the design is one big output layer: it can move fast)
    head_lr: float = 1e-4  # recogniser head Adam learning rate
    cosine_scale: float = 16.0  # logit = scale * cos(probe embedding, gallery embedding)


@dataclass
class TrainConfig:
    epochs: int = 3
    num_workers: int = 2  # Ray Train workers (one per GPU on a cluster)
    use_gpu: Union[bool, Literal["auto"]] = "auto"  # auto: GPUs if the cluster has any
    cpus_per_worker: float = 1.0
    storage: str = "demo_out/runs"  # where runs (checkpoints, reports) go: local dir or s3://
    name: str = "run"  # run folder under storage
    seed: int = 0
    max_failures: int = 0  # worker-failure restarts (from the last checkpoint)
    val_probes: int = 256  # val probes scored each epoch (the full evaluation is `maskgan evaluate`)
    num_to_keep: int = 2  # checkpoints kept in storage
    # A new run starts from this checkpoint (a run's checkpoint_* folder, local or s3://): generator, head and
    # optimiser state, and its epoch count; the learning rates and lambda are this config's. Used by PBT to
    # clone a strong trial into a weak one; ignored once the run has checkpoints of its own (resume wins).
    init_from: str = ""
    # Speed (bench/step.py measures each). auto: bf16 autocast on CUDA (tensor cores), fp32 on CPU (exact).
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    # torch.compile the recogniser trunk: ~1.5x the step on a GPU, but the first steps (and the first step of
    # each new batch shape) pay minutes of compilation; worth it for long runs only.
    compile: bool = False
    # GiB of the worker's device memory for keeping its rows resident after the first epoch, with their
    # per-image constants (projector alpha, real-photo trunk features), so later epochs skip Ray Data and the
    # constants' recomputation. auto: 40 % of the GPU's memory on CUDA; 0 on CPU, where host memory must stay
    # flat in dataset size. Used only when the worker's whole share fits; else every epoch streams.
    resident_gib: Union[float, Literal["auto"]] = "auto"


@dataclass
class ProjectorConfig:
    epochs: int = 10
    batch_size: int = 16
    lr: float = 1e-2
    max_images: int = 2000  # the paper used 100 hand-labelled images; labels here are automatic


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    projector: ProjectorConfig = field(default_factory=ProjectorConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **sections) -> "RunConfig":
        """Copy with overrides: replace(objective={"experiment": "exp2"}); validated like a file."""
        merged = self.to_dict()
        for section, values in sections.items():
            if section not in merged:
                raise ConfigError(f"unknown section {section!r} (allowed: {', '.join(merged)})")
            if not isinstance(values, dict):
                raise ConfigError(f"{section}: expected a mapping")
            merged[section] = {**merged[section], **values}
        return from_dict(merged)


def _check_value(path: str, tp: Any, value: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{path}: {value!r} is not allowed (allowed: {', '.join(map(str, allowed))})")
        return value
    if origin is Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        errors = []
        for option in typing.get_args(tp):
            if option is type(None) and value is None:
                return None
            try:
                return _check_value(path, option, value)
            except ConfigError as e:
                errors.append(str(e).split(": ", 1)[-1])
        raise ConfigError(f"{path}: {value!r} does not fit ({'; '.join(errors)})")
    if tp is type(None):
        if value is not None:
            raise ConfigError(f"{path}: expected null")
        return None
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{path}: unsupported type {tp}")


def _build(cls, data: Any, path: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        where = f"{path}." if path else ""
        raise ConfigError(f"{where}{unknown[0]}: unknown field (allowed: {', '.join(names)})")
    kwargs = {}
    for name in names:
        if name not in data:
            continue
        tp = hints[name]
        sub = f"{path}.{name}" if path else name
        kwargs[name] = _build(tp, data[name], sub) if dataclasses.is_dataclass(tp) else _check_value(sub, tp, data[name])
    return cls(**kwargs)


def _validate(cfg: RunConfig) -> RunConfig:
    def positive(path: str, value, allow_zero=False):
        if value < 0 or (value == 0 and not allow_zero):
            raise ConfigError(f"{path}: must be {'>= 0' if allow_zero else '> 0'}, got {value}")

    positive("data.batch_size", cfg.data.batch_size)
    positive("data.shuffle_buffer", cfg.data.shuffle_buffer, allow_zero=True)
    positive("data.prefetch_batches", cfg.data.prefetch_batches, allow_zero=True)
    positive("model.latent_dim", cfg.model.latent_dim)
    positive("model.hidden", cfg.model.hidden)
    positive("objective.l1_lambda", cfg.objective.l1_lambda, allow_zero=True)
    positive("objective.g_lr", cfg.objective.g_lr)
    positive("objective.head_lr", cfg.objective.head_lr)
    positive("objective.cosine_scale", cfg.objective.cosine_scale)
    positive("train.epochs", cfg.train.epochs)
    positive("train.num_workers", cfg.train.num_workers)
    positive("train.cpus_per_worker", cfg.train.cpus_per_worker)
    positive("train.max_failures", cfg.train.max_failures, allow_zero=True)
    positive("train.val_probes", cfg.train.val_probes, allow_zero=True)
    positive("train.num_to_keep", cfg.train.num_to_keep)
    if cfg.train.resident_gib != "auto":
        positive("train.resident_gib", cfg.train.resident_gib, allow_zero=True)
    positive("projector.epochs", cfg.projector.epochs)
    positive("projector.batch_size", cfg.projector.batch_size)
    positive("projector.lr", cfg.projector.lr)
    positive("projector.max_images", cfg.projector.max_images)
    if not cfg.data.uri:
        raise ConfigError("data.uri: required (a local directory or s3://bucket/prefix of prepared shards)")
    if not cfg.train.storage:
        raise ConfigError("train.storage: required")
    name = cfg.train.name
    if not name or "/" in name or name.startswith(".") or name != name.strip():
        raise ConfigError(f"train.name: {name!r} must be a plain folder name (no '/', not starting with '.')")
    w = cfg.model.recognizer_weights
    if not w:
        raise ConfigError(f"model.recognizer_weights: required ({', '.join(PRETRAINED)}, random, a path or s3:// URI)")
    return cfg


def from_dict(data: dict) -> RunConfig:
    return _validate(_build(RunConfig, data, ""))


def load(path: str) -> RunConfig:
    """Load a YAML or JSON config file; errors name the file and the field."""
    import yaml

    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config ({e.strerror})") from None
    try:
        data = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: not valid {'JSON' if path.endswith('.json') else 'YAML'} ({str(e).splitlines()[0]})") from None
    try:
        return from_dict(data or {})
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def absolute_paths(cfg: RunConfig) -> RunConfig:
    """Relative local paths in a config mean the driver's working directory; Ray workers run elsewhere."""

    def fix(value: str) -> str:
        if not value or "://" in value or os.path.isabs(value) or value in ("random", *PRETRAINED):
            return value
        return os.path.abspath(value)

    return cfg.replace(data={"uri": fix(cfg.data.uri)}, train={"storage": fix(cfg.train.storage)},
                       model={"projector": fix(cfg.model.projector),
                              "recognizer_weights": fix(cfg.model.recognizer_weights)})


def dump(cfg: RunConfig, path: str) -> None:
    import yaml

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        yaml.safe_dump(cfg.to_dict(), f, sort_keys=False)


# ---- recipes -------------------------------------------------------------------------------------------


def debug_cpu(root: str = "demo_out") -> RunConfig:
    """The laptop / CI recipe: tiny synthetic data, 2 CPU workers, a few epochs."""
    return from_dict({
        "data": {"uri": f"{root}/data", "batch_size": 8, "shuffle_buffer": 64},
        "model": {"generator": "fc3", "recognizer_weights": f"{root}/recognizer.pt", "projector": f"{root}/projector.pt"},
        "objective": {"experiment": "exp1"},
        "train": {"epochs": 8, "num_workers": 2, "use_gpu": False, "cpus_per_worker": 0.5,
                  "storage": f"{root}/runs", "name": "demo", "val_probes": 64},
        "projector": {"epochs": 10, "max_images": 200},
    })


def h200_x8(data_uri: str, storage_uri: str) -> RunConfig:
    """Eight H200s on FFHQ + MaskedFace-Net at 128²: big batches, vggface2 weights."""
    return from_dict({
        "data": {"uri": data_uri, "batch_size": 1024, "shuffle_buffer": 8192, "prefetch_batches": 16},
        "model": {"recognizer_weights": "vggface2", "projector": f"{storage_uri}/projector.pt"},
        "train": {"epochs": 30, "num_workers": 8, "use_gpu": True, "cpus_per_worker": 8,
                  "storage": storage_uri, "max_failures": 3, "val_probes": 4096},
    })

