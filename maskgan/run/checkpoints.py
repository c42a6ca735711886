"""Builds what a run needs from a config: recogniser, projector, generator, gallery features, checkpoints.

Shared by the Ray Train worker, the evaluator, the sweep's guard, the pretraining commands and the benchmark,
so they all load weights, embed the gallery and read checkpoints the same way: `build` for the recogniser +
projector + gallery, `read_meta` / `read_checkpoint` for checkpoints, `starting_checkpoint` for where a run
starts from.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field

import torch

from data_loader import storage
from maskgan.config import RunConfig, from_dict
from maskgan.design.physical import design_hw
from maskgan.models import weights
from maskgan.models.generators import build_generator
from maskgan.run.build import image_size

CKPT_FORMAT = "maskgan-ckpt/1"
STATE_FILE = "state.pt"
FAILED_FILE = "FAILED.json"  # in a run folder: the run failed (its reason); nothing may treat the run as finished
META_FILE = "meta.json"  # the commit marker: uploaded after everything else; without it a checkpoint is not complete


class CheckpointError(RuntimeError):
    user_error = True


def arch(cfg: RunConfig, size: int) -> dict:
    """The generator's architecture for data of `size`: its designs are mask-space panels (design_hw)."""
    return {"generator": cfg.model.generator, "latent_dim": cfg.model.latent_dim, "hidden": cfg.model.hidden,
            "size": size, "design_hw": list(design_hw(size)), "cell_px": cfg.model.cell_px}


def generator_from_arch(a: dict, where: str = "checkpoint") -> torch.nn.Module:
    if "design_hw" not in a:  # checkpoints before mask space drew full-frame size x size images
        raise CheckpointError(f"{where}: a full-frame design checkpoint from before mask-space designs "
                              f"({a.get('size')}x{a.get('size')}); retrain it (designs are now mask panels)")
    return build_generator(a["generator"], a["latent_dim"], a["hidden"], a["design_hw"], a.get("cell_px", 1))


# ---- checkpoints: one save/load pair --------------------------------------------------------------------


@dataclass
class Trained:
    """What a checkpoint keeps of training besides its config: the generator and the attacked head (unwrapped),
    their optimisers (h_opt None: a frozen head, exp0), and (spec, head, optimiser or None) of each
    model.recognizers surrogate."""

    generator: torch.nn.Module
    head: torch.nn.Module
    g_opt: torch.optim.Optimizer
    h_opt: torch.optim.Optimizer | None
    surrogates: list = field(default_factory=list)


def save_checkpoint(directory: str, *, cfg: RunConfig, size: int, epoch: int, trained: Trained,
                    metrics: dict) -> None:
    """Write state.pt then meta.json (with state.pt's sha256) into a fresh local directory. The surrogates are
    saved under "surrogates" (a checkpoint of a single-recogniser run has no such key, as before)."""
    import os

    state = {
        "format": CKPT_FORMAT,
        "arch": arch(cfg, size),
        "epoch": epoch,
        "config": cfg.to_dict(),
        "generator": trained.generator.state_dict(),
        "head": trained.head.state_dict(),
        "g_opt": trained.g_opt.state_dict(),
        "h_opt": trained.h_opt.state_dict() if trained.h_opt is not None else {},
    }
    if trained.surrogates:
        state["surrogates"] = [{"spec": spec, "head": h.state_dict(), "h_opt": o.state_dict() if o is not None else {}}
                               for spec, h, o in trained.surrogates]
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    with open(os.path.join(directory, STATE_FILE), "wb") as f:
        f.write(data)
    meta = {"format": CKPT_FORMAT, "epoch": epoch, "arch": state["arch"], "metrics": metrics,
            "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    with open(os.path.join(directory, META_FILE), "w") as f:
        json.dump(meta, f, indent=1, sort_keys=True)


def upload_checkpoint(local_dir: str, dest: storage.Location, log=print) -> None:
    """Copy a checkpoint folder to storage, write-then-commit: every file first (each retried with backoff
    through outages), meta.json last. A reader never takes a half-uploaded checkpoint for a complete one."""
    import os

    names = sorted(os.listdir(local_dir))
    for name in [n for n in names if n != META_FILE] + [META_FILE]:
        with open(os.path.join(local_dir, name), "rb") as f:
            data = f.read()
        storage.with_retries(lambda: storage.write_bytes(dest.join(name), data), f"upload {dest.join(name).uri}", log=log)


def run_failure(run: storage.Location) -> dict | None:
    """The run's failure marker ({reason, log, time}) that the driver writes when a run fails, or None: a run
    with one is not finished (export refuses it; evaluation says so)."""
    loc = run.join(FAILED_FILE)
    if not storage.exists(loc):
        return None
    try:
        return json.loads(storage.read_text(loc))
    except json.JSONDecodeError:
        return {"reason": f"{loc.uri} is not readable JSON"}


def read_meta(loc: storage.Location) -> dict:
    """The meta.json of one checkpoint folder (epoch, arch, metrics, state.pt's sha256): the one reader of it.
    A missing or unparsable file is a CheckpointError naming it."""
    return _meta(loc)[1]


def _meta(loc: storage.Location) -> tuple[bytes, dict]:
    meta_loc = loc.join(META_FILE)
    if not storage.exists(meta_loc):
        raise CheckpointError(f"{loc.uri}: incomplete checkpoint (no {META_FILE})")
    data = storage.read_bytes(meta_loc)
    try:
        meta = json.loads(data.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CheckpointError(f"{meta_loc.uri}: corrupt (not JSON)") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{meta_loc.uri}: corrupt (not a JSON object)")
    return data, meta


def checkpoint_files(loc: storage.Location) -> dict[str, bytes]:
    """The bytes of one checkpoint folder's files (meta.json, state.pt), state.pt verified against the sha256
    meta.json records: what a copy of a checkpoint takes (e.g. a PBT clone), and what `read_checkpoint` loads."""
    meta_bytes, meta = _meta(loc)
    state_loc = loc.join(STATE_FILE)
    data = storage.read_bytes(state_loc)
    if hashlib.sha256(data).hexdigest() != meta.get("sha256"):
        raise CheckpointError(f"{state_loc.uri}: checksum mismatch (torn or corrupted checkpoint)")
    return {META_FILE: meta_bytes, STATE_FILE: data}


def read_checkpoint(loc: storage.Location) -> dict:
    """Load and verify one checkpoint folder (local or s3). Errors name the file."""
    state_loc = loc.join(STATE_FILE)
    data = checkpoint_files(loc)[STATE_FILE]
    try:
        state = weights.load_torch(state_loc.uri, "checkpoint", data=data)
    except weights.WeightsError as e:
        raise CheckpointError(f"{state_loc.uri}: refused ({e.reason})") from None
    if not isinstance(state, dict) or state.get("format") != CKPT_FORMAT:
        raise CheckpointError(f"{state_loc.uri}: not a maskgan checkpoint")
    return state


def list_checkpoints(run: storage.Location) -> list[tuple[int, storage.Location]]:
    """Complete-looking checkpoints of a run, oldest first, by the epoch their meta.json records."""
    found = []
    for name in storage.list_dir(run):
        if not name.startswith("checkpoint_"):
            continue
        loc = run.join(name)
        try:
            found.append((int(read_meta(loc)["epoch"]), loc))
        except (CheckpointError, ValueError, KeyError, TypeError):
            continue
    return sorted(found, key=lambda t: (t[0], t[1].uri))


def latest_checkpoint(run: storage.Location, log=print) -> tuple[dict, storage.Location]:
    """The newest checkpoint that verifies; a bad one is reported and the previous one used."""
    candidates = list_checkpoints(run)
    if not candidates:
        raise CheckpointError(f"{run.uri}: no checkpoints (did the run finish an epoch?)")
    for _, loc in reversed(candidates):
        try:
            return read_checkpoint(loc), loc
        except CheckpointError as e:
            log(f"warning: skipping bad checkpoint: {e}")
    raise CheckpointError(f"{run.uri}: every checkpoint failed verification")


def generator_from_checkpoint(state: dict, where: str) -> torch.nn.Module:
    """The architecture comes from the checkpoint; a state that does not fit it is refused clearly."""
    a = state["arch"]
    gen = generator_from_arch(a, where)
    try:
        gen.load_state_dict(state["generator"])
    except RuntimeError:
        raise CheckpointError(f"{where}: generator weights do not fit architecture {a['generator']} "
                              f"(latent {a['latent_dim']}, hidden {a['hidden']}, size {a['size']})") from None
    return gen


@dataclass
class Start:
    """The checkpoint a run starts from, verified and checked against the config's architecture."""

    state: dict
    source: str  # the checkpoint folder's URI
    resumed: bool  # True: the run's own newest checkpoint; False: train.init_from's


def starting_checkpoint(cfg: RunConfig, run: storage.Location, data: storage.Location, log=print) -> Start | None:
    """Where a run starts: the newest checkpoint in its run folder that verifies (a resume, a worker-failure
    restart, a PBT clone `checkpoint_pbt_*`), else `train.init_from`'s, else None (from scratch). The one
    decision: the driver asks it before training (so a bad checkpoint is one line, not a failure in every
    worker) and each worker asks it again to load the weights. A torn newest checkpoint is named (`log`)
    and the previous good one used. `data`: the run's prepared data (its image size is part of the
    architecture a checkpoint must match).

    The run folder, not `ray.train.get_checkpoint()`: every checkpoint Train knows is there, and so is one
    the upload hook wrote just before the driver was killed, which Train never recorded (no
    checkpoint_manager_snapshot.json entry) and would not offer."""
    if storage.exists(run) and list_checkpoints(run):
        state, loc = latest_checkpoint(run, log=log)
        check_resume_arch(state, cfg, image_size(data), loc.uri)
        return Start(state, loc.uri, resumed=True)
    if not cfg.train.init_from:
        return None
    src = storage.resolve(cfg.train.init_from, cfg.data.endpoint_url)
    if not storage.exists(src):
        raise CheckpointError(f"train.init_from: {src.uri} not found")
    state = read_checkpoint(src)
    check_resume_arch(state, cfg, image_size(data), f"train.init_from {src.uri}")
    return Start(state, src.uri, resumed=False)


def surrogate_specs(state: dict) -> list[str]:
    """The model.recognizers a checkpoint's surrogate heads belong to ([] for checkpoints without any)."""
    return [s["spec"] for s in state.get("surrogates", [])]


def check_resume_arch(state: dict, cfg: RunConfig, size: int, where: str) -> None:
    want = arch(cfg, size)
    if state["arch"] != want:
        diff = ", ".join(f"{k}: checkpoint {state['arch'].get(k)!r} vs config {v!r}"
                         for k, v in want.items() if state["arch"].get(k) != v)
        raise CheckpointError(f"{where}: checkpoint is from another architecture ({diff})")
    check_surrogates(state, cfg, where)


def check_surrogates(state: dict, cfg: RunConfig, where: str) -> None:
    """The checkpoint holds heads for exactly cfg's model.recognizers. The surrogate heads are trained state like
    the primary's: another list would start them from scratch (or load one surrogate's head into another)."""
    if surrogate_specs(state) != list(cfg.model.recognizers):
        raise CheckpointError(f"{where}: checkpoint attacked model.recognizers {surrogate_specs(state)}, "
                              f"the config lists {list(cfg.model.recognizers)}")


def config_of(state: dict) -> RunConfig:
    return from_dict(state["config"])
