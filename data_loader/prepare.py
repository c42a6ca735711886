"""`maskgan data prepare`: FFHQ + MaskedFace-Net (local or s3://) -> prepared shards, as a Ray Data job.

The driver only lists (data_loader.sources pairs files by number) and plans chunks; Ray Data tasks read bytes
and decode one image at a time, so one corrupt file costs one skipped entry, never the job (Ray's read_images
fails the whole read on one bad file, and max_errored_blocks drops whole blocks).

Two stages, each image decoded once:

1. per chunk of identities: read + decode + resize each FFHQ photo -> `_prepare/unmasked/<chunk>.parquet`.
   A corrupt FFHQ photo removes its identity, so labels can only be given after this stage.
2. labels 0..N-1 by sorted identity over the identities whose photo decoded; per chunk: read + decode each
   MaskedFace-Net image, derive its alpha label from the pair (data_loader.alpha), write the chunk's gallery
   shard `gallery/part-<split>-<k>.parquet` and probe shard `<split>/part-<k>.parquet`.

Chunks are identities of one split (stable hash of the number), sorted, about --shard-size probe rows each, so
file names are deterministic. Each finished chunk leaves a marker (`_prepare/.../<chunk>.json`) with the hash
of what it was asked to do and its shards' sha256; a re-run skips every chunk whose marker matches and whose
shards verify, so nothing finished is redone or lost. `_prepare/` is that resume state (about the size of the
gallery set); it may be deleted once prepare has succeeded. An older manifest in --out is removed before the
first shard is written and the new one is written last, so an interrupted or failed run leaves no manifest
(readers say the folder is incomplete) and a folder with a manifest is always complete.

Bad inputs are converted (grayscale, CMYK, 16-bit, palette, RGBA -> RGB; non-square -> centre crop) or skipped
and listed with their reason. When the unusable files exceed --max-bad-fraction of all input images, the job
writes `_prepare/report.json` (every skipped file and why) but no manifest.json (a dataset that failed its
check is not published), then fails with one line. Finished chunks stay,
so a re-run with a higher --max-bad-fraction completes in seconds. Missing partners ("unpaired") and
duplicates are listed but not counted as bad: a partial MaskedFace-Net download (e.g. CMFD only) leaves many
FFHQ numbers unpaired by design.
"""

from __future__ import annotations

import contextlib
import io
import json
import time

import numpy as np

from data_loader import alpha, ranges, shards, sources, storage
from data_loader.ray_session import ensure_ray
from data_loader.stages import (WORK, PrepareError, Tally, gather_sets, publish, resumed, run_stage, spec_hash,
                                split_identities, summary_line)

MIN_SIDE = 32  # images smaller than this on a side carry no usable face


class BadImage(ValueError):
    """An input image that cannot be used; the message is the reason listed in the manifest."""


# ---- one image ---------------------------------------------------------------------------------------------


def load_rgb(data: bytes, size: int) -> tuple[np.ndarray, list[str]]:
    """Encoded image bytes -> (uint8 [size,size,3], conversions applied). Raises BadImage with the reason."""
    from PIL import Image

    with decoding():
        im, conversions, (w, h) = open_rgb(data, size)
        if w != h:
            conversions.append(f"{w}x{h} centre-cropped to square")
        cw, ch = im.size  # after a JPEG draft: smaller than (w, h)
        s = min(cw, ch)
        box = ((cw - s) / 2, (ch - s) / 2, (cw + s) / 2, (ch + s) / 2)
        im = im.resize((size, size), Image.Resampling.LANCZOS, box=box, reducing_gap=3.0)
        arr = np.asarray(im, dtype=np.uint8)
    if arr.shape != (size, size, 3):
        raise BadImage(f"decoded to an unexpected shape {arr.shape}")
    return np.ascontiguousarray(arr), conversions


def open_rgb(data: bytes, draft: int | None = None):
    """Encoded image bytes -> (decoded PIL RGB image, conversions applied, the file's own (width, height)).
    `draft`: a JPEG may be decoded at 1/2, 1/4 or 1/8 scale while that still covers draft x draft, else the
    image is full size. Call inside `decoding()`."""
    from PIL import Image

    if not data:
        raise BadImage("empty file (0 bytes)")
    conversions: list[str] = []
    im = Image.open(io.BytesIO(data))
    w, h = im.size
    if min(w, h) < MIN_SIDE:
        raise BadImage(f"too small ({w}x{h}, need at least {MIN_SIDE}x{MIN_SIDE})")
    if draft and im.format == "JPEG":
        im.draft("RGB", (draft, draft))
    im.load()
    if im.mode != "RGB":
        conversions.append(f"{im.mode}->RGB")
        im = _to_rgb(im)
    return im, conversions, (w, h)


@contextlib.contextmanager
def decoding():
    """Pillow's many exception types for a corrupt file (OSError, SyntaxError, struct.error, ...) -> BadImage."""
    from PIL import UnidentifiedImageError

    try:
        yield
    except BadImage:
        raise
    except UnidentifiedImageError:
        raise BadImage("cannot decode (not an image format Pillow reads)") from None
    except Exception as e:
        msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        raise BadImage(f"cannot decode ({type(e).__name__}{': ' + msg if msg else ''})") from None


def _to_rgb(im):
    from PIL import Image

    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(im).astype(np.float64)
        if im.mode.startswith("I;16") or a.max(initial=0) > 255:
            a = a / 257.0  # 16-bit -> 8-bit
        g = np.clip(np.rint(a), 0, 255).astype(np.uint8)
        return Image.fromarray(np.stack([g, g, g], axis=-1))
    if im.mode in ("RGBA", "LA", "PA", "P") and (im.mode != "P" or "transparency" in im.info):
        im = im.convert("RGBA")
        flat = Image.new("RGBA", im.size, (255, 255, 255, 255))  # transparent areas onto white
        return Image.alpha_composite(flat, im).convert("RGB")
    return im.convert("RGB")


# ---- the two per-chunk stages (run as Ray Data tasks by data_loader.stages) ------------------------------


def unmasked_chunk(spec: dict, ffhq: storage.Location, root: storage.Location) -> dict:
    """Stage 1: decode + resize the chunk's FFHQ photos into `_prepare/unmasked/<chunk>.parquet`."""
    h = spec_hash(spec)
    marker = root.join(WORK, "unmasked", f"{spec['chunk']}.json")
    done = resumed(root, marker, h, ("shard",))
    if done:
        return done
    rows, good, bad, skipped, converted = [], [], {}, [], []
    for ident, rel, _bytes in spec["ffhq"]:
        loc = ffhq.join(rel)
        try:
            img, conv = load_rgb(storage.read_bytes(loc), spec["size"])
        except BadImage as e:
            skipped.append({"path": loc.uri, "reason": str(e), "kind": "bad"})
            bad[ident] = loc.uri
            continue
        if conv:
            converted.append({"path": loc.uri, "converted": ", ".join(conv)})
        rows.append(shards.image_row(label=-1, identity=ident, split=spec["split"], variant="gallery", unmasked=img))
        good.append(ident)
    shard = shards.write_shard(root, f"{WORK}/unmasked/{spec['chunk']}.parquet", rows) if rows else None
    entry = {"chunk": spec["chunk"], "spec_hash": h, "shard": shard, "good": good, "bad": bad, "skipped": skipped,
             "converted": converted}
    storage.write_text(marker, json.dumps(entry))
    return {**entry, "resumed": False}


def pairs_chunk(spec: dict, mfn: storage.Location, root: storage.Location) -> dict:
    """Stage 2: the chunk's gallery rows + probe rows (masked, unmasked, derived alpha) as two shards."""
    h = spec_hash(spec)
    marker = root.join(WORK, "done", f"{spec['chunk']}.json")
    done = resumed(root, marker, h, ("gallery", "probes"))
    if done:
        return done
    unmasked_shard = spec["unmasked"]
    table = shards.read_table(root, unmasked_shard)  # verifies its sha256
    photos = dict(zip(table.column("identity").to_pylist(),
                      shards.decode(table.select(["size", "unmasked"]).to_pydict())["unmasked"]))
    split, gallery, probes, skipped, converted, counts = spec["split"], [], [], [], [], {}
    for ident, label, masked_files in spec["ids"]:
        un = photos[ident]
        gallery.append(shards.image_row(label=label, identity=ident, split=split, variant="gallery", unmasked=un))
        for variant, rel, _bytes in masked_files:
            loc = mfn.join(rel)
            try:
                ma, conv = load_rgb(storage.read_bytes(loc), spec["size"])
            except BadImage as e:
                skipped.append({"path": loc.uri, "reason": str(e), "kind": "bad"})
                continue
            al, why = alpha.derive(ma, un)
            if al is None:
                skipped.append({"path": loc.uri, "reason": why, "kind": "bad"})
                continue
            if conv:
                converted.append({"path": loc.uri, "converted": ", ".join(conv)})
            probes.append(shards.image_row(label=label, identity=ident, split=split, variant=variant,
                                           unmasked=un, masked=ma, alpha=al))
            counts[variant] = counts.get(variant, 0) + 1
    entry = {
        "chunk": spec["chunk"], "split": split, "spec_hash": h,
        "gallery": shards.write_shard(root, f"gallery/part-{spec['chunk']}.parquet", gallery),
        "probes": shards.write_shard(root, f"{split}/part-{spec['index']:05d}.parquet", probes) if probes else None,
        "counts": counts, "skipped": skipped, "converted": converted,
    }
    storage.write_text(marker, json.dumps(entry))
    return {**entry, "resumed": False}


# ---- driver -----------------------------------------------------------------------------------------------


def plan(identities: list[sources.Identity], shard_size: int, size: int) -> list[dict]:
    """Stage-1 specs: per split, sorted identities in chunks of about shard_size probe rows."""
    mean_pairs = sum(len(i.masked) for i in identities) / max(len(identities), 1)
    per_chunk = max(1, round(shard_size / max(mean_pairs, 1.0)))
    chunks = []
    for split in shards.SPLITS:
        ids = [i for i in identities if shards.split_of(i.identity) == split]
        for k in range(0, len(ids), per_chunk):
            part = ids[k:k + per_chunk]
            chunks.append({"chunk": f"{split}-{k // per_chunk:05d}", "split": split, "index": k // per_chunk,
                           "size": size, "ffhq": [[i.identity, *i.ffhq] for i in part],
                           "_masked": {i.identity: [list(m) for m in i.masked] for i in part}})
    return chunks


def run(ffhq: str, maskedfacenet: str, out: str, *, size: int = 128, shard_size: int = 1024,
        max_bad_fraction: float = 0.01, endpoint: str | None = None, log=print, address: str | None = None) -> dict:
    """Prepare shards from FFHQ + MaskedFace-Net; returns the manifest (also written to out/manifest.json).
    `address`: the Ray to join (else RAY_ADDRESS, else a new local instance)."""
    ranges.check("--size", size, f"[{MIN_SIDE}, 1024]", integer=True)
    ranges.check("--shard-size", shard_size, "[1, 1000000]", integer=True)
    ranges.check("--max-bad-fraction", max_bad_fraction, "[0, 1]")
    t0 = time.perf_counter()
    src_f, src_m = storage.resolve(ffhq, endpoint), storage.resolve(maskedfacenet, endpoint)
    root = storage.resolve(out, endpoint)
    for flag, loc in (("--ffhq", src_f), ("--maskedfacenet", src_m)):
        if not storage.is_dir(loc):
            raise PrepareError(f"{flag} {loc.uri}: not found (expected a directory or s3:// prefix of images)")
    found = find_pairs(src_f, src_m, log)
    shards.unpublish(root)  # before the first shard is written: an interrupted rewrite leaves no manifest
    ensure_ray(address, log=log)

    specs1 = plan(found.identities, shard_size, size)
    masked_of = {ident: files for s in specs1 for ident, files in s.pop("_masked").items()}
    stage1 = run_stage(unmasked_chunk, specs1, src_f, root, "decode FFHQ photos", log)
    tally = Tally(skipped=list(found.skipped))
    labels = labels_after_decoding(stage1, masked_of, src_m, tally)
    specs2 = pair_specs(specs1, stage1, labels, masked_of, size)
    stage2 = run_stage(pairs_chunk, specs2, src_m, root, "decode MaskedFace-Net images + derive alpha", log)

    manifest = pairs_manifest(found, src_f, src_m, shard_size, size, labels, stage2, tally, max_bad_fraction)
    log(summary_line(manifest["split_identities"], manifest["sets"], "probe pairs", tally, time.perf_counter() - t0))
    publish(root, manifest, _inputs(found), log)
    return {"format": shards.FORMAT, **manifest}


def _inputs(found: sources.Discovery) -> int:
    """Recognised image files of both datasets: what --max-bad-fraction is a fraction of."""
    return found.files["ffhq"] + found.files["maskedfacenet"]


def find_pairs(src_f: storage.Location, src_m: storage.Location, log) -> sources.Discovery:
    """List both roots and pair their files (one log line); no pair at all is a one-line error."""
    found = sources.discover(src_f, src_m)
    n_pairs = sum(len(i.masked) for i in found.identities)
    log(f"prepare: found {found.files['ffhq']} FFHQ and {found.files['maskedfacenet']} MaskedFace-Net images "
        f"-> {n_pairs} pairs of {len(found.identities)} identities"
        + (f" ({found.ignored} other files ignored)" if found.ignored else ""))
    if not found.identities:
        raise PrepareError(f"no pairs: {found.files['ffhq']} FFHQ images (NNNNN.png) under {src_f.uri} and "
                           f"{found.files['maskedfacenet']} MaskedFace-Net images (NNNNN_Mask*.jpg) under "
                           f"{src_m.uri} share no number")
    return found


def labels_after_decoding(stage1: list[dict], masked_of: dict, src_m: storage.Location,
                          tally: Tally) -> dict[str, int]:
    """Labels 0..N-1 by sorted identity over the identities whose FFHQ photo decoded. The masked partners of
    an unusable FFHQ photo are listed as skipped ("partner_bad"): they have no gallery photo to pair with."""
    good: set[str] = set()
    for e in stage1:
        good.update(e["good"])
        tally.add(e)
        for ident, uri in e["bad"].items():
            for _variant, rel, _bytes in masked_of[ident]:
                tally.skipped.append({"path": src_m.join(rel).uri, "reason": f"its FFHQ image {uri} is unusable",
                                      "kind": "partner_bad"})
    return {ident: i for i, ident in enumerate(sorted(good))}


def pair_specs(specs1: list[dict], stage1: list[dict], labels: dict[str, int], masked_of: dict,
               size: int) -> list[dict]:
    """Stage-2 specs: per stage-1 chunk, its labelled identities with their masked files and the chunk's
    unmasked shard (a chunk whose every FFHQ photo was unusable has none and is left out)."""
    stage1_of = {e["chunk"]: e for e in stage1}
    specs2 = []
    for spec in specs1:
        ids = [[ident, labels[ident], masked_of[ident]] for ident, _rel, _b in spec["ffhq"] if ident in labels]
        if ids:
            specs2.append({"chunk": spec["chunk"], "split": spec["split"], "index": spec["index"],
                           "size": size, "unmasked": stage1_of[spec["chunk"]]["shard"], "ids": ids})
    return specs2


def pairs_manifest(found: sources.Discovery, src_f: storage.Location, src_m: storage.Location, shard_size: int,
                   size: int, labels: dict[str, int], stage2: list[dict], tally: Tally,
                   max_bad_fraction: float) -> dict:
    """The manifest of the finished shards (without its format, which shards.write_manifest adds)."""
    counts = {split: {} for split in shards.SPLITS}
    for e in stage2:
        for variant, n in e["counts"].items():
            counts[e["split"]][variant] = counts[e["split"]].get(variant, 0) + n
        tally.add(e)
    tally.sort()
    n_bad = tally.bad()
    return {
        "source": {"kind": "ffhq+maskedfacenet", "ffhq": src_f.uri, "maskedfacenet": src_m.uri,
                   "shard_size": shard_size, "alpha": "derived from each pair (data_loader.alpha)"},
        # MaskedFace-Net draws its mask onto the FFHQ photo of the same number, and that photo is the gallery:
        # `unmasked` probes are self-matches and `original_mask` is near-duplicate retrieval. Reports say so.
        "self_match": True,
        "size": size,
        "identities": len(labels),
        "split_identities": split_identities(labels),
        "sets": gather_sets(stage2),
        "counts": counts,
        "inputs": {"ffhq": found.files["ffhq"], "maskedfacenet": found.files["maskedfacenet"],
                   "ignored": found.ignored, "ignored_examples": found.ignored_examples},
        "bad": {"count": n_bad, "fraction": n_bad / max(_inputs(found), 1), "max_fraction": max_bad_fraction},
        "skipped": tally.skipped,
        "converted": tally.converted,
    }
