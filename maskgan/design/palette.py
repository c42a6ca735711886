"""Printable colours: the palette NPS measures against, its file, its chart and reading a photo of the chart.

A palette is the set of colours a printer (on a given fabric or paper) actually reproduces, as a camera sees
them. The default one below is NOT measured: it is a spread of ordinary printable colours, marked
`calibrated: false`. To calibrate (Sharif et al. 2016 extract theirs from a scan of a printed chart):
    maskgan palette chart  -> print the PDF at 100 % on the mask's material
    maskgan palette fit --scan photo.jpg  -> photograph or scan it flat and upright; the fitted palette is the
        patches' colours read back, each relative to the paper (paper white -> 255, the fiducials' black -> 0:
        exposure and white balance of the photo cancel out).
The chart: a grid of colour patches inside four finder-pattern fiducials (a black square ring around a black
square, as in QR codes: a ring with a hole is easy to tell from a dark patch). Reading: threshold, connected
components, the four ring-with-centre shapes, a homography from their centres (kornia) to the chart's layout,
then each patch's median over its inner half.

File format (JSON): {"format": "maskgan-palette/1", "name", "calibrated", "note", "colours": [[r, g, b], ...]}
with 0..255 integers. Paths are storage URIs (local or s3://).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass

import numpy as np
import torch

from data_loader import storage
from data_loader.alpha import label_components
from maskgan.design.page import write_page

FORMAT = "maskgan-palette/1"


class PaletteError(ValueError):
    user_error = True  # about the user's file or photo: the CLI prints it as one line


@dataclass(frozen=True)
class Palette:
    name: str
    colours: tuple[tuple[int, int, int], ...]  # sRGB 0..255
    calibrated: bool
    note: str = ""

    def tensor(self, device="cpu") -> torch.Tensor:
        """[P,3] float in [0,1], for `physical.nps`."""
        return torch.tensor(self.colours, dtype=torch.float32, device=device) / 255.0


# Uncalibrated: common printable colours (greys, primaries and secondaries at two strengths, skin, earth and
# textile tones), not measured from any print. Replace with `maskgan palette fit` for a real printer.
DEFAULT = Palette(
    name="default (uncalibrated)",
    calibrated=False,
    note="uncalibrated: typical printable sRGB colours, not measured from a print; fit your own from a chart",
    colours=(
        (20, 20, 20), (70, 70, 70), (120, 120, 120), (170, 170, 170), (215, 215, 215), (245, 245, 240),
        (170, 30, 35), (225, 80, 70), (240, 150, 140), (235, 120, 30), (245, 190, 90), (240, 220, 70),
        (120, 150, 40), (40, 110, 55), (120, 190, 120), (30, 120, 120), (90, 190, 200), (30, 60, 120),
        (60, 110, 190), (150, 180, 230), (80, 50, 130), (160, 110, 180), (170, 50, 110), (230, 150, 190),
        (110, 70, 40), (170, 120, 80), (220, 180, 140), (130, 120, 70), (200, 190, 150), (60, 45, 40),
    ),
)


def load(uri: str) -> Palette:
    """A palette file (or "default") -> Palette; one-line errors name the file."""
    if uri in ("", "default"):
        return DEFAULT
    raw = storage.read_bytes(storage.resolve(uri))  # StorageError "<uri>: not found" names the file
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as e:
        raise PaletteError(f"palette {uri}: not JSON ({e.msg} at line {e.lineno})") from None
    except UnicodeDecodeError:
        raise PaletteError(f"palette {uri}: not JSON (not UTF-8 text)") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise PaletteError(f"palette {uri}: not a palette file (expected \"format\": \"{FORMAT}\")")
    colours = data.get("colours")
    if (not isinstance(colours, list) or not colours or any(
            not isinstance(c, list) or len(c) != 3 or any(not isinstance(v, int) or not 0 <= v <= 255 for v in c)
            for c in colours)):
        raise PaletteError(f"palette {uri}: \"colours\" must be a non-empty list of [r, g, b] integers 0..255")
    return Palette(name=str(data.get("name", os.path.basename(uri))), colours=tuple(tuple(c) for c in colours),
                   calibrated=bool(data.get("calibrated", False)), note=str(data.get("note", "")))


def save(palette: Palette, uri: str) -> None:
    data = {"format": FORMAT, "name": palette.name, "calibrated": palette.calibrated, "note": palette.note,
            "colours": [list(map(int, c)) for c in palette.colours]}
    storage.write_text(storage.resolve(uri), json.dumps(data, indent=1) + "\n")


# ---- the chart --------------------------------------------------------------------------------------------

PAGE_MM = (297.0, 210.0)  # A4 landscape
MARGIN_MM = 12.0
CAPTION_MM = 10.0  # band above the chart for the caption
FIDUCIAL_MM = 14.0  # finder pattern: 7 x 7 modules (ring 7, white 5, centre 3)
GAP_MM = 6.0  # white paper between patches: the paper-white reference is read here


@dataclass(frozen=True)
class Layout:
    """Chart geometry in mm, origin top-left: patch squares (x, y, side) and the fiducials' centres."""

    patches: tuple[tuple[float, float, float], ...]
    fiducials: tuple[tuple[float, float], ...]  # top-left, top-right, bottom-right, bottom-left
    grid: tuple[float, float, float, float]  # x0, y0, x1, y1 of the patch grid


def layout(n_colours: int) -> Layout:
    if not 1 <= n_colours <= 200:
        raise PaletteError(f"palette chart: {n_colours} colours (1..200 fit on a page)")
    x0, y0 = MARGIN_MM, MARGIN_MM + CAPTION_MM
    x1, y1 = PAGE_MM[0] - MARGIN_MM, PAGE_MM[1] - MARGIN_MM
    f = FIDUCIAL_MM / 2
    fiducials = ((x0 + f, y0 + f), (x1 - f, y0 + f), (x1 - f, y1 - f), (x0 + f, y1 - f))
    inset = FIDUCIAL_MM + GAP_MM
    gx0, gy0, gx1, gy1 = x0 + inset, y0 + inset, x1 - inset, y1 - inset
    cols = min(n_colours, math.ceil(math.sqrt(n_colours * (gx1 - gx0) / (gy1 - gy0))))
    rows = math.ceil(n_colours / cols)
    pitch = min((gx1 - gx0 + GAP_MM) / cols, (gy1 - gy0 + GAP_MM) / rows)
    side = pitch - GAP_MM
    # Centre the grid in its box.
    ox = gx0 + (gx1 - gx0 - (cols * pitch - GAP_MM)) / 2
    oy = gy0 + (gy1 - gy0 - (rows * pitch - GAP_MM)) / 2
    patches = tuple((ox + (i % cols) * pitch, oy + (i // cols) * pitch, side) for i in range(n_colours))
    return Layout(patches=patches, fiducials=fiducials, grid=(gx0, gy0, gx1, gy1))


def chart_image(palette: Palette, px_per_mm: float) -> np.ndarray:
    """The chart as an RGB uint8 raster of the whole page (white paper, fiducials, patches)."""
    lay = layout(len(palette.colours))
    h, w = round(PAGE_MM[1] * px_per_mm), round(PAGE_MM[0] * px_per_mm)
    img = np.full((h, w, 3), 255, np.uint8)

    def fill(x, y, side_w, side_h, colour):  # mm box -> pixels
        r0, r1 = round(y * px_per_mm), round((y + side_h) * px_per_mm)
        c0, c1 = round(x * px_per_mm), round((x + side_w) * px_per_mm)
        img[r0:r1, c0:c1] = colour

    m = FIDUCIAL_MM / 7
    for cx, cy in lay.fiducials:
        fill(cx - 3.5 * m, cy - 3.5 * m, 7 * m, 7 * m, 0)
        fill(cx - 2.5 * m, cy - 2.5 * m, 5 * m, 5 * m, 255)
        fill(cx - 1.5 * m, cy - 1.5 * m, 3 * m, 3 * m, 0)
    for (x, y, side), colour in zip(lay.patches, palette.colours):
        fill(x, y, side, side, colour)
    return img


def chart_pdf(palette: Palette, path: str, dpi: int = 150) -> None:
    """A printable A4-landscape chart of the palette's patches with four fiducials (print at 100 %)."""
    def caption(ax):
        ax.text(MARGIN_MM, PAGE_MM[1] - MARGIN_MM - 3, f"maskgan palette chart: {palette.name}, "
                f"{len(palette.colours)} colours. Print at 100 % on the mask's material; photograph flat, upright, "
                "evenly lit; then: maskgan palette fit --scan photo.jpg", fontsize=7, va="top", ha="left")

    write_page(chart_image(palette, dpi / 25.4), PAGE_MM[0], PAGE_MM[1], path, caption)


# ---- reading a photo of the chart ---------------------------------------------------------------------------

READ_PX_PER_MM = 4.0  # the rectified chart's resolution
MAX_DETECT_SIDE = 1000  # photos are downscaled to this for finding the fiducials (labelling is numpy: ~1 s here)


def _components(fg: np.ndarray):
    lab = label_components(fg)
    on = lab >= 0
    ids, inv = np.unique(lab[on], return_inverse=True)
    ys, xs = np.nonzero(on)
    k = len(ids)
    area = np.bincount(inv, minlength=k)
    stats = {"area": area, "y0": np.full(k, fg.shape[0]), "y1": np.zeros(k, int), "x0": np.full(k, fg.shape[1]),
             "x1": np.zeros(k, int), "cy": np.bincount(inv, ys, k) / area, "cx": np.bincount(inv, xs, k) / area}
    np.minimum.at(stats["y0"], inv, ys)
    np.maximum.at(stats["y1"], inv, ys)
    np.minimum.at(stats["x0"], inv, xs)
    np.maximum.at(stats["x1"], inv, xs)
    index = np.full(lab.shape, -1)
    index[on] = inv
    return index, stats


def find_fiducials(grey: np.ndarray) -> np.ndarray | None:
    """grey [H,W] float -> the 4 fiducial centres [4,2] (x, y) ordered TL, TR, BR, BL, or None."""
    lo, hi = np.percentile(grey, 1), np.percentile(grey, 99)
    if hi - lo < 0.1:
        return None
    index, st = _components(grey < (lo + hi) / 2)
    hits = []
    for i in np.nonzero(st["area"] >= 30)[0]:
        bh, bw = st["y1"][i] - st["y0"][i] + 1, st["x1"][i] - st["x0"][i] + 1
        fill = st["area"][i] / (bh * bw)
        if not (0.6 < bh / bw < 1.6 and 0.25 < fill < 0.75):
            continue  # a ring's bounding box is square and about half filled (24/49 unrotated)
        cy, cx = int(round(st["cy"][i])), int(round(st["cx"][i]))
        inner = index[cy, cx]  # a ring's centroid lies in its hole, on the centre square
        if inner < 0 or inner == i:
            continue
        ratio = st["area"][inner] / st["area"][i]
        inside = (st["y0"][i] < st["y0"][inner] and st["y1"][inner] < st["y1"][i]
                  and st["x0"][i] < st["x0"][inner] and st["x1"][inner] < st["x1"][i])
        if inside and 0.15 < ratio < 0.8:  # 9/24 unblurred
            hits.append((st["area"][i], st["cx"][inner], st["cy"][inner]))
    if len(hits) < 4:
        return None
    pts = np.array([(x, y) for _, x, y in sorted(hits, reverse=True)[:4]])
    s, d = pts.sum(1), pts[:, 0] - pts[:, 1]
    ordered = pts[[np.argmin(s), np.argmax(d), np.argmax(s), np.argmin(d)]]
    return ordered if len({tuple(p) for p in ordered}) == 4 else None


def fit_image(image: np.ndarray, n_colours: int, source: str = "image") -> Palette:
    """An RGB uint8 photo/scan of a printed chart of n_colours -> the palette read from it."""
    import kornia.geometry.transform as KT
    from PIL import Image

    if image.ndim != 3 or image.shape[2] < 3:
        raise PaletteError(f"{source}: not an RGB image (shape {image.shape})")
    image = np.ascontiguousarray(image[..., :3])
    scale = min(1.0, MAX_DETECT_SIDE / max(image.shape[:2]))
    small = image if scale == 1.0 else np.asarray(Image.fromarray(image).resize(
        (round(image.shape[1] * scale), round(image.shape[0] * scale)), Image.Resampling.BILINEAR))
    grey = small.astype(np.float32).mean(2) / 255.0
    found = find_fiducials(grey)
    if found is None:
        raise PaletteError(f"{source}: the chart's 4 fiducials were not found (photograph the whole chart, flat, "
                           "upright and evenly lit)")
    lay = layout(n_colours)
    src = torch.tensor(found / scale, dtype=torch.float32).unsqueeze(0)
    dst = torch.tensor(lay.fiducials, dtype=torch.float32).unsqueeze(0) * READ_PX_PER_MM
    homography = KT.get_perspective_transform(src, dst)
    size = (round(PAGE_MM[1] * READ_PX_PER_MM), round(PAGE_MM[0] * READ_PX_PER_MM))
    photo = torch.from_numpy(np.array(image)).permute(2, 0, 1).float().unsqueeze(0) / 255.0
    flat = KT.warp_perspective(photo, homography, size, align_corners=True)[0].permute(1, 2, 0).numpy()

    def median(x0, y0, x1, y1):  # mm box -> median colour (0..1)
        k = READ_PX_PER_MM
        box = flat[round(y0 * k):round(y1 * k), round(x0 * k):round(x1 * k)]
        return np.median(box.reshape(-1, 3), 0)

    m = FIDUCIAL_MM / 7
    black = np.median([median(cx - m, cy - m, cx + m, cy + m) for cx, cy in lay.fiducials], 0)
    # Paper white: the gap between the patch grid's top edge and the fiducial row (inner part, blur-free).
    gx0, gy0, gx1, _ = lay.grid
    white = median(gx0, gy0 - GAP_MM * 0.75, gx1, gy0 - GAP_MM * 0.25)
    span = white - black
    if np.any(span < 0.2):
        raise PaletteError(f"{source}: paper and fiducials differ too little in brightness to read the chart")
    # The gaps beside each patch must be paper: otherwise the chart was made for another number of colours.
    g = GAP_MM / 4
    gaps = [median(x + side + g, y + side / 4, x + side + GAP_MM - g, y + 3 * side / 4) for x, y, side in lay.patches
            if x + side + GAP_MM < lay.grid[2]]
    paper = np.mean([np.all(np.abs(c - white) < 0.12) for c in gaps]) if gaps else 1.0
    if paper < 0.9:
        raise PaletteError(f"{source}: the patches do not sit where a chart of {n_colours} colours has them "
                           "(was it printed for another palette size?)")
    colours = []
    for x, y, side in lay.patches:
        q = side / 4
        c = (median(x + q, y + q, x + side - q, y + side - q) - black) / span
        colours.append(tuple(int(v) for v in np.clip(np.round(c * 255), 0, 255)))
    return Palette(name=f"fit from {os.path.basename(source)}", colours=tuple(colours), calibrated=True,
                   note=f"read from {source}: patch medians relative to paper white and fiducial black")


def fit_scan(path: str, n_colours: int) -> Palette:
    """A photo or scan file of the printed chart -> its palette; one-line errors name the file."""
    import io

    from PIL import Image, UnidentifiedImageError

    data = storage.read_bytes(storage.resolve(path))  # StorageError "<path>: not found" names the file
    try:
        image = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError):  # not an image, truncated, huge
        raise PaletteError(f"{path}: not an image PIL can read") from None
    return fit_image(image, n_colours, source=path)
