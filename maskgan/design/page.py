"""A design as a page at physical size: the PDF (matplotlib) and the same pixels as a PNG at the print's dpi, the
panel size, and the checks on a page's size and aspect. What a design is printed from lives in
maskgan.reporting.printing; the palette's chart page goes through write_page too."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from data_loader import storage

MM_PER_INCH = 25.4


OUTLINE_MM = 0.25  # cut-line width


OUTLINE_COLOUR = "#202020"


SHA_POINTS = 4.0  # the sha256 line's font size (legible, unobtrusive)


PANEL_HEIGHT_MM = 90.0  # a mask panel's height: the 180 x 90 mm template `maskgan print` defaults to


ASPECT_TOLERANCE = 0.05  # a page whose W:H is off the design's by more than this share needs stretch=True


class PrintError(ValueError):
    user_error = True  # about the user's request (size, design number): the CLI prints it as one line


@dataclass(frozen=True)
class PrintSpec:
    """How a design is printed: the page's physical size and resolution, where it goes, and what the sha256 in
    its corner names (the model card's, a checkpoint's state.pt, or a design file's)."""

    width_mm: float
    height_mm: float
    dpi: int
    out_pdf: str  # a storage URI ending .pdf; the PNG is written beside it (png_beside)
    sha256_text: str
    sha256_of: str = "model card"
    stretch: bool = False  # print a page whose W:H differs from the design's (check_aspect)


def to_uint8_image(design) -> np.ndarray:
    """A design as HxWx3 uint8: float [3,h,w] / [1,3,h,w] in [0,1] (tensor or array) or uint8 [h,w,3]."""
    if isinstance(design, torch.Tensor):
        design = design.detach().float().cpu().numpy()
    a = np.asarray(design)
    if a.ndim == 4 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 3:
        raise ValueError(f"design: expected [3,h,w] or [h,w,3], got shape {a.shape}")
    if a.shape[0] == 3 and a.shape[2] != 3:
        a = a.transpose(1, 2, 0)
    if a.shape[2] != 3:
        raise ValueError(f"design: expected 3 colour channels, got shape {a.shape}")
    if a.dtype != np.uint8:
        a = (np.clip(a.astype(np.float64), 0, 1) * 255 + 0.5).astype(np.uint8)
    return a


def pixels_for(mm: float, dpi: float) -> int:
    return max(1, int(round(mm / MM_PER_INCH * dpi)))


def upscale(image: np.ndarray, width_px: int, height_px: int) -> np.ndarray:
    """uint8 HxWx3 -> height_px x width_px x 3, bicubic (smooth; clipped to 0..255 by PIL)."""
    return np.asarray(Image.fromarray(image).resize((width_px, height_px), Image.Resampling.BICUBIC))


def write_page(image: np.ndarray, width_mm: float, height_mm: float, out_pdf: str, decorate=None) -> None:
    """One PDF page of exactly width_mm x height_mm with `image` filling it, embedded at its own pixel size;
    `decorate(ax)` draws on top in millimetre coordinates (origin bottom-left)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_mm / MM_PER_INCH, height_mm / MM_PER_INCH))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    ax.imshow(image, extent=(0, width_mm, 0, height_mm), interpolation="none", aspect="auto")
    ax.set_xlim(0, width_mm)
    ax.set_ylim(0, height_mm)
    if decorate is not None:
        decorate(ax)
    buf = io.BytesIO()
    # No bbox_inches="tight": the page must keep the figure's (physical) size.
    fig.savefig(buf, format="pdf", metadata={"Creator": "maskgan"})
    storage.write_bytes(storage.resolve(out_pdf), buf.getvalue())


def print_pdf(design, width_mm: float, height_mm: float, dpi: int, out_pdf: str, out_png: str,
              sha256_text: str, sha256_of: str = "model card", note: str = "") -> dict:
    """Write the design as a width_mm x height_mm page (cut outline, "<sha256_of> sha256 <sha256_text>", and
    `note` above it) and as a PNG at `dpi`. Returns {"pdf", "png", "pixels": (width_px, height_px)}."""
    if width_mm <= 0 or height_mm <= 0:
        raise PrintError(f"print size {width_mm} x {height_mm} mm: both must be positive")
    if dpi <= 0:
        raise PrintError(f"dpi {dpi}: must be positive")
    w_px, h_px = pixels_for(width_mm, dpi), pixels_for(height_mm, dpi)
    image = upscale(to_uint8_image(design), w_px, h_px)

    def decorate(ax):
        from matplotlib.patches import Rectangle

        inset = OUTLINE_MM / 2
        ax.add_patch(Rectangle((inset, inset), width_mm - OUTLINE_MM, height_mm - OUTLINE_MM, fill=False,
                               linewidth=OUTLINE_MM / MM_PER_INCH * 72, edgecolor=OUTLINE_COLOUR))
        # Short lines, so a narrow page still holds them: the note, what the sha256 is of, the sha256.
        lines = [note] if note else []
        ax.text(1.5, 1.5, "\n".join([*lines, f"{sha256_of} sha256", sha256_text]), fontsize=SHA_POINTS,
                family="monospace", va="bottom", ha="left", color="black",
                bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5, "alpha": 0.8})

    write_page(image, width_mm, height_mm, out_pdf, decorate)
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", dpi=(dpi, dpi))
    storage.write_bytes(storage.resolve(out_png), buf.getvalue())
    return {"pdf": out_pdf, "png": out_png, "pixels": (w_px, h_px)}


def print_design(design, spec: PrintSpec, note: str = "") -> dict:
    """The design as the page `spec` describes (its aspect checked first) and a PNG beside it; see print_pdf."""
    out_png = png_beside(spec.out_pdf)
    check_aspect(spec.width_mm, spec.height_mm, tuple(design.shape[-2:]), spec.stretch)
    return print_pdf(design, spec.width_mm, spec.height_mm, spec.dpi, spec.out_pdf, out_png, spec.sha256_text,
                     spec.sha256_of, note=note)


def png_beside(out_pdf: str) -> str:
    """mask.pdf -> mask.png (same folder or prefix)."""
    if not out_pdf.lower().endswith(".pdf"):
        raise PrintError(f"{out_pdf}: the output must be a .pdf file (the PNG is written beside it)")
    return out_pdf[:-4] + ".png"


def panel_size(design_hw: tuple[int, int]) -> tuple[float, float]:
    """(width_mm, height_mm) of a mask panel for a design of this H x W: the panel's height, the design's W:H
    (what `maskgan print` accepts without --stretch; 180 x 90 mm for a 2:1 design)."""
    h, w = design_hw
    return round(PANEL_HEIGHT_MM * w / h, 1), PANEL_HEIGHT_MM


def check_aspect(width_mm: float, height_mm: float, design_hw: tuple[int, int], stretch: bool = False) -> None:
    """Refuse a page whose W:H is far from the design's (it would print the design distorted) unless stretch."""
    h, w = design_hw
    page, design = width_mm / height_mm, w / h
    if not stretch and abs(page / design - 1) > ASPECT_TOLERANCE:
        raise PrintError(f"page {width_mm:g} x {height_mm:g} mm is {page:.2f}:1 but the design ({w} x {h} px) is "
                         f"{design:.2f}:1; pick --width-mm / --height-mm of that ratio "
                         f"(e.g. {height_mm * design:g} x {height_mm:g}) or pass --stretch")
