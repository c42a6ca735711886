"""What a run will read, checked on the driver before Ray starts: one line naming the file, in seconds.

Without it a bad weights file or a missing shard is found by every Ray Train worker, 40-96 s in, as a
long traceback. `inputs` checks what every run of a config reads (the train driver and the sweep's
preflight both call it): the recogniser weights (unless `random` or a pretrained name, downloaded by the
workers), the projector, the data's manifest and every shard it lists (exists, size as listed: a listing
per dataset, not a read of every shard, so it stays cheap on S3), and the gallery (read once, verified).
`run` adds where a training run starts (its own newest checkpoint, or `train.init_from`), verified the
way the workers will load it. The errors are the loaders' own (`user_error = True`), raised here.
"""

from __future__ import annotations

from data_loader import shards, storage
from maskgan.config import NAMED_WEIGHTS, RANDOM_TRUNK, ConfigError, RunConfig
from maskgan.design import palette
from maskgan.models import dlib_recognizer, weights
from maskgan.models.recognizer import MIN_INPUT
from maskgan.run import build, checkpoints


def run(cfg: RunConfig, run_loc: storage.Location, log=print) -> checkpoints.Start | None:
    """`inputs`, then the verified checkpoint the run starts from (None: from scratch)."""
    data = inputs(cfg)
    return checkpoints.starting_checkpoint(cfg, run_loc, data, log=log)


def inputs(cfg: RunConfig) -> storage.Location:
    """The data (manifest, every shard, gallery) and weights of a config are there, readable and safe; returns
    the data's Location."""
    data = build.data_root(cfg)  # the data first: the usual first mistake, and the cheapest check
    manifest = shards.read_manifest(data)
    check_shards(data, manifest)
    if int(manifest["size"]) < MIN_INPUT:
        raise shards.ShardError(f"{data.uri}: images are {manifest['size']} px; the facenet recogniser needs at "
                                f"least {MIN_INPUT} (prepare again with --size 128)")
    if not sum(int(s["rows"]) for s in shards.set_shards(data, manifest, "train")):
        raise shards.ShardError(f"{data.uri}: the train set has no rows (nothing to train on)")
    for _ in shards.iter_set(data, "gallery", columns=["label"]):  # every gallery shard read and verified
        pass
    build.face_crop(cfg.data.face_crop, cfg.model.recognizer_weights, manifest, data.uri)  # face: a box recorded
    if cfg.model.recognizer_weights not in NAMED_WEIGHTS:
        build.load_recognizer(cfg.model.recognizer_weights, "cpu", cfg.data.endpoint_url)  # loads, fits
    for i, spec in enumerate(cfg.model.recognizers):  # the surrogates' weights files, as the workers load them
        if not spec.startswith(RANDOM_TRUNK) and spec not in NAMED_WEIGHTS:
            try:
                build.load_recognizer(spec, "cpu", cfg.data.endpoint_url)
            except weights.WeightsError as e:
                raise ConfigError(f"model.recognizers[{i}]: {e}") from None
    check_held_out(cfg)
    build.load_projector(cfg.model.projector, "cpu", cfg.data.endpoint_url)
    palette.load(cfg.objective.palette)  # a palette file that will not load is one line naming it
    try:  # the generator for this data's size (a conv grid that does not fit is found here, not in every worker)
        checkpoints.generator_from_arch(checkpoints.arch(cfg, int(manifest["size"])))
    except ValueError as e:
        raise ConfigError(f"model.generator {cfg.model.generator!r}: {e}") from None
    return data


def check_held_out(cfg: RunConfig) -> None:
    """Every eval.held_out recogniser can be built: dlib's extra is installed (DlibMissing's one line), weights
    files load and fit (a ConfigError naming eval.held_out[i]). The specs' syntax was checked by config."""
    for i, spec in enumerate(cfg.eval.held_out):
        if spec == "dlib":
            dlib_recognizer.model_dir()
        elif not spec.startswith(RANDOM_TRUNK) and spec not in NAMED_WEIGHTS:
            try:
                build.load_recognizer(spec, "cpu", cfg.data.endpoint_url)
            except weights.WeightsError as e:
                raise ConfigError(f"eval.held_out[{i}]: {e}") from None


def check_shards(root: storage.Location, manifest: dict) -> None:
    """Every shard the manifest lists exists with the size it lists (one recursive listing of the dataset)."""
    found = dict(storage.walk_files(root))
    problems = []
    for entry in manifest["sets"].values():
        for shard in entry["shards"]:
            size = found.get(shard["path"])
            uri = root.join(shard["path"]).uri
            if size is None:
                problems.append(f"{uri}: missing")
            elif shard.get("bytes") and size != shard["bytes"]:
                problems.append(f"{uri}: {size} bytes, the manifest lists {shard['bytes']} (truncated or "
                                f"rewritten after the manifest)")
    if problems:
        more = f" (and {len(problems) - 1} more shards)" if len(problems) > 1 else ""
        raise shards.ShardError(f"{problems[0]}{more}; listed in {root.join(shards.MANIFEST).uri}")
