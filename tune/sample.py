"""Reading `--from` (an export, verified first, or a run) for `maskgan sample` and `maskgan print`; and `maskgan
sample`: new designs written as an image file."""

from __future__ import annotations

import json
from dataclasses import dataclass

from data_loader import ranges, storage
from maskgan.design import wearing
from maskgan.run import checkpoints
from maskgan.run.finite import nonfinite_metric, nonfinite_tensor
from tune.export import design_grid
from tune.export_folder import CARD, STATE, SUMS, ExportError, sha256, verify_export

IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}  # the file's extension decides


@dataclass
class Source:
    """A checkpoint read from an export (verified) or a run (its latest good checkpoint)."""

    state: dict
    checkpoint: storage.Location
    card_sha256: str | None  # the export's model_card.json sha256; None when the source is a run


def open_source(source: str, log=print) -> Source:
    """The one reader of `--from`: an export folder (verified against SHA256SUMS first) or a run URI."""
    loc = storage.resolve(source)
    if storage.exists(loc.join(CARD)) or storage.exists(loc.join(SUMS)) or storage.exists(loc.join(STATE)):
        verify_export(source)  # SHA256SUMS covers model_card.json: its bytes below are the verified ones
        ckpt = loc.join("checkpoint")
        src = Source(checkpoints.read_checkpoint(ckpt), ckpt, sha256(storage.read_bytes(loc.join(CARD))))
    elif storage.exists(loc) and checkpoints.list_checkpoints(loc):
        state, ckpt = checkpoints.latest_checkpoint(loc, log=log)
        src = Source(state, ckpt, None)
    else:
        raise ExportError(f"{loc.uri}: neither an export (no {CARD}) nor a run with checkpoints")
    # A diverged checkpoint is refused by every reader of --from (sample, print): its designs are not designs.
    bad = nonfinite_metric(checkpoints.read_meta(src.checkpoint).get("metrics", {})) or nonfinite_tensor(src.state)
    if bad:
        raise ExportError(f"{src.checkpoint.uri}: refused: {bad} (the run diverged; use an earlier checkpoint)")
    return src


def image_format(path: str) -> str:
    """The PIL format a file name asks for; an unknown extension is an ExportError naming the ones allowed."""
    ext = "." + path.rsplit(".", 1)[-1].lower() if "." in path.rsplit("/", 1)[-1] else ""
    if ext not in IMAGE_FORMATS:
        raise ExportError(f"{path}: unknown image extension {ext or '(none)'!r} "
                          f"(use {', '.join(sorted(IMAGE_FORMATS))})")
    return IMAGE_FORMATS[ext]


def sample(source: str, n: int = 16, out: str = "designs.png", seed: int = 0, log=print) -> str:
    """Write a grid of n new designs from an export (verified first) or a run's latest checkpoint; the image
    format follows `out`'s extension (png, jpg/jpeg, webp). A checkpoint with non-finite metrics or weights is
    refused, and so are designs that are non-finite or all black."""

    ranges.check("--n", n, "[1, 1024]", integer=True)  # the CLI flag's range
    fmt = image_format(out)  # before anything is read: a wrong name fails at once
    src = open_source(source, log=log)  # verified, and refused when the run diverged
    state, ckpt = src.state, src.checkpoint
    generator = checkpoints.generator_from_checkpoint(state, ckpt.uri)
    image = design_grid(generator, state["arch"]["latent_dim"], n, seed=seed, fmt=fmt, where=ckpt.uri)
    storage.write_bytes(storage.resolve(out), image)
    log(f"wrote {n} designs ({state['arch']['generator']}, epoch {state['epoch'] + 1}) from {ckpt.uri} to {out}")
    # Beside it, designs/universal_<k>.png: the K universal designs, seeded as the report that scored them.
    loc = storage.resolve(source)
    rep_loc = loc.join("report.json")
    report = json.loads(storage.read_bytes(rep_loc)) if storage.exists(rep_loc) else {}
    k = report.get("universal_k", wearing.UNIVERSAL_K)
    universal_seed = report.get("universal_seed", checkpoints.config_of(state).train.seed)
    folder = out.rsplit("/", 1)[0] if "/" in out else "."
    for name, data in wearing.universal_pngs(generator, state["arch"]["latent_dim"], k, universal_seed).items():
        storage.write_bytes(storage.resolve(f"{folder}/{name}"), data)
    log(f"wrote the {k} universal designs (seed {universal_seed}) to {folder}/designs/")
    return out
