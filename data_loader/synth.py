"""Synthetic people written as datasets: the embedded default dataset in the real shard format, or the identity
folder layout a user's LFW-style download has.

The people come from data_loader.faces: identity above a facemask as much as below it (eyes, brows, hairline and
hair, forehead, face width and jaw, skin, ears, glasses; nose and mouth), every photo a new pose (yaw, roll),
light, expression, camera distance and background, and its exact 68 landmarks. Each photo comes unmasked, wearing
a plain surgical-style mask fitted to its landmarks (as in MaskedFace-Net; one surgical blue, not exactly the
`blue` control's), and with the mask's true alpha; shard rows record the landmarks.

The `adapt` set (for `maskgan recognizer adapt`, the stand-in for pretraining) is a pool of identities of its
own, never in the gallery or among the probes: each has one unmasked photo (variant `gallery`, labels 0..A-1
within the set) for the adaptation softmax and photos wearing masks of random colours and textures.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from data_loader import faces, ranges, shards, storage
from data_loader.progress import Progress

# Asked of each drawn person's first photo (uint8 [S, S, 3], its 68 landmarks): keep this person? (no near-twins)
Keep = Callable[[np.ndarray, np.ndarray], bool]

ADAPT_PREFIX = "synth-adapt-"
MIN_SIZE = 32  # pixels a side: below this the eyes, brows and mask edge are a few pixels (as prepare's MIN_SIDE)
MASK_RGB = faces.draw.MASK_RGB


def identity_params(rng: np.random.Generator) -> faces.Person:
    """A new synthetic person."""
    return faces.person(rng)


def render(p: faces.Person, rng: np.random.Generator, size: int = 128, varied_mask: bool = False,
           pose: dict | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One new photo of p: (unmasked uint8 [S,S,3], masked uint8 [S,S,3], alpha uint8 [S,S]). `pose`, when
    given, receives the photo's Shot under "shot", from which `landmarks68` places the points."""
    photo = faces.take(p, rng, size, varied_mask)
    if pose is not None:
        pose["shot"] = photo.shot
    return photo.unmasked, photo.masked, photo.alpha


def landmarks68(p: faces.Person, pose: dict, size: int) -> np.ndarray:
    """The 68 points [68, 2] (pixels) of the photo `render` drew with this pose."""
    return faces.geometry.landmarks68(p, pose["shot"], size)


def synth_split(index: int) -> str:
    # Deterministic 60/20/20 by index so tiny datasets still get every split.
    r = index % 10
    return "train" if r < 6 else ("val" if r < 8 else "test")


def generate(out_uri: str, identities: int, images_per_identity: int, adapt_per_identity: int = 4,
             seed: int = 0, size: int = 128, shard_size: int = 256, log=print,
             adapt_identities: int | None = None, keep: Keep | None = None, keep_rule: str | None = None) -> dict:
    """Write a synthetic dataset to out_uri (local dir or s3://) in the shard format; returns the manifest.

    adapt_identities (default: as many as `identities`; none when adapt_per_identity is 0): the adapt pool,
    identities of their own (`synth-adapt-*`), disjoint from the gallery's.

    keep (default: everyone): asked of each drawn person's gallery photo; a person it refuses is passed over and
    another drawn (no near-twins: maskgan.evaluation.realism.Distinct). The manifest's source records `keep_rule`
    and how many were passed over.

    Into an existing dataset: its manifest is removed before the first shard is written and the new one is
    written last, so an interrupted rewrite leaves no manifest (readers then say so) and never a mix."""
    ranges.check("--identities", identities, "[2, 1000000]", integer=True)
    ranges.check("--images-per-identity", images_per_identity, "[1, 10000]", integer=True)
    ranges.check("--adapt-per-identity", adapt_per_identity, "[0, 10000]", integer=True)
    adapt_identities = (identities if adapt_identities is None else adapt_identities) if adapt_per_identity else 0
    ranges.check("--adapt-identities", adapt_identities, "[0, 1000000]", integer=True)
    ranges.check("--size", size, f"[{MIN_SIZE}, 1024]", integer=True)
    ranges.check("--seed", seed, "[0, 4294967295]", integer=True)
    ranges.check("shard_size", shard_size, "[1, 1000000]", integer=True)
    root = storage.resolve(out_uri)
    shards.unpublish(root)
    rng = np.random.default_rng(seed)
    writers = {name: shards.ShardWriter(root, name, shard_size) for name in shards.SETS}
    counts = {name: 0 for name in shards.SETS}
    progress = Progress(f"synth {root.uri}", identities, "identities", log=log)  # ~17 s for 40 identities
    split_ids, passed_over = _write_people(writers, counts, rng, identities, images_per_identity, size, progress,
                                           keep)
    # the adapt pool: after the gallery's, so those faces stay as they were
    _write_adapt_pool(writers, counts, rng, adapt_identities, adapt_per_identity, size)
    sets = {}
    for name, w in writers.items():
        shard_list = w.close()
        if shard_list:
            sets[name] = {"rows": counts[name], "shards": shard_list}
    manifest = {
        "source": {"kind": "synthetic", "seed": seed, "images_per_identity": images_per_identity,
                   "adapt_per_identity": adapt_per_identity, "adapt_identities": adapt_identities,
                   **({"kept_if": keep_rule or "a rule not described", "passed_over": passed_over} if keep else {})},
        "size": size,
        "identities": identities,
        "split_identities": split_ids,
        "sets": sets,
        "skipped": [],
    }
    shards.write_manifest(root, manifest)
    return manifest


def kept_person(rng: np.random.Generator, size: int, keep: Keep | None) -> tuple[faces.Person, faces.Photo, int]:
    """(the next person `keep` accepts, their first photo, how many were passed over before them)."""
    passed = 0
    while True:
        p = identity_params(rng)
        photo = faces.take(p, rng, size)  # its landmarks are the points drawn: alignment needs no detector
        if keep is None or keep(photo.unmasked, photo.landmarks):
            return p, photo, passed
        passed += 1


def _write_people(writers: dict, counts: dict, rng: np.random.Generator, identities: int, images_per_identity: int,
                  size: int, progress: Progress, keep: Keep | None) -> tuple[dict[str, int], int]:
    """Each identity's gallery photo and its probes (into its split's set); (identities per split, people passed
    over by `keep`)."""
    split_ids = {s: 0 for s in shards.SPLITS}
    passed_over = 0
    for label in range(identities):
        ident = f"synth-{label:06d}"
        split = synth_split(label)
        split_ids[split] += 1
        p, first, passed = kept_person(rng, size, keep)
        passed_over += passed
        for set_name, n in [("gallery", 1), (split, images_per_identity)]:
            for _ in range(n):
                photo = first if set_name == "gallery" else faces.take(p, rng, size)
                if set_name == "gallery":
                    row = shards.image_row(label=label, identity=ident, split=split, variant="gallery",
                                           unmasked=photo.unmasked, landmarks=photo.landmarks)
                else:
                    row = shards.image_row(label=label, identity=ident, split=split, variant="synthetic",
                                           unmasked=photo.unmasked, masked=photo.masked, alpha=photo.alpha,
                                           landmarks=photo.landmarks)
                writers[set_name].add(**row)
                counts[set_name] += 1
        progress.update(label + 1)
    return split_ids, passed_over


def _write_adapt_pool(writers: dict, counts: dict, rng: np.random.Generator, adapt_identities: int,
                      adapt_per_identity: int, size: int) -> None:
    """The adapt pool's identities (`synth-adapt-*`, disjoint from the gallery's): a gallery-style photo each and
    `adapt_per_identity` masked photos with varied masks."""
    for label in range(adapt_identities):
        ident, p = f"{ADAPT_PREFIX}{label:06d}", identity_params(rng)
        photo = faces.take(p, rng, size)
        writers["adapt"].add(**shards.image_row(label=label, identity=ident, split="adapt", variant="gallery",
                                                unmasked=photo.unmasked, landmarks=photo.landmarks))
        for _ in range(adapt_per_identity):
            photo = faces.take(p, rng, size, varied_mask=True)
            writers["adapt"].add(**shards.image_row(label=label, identity=ident, split="adapt", variant="synthetic",
                                                    unmasked=photo.unmasked, masked=photo.masked, alpha=photo.alpha,
                                                    landmarks=photo.landmarks))
        counts["adapt"] += 1 + adapt_per_identity


SIDECAR_BY = "maskgan data synth"  # the sidecar's "by": prepare says how many photos' landmarks came from one


def write_identity_tree(out_uri: str, identities: int, photos_per_identity: int, seed: int = 0, size: int = 128,
                        log=print, keep: Keep | None = None) -> dict:
    """Write the identity-folder layout a user's LFW-style download has, `<out>/<identity>/<NN>.png`, for
    `maskgan data prepare --identities`. Photos of one identity differ as every synthetic photo does (pose,
    light, expression, camera distance, background, sensor noise). They are unmasked: prepare draws the masks
    from landmarks.

    Beside each photo, `<NN>.json` holds the face box and 68 landmarks where the face was drawn. dlib's HOG
    finds only about half of these procedural faces (docs/data.md has the figures), so prepare uses a
    photo's sidecar when there is one and detects the face otherwise (as for every real photo)."""
    import io
    import json

    from PIL import Image

    ranges.check("--identities", identities, "[2, 1000000]", integer=True)
    ranges.check("--images-per-identity", photos_per_identity, "[1, 10000]", integer=True)
    ranges.check("--size", size, f"[{MIN_SIZE}, 1024]", integer=True)
    ranges.check("--seed", seed, "[0, 4294967295]", integer=True)
    root = storage.resolve(out_uri)
    rng = np.random.default_rng(seed)
    progress = Progress(f"synth {root.uri}", identities, "identities", log=log)
    passed_over = 0
    for label in range(identities):
        ident = f"synth-{label:06d}"
        p, first, passed = kept_person(rng, size, keep)
        passed_over += passed
        for k in range(photos_per_identity):
            photo = first if k == 0 else faces.take(p, rng, size)
            un, pts = photo.unmasked, photo.landmarks
            # a box like dlib's HOG box: as wide as the jaw, square, ending a little above the chin
            side = float(pts[:17, 0].max() - pts[:17, 0].min())
            bottom = float(pts[8, 1]) - 0.1 * side
            lo, hi = (float(pts[:17, 0].min()), bottom - side), (float(pts[:17, 0].max()), bottom)
            buf = io.BytesIO()
            Image.fromarray(un).save(buf, "PNG")
            storage.write_bytes(root.join(ident, f"{k:02d}.png"), buf.getvalue())
            sidecar = {"by": SIDECAR_BY, "box": [round(float(v), 2) for v in (*lo, *hi)],
                       "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in pts]}
            storage.write_text(root.join(ident, f"{k:02d}.json"), json.dumps(sidecar))
        progress.update(label + 1)
    return {"identities": identities, "photos": identities * photos_per_identity, "uri": root.uri,
            "passed_over": passed_over}
