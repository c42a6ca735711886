"""A wearer's folders -> faces: a full-head crop of each photo and its 68 landmarks, and how they were found.

Layout: `<folder>/unmasked/` (2 or more ordinary photos of the person), `<folder>/wearing/` (the person wearing
the printed design), optional `<folder>/plain/` (the same person in a plain mask) and a crowd folder
`<crowd>/<person>/<photo>` (other people). Photos are .jpg/.jpeg/.png; a `<photo>.json` landmark sidecar beside
one (as `maskgan data synth --layout identities` writes) is used instead of detection, as `data prepare` does.

Faces are found as prepared data's are (data_loader.identities.face_crop: dlib HOG + the 68-point predictor,
the full-head crop of data_loader.landmark_mask). A mask hides half the face, so where HOG finds no face on a
`wearing/` or `plain/` photo, a weaker detection (HOG's threshold lowered to WEAK_THRESHOLD) gives the face box
and the landmarks come from the person's unmasked geometry: the mean of their unmasked photos' landmarks in the
crop's frame (the crop is a fixed function of the box, so the frame transfers). Such photos are listed as such.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from data_loader import identities, landmark_mask
from data_loader.prepare import BadImage, decoding, open_rgb

SIZE = 256  # the full-head crop every photo is scored at (the face box spans about half of it)
WEAK_THRESHOLD = -0.8  # HOG's adjust_threshold for a covered face (0 is dlib's default)
MIN_UNMASKED = 2
DETECTED, SIDECAR, FROM_BOX, TRY_ON = ("detected (dlib HOG + 68 points)", "landmark sidecar",
                                       "face box + the person's unmasked geometry (a covered face)",
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


def _weak(data: bytes, geometry: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """A covered face: the crop from a weak HOG detection's box, and the person's geometry as its landmarks."""
    with decoding():
        im = open_rgb(data, draft=max(landmark_mask.DETECT_MAX_SIDE, 2 * SIZE))[0]
    got = landmark_mask.detect(im, threshold=WEAK_THRESHOLD)
    if got is None:
        return None
    return landmark_mask.crop(im, landmark_mask.crop_box(got[0]), SIZE), geometry.copy()


def read_face(path: str, name: str, geometry: np.ndarray | None = None) -> Face | None:
    """The face in the photo at `path` (None: no face found). `geometry` (the person's unmasked landmarks in
    the crop frame) allows the covered-face fallback. CheckInputError naming the file when it is unreadable."""
    try:
        with open(path, "rb") as f:
            data = f.read()
        got = identities.face_crop(data, _sidecar(path), SIZE)
        if got is not None:
            crop, pts, _conv, source = got
            return Face(name, crop, pts.astype(np.float32), SIDECAR if source == "sidecar" else DETECTED)
        if geometry is not None:
            weak = _weak(data, geometry)
            if weak is not None:
                return Face(name, weak[0], weak[1].astype(np.float32), FROM_BOX)
    except BadImage as e:
        raise CheckInputError(f"{path}: unreadable image ({e})") from None
    except OSError as e:
        raise CheckInputError(f"{path}: cannot read ({e.strerror or e})") from None
    return None


def read_folder(folder: str, label: str, geometry: np.ndarray | None = None, log=print) -> Folder:
    """Every photo of `folder` (named `label/<file>`): faces and the photos without one."""
    out = Folder([], [])
    files = photo_files(folder)
    for i, f in enumerate(files):
        face = read_face(os.path.join(folder, f), f"{label}/{f}", geometry)
        if face is None:
            out.no_face.append(f"{label}/{f}")
        else:
            out.faces.append(face)
    if files:
        log(f"{label}/: {len(out.faces)} of {len(files)} photos with a face")
    return out


def geometry_of(faces: list[Face]) -> np.ndarray:
    """The person's mean landmarks [68, 2] in the crop frame (what a covered face's landmarks are drawn from)."""
    return np.mean([f.landmarks for f in faces], axis=0).astype(np.float32)


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


def read_covered(folder: str, label: str, geometry: np.ndarray, required: bool, log=print) -> Folder | None:
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
        raise CheckInputError(f"{path}: no face found in any of its {len(files)} photos (not even a weak "
                              "detection); photograph the face from the front, closer")
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
