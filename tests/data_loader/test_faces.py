"""Synthetic people (data_loader.faces): the landmarks sit on what was drawn, under any pose, and the pose map
is its own inverse."""

import dataclasses

import numpy as np
import pytest

from data_loader import faces, landmark_mask
from data_loader.faces import geometry


def test_pose_map_round_trips():
    rng = np.random.default_rng(0)
    for _ in range(20):
        s = faces.shot(rng)
        x, y = rng.uniform(-0.8, 0.8, 500), rng.uniform(-0.9, 0.9, 500)
        X, Y = geometry.to_image(s, x, y)
        back_x, back_y = geometry.to_face(s, X, Y)
        visible = np.abs(np.arcsin(x / geometry.HEAD_R) + s.yaw) < np.pi / 2
        assert np.allclose(back_x[visible], x[visible], atol=1e-9) and np.allclose(back_y, y, atol=1e-9)


def test_landmarks_sit_on_the_parts_drawn_under_pose():
    """A person with pure red irises and no glasses: at each eye's landmark centre the photo is red, whatever
    the yaw, roll, distance and light; the nose tip is under the mask, the eyes are not."""
    rng = np.random.default_rng(1)
    for i in range(24):
        p = dataclasses.replace(faces.person(rng), iris=np.array([255.0, 0, 0], np.float32), glasses=0,
                                iris_r=0.5)
        s = dataclasses.replace(faces.shot(rng), gaze=np.zeros(2), squint=1.0)
        photo = faces.take(p, rng, 128, s=s)
        pts = photo.landmarks
        for eye in (slice(36, 42), slice(42, 48)):
            x, y = np.rint(pts[eye].mean(0)).astype(int)
            r, g, b = photo.unmasked[y, x].astype(int)
            assert r > g + 40 and r > b + 40, (i, photo.unmasked[y, x])
            assert photo.alpha[y, x] == 0
        x, y = np.rint(pts[30]).astype(int)
        assert photo.alpha[y, x] > 230
        assert pts[36:42, 0].mean() < pts[30, 0] < pts[42:48, 0].mean()  # image left eye, nose, image right eye
        assert pts[8, 1] > pts[57, 1] > pts[33, 1] > pts[27, 1] > pts[19, 1]  # chin, lip, nose, bridge, brow


def test_photos_of_one_person_differ_and_people_differ():
    rng = np.random.default_rng(2)
    a, b = faces.person(rng), faces.person(rng)
    assert a.face_w != b.face_w and a.skin_texture.shape == (faces.people.TEXTURE_GRID,) * 2
    one, two = faces.take(a, rng, 64), faces.take(a, rng, 64)
    assert one.shot.yaw != two.shot.yaw and np.abs(one.unmasked.astype(int) - two.unmasked).mean() > 3
    assert one.landmarks.dtype == np.float32 and one.landmarks.shape == (68, 2)


@pytest.mark.parametrize("size", [32, 128])
def test_sizes_draw(size):
    rng = np.random.default_rng(3)
    photo = faces.take(faces.person(rng), rng, size)
    assert photo.unmasked.shape == (size, size, 3) and photo.alpha.shape == (size, size)
    assert 0.03 < (photo.alpha > 127).mean() < 0.5


def _at(image: np.ndarray, points: np.ndarray) -> np.ndarray:
    return np.array([image[y, x] for x, y in np.rint(points).astype(int)], dtype=np.float64)


def test_every_brow_is_darker_than_the_skin_of_the_nose_bridge():
    """Brows are what a recogniser reads above a mask: on fair-haired people with hair-coloured brows they
    vanished into the skin (up to 1.4x the bridge's brightness). People without a fringe or glasses over them."""
    rng = np.random.default_rng(4)
    ratios = []
    for _ in range(40):
        p = faces.person(rng)
        photo = faces.take(p, rng, 128)
        if p.hair_style == "fringe" or p.glasses:
            continue
        lum = photo.unmasked.astype(np.float64).mean(-1)
        ratios.append(_at(lum, photo.landmarks[[18, 19, 20, 23, 24, 25]]).mean() / _at(lum, photo.landmarks[[28]])[0])
    assert len(ratios) >= 15
    assert max(ratios) < 0.9, sorted(ratios)


def test_the_mask_covers_nose_to_chin_and_leaves_eyes_and_brows_bare():
    rng = np.random.default_rng(5)
    for i in range(24):
        photo = faces.take(faces.person(rng), rng, 128)
        alpha = photo.alpha.astype(np.float64)
        assert _at(alpha, photo.landmarks[list(range(17, 27)) + list(range(36, 48))]).max() == 0, i
        assert _at(alpha, photo.landmarks[[8, 30, 33, 51, 57, 62, 66]]).min() > 230, i


def test_a_drawn_mask_hides_the_mouth_beneath_it():
    """Identity folders' masks (landmark_mask.draw) take the light on the face, not its marks: a dark mouth under
    the cloth must not show through (it did at a quarter of its contrast, and real recognisers read it)."""
    photo = faces.take(faces.person(np.random.default_rng(2)), np.random.default_rng(3), 128)
    face = photo.unmasked.astype(np.float64)
    mouth = photo.landmarks[48:60]
    (x0, y0), (x1, y1) = np.floor(mouth.min(0)).astype(int), np.ceil(mouth.max(0)).astype(int)
    marked = face.copy()
    marked[y0:y1 + 1, x0:x1 + 1] = 0  # a black mouth, well inside the mask
    plain = (200, 200, 200)
    with_mouth = landmark_mask.draw(marked.astype(np.uint8), photo.landmarks.astype(np.float64), 0, colour=plain)[0]
    without = landmark_mask.draw(face.astype(np.uint8), photo.landmarks.astype(np.float64), 0, colour=plain)[0]
    shown = with_mouth.astype(float).mean(-1) - without.astype(float).mean(-1)  # what the mouth changed
    band = shown[y0 - 3:y1 + 4, x0 - 3:x1 + 4]
    # no edge of the mouth shows in the cloth: neighbouring pixels differ by a level or two, not a quarter of 200
    assert max(np.abs(np.diff(band, axis=0)).max(), np.abs(np.diff(band, axis=1)).max()) < 4
    assert with_mouth[y0:y1 + 1, x0:x1 + 1].mean() > 0.9 * without[y0:y1 + 1, x0:x1 + 1].mean()
