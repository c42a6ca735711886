"""Who a synthetic person is (`Person`, fixed for life) and how one photo of them was taken (`Shot`).

Units are "face units": the image spans [-1, 1] at camera distance 1, x to the image right, y down, the face
centred near the origin. A Person's numbers are drawn once per identity; a Shot's once per photo. Identity is
spread over the whole head, above a facemask as much as below it (eyes, brows, hairline, hair, forehead, face
width, ears, glasses, skin), so a recogniser that reads the upper face has something to read.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SKIN = np.array([[255, 224, 196], [241, 194, 158], [224, 172, 130], [198, 134, 90], [160, 102, 62],
                 [120, 74, 44], [90, 56, 36], [250, 210, 180]], dtype=np.float32)
HAIR = np.array([[20, 16, 14], [55, 36, 24], [90, 60, 34], [130, 90, 50], [190, 150, 90], [150, 60, 30],
                 [160, 160, 160], [230, 226, 210], [40, 30, 30]], dtype=np.float32)
IRIS = np.array([[60, 40, 20], [40, 90, 150], [60, 120, 60], [110, 80, 50], [25, 20, 18], [90, 110, 120]],
                dtype=np.float32)
HAIR_STYLES = ("short", "long", "bob", "bald", "fringe", "parted", "curly")
# Every identity range below is widened by this factor around its middle: in exploratory runs on 40 people, 1.5
# lowered dlib's impostor similarity and the plain mask's dodging; 2.0 gained little more and drew implausible
# faces. `python -m bench.realism` measures the result.
SPREAD = 1.5
TEXTURE_GRID = 12  # the per-person skin/hair texture fields: a 12 x 12 grid of random values, bilinearly sampled


@dataclass(frozen=True)
class Person:
    """One synthetic identity. Lengths in face units (see the module docstring); colours RGB 0..255."""

    face_w: float  # cheekbone half-width
    forehead: float  # face top above the eye line's origin (y = -forehead)
    jaw_w: float  # half-width at the jaw angle
    jaw_y: float  # height of the jaw angle
    chin: float  # chin height (lowest face point)
    chin_pow: float  # chin roundness: 1.5 pointed .. 3.5 square
    skin: np.ndarray
    blush: float  # cheek redness
    skin_texture: np.ndarray  # [G, G] in -1..1: blotches, sampled in face units so it moves with the face
    moles: np.ndarray  # [k, 2] positions of moles and freckles (face units)
    eye_y: float
    eye_dx: float  # half the distance between the eye centres
    eye_w: float  # eye half-width
    eye_h: float  # upper lid height above the eye line
    eye_tilt: float  # canthal tilt (outer corner up, face units per face unit)
    lower_lid: float  # lower lid depth as a fraction of eye_h
    iris: np.ndarray
    iris_r: float  # iris radius as a fraction of eye_w
    lid_crease: float  # crease height above the lid, fraction of eye_h
    brow_gap: float  # brow above the eye line
    brow_arch: float
    brow_t: float  # brow thickness
    brow_len: float  # brow half-length as a multiple of eye_w
    brow_density: float  # 0.4 sparse .. 1 dark
    nose_y: float  # nose tip / nostril line height
    nose_w: float  # half-width of the nostrils
    nose_bridge: float  # bridge shadow strength
    mouth_y: float
    mouth_w: float
    lip_upper: float
    lip_lower: float
    lip: np.ndarray
    ear_y: float
    ear_h: float
    ear_w: float
    hair: np.ndarray
    hair_style: str
    hairline: float  # height of the hairline (negative: above the eyes)
    hair_volume: float
    hair_len: float  # how far down long hair falls (face units below the eye line)
    hair_texture: np.ndarray  # [G, G] strands' phase field
    part: float  # parting position (-1 .. 1)
    beard: float  # 0 none .. 1 full stubble
    glasses: int  # 0 none, 1 round, 2 rectangular
    glasses_rgb: np.ndarray
    relief: np.ndarray  # [G, G] the face's own bumps and hollows (cheekbones, brow ridge, temples): shading cues
    age: float  # 0 .. 1: forehead lines, folds beside the nose and mouth, bags under the eyes
    lashes: float  # lid line thickness (lashes, eyeliner)
    lipstick: float  # 0 .. 1 towards a strong lip colour


@dataclass(frozen=True)
class Shot:
    """How one photo was taken: pose, camera, light, expression, background. Angles in radians."""

    yaw: float
    roll: float
    scale: float  # camera distance: larger is closer
    dx: float
    dy: float
    light: np.ndarray  # unit direction towards the light, in the camera frame (x right, y down, z to the camera)
    light_rgb: np.ndarray  # the light's colour, ~1 per channel
    ambient: float
    smile: float  # mouth corners up, face units
    mouth_open: float
    squint: float  # eye opening factor 0.6 .. 1.1
    brow_raise: float
    gaze: np.ndarray  # iris offset, fractions of eye_w
    background: np.ndarray  # [2, 3] two colours of a gradient
    background_angle: float
    shirt: np.ndarray
    noise: float  # sensor noise sigma (0..255 scale)


def _pick(rng: np.random.Generator, palette: np.ndarray, jitter: float) -> np.ndarray:
    return np.clip(palette[rng.integers(len(palette))] + rng.normal(0, jitter, 3), 0, 255).astype(np.float32)


def person(rng: np.random.Generator) -> Person:
    """A new identity, drawn from rng."""
    def u(lo=0.0, hi=1.0, n=None):
        mid, half = (lo + hi) / 2, (hi - lo) / 2 * SPREAD
        return rng.uniform(mid - half, mid + half, n)

    face_w = u(0.40, 0.56)
    eye_y = u(-0.16, -0.06)
    eye_w = u(0.062, 0.092)
    style = HAIR_STYLES[rng.integers(len(HAIR_STYLES))]
    nose_y = eye_y + u(0.22, 0.32)
    return Person(
        face_w=face_w, forehead=u(0.40, 0.62), jaw_w=face_w * u(0.62, 0.92), jaw_y=u(0.22, 0.36),
        chin=u(0.56, 0.72), chin_pow=u(1.5, 3.5),
        skin=_pick(rng, SKIN, 12), blush=max(0.0, u(0, 0.5)),
        skin_texture=rng.uniform(-1, 1, (TEXTURE_GRID, TEXTURE_GRID)),
        moles=rng.uniform([-0.4, -0.35], [0.4, 0.5], (rng.integers(0, 5), 2)),
        eye_y=eye_y, eye_dx=u(0.15, 0.22), eye_w=eye_w, eye_h=eye_w * u(0.32, 0.55), eye_tilt=u(-0.18, 0.22),
        lower_lid=u(0.45, 0.8), iris=_pick(rng, IRIS, 15), iris_r=u(0.36, 0.5), lid_crease=u(0.6, 1.4),
        brow_gap=u(0.07, 0.13), brow_arch=u(0.0, 0.035), brow_t=u(0.018, 0.04), brow_len=u(1.05, 1.45),
        brow_density=min(1.0, u(0.65, 1.0)),
        nose_y=nose_y, nose_w=u(0.045, 0.08), nose_bridge=u(0.2, 0.8),
        mouth_y=nose_y + u(0.08, 0.14), mouth_w=u(0.09, 0.16), lip_upper=u(0.012, 0.03), lip_lower=u(0.015, 0.04),
        lip=np.clip(np.array([175, 90, 90]) + rng.normal(0, 20, 3), 0, 255).astype(np.float32),
        ear_y=eye_y + u(0.04, 0.12), ear_h=u(0.11, 0.17), ear_w=u(0.04, 0.07),
        hair=_pick(rng, HAIR, 14), hair_style=style, hairline=eye_y - u(0.28, 0.46), hair_volume=u(1.04, 1.22),
        hair_len=u(0.4, 1.0), hair_texture=rng.uniform(0, 2 * np.pi, (TEXTURE_GRID, TEXTURE_GRID)),
        part=u(-0.8, 0.8), beard=rng.uniform(0.3, 1) if rng.uniform() < 0.3 else 0.0,
        glasses=int(rng.choice(3, p=[0.7, 0.15, 0.15])), glasses_rgb=_pick(rng, HAIR[[0, 1, 6]], 20),
        relief=rng.normal(0, 1, (TEXTURE_GRID, TEXTURE_GRID)), age=rng.uniform(0, 1) ** 1.5, lashes=u(0.6, 2.0),
        lipstick=rng.uniform(0, 1) if rng.uniform() < 0.3 else 0.0,
    )


def _muted(colours: np.ndarray) -> np.ndarray:
    """Colours halfway to their own grey: rooms and walls, not saturated posters."""
    return (colours + colours.mean(-1, keepdims=True)) / 2


def shot(rng: np.random.Generator) -> Shot:
    """How the next photo is taken: pose up to +-20 degrees of yaw and +-10 of roll, light from the front half.
    (Wider pose and darker light cost unmasked verification in exploratory runs and changed nothing the mask
    does.)"""
    u = rng.uniform
    light = np.array([u(-0.8, 0.8), u(-0.7, 0.3), u(0.8, 1.6)])
    return Shot(
        yaw=np.deg2rad(u(-20, 20)), roll=np.deg2rad(u(-10, 10)), scale=u(0.95, 1.15), dx=u(-0.06, 0.06),
        dy=u(-0.05, 0.05), light=light / np.linalg.norm(light),
        light_rgb=np.clip(np.array([1.0, 1.0, 1.0]) + rng.normal(0, 0.06, 3), 0.8, 1.2).astype(np.float32),
        ambient=u(0.5, 0.75), smile=u(-0.01, 0.035), mouth_open=max(0.0, u(-0.02, 0.03)), squint=u(0.7, 1.1),
        brow_raise=u(-0.012, 0.02), gaze=rng.normal(0, 0.08, 2), background=_muted(rng.uniform(30, 230, (2, 3))),
        background_angle=u(0, 2 * np.pi), shirt=rng.uniform(20, 230, 3), noise=u(1.5, 5),
    )
