"""`maskgan data prepare --identities`: identity folders (LFW, CASIA-WebFace, VGGFace2, CelebA by identity;
local or s3://) -> prepared shards, through the same Ray Data ETL as FFHQ + MaskedFace-Net (data_loader.prepare:
per-row decode, chunk markers, resume, --max-bad-fraction, the manifest written last).

Layout: `<root>/<identity>/<photo>.{jpg,jpeg,png}`; anything else is ignored (counted, a few listed). A
`<photo>.json` beside a photo (`maskgan data synth --layout identities` writes them) gives its face box and 68
landmarks; every other photo is detected with dlib (data_loader.landmark_mask).

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
import re
import time
from dataclasses import dataclass, field

import numpy as np

from data_loader import landmark_mask, ranges, shards, storage
from data_loader.prepare import (MIN_SIDE, WORK, BadImage, PrepareError, decoding, open_rgb, publish, resumed,
                                 run_stage, spec_hash)
from data_loader.ray_session import ensure_ray
from data_loader.sources import LINK_REFUSED, MAX_IGNORED_LISTED

PHOTO = re.compile(r"\.(jpe?g|png)$", re.IGNORECASE)
VARIANT = "landmark_mask"  # probes' variant: a mask drawn from landmarks onto a photo of its own
MIN_PHOTOS_RANGE = "[2, 10000]"
MAX_PHOTOS_RANGE = "[2, 100000]"


@dataclass
class Folder:
    identity: str
    photos: list[tuple[str, int, bool]]  # (relative path, bytes, has a sidecar), sorted by name


@dataclass
class Found:
    folders: list[Folder]
    skipped: list[dict] = field(default_factory=list)
    photos: int = 0  # photo files seen (before the cap)
    sidecars: int = 0
    capped: int = 0  # photos beyond --max-photos-per-identity, not read
    ignored: int = 0
    ignored_examples: list[str] = field(default_factory=list)


def discover(root: storage.Location, max_photos: int, min_photos: int) -> Found:
    """List `<root>/<identity>/<photo>`; folders with fewer photo files than min_photos are skipped here."""
    found = Found(folders=[])
    escaped: list[str] = []
    photos: dict[str, list[tuple[str, int]]] = {}
    sidecars: set[str] = set()
    for rel, size in storage.walk_files(root, rejected=escaped):
        parts = rel.split("/")
        if len(parts) == 2 and PHOTO.search(parts[1]):
            found.photos += 1
            if size == 0:
                found.skipped.append({"path": root.join(rel).uri, "reason": "empty file (0 bytes)", "kind": "bad"})
            else:
                photos.setdefault(parts[0], []).append((rel, size))
        elif len(parts) == 2 and parts[1].lower().endswith(".json"):
            sidecars.add(rel[:-5])
        else:
            found.ignored += 1
            if len(found.ignored_examples) < MAX_IGNORED_LISTED:
                found.ignored_examples.append(root.join(rel).uri)
    for rel in escaped:
        found.skipped.append({"path": root.join(rel).uri, "reason": LINK_REFUSED, "kind": "bad"})
    for ident in sorted(photos):
        files = sorted(photos[ident])
        found.capped += max(0, len(files) - max_photos)
        files = files[:max_photos]
        if len(files) < min_photos:
            found.skipped.append(_too_few(root, ident, len(files), min_photos, "photo file"))
            continue
        with_sidecar = [(rel, size, PHOTO.sub("", rel) in sidecars) for rel, size in files]
        found.sidecars += sum(s for _r, _b, s in with_sidecar)
        found.folders.append(Folder(ident, with_sidecar))
    return found


def _too_few(root: storage.Location, ident: str, n: int, need: int, what: str) -> dict:
    return {"path": root.join(ident).uri, "kind": "too_few_photos",
            "reason": f"{n} usable {what}{'s' if n != 1 else ''}, need at least {need} (one gallery photo and "
                      f"probes of other photos)"}


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
            skipped.append(_too_few(src, ident, len(good), spec["min_photos"], "photo"))
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
    table = table.set_column(table.schema.get_field_index("label"), "label", pa.array([labels[i] for i in table.column("identity").to_pylist()],
                                                  pa.int32()))
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
    ranges.check("--size", size, f"[{MIN_SIDE}, 1024]", integer=True)
    ranges.check("--shard-size", shard_size, "[1, 1000000]", integer=True)
    ranges.check("--max-bad-fraction", max_bad_fraction, "[0, 1]")
    ranges.check("--max-photos-per-identity", max_photos_per_identity, MAX_PHOTOS_RANGE, integer=True)
    ranges.check("--min-photos-per-identity", min_photos_per_identity, MIN_PHOTOS_RANGE, integer=True)
    if min_photos_per_identity > max_photos_per_identity:
        raise PrepareError(f"--min-photos-per-identity {min_photos_per_identity} is above "
                           f"--max-photos-per-identity {max_photos_per_identity}: no identity could be kept")
    t0 = time.perf_counter()
    src, root = storage.resolve(identities, endpoint), storage.resolve(out, endpoint)
    if not storage.is_dir(src):
        raise PrepareError(f"--identities {src.uri}: not found (expected a directory or s3:// prefix of "
                           f"<identity>/<photo>.jpg folders)")
    found = discover(src, max_photos_per_identity, min_photos_per_identity)
    n_photos = sum(len(f.photos) for f in found.folders)
    log(f"prepare: found {found.photos} photos in {len(found.folders)} identity folders with at least "
        f"{min_photos_per_identity} photos under {src.uri} ({found.sidecars} with landmark sidecars"
        + (f", {found.capped} beyond --max-photos-per-identity not read" if found.capped else "")
        + (f", {found.ignored} other files ignored" if found.ignored else "") + ")")
    if not found.folders:
        raise PrepareError(f"no identities: no folder under {src.uri} holds {min_photos_per_identity} or more "
                           f"photos (<identity>/<photo>.jpg|png)")
    if n_photos > found.sidecars:  # some photos need detection: say what to install before any work starts
        problem = landmark_mask.detector_problem()
        if problem:
            raise PrepareError(f"--identities {src.uri}: {n_photos - found.sidecars} photos have no landmark "
                               f"sidecar and {problem}")
    shards.unpublish(root)  # before the first shard is written: an interrupted rewrite leaves no manifest
    ensure_ray(address, log=log)

    specs1 = plan(found.folders, shard_size, size, min_photos_per_identity)
    stage1 = run_stage(photos_chunk, specs1, src, root, "decode photos, detect faces, draw masks", log)
    skipped, converted, kept = list(found.skipped), [], {}
    landmarks = {"dlib": 0, "sidecar": 0}
    for e in stage1:
        skipped += e["skipped"]
        converted += e["converted"]
        kept.update(e["kept"])
        for k, v in e["landmarks"].items():
            landmarks[k] += v
    labels = {ident: i for i, ident in enumerate(sorted(kept))}
    if not labels:
        report = root.join(WORK, "report.json")
        storage.write_text(report, json.dumps({"skipped": sorted(skipped, key=lambda s: s["path"])}, indent=1))
        raise PrepareError(f"no identity under {src.uri} has {min_photos_per_identity} usable photos (decoded, "
                           f"with a face); every skipped photo and why: {report.uri}")
    stage1_of = {e["chunk"]: e for e in stage1}
    specs2 = []
    for spec in specs1:
        e = stage1_of[spec["chunk"]]
        if e["shard"]:
            specs2.append({"chunk": spec["chunk"], "split": spec["split"], "index": spec["index"],
                           "photos": e["shard"], "labels": {i: labels[i] for i in e["kept"]}})
    stage2 = run_stage(label_chunk, specs2, src, root, "label and write shards", log)

    sets = {name: {"rows": 0, "shards": []} for name in ("gallery", *shards.SPLITS)}
    for e in stage2:
        for set_name, shard in (("gallery", e["gallery"]), (e["split"], e["probes"])):
            if shard:
                sets[set_name]["shards"].append(shard)
                sets[set_name]["rows"] += shard["rows"]
    for s in sets.values():
        s["shards"].sort(key=lambda x: x["path"])
    skipped.sort(key=lambda s: s["path"])
    converted.sort(key=lambda c: c["path"])
    n_bad = sum(s["kind"] == "bad" for s in skipped)
    split_ids = {split: sum(shards.split_of(i) == split for i in labels) for split in shards.SPLITS}
    manifest = {
        "source": {"kind": "identities", "identities": src.uri, "shard_size": shard_size,
                   "max_photos_per_identity": max_photos_per_identity,
                   "min_photos_per_identity": min_photos_per_identity,
                   "detector": landmark_mask.DETECTOR, "crop": landmark_mask.CROP, "mask": landmark_mask.TEMPLATE,
                   "landmarks": landmarks, "alpha": "exact: the alpha the drawn mask was composited with"},
        # each probe is another photo of its person than the gallery's: identification, not retrieval
        "self_match": False,
        "size": size,
        "identities": len(labels),
        "split_identities": split_ids,
        "sets": sets,
        "counts": {split: ({VARIANT: sets[split]["rows"]} if sets[split]["rows"] else {}) for split in shards.SPLITS},
        "gallery_photos": {ident: kept[ident]["gallery"] for ident in sorted(kept)},
        "inputs": {"photos": found.photos, "sidecars": found.sidecars, "capped": found.capped,
                   "ignored": found.ignored, "ignored_examples": found.ignored_examples},
        "bad": {"count": n_bad, "fraction": n_bad / max(found.photos, 1), "max_fraction": max_bad_fraction},
        "skipped": skipped,
        "converted": converted,
    }
    kinds: dict[str, int] = {}
    for s in skipped:
        kinds[s["kind"]] = kinds.get(s["kind"], 0) + 1
    log(f"prepare: {len(labels)} identities (train {split_ids['train']} / val {split_ids['val']} / test "
        f"{split_ids['test']}), probes train {sets['train']['rows']} / val {sets['val']['rows']} / test "
        f"{sets['test']['rows']}; landmarks dlib {landmarks['dlib']} / sidecar {landmarks['sidecar']}; skipped "
        f"{len(skipped)}" + (f" ({', '.join(f'{k} {v}' for k, v in sorted(kinds.items()))})" if kinds else "")
        + f", converted {len(converted)}; {time.perf_counter() - t0:.1f}s")
    publish(root, manifest, found.photos, log)
    return {"format": shards.FORMAT, **manifest}
