"""Procedural synthetic faces: the embedded default dataset, written in the real shard format.

Identity lives in features that stay visible above a facemask (face shape, skin and hair colour, hairline,
eye shape/spacing/colour, brows, glasses) and in some hidden below it (mouth, nose). Every photo of an
identity is jittered (position, scale, lighting, background, sensor noise) so two photos are never identical.
Each photo comes unmasked, wearing a plain surgical-style mask over nose and mouth (as in MaskedFace-Net; one
surgical blue, not exactly the `blue` control's), and with the mask's true alpha.

The `adapt` set (for `maskgan recognizer adapt`, the stand-in for pretraining) is a pool of identities of its
own, never in the gallery or among the probes: each has one unmasked photo (variant `gallery`, labels 0..A-1
within the set) for the adaptation softmax and photos wearing masks of random colours and textures.
"""

from __future__ import annotations

import numpy as np

from data_loader import ranges, shards, storage
from data_loader.progress import Progress

SKIN = np.array([[255, 224, 196], [241, 194, 158], [224, 172, 130], [198, 134, 90], [160, 102, 62],
                 [120, 74, 44], [90, 56, 36], [250, 210, 180]], dtype=np.float32)
HAIR = np.array([[20, 16, 14], [70, 44, 26], [120, 80, 40], [200, 160, 90], [150, 60, 30], [170, 170, 170],
                 [240, 240, 230], [40, 60, 160], [160, 40, 120]], dtype=np.float32)
IRIS = np.array([[60, 40, 20], [40, 90, 150], [60, 120, 60], [110, 80, 50], [20, 20, 20]], dtype=np.float32)
# Probe masks are one surgical blue (the projector learns the region from it: a palette of shades cost ~0.1 of
# its held-out IoU); the `blue` control in maskgan.evaluate is a different blue, so it is not the masks' own colour.
MASK_RGB = np.array([140, 190, 225], dtype=np.float32)
ADAPT_PREFIX = "synth-adapt-"
MIN_SIZE = 32  # pixels a side: below this the eyes, brows and mask edge are a few pixels (as prepare's MIN_SIDE)


def identity_params(rng: np.random.Generator) -> dict:
    def pick(palette):  # a palette colour, nudged, so identities do not collide on exact colours
        return np.clip(palette[rng.integers(len(palette))] + rng.normal(0, 14, 3), 0, 255)

    return {
        "face_w": rng.uniform(0.46, 0.64), "face_h": rng.uniform(0.62, 0.80),
        "skin": pick(SKIN), "hair": pick(HAIR), "iris": pick(IRIS),
        "hairline": rng.uniform(-0.62, -0.32), "hair_volume": rng.uniform(1.02, 1.25),
        "fringe": rng.uniform(0, 1) < 0.4, "hair_long": rng.uniform(0, 1) < 0.5,
        "eye_dx": rng.uniform(0.16, 0.27), "eye_y": rng.uniform(-0.22, -0.08),
        "eye_w": rng.uniform(0.06, 0.11), "eye_h": rng.uniform(0.025, 0.055),
        "brow_dy": rng.uniform(0.07, 0.14), "brow_t": rng.uniform(0.012, 0.035), "brow_tilt": rng.uniform(-0.35, 0.35),
        "glasses": rng.uniform(0, 1) < 0.3, "nose_w": rng.uniform(0.04, 0.09),
        "mouth_w": rng.uniform(0.10, 0.22), "mouth_y": rng.uniform(0.28, 0.40),
        "lip": np.clip(np.array([170, 80, 80]) + rng.normal(0, 25, 3), 0, 255),
    }


def mask_texture(rng: np.random.Generator, varied: bool, yy, xx) -> np.ndarray:
    """The mask's colour [S,S,3] before pleats: the surgical blue (probes), or for the adapt pool a random colour
    with a random texture (plain, stripes, checks, noise) so adaptation does not learn one mask."""
    size = yy.shape[0]
    if not varied:
        return np.broadcast_to(MASK_RGB, (size, size, 3)).copy()
    base, other = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    kind, f = rng.integers(4), rng.uniform(8, 30)
    if kind == 0:
        pattern = np.zeros((size, size))
    elif kind == 1:
        pattern = (np.sin(f * (xx * np.cos(f) + yy * np.sin(f))) > 0).astype(float)
    elif kind == 2:
        pattern = ((np.floor(xx * f / 3) + np.floor(yy * f / 3)) % 2).astype(float)
    else:
        pattern = rng.uniform(0, 1, (size, size))
    return base * (1 - pattern[..., None]) + other * pattern[..., None]


def render(p: dict, rng: np.random.Generator, size: int = 128, varied_mask: bool = False,
           pose: dict | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One jittered photo of identity p: (unmasked uint8 [S,S,3], masked uint8 [S,S,3], alpha uint8 [S,S]).
    `pose`, when given, receives the jitter drawn (scale, dx, dy), from which `landmarks68` places the points."""
    t = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1
    yy, xx = np.meshgrid(t, t, indexing="ij")
    sc, dx, dy = rng.uniform(0.93, 1.07), rng.uniform(-0.07, 0.07), rng.uniform(-0.06, 0.06)  # the draws' order
    if pose is not None:
        pose.update(scale=float(sc), dx=float(dx), dy=float(dy))
    x = (xx - dx) / sc
    y = (yy - dy) / sc

    img = np.empty((size, size, 3), np.float32)
    img[:] = rng.uniform(60, 200) + rng.normal(0, 12, 3)  # background: a nuisance, not identity

    def paint(region, colour):
        img[region] = colour

    face = (x / p["face_w"]) ** 2 + (y / p["face_h"]) ** 2 <= 1
    hair_out = (x / (p["face_w"] * p["hair_volume"])) ** 2 + ((y + 0.05) / (p["face_h"] * p["hair_volume"])) ** 2 <= 1
    hair = hair_out & ((y < p["hairline"]) | ~face)
    if not p["hair_long"]:
        hair &= y < 0.05
    if p["fringe"]:
        hair |= face & (y < p["hairline"] + 0.12) & (x < 0.1)
    neck = (np.abs(x) < p["face_w"] * 0.45) & (y > 0.3)
    paint(neck, p["skin"] * 0.85)
    paint(face, p["skin"])
    paint(hair, p["hair"])

    for side in (-1, 1):
        ex = side * p["eye_dx"]
        eye = ((x - ex) / p["eye_w"]) ** 2 + ((y - p["eye_y"]) / p["eye_h"]) ** 2 <= 1
        paint(eye, (245, 245, 240))
        iris = ((x - ex) / (p["eye_h"] * 0.9)) ** 2 + ((y - p["eye_y"]) / (p["eye_h"] * 0.9)) ** 2 <= 1
        paint(eye & iris, p["iris"])
        by = p["eye_y"] - p["brow_dy"] + side * p["brow_tilt"] * (x - ex)
        brow = (np.abs(x - ex) < p["eye_w"] * 1.2) & (np.abs(y - by) < p["brow_t"])
        paint(brow, p["hair"] * 0.7)
        if p["glasses"]:
            ring = np.abs(np.maximum(np.abs(x - ex) / (p["eye_w"] * 1.6), np.abs(y - p["eye_y"]) / (p["eye_h"] * 2.6)) - 1) < 0.12
            paint(ring, (25, 25, 25))
    if p["glasses"]:
        paint((np.abs(x) < p["eye_dx"] - p["eye_w"] * 1.6) & (np.abs(y - p["eye_y"]) < 0.012), (25, 25, 25))
    nose = (np.abs(x) < p["nose_w"] * (y - p["eye_y"]) / 0.3) & (y > p["eye_y"]) & (y < p["eye_y"] + 0.3)
    paint(nose, p["skin"] * 0.8)
    mouth = ((x / p["mouth_w"]) ** 2 + ((y - p["mouth_y"]) / 0.03) ** 2) <= 1
    paint(mouth, p["lip"])

    # Mask over nose and mouth: from just below the eyes to the chin, across the face; pleats for texture.
    top = p["eye_y"] + p["eye_h"] + 0.06
    mask = (y > top + 0.08 * (np.abs(x) / p["face_w"]) ** 2) & (
        (x / (p["face_w"] * 1.04)) ** 2 + ((y - 0.02) / (p["face_h"] * 1.02)) ** 2 <= 1) & (y < p["face_h"] * 0.98)
    alpha = mask.astype(np.float32)

    light = 1 + rng.uniform(-0.18, 0.18) * xx + rng.uniform(-0.1, 0.1) * yy + rng.uniform(-0.1, 0.1)
    noise = rng.normal(0, 4, img.shape)
    unmasked = np.clip(img * light[..., None] + noise, 0, 255).astype(np.uint8)
    mask_img = mask_texture(rng, varied_mask, yy, xx) * (1 - 0.06 * (np.sin((y - top) * 40) > 0.8))[..., None]
    masked_f = img * (1 - alpha[..., None]) + mask_img * alpha[..., None]
    masked = np.clip(masked_f * light[..., None] + noise, 0, 255).astype(np.uint8)
    return unmasked, masked, (alpha * 255).astype(np.uint8)


def landmarks68(p: dict, pose: dict, size: int) -> np.ndarray:
    """The 68 points of dlib's iBUG layout [68, 2] (image pixels) of a face `render` drew with this pose:
    jaw 0..16 on the face ellipse from eye level round the chin, brows 17..26, nose 27..35, eyes 36..47,
    mouth 48..67. They are where render painted those parts, so a mask fitted to them sits on the face."""
    fw, fh, ey = p["face_w"], p["face_h"], p["eye_y"]
    pts = []
    start, end = np.pi - np.arcsin(ey / fh), np.arcsin(ey / fh)  # image left at eye level -> chin -> right
    for phi in np.linspace(start, end, 17):
        pts.append((fw * np.cos(phi), fh * np.sin(phi)))
    for side in (-1, 1):  # brows: five points each, from the subject's right (image left)
        ex = side * p["eye_dx"]
        for u in np.linspace(-1.2, 1.2, 5):
            bx = ex + u * p["eye_w"]
            pts.append((bx, ey - p["brow_dy"] + side * p["brow_tilt"] * (bx - ex)))
    for v in np.linspace(0, 0.3, 4):  # bridge 27..30: between the eyes down to the tip
        pts.append((0.0, ey + v))
    for u in np.linspace(-1, 1, 5):  # nostrils 31..35 along the nose's base
        pts.append((u * p["nose_w"], ey + 0.3))
    for side in (-1, 1):  # eyes: corner, two on top, corner, two below (dlib's order)
        ex = side * p["eye_dx"]
        for a in (np.pi, 2 * np.pi / 3, np.pi / 3, 0.0, -np.pi / 3, -2 * np.pi / 3):
            pts.append((ex + p["eye_w"] * np.cos(a), ey - p["eye_h"] * np.sin(a)))
    for n, (rx, ry) in ((12, (p["mouth_w"], 0.03)), (8, (p["mouth_w"] * 0.8, 0.012))):  # outer lip, inner lip
        for a in np.linspace(np.pi, -np.pi, n, endpoint=False):
            pts.append((rx * np.cos(a), p["mouth_y"] - ry * np.sin(a)))
    xy = np.array(pts, dtype=np.float64)
    img = xy * pose["scale"] + np.array([pose["dx"], pose["dy"]])  # face coordinates -> [-1, 1] image coordinates
    return (img + 1) / 2 * size - 0.5


def synth_split(index: int) -> str:
    # Deterministic 60/20/20 by index so tiny datasets still get every split.
    r = index % 10
    return "train" if r < 6 else ("val" if r < 8 else "test")


def generate(out_uri: str, identities: int, images_per_identity: int, adapt_per_identity: int = 4,
             seed: int = 0, size: int = 128, shard_size: int = 256, log=print,
             adapt_identities: int | None = None) -> dict:
    """Write a synthetic dataset to out_uri (local dir or s3://) in the shard format; returns the manifest.

    adapt_identities (default: as many as `identities`; none when adapt_per_identity is 0): the adapt pool,
    identities of their own (`synth-adapt-*`), disjoint from the gallery's.

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
    progress = Progress(f"synth {root.uri}", identities, "identities", log=log)  # ~17 s for 40 identities
    writers = {name: shards.ShardWriter(root, name, shard_size) for name in shards.SETS}
    counts = {name: 0 for name in shards.SETS}
    split_ids = {s: 0 for s in shards.SPLITS}
    for label in range(identities):
        ident = f"synth-{label:06d}"
        split = synth_split(label)
        split_ids[split] += 1
        p = identity_params(rng)
        for set_name, n in [("gallery", 1), (split, images_per_identity)]:
            for _ in range(n):
                pose: dict = {}
                un, ma, al = render(p, rng, size, pose=pose)
                pts = landmarks68(p, pose, size)  # the exact points drawn: alignment needs no detector
                if set_name == "gallery":
                    row = shards.image_row(label=label, identity=ident, split=split, variant="gallery", unmasked=un,
                                           landmarks=pts)
                else:
                    row = shards.image_row(label=label, identity=ident, split=split, variant="synthetic",
                                           unmasked=un, masked=ma, alpha=al, landmarks=pts)
                writers[set_name].add(**row)
                counts[set_name] += 1
        progress.update(label + 1)
    for label in range(adapt_identities):  # the adapt pool: after the gallery's, so those faces stay as they were
        ident, p = f"{ADAPT_PREFIX}{label:06d}", identity_params(rng)
        pose = {}
        un = render(p, rng, size, pose=pose)[0]
        writers["adapt"].add(**shards.image_row(label=label, identity=ident, split="adapt", variant="gallery",
                                                unmasked=un, landmarks=landmarks68(p, pose, size)))
        for _ in range(adapt_per_identity):
            un, ma, al = render(p, rng, size, varied_mask=True, pose=pose)
            writers["adapt"].add(**shards.image_row(label=label, identity=ident, split="adapt", variant="synthetic",
                                                    unmasked=un, masked=ma, alpha=al,
                                                    landmarks=landmarks68(p, pose, size)))
        counts["adapt"] += 1 + adapt_per_identity
    sets = {}
    for name, w in writers.items():
        shard_list = w.close()
        if shard_list:
            sets[name] = {"rows": counts[name], "shards": shard_list}
    manifest = {
        "source": {"kind": "synthetic", "seed": seed, "images_per_identity": images_per_identity,
                   "adapt_per_identity": adapt_per_identity, "adapt_identities": adapt_identities},
        "size": size,
        "identities": identities,
        "split_identities": split_ids,
        "sets": sets,
        "skipped": [],
    }
    shards.write_manifest(root, manifest)
    return manifest


def _roll(img: np.ndarray, pts: np.ndarray, degrees: float) -> tuple[np.ndarray, np.ndarray]:
    """The photo turned anticlockwise about its centre (corners filled with its corner colour) and its points."""
    from PIL import Image

    size = img.shape[0]
    fill = tuple(int(v) for v in img[0, 0])
    out = np.asarray(Image.fromarray(img).rotate(degrees, resample=Image.Resampling.BICUBIC, fillcolor=fill))
    t, c = np.deg2rad(degrees), size / 2
    x, y = pts[:, 0] + 0.5 - c, pts[:, 1] + 0.5 - c  # pixel centres sit at +0.5 in Pillow's coordinates
    turned = np.stack([c + x * np.cos(t) + y * np.sin(t), c - x * np.sin(t) + y * np.cos(t)], axis=1) - 0.5
    return out, turned


SIDECAR_BY = "maskgan data synth"  # the sidecar's "by": prepare says how many photos' landmarks came from one


def write_identity_tree(out_uri: str, identities: int, photos_per_identity: int, seed: int = 0, size: int = 128,
                        log=print) -> dict:
    """Write the identity-folder layout a user's LFW-style download has, `<out>/<identity>/<NN>.png`, for
    `maskgan data prepare --identities`. Photos of one identity differ by the renderer's jitter (position,
    scale, lighting, background, sensor noise), an expression (mouth width and height, brow tilt) and a head
    roll. They are unmasked: prepare draws the masks from landmarks.

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
    for label in range(identities):
        ident, p = f"synth-{label:06d}", identity_params(rng)
        for k in range(photos_per_identity):
            pose: dict = {}
            # expression: the mouth wider or narrower, brows raised on one side; pose: a head roll of up to 10°
            face = dict(p, mouth_w=p["mouth_w"] * rng.uniform(0.85, 1.2),
                        mouth_y=p["mouth_y"] + rng.uniform(-0.02, 0.02), brow_tilt=p["brow_tilt"] + rng.uniform(-0.1, 0.1))
            un = render(face, rng, size, pose=pose)[0]
            pts = landmarks68(face, pose, size)
            un, pts = _roll(un, pts, rng.uniform(-10, 10))
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
    return {"identities": identities, "photos": identities * photos_per_identity, "uri": root.uri}
