"""Shared by the port tests and by references/make_references.py: the test photos and the port-vs-reference check.

The photos are real ones that pip packages ship (scikit-image's astronaut, coffee and chelsea, and faces from its
LFW subset), cut and resized with plain numpy (integer crops, nearest-neighbour sampling) so the same uint8 arrays
come out on any machine; the stored references record their sha256, so a changed photo is a clear failure rather
than a silent mismatch.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

REFERENCES = Path(__file__).parent / "references"
TOLERANCE = 1e-4  # absolute, on unit-length embeddings


def _crop(img: np.ndarray, x: int, y: int, side: int, size: int) -> np.ndarray:
    idx = ((np.arange(size) + 0.5) * side / size).astype(np.int64)
    patch = img[y:y + side, x:x + side]
    return patch[idx][:, idx]


def photos(size: int) -> np.ndarray:
    """uint8 [8, size, size, 3]: two face crops of the astronaut, three LFW faces, three random crops."""
    import skimage.data as data

    astronaut, coffee, chelsea = data.astronaut(), data.coffee(), data.chelsea()
    lfw = np.load(Path(data.__file__).with_name("lfw_subset.npy"))[:3]  # the first 100 are faces
    lfw = np.repeat((lfw * 255).round().astype(np.uint8)[..., None], 3, axis=3)
    rng = np.random.default_rng(0)
    out = [_crop(astronaut, 165, 65, 115, size), _crop(astronaut, 130, 25, 185, size)]
    out += [_crop(face, 0, 0, 25, size) for face in lfw]
    for img in (coffee, chelsea, astronaut):
        side = int(rng.integers(60, min(img.shape[:2])))
        x, y = (int(rng.integers(0, img.shape[k] - side + 1)) for k in (1, 0))
        out.append(_crop(img, x, y, side, size))
    return np.stack(out)


def sha256(arr: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def build_or_skip(name: str):
    """The converted zoo model; `make venv` fetches it. Missing: skip here, fail in CI (CI=true)."""
    from maskgan.models.zoo import ZooMissing, registry

    try:
        return registry.build(name)
    except ZooMissing as e:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(str(e))


def load_reference(name: str, size: int):
    """(photos, reference raw outputs) for `name`; fails if the photos are not those the references were made of."""
    ref = np.load(REFERENCES / f"{name}.npz")
    imgs = photos(size)
    assert sha256(imgs) == str(ref["photos_sha256"]), (
        f"the test photos changed (scikit-image data?): regenerate {REFERENCES / (name + '.npz')} with "
        f"{REFERENCES / 'make_references.py'}")
    return imgs, ref["raw"]


def port_error(model, imgs: np.ndarray, raw_reference: np.ndarray, flip_channels: bool = False) -> float:
    import torch

    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255.0
    if flip_channels:
        x = x.flip(1)
    with torch.no_grad():
        got = model(x).numpy()
    return float(np.abs(got - unit(raw_reference)).max())


def input_gradient(model, size: int):
    import torch

    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0), requires_grad=True)
    direction = torch.randn(model.dim, generator=torch.Generator().manual_seed(1))
    (model(x) @ direction).sum().backward()
    return x.grad
