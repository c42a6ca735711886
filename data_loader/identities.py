"""`maskgan data prepare --identities`: identity folders (LFW, CASIA-WebFace, VGGFace2, CelebA by identity;
local or s3://) -> prepared shards, through the same Ray Data ETL as FFHQ + MaskedFace-Net (data_loader.prepare:
per-row decode, chunk markers, resume, --max-bad-fraction, the manifest written last).

Layout (listed by data_loader.sources): `<root>/<identity>/<photo>.{jpg,jpeg,png}`; anything else is ignored
(counted, a few listed). A `<photo>.json` beside a photo (`maskgan data synth --layout identities` writes them)
gives its face box and 68 landmarks; every other photo is detected with dlib (data_loader.landmark_mask).

Two stages, each photo decoded once:

1. per chunk of identities: decode each photo, find its face (no face: listed, reason "no face"), crop the
   full head at --size, draw a surgical mask from its landmarks (masked photo + exact alpha) ->
   `_prepare/photos/<chunk>.parquet`. Per identity, the first photo by sorted name that decodes and has a face
   is the gallery photo; the others are probes (their own unmasked crop, masked crop, alpha). An identity with
   fewer usable photos than --min-photos-per-identity (at least 2: one gallery photo, one probe) is listed with
   that reason and skipped: a probe of a person must be a different photo than the one the gallery holds.
2. labels 0..N-1 by sorted identity over the identities kept; per chunk the rows are relabelled into the gallery
   shard `gallery/part-<chunk>.parquet` and the probe shard `<split>/part-<k>.parquet`.

Splits are identity-disjoint by the stable hash of the folder name (shards.split_of), as for FFHQ. Probes are
not self-matches (manifest `self_match: false`): no probe's photo is its gallery photo.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import numpy as np

from data_loader import landmark_mask, ranges, shards, storage
from data_loader.prepare import MIN_SIDE, BadImage, decoding, open_rgb
from data_loader.ray_session import ensure_ray
from data_loader.sources import PHOTO, Folder, Found, discover_identity_folders, too_few_photos
from data_loader.stages import (WORK, PrepareError, Tally, gather_sets, publish, resumed, run_stage, spec_hash,
                                split_identities, summary_line)

VARIANT = "landmark_mask"  # probes' variant: a mask drawn from landmarks onto a photo of its own
MIN_PHOTOS_RANGE = "[2, 10000]"
MAX_PHOTOS_RANGE = "[2, 100000]"


# ---- one photo ---------------------------------------------------------------------------------------------


def face_of(im, sidecar: dict | None) -> tuple[np.ndarray, np.ndarray, str] | None:
    """(box, landmarks [68, 2], where from) in the photo's pixels, or None when no face is found."""
    if sidecar is not None:
        box, pts = np.asarray(sidecar["box"], np.float64), np.asarray(sidecar["landmarks"], np.float64)
        if box.shape != (4,) or pts.shape != (68, 2):
            raise BadImage("sidecar JSON: expected box [l, t, r, b] and 68 landmarks [x, y]")
        return box, pts, "sidecar"
    got = landmark_mask.detect(im)
    return None if got is None else (*got, "dlib")


def face_crop(data: bytes, sidecar: dict | None, size: int):
    """Photo bytes -> (unmasked crop uint8 [size,size,3], landmarks in the crop, conversions, landmarks source),
    or None (no face): the crop every prepared photo gets, and what `maskgan print --for` conditions on."""
    with decoding():
        # a large JPEG is decoded at 1/2..1/8 scale while it stays above what detection and the crop use
        im, conversions, _wh = open_rgb(data, draft=max(landmark_mask.DETECT_MAX_SIDE, 2 * size))
    face = face_of(im, sidecar)
    if face is None:
        return None
    box, pts, source = face
    square = landmark_mask.crop_box(box)
    return landmark_mask.crop(im, square, size), landmark_mask.to_crop(pts, square, size), conversions, source


@dataclass
class Photo:
    """One prepared photo at size: its crop, the mask drawn on it, and the 68 landmarks in crop pixels."""

    unmasked: np.ndarray
    masked: np.ndarray
    alpha: np.ndarray
    landmarks: np.ndarray
    conversions: list[str]
    source: str  # where the landmarks came from: "dlib" or "sidecar"


def photo(data: bytes, sidecar: dict | None, size: int, seed_key: str) -> Photo | None:
    """Photo bytes -> its Photo at size, or None (no face)."""
    got = face_crop(data, sidecar, size)
    if got is None:
        return None
    unmasked, pts, conversions, source = got
    masked, alpha, _fill = landmark_mask.draw(unmasked, pts, landmark_mask.seed_of(seed_key))
    return Photo(unmasked, masked, alpha, np.asarray(pts, np.float32), conversions, source)


def _sidecar(loc: storage.Location) -> dict:
    try:
        return json.loads(storage.read_text(loc))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadImage(f"sidecar {loc.uri}: not valid JSON ({e})") from None


# ---- the two per-chunk stages (Ray Data tasks) --------------------------------------------------------------


def photos_chunk(spec: dict, src: storage.Location, root: storage.Location) -> dict:
    """Stage 1: each identity's photos -> crops + drawn masks in `_prepare/photos/<chunk>.parquet`."""
    h = spec_hash(spec)
    marker = root.join(WORK, "photos", f"{spec['chunk']}.json")
    done = resumed(root, marker, h, ("shard",))
    if done:
        return done
    rows, kept, skipped, converted, sources = [], {}, [], [], {"dlib": 0, "sidecar": 0}
    for ident, files in spec["ids"]:
        good: list[dict] = []
        gallery_uri = None
        for rel, _bytes, has_sidecar in files:
            loc = src.join(rel)
            try:
                side = _sidecar(src.join(PHOTO.sub("", rel) + ".json")) if has_sidecar else None
                got = photo(storage.read_bytes(loc), side, spec["size"], rel)
            except BadImage as e:
                skipped.append({"path": loc.uri, "reason": str(e), "kind": "bad"})
                continue
            if got is None:
                skipped.append({"path": loc.uri, "reason": "no face", "kind": "no_face"})
                continue
            sources[got.source] += 1
            if got.conversions:
                converted.append({"path": loc.uri, "converted": ", ".join(got.conversions)})
            if gallery_uri is None:
                gallery_uri = loc.uri
                good.append(shards.image_row(label=-1, identity=ident, split=spec["split"], variant="gallery",
                                             unmasked=got.unmasked, landmarks=got.landmarks))
            else:
                good.append(shards.image_row(label=-1, identity=ident, split=spec["split"], variant=VARIANT,
                                             unmasked=got.unmasked, masked=got.masked, alpha=got.alpha,
                                             landmarks=got.landmarks))
        if len(good) < spec["min_photos"]:
            skipped.append(too_few_photos(src, ident, len(good), spec["min_photos"], "photo"))
            continue
        rows += good
        kept[ident] = {"gallery": gallery_uri, "probes": len(good) - 1}
    shard = shards.write_shard(root, f"{WORK}/photos/{spec['chunk']}.parquet", rows) if rows else None
    entry = {"chunk": spec["chunk"], "spec_hash": h, "shard": shard, "kept": kept, "skipped": skipped,
             "converted": converted, "landmarks": sources}
    storage.write_text(marker, json.dumps(entry))
    return {**entry, "resumed": False}


def label_chunk(spec: dict, _src: storage.Location, root: storage.Location) -> dict:
    """Stage 2: the chunk's rows with their labels, as its gallery shard and its probe shard."""
    import pyarrow as pa
    import pyarrow.compute as pc

    h = spec_hash(spec)
    marker = root.join(WORK, "done", f"{spec['chunk']}.json")
    done = resumed(root, marker, h, ("gallery", "probes"))
    if done:
        return done
    table = shards.read_table(root, spec["photos"])  # verifies its sha256
    labels = spec["labels"]
    table = table.set_column(table.schema.get_field_index("label"), "label",
                             pa.array([labels[i] for i in table.column("identity").to_pylist()], pa.int32()))
    is_gallery = pc.equal(table.column("variant"), "gallery")
    gallery, probes = table.filter(is_gallery).to_pylist(), table.filter(pc.invert(is_gallery)).to_pylist()
    entry = {
        "chunk": spec["chunk"], "split": spec["split"], "spec_hash": h,
        "gallery": shards.write_shard(root, f"gallery/part-{spec['chunk']}.parquet", gallery),
        "probes": shards.write_shard(root, f"{spec['split']}/part-{spec['index']:05d}.parquet", probes)
        if probes else None,
    }
    storage.write_text(marker, json.dumps(entry))
    return {**entry, "resumed": False}


# ---- driver -----------------------------------------------------------------------------------------------


def plan(folders: list[Folder], shard_size: int, size: int, min_photos: int) -> list[dict]:
    """Stage-1 specs: per split, sorted identities in chunks of about shard_size photos."""
    mean = sum(len(f.photos) for f in folders) / max(len(folders), 1)
    per_chunk = max(1, round(shard_size / max(mean, 1.0)))
    chunks = []
    for split in shards.SPLITS:
        ids = [f for f in folders if shards.split_of(f.identity) == split]
        for k in range(0, len(ids), per_chunk):
            chunks.append({"chunk": f"{split}-{k // per_chunk:05d}", "split": split, "index": k // per_chunk,
                           "size": size, "min_photos": min_photos,
                           "ids": [[f.identity, [list(p) for p in f.photos]] for f in ids[k:k + per_chunk]]})
    return chunks


def run(identities: str, out: str, *, size: int = 128, shard_size: int = 1024, max_bad_fraction: float = 0.01,
        max_photos_per_identity: int = 100000, min_photos_per_identity: int = 2, endpoint: str | None = None,
        log=print, address: str | None = None) -> dict:
    """Prepare shards from identity folders; returns the manifest (also written to out/manifest.json)."""
    check_flags(size, shard_size, max_bad_fraction, max_photos_per_identity, min_photos_per_identity)
    t0 = time.perf_counter()
    src, root = storage.resolve(identities, endpoint), storage.resolve(out, endpoint)
    if not storage.is_dir(src):
        raise PrepareError(f"--identities {src.uri}: not found (expected a directory or s3:// prefix of "
                           f"<identity>/<photo>.jpg folders)")
    found = find_folders(src, max_photos_per_identity, min_photos_per_identity, log)
    shards.unpublish(root)  # before the first shard is written: an interrupted rewrite leaves no manifest
    ensure_ray(address, log=log)

    specs1 = plan(found.folders, shard_size, size, min_photos_per_identity)
    stage1 = run_stage(photos_chunk, specs1, src, root, "decode photos, detect faces, draw masks", log)
    tally = Tally(skipped=list(found.skipped))
    kept = gather_photos(stage1, tally)
    labels = kept.labels()
    if not labels:
        report = root.join(WORK, "report.json")
        storage.write_text(report, json.dumps({"skipped": sorted(tally.skipped, key=lambda s: s["path"])}, indent=1))
        raise PrepareError(f"no identity under {src.uri} has {min_photos_per_identity} usable photos (decoded, "
                           f"with a face); every skipped photo and why: {report.uri}")
    stage2 = run_stage(label_chunk, label_specs(specs1, stage1, labels), src, root, "label and write shards", log)

    manifest = identities_manifest(found, src, shard_size, size, kept, stage2, tally, max_bad_fraction)
    log(summary_line(manifest["split_identities"], manifest["sets"], "probes", tally, time.perf_counter() - t0,
                     extra=f"; landmarks dlib {kept.landmarks['dlib']} / sidecar {kept.landmarks['sidecar']}"))
    publish(root, manifest, found.photos, log)
    return {"format": shards.FORMAT, **manifest}


def check_flags(size: int, shard_size: int, max_bad_fraction: float, max_photos: int, min_photos: int) -> None:
    """Each flag in its range, and a minimum that some identity could meet, before anything is listed."""
    ranges.check("--size", size, f"[{MIN_SIDE}, 1024]", integer=True)
    ranges.check("--shard-size", shard_size, "[1, 1000000]", integer=True)
    ranges.check("--max-bad-fraction", max_bad_fraction, "[0, 1]")
    ranges.check("--max-photos-per-identity", max_photos, MAX_PHOTOS_RANGE, integer=True)
    ranges.check("--min-photos-per-identity", min_photos, MIN_PHOTOS_RANGE, integer=True)
    if min_photos > max_photos:
        raise PrepareError(f"--min-photos-per-identity {min_photos} is above "
                           f"--max-photos-per-identity {max_photos}: no identity could be kept")


def find_folders(src: storage.Location, max_photos: int, min_photos: int, log) -> Found:
    """List the identity folders (one log line). No folder with enough photos, or photos that need a face
    detector that is not installed, is a one-line error before any work starts."""
    found = discover_identity_folders(src, max_photos, min_photos)
    n_photos = sum(len(f.photos) for f in found.folders)
    log(f"prepare: found {found.photos} photos in {len(found.folders)} identity folders with at least "
        f"{min_photos} photos under {src.uri} ({found.sidecars} with landmark sidecars"
        + (f", {found.capped} beyond --max-photos-per-identity not read" if found.capped else "")
        + (f", {found.ignored} other files ignored" if found.ignored else "") + ")")
    if not found.folders:
        raise PrepareError(f"no identities: no folder under {src.uri} holds {min_photos} or more "
                           f"photos (<identity>/<photo>.jpg|png)")
    if n_photos > found.sidecars:  # some photos need detection: say what to install before any work starts
        problem = landmark_mask.detector_problem()
        if problem:
            raise PrepareError(f"--identities {src.uri}: {n_photos - found.sidecars} photos have no landmark "
                               f"sidecar and {problem}")
    return found


@dataclass
class Kept:
    """What stage 1 kept over all its chunks."""

    identities: dict[str, dict] = field(default_factory=dict)  # identity -> {"gallery": photo URI, "probes": n}
    landmarks: dict[str, int] = field(default_factory=lambda: {"dlib": 0, "sidecar": 0})  # photos per source

    def labels(self) -> dict[str, int]:
        """Labels 0..N-1 by sorted identity."""
        return {ident: i for i, ident in enumerate(sorted(self.identities))}


def gather_photos(stage1: list[dict], tally: Tally) -> Kept:
    """The identities stage 1 kept, and where their landmarks came from; skipped and converted photos go to
    the tally."""
    kept = Kept()
    for e in stage1:
        tally.add(e)
        kept.identities.update(e["kept"])
        for k, v in e["landmarks"].items():
            kept.landmarks[k] += v
    return kept


def label_specs(specs1: list[dict], stage1: list[dict], labels: dict[str, int]) -> list[dict]:
    """Stage-2 specs: per stage-1 chunk that wrote photos, its shard and the labels of the identities it kept."""
    stage1_of = {e["chunk"]: e for e in stage1}
    specs2 = []
    for spec in specs1:
        e = stage1_of[spec["chunk"]]
        if e["shard"]:
            specs2.append({"chunk": spec["chunk"], "split": spec["split"], "index": spec["index"],
                           "photos": e["shard"], "labels": {i: labels[i] for i in e["kept"]}})
    return specs2


def identities_manifest(found: Found, src: storage.Location, shard_size: int, size: int, kept: Kept,
                        stage2: list[dict], tally: Tally, max_bad_fraction: float) -> dict:
    """The manifest of the finished shards (without its format, which shards.write_manifest adds)."""
    tally.sort()
    labels, sets, n_bad = kept.labels(), gather_sets(stage2), tally.bad()
    return {
        "source": {"kind": "identities", "identities": src.uri, "shard_size": shard_size,
                   "max_photos_per_identity": found.max_photos, "min_photos_per_identity": found.min_photos,
                   "detector": landmark_mask.DETECTOR, "crop": landmark_mask.CROP, "mask": landmark_mask.TEMPLATE,
                   "landmarks": kept.landmarks, "alpha": "exact: the alpha the drawn mask was composited with"},
        # each probe is another photo of its person than the gallery's: identification, not retrieval
        "self_match": False,
        "size": size,
        "identities": len(labels),
        "split_identities": split_identities(labels),
        "sets": sets,
        "counts": {split: ({VARIANT: sets[split]["rows"]} if sets[split]["rows"] else {}) for split in shards.SPLITS},
        "gallery_photos": {ident: kept.identities[ident]["gallery"] for ident in sorted(kept.identities)},
        "inputs": {"photos": found.photos, "sidecars": found.sidecars, "capped": found.capped,
                   "ignored": found.ignored, "ignored_examples": found.ignored_examples},
        "bad": {"count": n_bad, "fraction": n_bad / max(found.photos, 1), "max_fraction": max_bad_fraction},
        "skipped": tally.skipped,
        "converted": tally.converted,
    }
