"""Paint one photo of a Person taken as a Shot: numpy only, every pixel mapped back to face units once (the pose
map's inverse) and each part painted from the curves its landmarks sit on (data_loader.faces.geometry).

Edges are anti-aliased from approximate signed distances (face units times pixels per unit), so no part needs
supersampling. Light is Lambertian on an ellipsoidal head (its normals turned by the yaw) plus the shadows a face
has where it is concave (eye sockets, nose sides, under the lip), tinted by the light's colour.
"""

from __future__ import annotations

import numpy as np

from data_loader import landmark_mask
from data_loader.faces import geometry as geo
from data_loader.faces.people import TEXTURE_GRID, Person, Shot

# Probe masks are one surgical blue (the projector learns the region from it: a palette of shades cost ~0.1 of
# its held-out IoU); the `blue` control in maskgan.evaluation.evaluate is a different blue, so it is not the masks' own colour.
RELIEF = 0.01  # face units of height per unit of the relief field
MASK_RGB = np.array([140, 190, 225], dtype=np.float32)


def field(grid: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A per-person texture grid [G, G] sampled bilinearly at face units x, y in [-1, 1]."""
    g = TEXTURE_GRID - 1
    gx, gy = np.clip((x + 1) / 2 * g, 0, g - 1e-6), np.clip((y + 1) / 2 * g, 0, g - 1e-6)
    ix, iy = gx.astype(int), gy.astype(int)
    fx, fy = gx - ix, gy - iy
    return ((grid[iy, ix] * (1 - fx) + grid[iy, ix + 1] * fx) * (1 - fy)
            + (grid[iy + 1, ix] * (1 - fx) + grid[iy + 1, ix + 1] * fx) * fy)


class Canvas:
    """The photo being painted (float RGB), with its pixels' face units and how wide a pixel is."""

    def __init__(self, size: int, s: Shot):
        t = (np.arange(size, dtype=np.float64) + 0.5) / size * 2 - 1
        self.Y, self.X = np.meshgrid(t, t, indexing="ij")
        self.x, self.y = geo.to_face(s, self.X, self.Y)
        self.px = size / 2 * s.scale  # pixels per face unit
        self.img = np.zeros((size, size, 3), np.float64)

    def cover(self, d: np.ndarray) -> np.ndarray:
        """Coverage 0..1 from a signed distance in face units (positive inside): one pixel of soft edge."""
        return np.clip(0.5 + d * self.px, 0, 1)

    def paint(self, a: np.ndarray, colour) -> None:
        """Blend colour (RGB, or an image [S, S, 3]) in with coverage a, touching only the pixels it covers."""
        where = np.nonzero(a > 1e-3)
        if not where[0].size:
            return
        w = a[where][:, None]
        colour = np.asarray(colour, np.float64)
        self.img[where] = self.img[where] * (1 - w) + (colour[where] if colour.ndim == 3 else colour) * w

    def shade(self, a: np.ndarray, factor: float) -> None:
        """Darken (factor < 1) or lighten where a > 0."""
        self.img *= (1 + (factor - 1) * a)[..., None]


def ellipse(c: Canvas, cx, cy, rx, ry) -> np.ndarray:
    f = np.sqrt(((c.x - cx) / rx) ** 2 + ((c.y - cy) / ry) ** 2)
    return c.cover((1 - f) * min(rx, ry))


def gauss(c: Canvas, cx, cy, sx, sy) -> np.ndarray:
    return np.exp(-(((c.x - cx) / sx) ** 2 + ((c.y - cy) / sy) ** 2))


def background(c: Canvas, s: Shot) -> None:
    t = np.cos(s.background_angle) * c.X + np.sin(s.background_angle) * c.Y
    w = np.clip((t + 1) / 2, 0, 1)[..., None]
    c.img[:] = s.background[0] * (1 - w) + s.background[1] * w


def hair_mask(c: Canvas, p: Person, face: np.ndarray) -> np.ndarray:
    """Where the hair is (0..1), by style: above the hairline inside the hair's outline, down the sides."""
    x, y = c.x, c.y
    vol = p.hair_volume * (1.12 if p.hair_style == "curly" else 1.0)
    top = -p.forehead * vol - 0.04
    outline = c.cover((1 - np.sqrt((x / (p.face_w * vol + 0.03)) ** 2 + ((y - 0.0) / -top) ** 2)) * 0.4)
    line = p.hairline + 0.10 * (x / p.face_w) ** 2  # the hairline dips at the temples
    if p.hair_style == "parted":
        line = line + 0.05 * np.clip(1 - np.abs(x - p.part * p.face_w * 0.5) / 0.1, 0, 1) - 0.03
    if p.hair_style == "fringe":
        line = np.maximum(line, p.eye_y - p.brow_gap - 0.05 + 0.03 * np.sin(x * 30))
    above = c.cover(line - y)
    hair = outline * np.maximum(above, 1 - face)
    down = {"short": p.ear_y - 0.06, "bald": p.ear_y - 0.02, "fringe": p.ear_y, "parted": p.ear_y,
            "curly": p.ear_y + 0.04, "bob": p.jaw_y + 0.05, "long": p.eye_y + p.hair_len}[p.hair_style]
    hair = hair * c.cover(down - y)
    if p.hair_style == "bald":
        hair = hair * c.cover(np.abs(x) - p.face_w * 0.8) * c.cover(y - (p.hairline + 0.15))
    if p.hair_style == "long":  # falls behind the shoulders, outside the face
        hair = np.maximum(hair, c.cover(p.face_w * vol + 0.08 - np.abs(x)) * c.cover(down - y) * (1 - face)
                          * c.cover(y - p.eye_y))
    return hair


def hair_colour(c: Canvas, p: Person, s: Shot, shading: np.ndarray) -> np.ndarray:
    phase = field(p.hair_texture, c.x, c.y)
    freq = 90 if p.hair_style == "curly" else 55
    strands = np.sin(freq * (c.x * 0.9 + 0.25 * np.sin(6 * c.y)) + phase)
    tone = (0.82 + 0.14 * strands + 0.25 * (shading - 0.7))[..., None]
    return np.clip(p.hair * tone + 18 * tone, 0, 255)


def lighting(c: Canvas, p: Person, s: Shot) -> np.ndarray:
    """Lambertian shading on an ellipsoidal head whose normals turn with the yaw (ambient .. 1)."""
    nx = np.clip(c.x / (p.face_w * 1.15), -1, 1)
    ny = np.clip((c.y - 0.05) / (p.chin * 1.35), -1, 1)
    nz = np.sqrt(np.clip(1 - nx ** 2 - ny ** 2, 0, 1))
    cx = nx * np.cos(s.yaw) + nz * np.sin(s.yaw)
    cz = -nx * np.sin(s.yaw) + nz * np.cos(s.yaw)
    lam = np.clip(cx * s.light[0] + ny * s.light[1] + cz * s.light[2], 0, 1)
    # the person's own relief: a height field whose slopes catch the light (how a face's 3D shape shows)
    h = field(p.relief, c.x * 1.3, c.y * 1.3) * RELIEF
    gy, gx = np.gradient(h)
    lam = np.clip(lam + (gx * s.light[0] + gy * s.light[1]) * c.px, 0, 1.2)
    return s.ambient + (1 - s.ambient) * lam


def skin(c: Canvas, p: Person, s: Shot, face: np.ndarray, shading: np.ndarray) -> None:
    tex = field(p.skin_texture, c.x * 1.7, c.y * 1.7)
    colour = p.skin * (1 + 0.05 * tex)[..., None]
    blush = sum(gauss(c, side * (p.eye_dx + 0.03), p.nose_y, 0.08, 0.06) for side in (-1, 1)) * p.blush
    colour = colour * (1 - 0.12 * blush[..., None]) + np.array([220, 90, 90]) * 0.12 * blush[..., None]
    ears = sum(ellipse(c, side * (geo.half_width(p, p.ear_y) + p.ear_w * 0.55), p.ear_y, p.ear_w, p.ear_h)
               for side in (-1, 1))
    c.paint(np.clip(ears, 0, 1), p.skin * 0.9)
    for side in (-1, 1):
        c.shade(ellipse(c, side * (geo.half_width(p, p.ear_y) + p.ear_w * 0.6), p.ear_y, p.ear_w * 0.5,
                        p.ear_h * 0.6), 0.8)
    c.paint(face, colour)
    for mx, my in p.moles:
        c.shade(ellipse(c, mx * p.face_w, my, 0.008, 0.008) * face, 0.6)
    if p.beard > 0:
        jaw = c.cover(c.y - p.nose_y - 0.03) * face * (0.35 + 0.3 * tex) * p.beard
        c.paint(np.clip(jaw, 0, 0.7), p.hair * 0.8)
    c.img *= (1 - face + face * shading)[..., None]


def socket_shadows(c: Canvas, p: Person, s: Shot, face: np.ndarray) -> None:
    """Where a real face is concave: eye sockets, the nose's sides, under the nose and the lower lip."""
    dark = np.zeros_like(c.x)
    for side in (-1, 1):
        dark += 0.3 * gauss(c, side * p.eye_dx, p.eye_y - 0.01, p.eye_w * 1.5, p.eye_h * 2.2)
        dark += 0.09 * p.nose_bridge * gauss(c, side * p.nose_w * 0.9, (p.eye_y + p.nose_y) / 2 + 0.03, 0.018,
                                             (p.nose_y - p.eye_y) / 2.2)
        dark += 0.12 * gauss(c, side * p.nose_w * 1.05, p.nose_y - 0.012, 0.018, 0.02)  # alae
        dark += 0.08 * gauss(c, side * (p.nose_w + 0.05), (p.nose_y + p.mouth_y) / 2 + 0.02, 0.02, 0.06)
    dark += 0.15 * gauss(c, 0, p.nose_y + 0.02, p.nose_w * 1.1, 0.012)
    dark += 0.15 * gauss(c, 0, p.mouth_y + p.lip_lower + 0.03, p.mouth_w * 0.6, 0.015)
    for side in (-1, 1):  # age: bags under the eyes, folds from the nose to the mouth's corners
        dark += 0.18 * p.age * gauss(c, side * p.eye_dx, p.eye_y + p.eye_h * p.lower_lid + 0.03, p.eye_w, 0.012)
        fold = side * (p.nose_w + 0.03 + 0.35 * np.clip(c.y - p.nose_y, 0, None))
        dark += 0.25 * p.age * np.exp(-((c.x - fold) / 0.008) ** 2) * (c.y > p.nose_y - 0.02) * (c.y < p.mouth_y + 0.05)
    forehead = (c.y < p.eye_y - p.brow_gap - 0.06) & (np.abs(c.x) < p.face_w * 0.6)
    dark += 0.15 * p.age * forehead * (np.sin((c.y - p.eye_y) * 160) > 0.85)
    light = 0.10 * gauss(c, 0, (p.eye_y + p.nose_y) / 2, 0.012, 0.08) + 0.1 * gauss(c, 0, p.nose_y - 0.03, 0.02, 0.015)
    c.img *= (1 - face * np.clip(dark - light, -0.2, 0.6))[..., None]
    for side in (-1, 1):  # nostrils
        c.paint(ellipse(c, side * p.nose_w * 0.5, p.nose_y, p.nose_w * 0.32, 0.011) * face, p.skin * 0.3)


def eyes(c: Canvas, p: Person, s: Shot, shading: np.ndarray) -> None:
    for side in (-1, 1):
        a, up, lo = geo.eye_curves(p, s, side, c.x)
        inside = np.minimum(c.cover(c.y - up), c.cover(lo - c.y)) * c.cover((1 - np.abs(a)) * p.eye_w)
        c.paint(inside, np.array([232, 228, 222]) * (0.75 + 0.25 * shading[..., None]))
        ix = side * p.eye_dx + s.gaze[0] * p.eye_w
        iy = p.eye_y + s.gaze[1] * p.eye_w * 0.5
        r = p.iris_r * p.eye_w
        dist = np.hypot(c.x - ix, c.y - iy)
        iris_c = p.iris * (0.75 + 0.35 * (dist / r))[..., None]
        c.paint(inside * c.cover(r - dist), iris_c * 0.9)
        c.paint(inside * c.cover(r * 0.42 - dist), (12, 10, 10))
        c.paint(inside * c.cover(r * 0.18 - np.hypot(c.x - ix + 0.3 * r, c.y - iy + 0.3 * r)), (250, 250, 250))
        # the lash line: a dark band as wide as a pixel or two at 128 px (thinner, the eyes vanished under blur)
        lid = np.minimum(c.cover(0.004 + 0.005 * p.lashes - np.abs(c.y - up + 0.004)),
                         c.cover((1.08 - np.abs(a)) * p.eye_w))
        c.paint(lid * c.cover(up - p.eye_y + p.eye_h), p.hair * 0.12 + 12)
        crease = np.exp(-((c.y - (up - p.lid_crease * p.eye_h * s.squint)) / 0.006) ** 2) * (np.abs(a) < 1)
        c.shade(crease, 0.78)
        c.shade(np.exp(-((c.y - lo - 0.006) / 0.005) ** 2) * (np.abs(a) < 0.9), 0.88)


def brows(c: Canvas, p: Person, s: Shot) -> None:
    for side in (-1, 1):
        t, yc, th = geo.brow_curve(p, s, side, c.x)
        ends = c.cover(np.minimum(t, 1 - t) * (p.brow_len + 0.8) * p.eye_w)
        body = c.cover(th / 2 - np.abs(c.y - yc)) * ends
        hairs = 0.75 + 0.25 * np.sin(c.x * 260 + c.y * 90)
        # brows are darker than the skin even on fair-haired people (hair-coloured brows vanished on pale skin)
        c.paint(body * p.brow_density * hairs, np.minimum(p.hair * 0.5, p.skin * 0.35) + 6)


def mouth(c: Canvas, p: Person, s: Shot) -> None:
    k = geo.lip_curves(p, s, c.x)
    mw = geo.mouth_width(p, s)
    side = c.cover((1 - np.abs(c.x) / mw) * mw)
    lips = np.minimum(c.cover(c.y - k["outer_up"]), c.cover(k["outer_lo"] - c.y)) * side
    colour = (p.lip * 0.5 + p.skin * 0.35) * (1 - p.lipstick) + np.array([150, 30, 50]) * p.lipstick
    c.paint(lips, colour)
    opening = np.minimum(c.cover(c.y - k["inner_up"]), c.cover(k["inner_lo"] - c.y)) * side
    c.paint(opening, (50, 20, 22))
    teeth = opening * c.cover(k["inner_up"] + 0.6 * (k["inner_lo"] - k["inner_up"]) - c.y)
    c.paint(teeth * (s.mouth_open > 0.012), (215, 210, 196))
    c.shade(c.cover(0.004 - np.abs(c.y - k["mid"])) * side, 0.55)  # the line where the lips meet


def glasses(c: Canvas, p: Person) -> None:
    if not p.glasses:
        return
    t = 0.011
    for side in (-1, 1):
        cx, rx, ry = side * p.eye_dx, p.eye_w * 1.55, p.eye_h * 2.6 + 0.015
        if p.glasses == 1:
            f = np.sqrt(((c.x - cx) / rx) ** 2 + ((c.y - p.eye_y) / ry) ** 2)
        else:
            f = np.maximum(np.abs(c.x - cx) / rx, np.abs(c.y - p.eye_y) / ry)
        c.paint(c.cover(t - np.abs(f - 1) * min(rx, ry)), p.glasses_rgb)
        temple = c.cover(t * 0.7 - np.abs(c.y - p.eye_y + ry * 0.5)) * (np.abs(c.x) > p.eye_dx + rx) \
            * (np.abs(c.x) < geo.half_width(p, p.ear_y) + p.ear_w)
        c.paint(temple, p.glasses_rgb)
    bridge = c.cover(t * 0.7 - np.abs(c.y - p.eye_y + 0.01)) * (np.abs(c.x) < p.eye_dx - p.eye_w * 1.5)
    c.paint(bridge, p.glasses_rgb)


def photo(p: Person, s: Shot, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(the photo float RGB [S, S, 3] before noise, the light falling on it [S, S]) of p taken as s."""
    c = Canvas(size, s)
    background(c, s)
    shading = lighting(c, p, s)
    face = c.cover(geo.half_width(p, c.y) - np.abs(c.x))
    c.paint(c.cover(c.y - p.chin - 0.12) * c.cover(0.95 - np.abs(c.x) + 0.3 * (c.y - p.chin)), s.shirt)
    c.paint(c.cover(p.jaw_w * 0.72 - np.abs(c.x)) * c.cover(c.y - p.jaw_y), p.skin * 0.72)
    hair = hair_mask(c, p, face)
    behind = hair * (1 - face) * c.cover(c.y - p.ear_y + 0.05) if p.hair_style in ("long", "bob") else 0 * hair
    tresses = hair_colour(c, p, s, shading)
    c.paint(behind, tresses * 0.8)
    skin(c, p, s, face, shading)
    socket_shadows(c, p, s, face)
    brows(c, p, s)
    eyes(c, p, s, shading)
    mouth(c, p, s)
    c.paint(hair * np.where(p.hair_style in ("long", "bob"), 1 - (1 - face) * c.cover(c.y - p.ear_y + 0.05), 1),
            tresses)
    glasses(c, p)
    c.img *= s.light_rgb
    return optics(c.img), shading * face + (1 - face) * 0.85


def optics(img: np.ndarray) -> np.ndarray:
    """A camera's slight blur (a [1, 2, 1] / 4 kernel twice each way, sigma ~0.7 px): no photo is pixel-sharp,
    and hard edges are what recognisers trained on photos see least of."""
    for axis in (0, 1):
        for _ in range(2):
            img = (np.roll(img, 1, axis) + 2 * img + np.roll(img, -1, axis)) / 4
    return img


def mask_fill(rng: np.random.Generator, varied: bool, size: int) -> np.ndarray:
    """The mask's colour [S,S,3] before pleats: the surgical blue (probes), or for the adapt pool a random colour
    with a random texture (plain, stripes, checks, noise) so adaptation does not learn one mask."""
    if not varied:
        return np.broadcast_to(MASK_RGB, (size, size, 3)).copy()
    t = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1
    yy, xx = np.meshgrid(t, t, indexing="ij")
    base, other = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    kind, f = rng.integers(4), rng.uniform(8, 30)
    if kind == 0:
        pattern = np.zeros((size, size))
    elif kind == 1:
        pattern = (np.sin(f * (xx * np.cos(f) + yy * np.sin(f))) > 0).astype(float)
    elif kind == 2:
        pattern = ((np.floor(xx * f / 3) + np.floor(yy * f / 3)) % 2).astype(float)
    else:
        pattern = rng.uniform(0, 1, (size, size))
    return base * (1 - pattern[..., None]) + other * pattern[..., None]


def with_mask(img: np.ndarray, light: np.ndarray, pts: np.ndarray, fill: np.ndarray, s: Shot) -> tuple:
    """(masked float RGB, alpha float 0..1): a surgical mask fitted to the landmarks (the same outline as
    identity folders get), pleated, lit like the face beneath it."""
    size = img.shape[0]
    alpha = landmark_mask.raster(landmark_mask.polygon(pts.astype(np.float64)), size).astype(np.float64)
    rows = np.arange(size)[:, None] / size
    pleats = 1 - 0.07 * (np.sin(rows * 70 + pts[33, 1]) > 0.75)
    cloth = fill * (pleats * np.clip(light * 1.15, 0.5, 1.1))[..., None] * s.light_rgb
    return img * (1 - alpha[..., None]) + cloth * alpha[..., None], alpha
