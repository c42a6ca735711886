"""`maskgan sample`: new designs from an export (verified first) or a run, written as an image file."""

from __future__ import annotations

from data_loader import storage
from maskgan.finite import nonfinite_metric, nonfinite_tensor
from tune.export import CARD, STATE, SUMS, ExportError, design_grid, verify_export

IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}  # the file's extension decides


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
    from data_loader import ranges
    from maskgan import assembly

    ranges.check("--n", n, "[1, 1024]", integer=True)  # the CLI flag's range
    fmt = image_format(out)  # before anything is read: a wrong name fails at once
    loc = storage.resolve(source)
    if storage.exists(loc.join(CARD)) or storage.exists(loc.join(SUMS)) or storage.exists(loc.join(STATE)):
        verify_export(source)
        ckpt = loc.join("checkpoint")
        state = assembly.read_checkpoint(ckpt)
    elif storage.exists(loc) and assembly.list_checkpoints(loc):
        state, ckpt = assembly.latest_checkpoint(loc, log=log)
    else:
        raise ExportError(f"{loc.uri}: neither an export (no {CARD}) nor a run with checkpoints")
    bad = nonfinite_metric(assembly.read_meta(ckpt).get("metrics", {})) or nonfinite_tensor(state)
    if bad:
        raise ExportError(f"{ckpt.uri}: refused: {bad} (the run diverged; sample an earlier checkpoint)")
    generator = assembly.generator_from_checkpoint(state, ckpt.uri)
    image = design_grid(generator, state["arch"]["latent_dim"], n, seed=seed, fmt=fmt, where=ckpt.uri)
    storage.write_bytes(storage.resolve(out), image)
    log(f"wrote {n} designs ({state['arch']['generator']}, epoch {state['epoch'] + 1}) from {ckpt.uri} to {out}")
    return out
