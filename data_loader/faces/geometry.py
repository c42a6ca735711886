"""Where a Person's face parts are (face units), the 68 landmarks that trace them, and the pose map that takes
face units to image pixels (and back, for drawing).

The 68 points follow dlib's iBUG layout: jaw 0..16 (image left to right round the chin), brows 17..26, nose
bridge 27..30 and base 31..35, eyes 36..47 (corner, two upper, corner, two lower), outer lip 48..59, inner lip
60..67. The drawing (data_loader.faces.draw) paints the parts from the same curves these points sit on, and both
go through the same pose map, so the points are exact under yaw and roll too.

Pose: the head is a vertical cylinder of radius HEAD_R turned by the yaw (a point at x on the face moves to
R sin(asin(x / R) + yaw)), then rolled about the face centre, scaled by the camera distance and shifted.
"""

from __future__ import annotations

import numpy as np

from data_loader.faces.people import Person, Shot

HEAD_R = 0.95  # the yaw cylinder's radius: the face, ears and hair lie within it
BEHIND = 9.0  # face-unit x given to pixels that look at the back of the head: nothing is drawn there


def half_width(p: Person, y: np.ndarray) -> np.ndarray:
    """The face outline's half-width at height y (-1 outside the face): an ellipse over the forehead to the
    cheekbones at y = 0, a straight taper to the jaw angle, a superellipse round the chin."""
    y = np.asarray(y, dtype=np.float64)
    upper = p.face_w * np.sqrt(np.clip(1 - (y / p.forehead) ** 2, 0, 1))
    taper = p.face_w + (p.jaw_w - p.face_w) * np.clip(y / p.jaw_y, 0, 1)
    t = np.clip((y - p.jaw_y) / (p.chin - p.jaw_y), 0, 1)
    chin = p.jaw_w * (1 - t ** p.chin_pow) ** (1 / p.chin_pow)
    w = np.where(y < 0, upper, np.where(y < p.jaw_y, taper, chin))
    return np.where((y < -p.forehead) | (y > p.chin), -1.0, w)


def mouth_width(p: Person, s: Shot) -> float:
    return p.mouth_w * (1 + 3 * max(s.smile, 0.0))


def lip_curves(p: Person, s: Shot, x: np.ndarray) -> dict[str, np.ndarray]:
    """The lips' four curves at x (heights): outer upper/lower and inner upper/lower; a smile lifts the corners,
    an open mouth parts the inner curves."""
    mw = mouth_width(p, s)
    r = np.clip(np.abs(x) / mw, 0, 1)
    env = np.sqrt(1 - r ** 2)
    mid = p.mouth_y - s.smile * r ** 2
    bow = np.exp(-(x / (0.28 * mw)) ** 2)  # the dip of the upper lip's bow at the middle
    gap = s.mouth_open / 2 * env
    return {"mid": mid, "outer_up": mid - gap - p.lip_upper * env * (1 - 0.35 * bow), "inner_up": mid - gap,
            "inner_lo": mid + gap, "outer_lo": mid + gap + p.lip_lower * env}


def eye_curves(p: Person, s: Shot, side: int, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(a, upper lid y, lower lid y) at x for the eye on `side` (-1 image left, +1 image right); a runs from
    -1 at the inner corner to +1 at the outer one (|a| > 1: outside the eye)."""
    cx = side * p.eye_dx
    a = (x - cx) * side / p.eye_w
    r = np.clip(1 - a ** 2, 0, 1)
    line = p.eye_y - p.eye_tilt * a * p.eye_w
    h = p.eye_h * s.squint
    peak = 1 + 0.25 * a  # the upper lid is highest a little towards the outer corner
    return a, line - h * r ** 0.6 * np.clip(peak, 0.7, 1.2), line + h * p.lower_lid * r ** 0.9


def brow_curve(p: Person, s: Shot, side: int, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(t, centre-line y, thickness) of the brow on `side` at x; t runs 0 at its inner end to 1 at its tail."""
    inner, outer = p.eye_dx - 0.8 * p.eye_w, p.eye_dx + p.brow_len * p.eye_w
    t = (x * side - inner) / (outer - inner)
    tc = np.clip(t, 0, 1)
    y = p.eye_y - p.brow_gap - s.brow_raise - p.brow_arch * np.sin(np.pi * tc ** 0.8) + 0.4 * p.brow_arch * tc
    return t, y, p.brow_t * (1 - 0.55 * tc)


def _jaw(p: Person) -> np.ndarray:
    """17 points on the outline from eye level round the chin, evenly spaced along it."""
    y = np.linspace(p.eye_y + 0.02, p.chin, 400)
    x = -half_width(p, y)
    x[-1] = 0.0
    arc = np.concatenate([[0], np.cumsum(np.hypot(np.diff(x), np.diff(y)))])
    at = np.linspace(0, arc[-1], 9)
    left = np.stack([np.interp(at, arc, x), np.interp(at, arc, y)], 1)
    right = left[-2::-1] * np.array([-1, 1])
    return np.vstack([left, right])


def landmarks_face(p: Person, s: Shot) -> np.ndarray:
    """The 68 points [68, 2] in face units (before the pose map)."""
    pts = [_jaw(p)]
    for side in (-1, 1):  # brows: image left's from its tail inwards, image right's from its inner end out
        ts = np.linspace(1, 0, 5) if side < 0 else np.linspace(0, 1, 5)
        inner, outer = p.eye_dx - 0.8 * p.eye_w, p.eye_dx + p.brow_len * p.eye_w
        xs = side * (inner + ts * (outer - inner))
        pts.append(np.stack([xs, brow_curve(p, s, side, xs)[1]], 1))
    tip = p.nose_y - 0.025
    pts.append(np.stack([np.zeros(4), np.linspace(p.eye_y - 0.01, tip, 4)], 1))
    pts.append(np.array([[-p.nose_w, p.nose_y - 0.01], [-p.nose_w / 2, p.nose_y + 0.008], [0, p.nose_y + 0.014],
                         [p.nose_w / 2, p.nose_y + 0.008], [p.nose_w, p.nose_y - 0.01]]))
    for side in (-1, 1):  # image x order: corner, upper third, upper third, corner, lower third, lower third
        cx, w = side * p.eye_dx, p.eye_w
        xs = cx + w * np.array([-1, -1 / 3, 1 / 3, 1, 1 / 3, -1 / 3])
        _a, up, lo = eye_curves(p, s, side, xs)
        pts.append(np.stack([xs, np.concatenate([up[:4], lo[4:]])], 1))
    mw = mouth_width(p, s)
    xo = mw * np.array([-1, -2 / 3, -1 / 3, 0, 1 / 3, 2 / 3, 1, 2 / 3, 1 / 3, 0, -1 / 3, -2 / 3])
    c = lip_curves(p, s, xo)
    pts.append(np.stack([xo, np.concatenate([c["mid"][:1], c["outer_up"][1:6], c["mid"][6:7], c["outer_lo"][7:]])], 1))
    xi = mw * np.array([-0.85, -1 / 3, 0, 1 / 3, 0.85, 1 / 3, 0, -1 / 3])
    c = lip_curves(p, s, xi)
    pts.append(np.stack([xi, np.concatenate([c["mid"][:1], c["inner_up"][1:4], c["mid"][4:5], c["inner_lo"][5:]])], 1))
    out = np.vstack(pts)
    assert out.shape == (68, 2)
    return out


def to_image(s: Shot, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Face units -> image coordinates in [-1, 1] (the pose map)."""
    inside = np.abs(x) < HEAD_R
    turned = HEAD_R * np.sin(np.arcsin(np.clip(x / HEAD_R, -1, 1)) + s.yaw)
    x1 = np.where(inside, turned, x)
    c, n = np.cos(s.roll), np.sin(s.roll)
    return s.scale * (c * x1 - n * y) + s.dx, s.scale * (n * x1 + c * y) + s.dy


def to_face(s: Shot, X: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Image coordinates -> face units (the pose map's inverse); the back of the head gets x = BEHIND."""
    u, v = (X - s.dx) / s.scale, (Y - s.dy) / s.scale
    c, n = np.cos(s.roll), np.sin(s.roll)
    x1, y = c * u + n * v, -n * u + c * v
    inside = np.abs(x1) < HEAD_R
    phi = np.arcsin(np.clip(x1 / HEAD_R, -1, 1)) - s.yaw
    x = np.where(inside, np.where(np.abs(phi) < np.pi / 2, HEAD_R * np.sin(phi), BEHIND), x1)
    return x, y


def to_pixels(s: Shot, pts: np.ndarray, size: int) -> np.ndarray:
    """Face-unit points [N, 2] -> pixel coordinates (pixel i's centre is at i)."""
    X, Y = to_image(s, pts[:, 0], pts[:, 1])
    return (np.stack([X, Y], 1) + 1) / 2 * size - 0.5


def landmarks68(p: Person, s: Shot, size: int) -> np.ndarray:
    """The 68 points [68, 2] in the pixels of a size x size photo of p taken as s."""
    return to_pixels(s, landmarks_face(p, s), size)
