"""Typed run configuration, validated once at the edge.

Every knob lives in one visible tree with its unit or reason, every number with its allowed range. `load()`
accepts YAML or JSON (through `read_yaml`, the one YAML reader), rejects unknown keys, wrong types, non-finite
and out-of-range numbers with a one-line error naming the field (typos are the common case), and checks the
cross-field rules. Everything downstream trusts a RunConfig. The resolved config is stored in every
checkpoint; on resume the architecture comes from the checkpoint.

Named recipes (`debug_cpu`, `h200_x8`) live in maskgan.config.recipes; the parsing machinery (type checks, the YAML
reader) in maskgan.config.parse: this file is the schema.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field
from typing import Literal, Union

from maskgan.config.parse import ConfigError, _build, read_yaml  # noqa: F401 (re-exported: callers import them here)

EXPERIMENTS = ("exp0", "exp1", "exp2", "exp3")
# The generator architectures, the one list (maskgan.models.generators builds each): fc3 is the paper's; cond_*
# are conditioned on the wearer, a design per person (docs/diversity.md).
GeneratorName = Literal["fc3", "fc_deep", "conv", "cond_fc3", "cond_conv"]
GENERATORS: tuple[str, ...] = typing.get_args(GeneratorName)

# Pretrained recogniser weights by name: facenet-pytorch's release files (the one list of names and where
# each comes from; maskgan.models.weights downloads them).
PRETRAINED = {
    "vggface2": "https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/20180402-114759-vggface2.pt",
    "casia-webface": "https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/20180408-102900-casia-webface.pt",
}
# Seeded random recogniser weights by name, and the trunk each builds (maskgan.models.recognizer): `random` is
# facenet's InceptionResnetV1, `random-compact` a small convolutional trunk with the same 1792-d features at about a
# tenth of the arithmetic (fast smoke runs and the test suite; no more a face recogniser than `random`).
RANDOM_WEIGHTS = {"random": "facenet", "random-compact": "compact"}
NAMED_WEIGHTS = (*RANDOM_WEIGHTS, *PRETRAINED)  # recogniser weights named, not read from a file


def ranged(default, interval: str):
    """A numeric field with its allowed range ("(0, 10]"), checked by load/from_dict with the field's name."""
    return field(default=default, metadata={"range": interval})


# Every int / float field has a range (tests/test_config.py checks that none is left out): non-finite numbers
# (.inf, .nan) never pass, and the bounds are generous limits of sense, not tuning advice.


@dataclass
class DataConfig:
    uri: str = ""  # prepared shards: local dir or s3://bucket/prefix. Required: no default dataset is guessed
    endpoint_url: str | None = None  # S3-compatible endpoint (MinIO, moto); else AWS_ENDPOINT_URL
    batch_size: int = ranged(32, "[1, 65536]")  # images per worker per step
    # rows in each worker's local shuffle buffer (file order is shuffled too); 0: no local shuffle
    shuffle_buffer: int = ranged(256, "[0, 10000000]")
    prefetch_batches: int = ranged(2, "[0, 1024]")  # batches Ray Data prepares ahead of the step
    # What facenet recognisers see of each photo (data_loader.face_box): `face`, the face box the data records,
    # widened by 10 % a side and resized to 160 x 160 (the crop facenet's pretrained weights were trained on);
    # `full`, the whole prepared photo (a whole-head crop); `auto`, face for the pretrained weights (vggface2,
    # casia-webface) where the data records a box, full otherwise (random and adapted weights saw full photos).
    face_crop: Literal["auto", "full", "face"] = "auto"


@dataclass
class ModelConfig:
    generator: GeneratorName = "fc3"  # one of GENERATORS; fc3 is the paper's
    latent_dim: int = ranged(100, "[1, 65536]")  # the paper samples 100-d N(0,1)
    hidden: int = ranged(32, "[1, 65536]")  # units per hidden layer (fc3: 32, as in the paper)
    # side of one colour cell of the design, in design pixels: the generator draws a grid of cells, upsampled
    # bilinearly (smooth blocks a printer reproduces). 1: every pixel its own output (the paper's)
    cell_px: int = ranged(1, "[1, 64]")
    recognizer_weights: str = "random"  # vggface2 | casia-webface | random | random-compact | path | s3:// URI
    # EXTRA white-box surrogates attacked together with recognizer_weights: the generator's loss
    # averages over all of them, each has its own head trained as the experiment says. Specs: random:<seed>
    # (a facenet trunk initialised from the seed, its own fresh head), random, a pretrained name, a path or
    # s3:// URI, or zoo:<name> (a real pretrained recogniser of maskgan.models.zoo: dlib, hse, faceplugin, expo;
    # its ported network frozen, its LAST layer fine-tuned as the experiment says; each photo aligned from its
    # row's landmarks by the model's differentiable warp). []: the single recogniser. exp2/exp3 compute every
    # surrogate trunk's real-photo features.
    recognizers: list[str] = field(default_factory=list)
    projector: str = ""  # projector checkpoint (local path or s3://) from `maskgan projector train`


@dataclass
class ObjectiveConfig:
    experiment: Literal["exp0", "exp1", "exp2", "exp3"] = "exp1"
    # weight of the L1 term on the recogniser head (paper: 0.01; mean |w|); 0 turns the term off
    l1_lambda: float = ranged(0.01, "[0, 1000]")
    # generator Adam learning rate (the design is one big output layer: it can move fast)
    g_lr: float = ranged(1e-2, "(0, 10]")
    head_lr: float = ranged(1e-4, "(0, 10]")  # recogniser head Adam learning rate
    cosine_scale: float = ranged(16.0, "(0, 1000]")  # logit = scale * cos(probe embedding, gallery embedding)
    # Printability terms added to the generator's loss (0 turns a term off, the paper has neither):
    # tv_weight x the design's total variation (mean |neighbour difference|, [0, 1] scale: noise ~0.33) and
    # nps_weight x its non-printability (mean RGB distance to the nearest colour of `palette`).
    tv_weight: float = ranged(0.0, "[0, 1000]")
    nps_weight: float = ranged(0.0, "[0, 1000]")
    # diversity_weight x MSGAN's mode-seeking term 1 / (lz + 1e-5), lz = image distance per unit of latent
    # distance between paired designs of a batch (maskgan.design.diversity); 0 keeps the paper's objective.
    diversity_weight: float = ranged(0.0, "[0, 100]")
    palette: str = ""  # palette file from `maskgan palette fit` (local or s3://); "": the uncalibrated default


@dataclass
class TrainConfig:
    epochs: int = ranged(3, "[1, 100000]")
    num_workers: int = ranged(2, "[1, 4096]")  # Ray Train workers (one per GPU on a cluster)
    use_gpu: Union[bool, Literal["auto"]] = "auto"  # auto: GPUs if the cluster has any
    cpus_per_worker: float = ranged(1.0, "(0, 1024]")
    storage: str = "demo_out/runs"  # where runs (checkpoints, reports) go: local dir or s3://
    name: str = "run"  # run folder under storage
    seed: int = ranged(0, "[0, 4294967295]")  # numpy and torch seeds (numpy refuses negative ones)
    max_failures: int = ranged(0, "[0, 1000]")  # worker-failure restarts (from the last checkpoint)
    # Elastic training: 0 keeps num_workers fixed (a lost node stops the run until its capacity returns or
    # max_failures is spent). 1..num_workers: after a failure Ray Train restarts from the last checkpoint
    # with as many workers as the cluster then holds, at least this many (docs/scaling.md).
    min_workers: int = ranged(0, "[0, 4096]")
    # How Ray places the workers' bundles: PACK (few nodes), SPREAD (best effort across nodes),
    # STRICT_SPREAD (each worker on its own node, or the run waits for nodes).
    placement: Literal["PACK", "SPREAD", "STRICT_SPREAD"] = "PACK"
    # A custom Ray resource each worker needs one unit of ("": none). A node started with
    # `ray start --resources='{"NAME": 1}'` then holds one worker; elastic restarts count workers by it.
    worker_resource: str = ""
    # val probes scored each epoch (the full evaluation is `maskgan evaluate`); 0: no validation
    val_probes: int = ranged(256, "[0, 10000000]")
    num_to_keep: int = ranged(2, "[1, 100000]")  # checkpoints kept in storage
    # A run that trained on fewer rows than this share of its manifest's train rows (shards that could not be
    # read are skipped and counted) fails, naming the skipped shards, instead of reporting success on what is
    # left. 1: every row must be read; 0: never fail on skipped rows.
    min_rows_fraction: float = ranged(0.99, "[0, 1]")
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
    resident_gib: Union[float, Literal["auto"]] = ranged("auto", "[0, 100000]")


@dataclass
class ProjectorConfig:
    epochs: int = ranged(10, "[1, 100000]")
    batch_size: int = ranged(16, "[1, 65536]")
    lr: float = ranged(1e-2, "(0, 10]")
    # the paper used 100 hand-labelled images; labels here are automatic
    max_images: int = ranged(2000, "[1, 10000000]")
    # the projector's layers (maskgan.models.projector): auto is dilated for identity-folder data (masks drawn from
    # landmarks in six colours and four textures) and the paper's otherwise
    arch: Literal["auto", "paper", "dilated"] = "auto"


@dataclass
class PhysicalConfig:
    """EOT (maskgan.design.physical): while training, every generated face is printed and photographed through random
    transforms of these strengths (half-widths or maxima; 0: off; the anchors' defaults). Off unless enabled."""

    enabled: bool = False
    contrast: float = ranged(0.2, "[0, 0.99]")  # design x U(1-c, 1+c)                  (AdversarialMask: U(0.8, 1.2))
    brightness: float = ranged(0.1, "[0, 1]")  # design + U(-b, b)                      (AdversarialMask)
    noise: float = ranged(0.05, "[0, 1]")  # design + uniform noise U(-n, n) per pixel  (AdversarialMask)
    colour_shift: float = ranged(0.05, "[0, 1]")  # per channel + U(-c, c): the printer's and fabric's colour cast
    blur_sigma: float = ranged(1.0, "[0, 10]")  # design Gaussian blur, sigma U(0.1, b) px (ink bleed)
    rotation_deg: float = ranged(5.0, "[0, 90]")  # design rotation U(-r, r)            (AdversarialMask; Sharif: 4)
    translate: float = ranged(0.05, "[0, 0.5]")  # design shift, fraction of its size   (AdversarialMask)
    scale: float = ranged(0.05, "[0, 0.9]")  # design scale U(1-s, 1+s): how the mask sits on the face
    camera_blur_sigma: float = ranged(1.0, "[0, 10]")  # face Gaussian blur, sigma U(0.1, b) px (focus, motion)
    camera_noise: float = ranged(0.02, "[0, 1]")  # face + N(0, s^2) sensor noise
    exposure: float = ranged(0.2, "[0, 0.99]")  # face x U(1-e, 1+e)
    jpeg_drop: float = ranged(45.0, "[0, 94]")  # face JPEG-like degradation, quality U(95 - d, 95)


# eval.held_out entries: `random:<seed>` (a randomly initialised facenet trunk), `dlib` (dlib's own runtime, a black
# box), `zoo:<name>` (a real pretrained recogniser ported to torch, maskgan.models.zoo: frozen, aligned from the
# row's landmarks), or recogniser weights (`random`, a pretrained name, a path or s3:// URI), loaded as the
# attacked recogniser's are (maskgan.evaluation.embedders).
RANDOM_TRUNK = "random:"
ZOO = "zoo:"
# The real pretrained recognisers, by name (maskgan.models.zoo.registry builds each; `zoo:<name>` in a config).
ZOO_NAMES = ("dlib", "hse", "faceplugin", "expo")
SEED_RANGE = "[0, 4294967295]"


UNIVERSAL_K = 8  # eval.universal_k's default


@dataclass
class EvalConfig:
    """What `maskgan evaluate` scores besides the attacked recogniser: the recogniser x row matrix (held-out
    recognisers) and the adaptive defender."""

    held_out: list[str] = field(default_factory=list)  # recognisers the generator never saw (specs: see above)
    max_probes: int = ranged(64, "[1, 10000000]")  # probes per split scored by every held-out recogniser
    # fixed universal designs scored per run (seeded from train.seed): each is worn by every probe of every split
    universal_k: int = ranged(UNIVERSAL_K, "[1, 1000]")
    # the adaptive defender: a copy of the attacked head fine-tunes this many Adam steps at this rate on train
    # identities wearing the universal designs (0 steps: no defender)
    defender_steps: int = ranged(100, "[0, 1000000]")
    defender_lr: float = ranged(1e-4, "(0, 1]")


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    projector: ProjectorConfig = field(default_factory=ProjectorConfig)
    physical: PhysicalConfig = field(default_factory=PhysicalConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

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


def _validate(cfg: RunConfig) -> RunConfig:
    """The rules no single field's type and range can say (each numeric field's range is checked in _build)."""
    if not cfg.train.storage:
        raise ConfigError("train.storage: required")
    name = cfg.train.name
    if not name or "/" in name or name.startswith(".") or name != name.strip():
        raise ConfigError(f"train.name: {name!r} must be a plain folder name (no '/', not starting with '.')")
    w = cfg.model.recognizer_weights
    if not w:
        raise ConfigError(f"model.recognizer_weights: required ({', '.join(NAMED_WEIGHTS)}, a path or s3:// URI)")
    if cfg.train.min_workers > cfg.train.num_workers:
        raise ConfigError(f"train.min_workers: {cfg.train.min_workers} is more than train.num_workers "
                          f"{cfg.train.num_workers} (0 keeps the worker count fixed)")
    resource = cfg.train.worker_resource
    if resource and (resource != resource.strip() or resource in ("CPU", "GPU", "TPU", "memory")):
        raise ConfigError(f"train.worker_resource: {resource!r} must be a custom resource name "
                          "(CPU, GPU and memory are set by cpus_per_worker and use_gpu)")
    if not cfg.data.uri:
        raise ConfigError("data.uri: required (a local directory or s3://bucket/prefix of prepared shards)")
    for i, spec in enumerate(cfg.eval.held_out):
        check_held_out(f"eval.held_out[{i}]", spec, cfg.eval.held_out[:i])
    attacked = [same_recognizer(w)]
    for i, spec in enumerate(cfg.model.recognizers):
        check_surrogate(f"model.recognizers[{i}]", spec, attacked, cfg.eval.held_out)
        attacked.append(same_recognizer(spec))
    return cfg


def same_recognizer(spec: str) -> str:
    """One name per set of weights: `random` is the facenet trunk seeded 1234 (maskgan.models.recognizer)."""
    return f"{RANDOM_TRUNK}1234" if spec == "random" else spec


def same_network(spec: str) -> str:
    """One name per network: dlib's black box and its torch port `zoo:dlib` are the same weights (attacking one
    and holding out the other would report transfer that is not transfer)."""
    return f"{ZOO}dlib" if spec == "dlib" else same_recognizer(spec)


def zoo_name(spec: str) -> str | None:
    """The zoo model a `zoo:<name>` spec names, or None for any other spec."""
    return spec[len(ZOO):] if spec.startswith(ZOO) else None


def check_surrogate(path: str, spec: str, attacked: list, held_out) -> None:
    """One model.recognizers spec: held-out syntax, but differentiable (no dlib), attacked once, and never
    also held out (a held-out recogniser that was attacked would report transfer that is not transfer)."""
    if spec == "dlib":
        raise ConfigError(f"{path}: 'dlib' cannot be attacked (a black box with no gradients); list it in eval.held_out")
    check_held_out(path, spec)
    if same_recognizer(spec) in attacked:
        raise ConfigError(f"{path}: {spec!r} is already attacked (model.recognizer_weights or listed twice)")
    if same_network(spec) in {same_network(h) for h in held_out}:
        also = next(h for h in held_out if same_network(h) == same_network(spec))
        raise ConfigError(f"{path}: {spec!r} is also in eval.held_out{'' if also == spec else f' (as {also!r})'}; "
                          f"a recogniser is attacked or held out, not both")


def check_held_out(path: str, spec: str, before=()) -> None:
    """One held-out recogniser spec is well formed (whether its weights load is preflight's question)."""
    if not spec or spec != spec.strip():
        raise ConfigError(f"{path}: {spec!r}: expected random:<seed>, dlib, zoo:<name>, "
                          f"{', '.join(NAMED_WEIGHTS)}, a path or s3:// URI")
    if spec in before:
        raise ConfigError(f"{path}: {spec!r} is listed twice")
    name = zoo_name(spec)
    if name is not None and name not in ZOO_NAMES:
        raise ConfigError(f"{path}: {spec!r}: unknown zoo recogniser {name!r} (known: "
                          f"{', '.join(ZOO + n for n in ZOO_NAMES)})")
    if spec.startswith(RANDOM_TRUNK):
        seed = spec[len(RANDOM_TRUNK):]
        if not seed.isdigit() or int(seed) > 4294967295:
            raise ConfigError(f"{path}: {spec!r}: the seed must be an integer in {SEED_RANGE}")


def from_dict(data: dict) -> RunConfig:
    return _validate(_build(RunConfig, data, ""))


def load(path: str) -> RunConfig:
    """Load a YAML or JSON config file; errors name the file and the field."""
    data = read_yaml(path, "config")
    if data is None:
        raise ConfigError(f"{path}: config is empty (data.uri at least is required)")
    try:
        return from_dict(data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def absolute_paths(cfg: RunConfig) -> RunConfig:
    """Relative local paths in a config mean the driver's working directory; Ray workers run elsewhere."""

    def fix(value: str) -> str:
        if not value or "://" in value or os.path.isabs(value) or value in NAMED_WEIGHTS:
            return value
        return os.path.abspath(value)

    def specs(values):
        return [s if s == "dlib" or s.startswith((RANDOM_TRUNK, ZOO)) else fix(s) for s in values]

    return cfg.replace(data={"uri": fix(cfg.data.uri)}, train={"storage": fix(cfg.train.storage)},
                       eval={"held_out": specs(cfg.eval.held_out)},
                       model={"projector": fix(cfg.model.projector), "recognizers": specs(cfg.model.recognizers),
                              "recognizer_weights": fix(cfg.model.recognizer_weights)})


def dump(cfg: RunConfig, path: str) -> None:
    import yaml

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        yaml.safe_dump(cfg.to_dict(), f, sort_keys=False)
