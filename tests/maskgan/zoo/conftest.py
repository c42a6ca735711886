"""Real photos for the zoo tests, all shipped inside installed packages (nothing downloaded): scikit-image's
astronaut (Eileen Collins, NASA, public domain) and matplotlib's Grace Hopper sample, plus seeded random crops of
them at other sizes. Landmarks come from dlib's 68-point predictor (face-recognition-models) on each photo, as
integer points, which is what dlib's own chips are cut from."""

from __future__ import annotations

import os

import numpy as np
import pytest


CROPS_PER_PHOTO = 4


def _photos() -> dict[str, np.ndarray]:
    import matplotlib.cbook
    from PIL import Image
    from skimage import data

    hopper = Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")
    return {"astronaut": np.ascontiguousarray(data.astronaut()), "hopper": np.asarray(hopper).copy()}


def _crops(name: str, photo: np.ndarray, box, rng) -> list[tuple[str, np.ndarray]]:
    """Random square windows around the face (1.3-2.5x its box, shifted), resized to 96-420 px."""
    from PIL import Image

    x0, y0, x1, y1 = box
    out = []
    for i in range(CROPS_PER_PHOTO):
        side = (x1 - x0) * rng.uniform(1.3, 2.5)
        cx, cy = (x0 + x1) / 2 + rng.uniform(-0.2, 0.2) * side, (y0 + y1) / 2 + rng.uniform(-0.2, 0.2) * side
        window = (int(cx - side / 2), int(cy - side / 2), int(cx + side / 2), int(cy + side / 2))
        target = int(rng.integers(96, 421))
        crop = Image.fromarray(photo).crop(window).resize((target, target), Image.BILINEAR)
        out.append((f"{name}-crop{i}-{target}px", np.asarray(crop).copy()))
    return out


@pytest.fixture(scope="session")
def dlib_models():
    import dlib

    from maskgan.models import dlib_recognizer

    folder = dlib_recognizer.model_dir()
    return (dlib.get_frontal_face_detector(),
            dlib.shape_predictor(os.path.join(folder, "shape_predictor_68_face_landmarks.dat")),
            dlib.face_recognition_model_v1(os.path.join(folder, dlib_recognizer.RESNET_FILE)))


@pytest.fixture(scope="session")
def faces(dlib_models):
    """[(label, photo uint8 HxWx3, dlib full_object_detection, landmarks float [68, 2])]: the two photos, 2x
    the astronaut (a face over twice the chip: dlib's pyramid path), and the seeded random crops."""
    from PIL import Image

    detector, predictor, _ = dlib_models
    rng = np.random.default_rng(0)
    photos = _photos()
    big = np.asarray(Image.fromarray(photos["astronaut"]).resize((1024, 1024), Image.BILINEAR)).copy()
    items = list(photos.items()) + [("astronaut-2x", big)]
    out = []
    for name, photo in items:
        found = detector(photo, 1)
        if not found:
            continue
        d = max(found, key=lambda r: r.area())
        for label, img in [(name, photo)] + (_crops(name, photo, (d.left(), d.top(), d.right(), d.bottom()), rng)
                                             if name in photos else []):
            dets = detector(img, 1)
            if dets:
                shape = predictor(img, max(dets, key=lambda r: r.area()))
                lm = np.array([[p.x, p.y] for p in shape.parts()], np.float32)
                out.append((label, img, shape, lm))
    assert len(out) >= 8, f"only {len(out)} faces found in the packaged photos and their crops"
    return out


@pytest.fixture(scope="session")
def zoo_cache(tmp_path_factory):
    """dlib's port converted into a fresh cache from the installed package (no network, ~1 s)."""
    from maskgan.models.zoo import fetch

    cache = str(tmp_path_factory.mktemp("zoo"))
    fetch.fetch(["dlib"], cache_dir=cache, progress=lambda line: None)
    return cache


@pytest.fixture(scope="session")
def port(zoo_cache):
    from maskgan.models.zoo import registry

    return registry.build("dlib", cache_dir=zoo_cache)

