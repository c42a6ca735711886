"""Print export: a design as a page at physical size (PDF) and the same pixels as a PNG at the print's dpi.

The page IS the mask panel: its size is width_mm x height_mm, the design fills it, a thin cut outline runs
along its edge and the model card's sha256 is printed small in a corner (what is printed names what was scored;
a run without an export names its checkpoint's state.pt sha256 instead, and the page says so).
`print_universal` prints universal design K of a checkpoint: the very design evaluation scored as
`universal/K` (wearing.universal_designs, with the report's `universal_k` and `universal_seed`).
`print_for_person` prints the design a conditional generator (cond_fc3, cond_conv) makes for the person in a
photo, from universal latent K: the face found by dlib HOG, cropped as the data was prepared
(data_loader.identities.face_crop), embedded by the run's trunk (its `for_person/K` row's design for them).
The design is upscaled from its resolution to width_mm / 25.4 x dpi pixels with a bicubic filter (a smooth
design stays smooth; nearest would print the design's pixel grid as blocks), and that image is embedded
unresampled (matplotlib writes an `interpolation="none"` image at its own pixel size), so `pdfimages -list`
reports exactly those pixels. Outputs are storage URIs (local or s3://), written whole.
"""

from __future__ import annotations

import io
import json

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


def universal_settings(state: dict, checkpoint: storage.Location, log=print) -> tuple[int, int]:
    """(how many universal designs, their seed) as evaluation scored them for this checkpoint.

    evaluate_run's defaults (UNIVERSAL_K, train.seed); when the run's report.json scored this very checkpoint, its
    `universal_k` and `universal_seed`. A report of another checkpoint is named in a warning (it did not score
    what is printed)."""
    from maskgan import assembly, wearing

    count, seed = wearing.UNIVERSAL_K, assembly.config_of(state).train.seed
    report_loc = storage.resolve(checkpoint.uri.rsplit("/", 1)[0], checkpoint.endpoint).join("report.json")
    if not storage.exists(report_loc):  # an export folder, or a run not evaluated yet
        return count, seed
    try:
        report = json.loads(storage.read_bytes(report_loc))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise PrintError(f"{report_loc.uri}: not JSON") from None
    if report.get("checkpoint") != checkpoint.uri:
        log(f"warning: {report_loc.uri} scored {report.get('checkpoint')}, not the printed {checkpoint.uri} "
            "(evaluate the run again to score what is printed)")
        return count, seed
    return int(report.get("universal_k", count)), int(report.get("universal_seed", seed))


def universal_design(state: dict, checkpoint: storage.Location, k: int, log=print) -> tuple[torch.Tensor, str]:
    """Universal design k [3,h,w] of a checkpoint, as evaluation built and scored it, and a line saying which."""
    from maskgan import assembly, wearing

    count, seed = universal_settings(state, checkpoint, log)
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < count:
        raise PrintError(f"design {k!r}: evaluation scores {count} universal designs, numbered 0..{count - 1}")
    generator = assembly.generator_from_checkpoint(state, checkpoint.uri).eval()
    designs = wearing.universal_designs(generator, state["arch"]["latent_dim"], count, seed=seed)
    return designs[k], f"universal design {k} of {count} (seed {seed}), epoch {state['epoch'] + 1}"


def print_universal(state: dict, checkpoint: storage.Location, k: int, width_mm: float, height_mm: float, dpi: int,
                    out_pdf: str, sha256_text: str, sha256_of: str, stretch: bool = False, log=print) -> dict:
    """Universal design k of a checkpoint as a page (out_pdf) and a PNG beside it; see print_pdf."""
    out_png = png_beside(out_pdf)
    design, which = universal_design(state, checkpoint, k, log)
    check_aspect(width_mm, height_mm, tuple(design.shape[-2:]), stretch)
    return print_pdf(design, width_mm, height_mm, dpi, out_pdf, out_png, sha256_text, sha256_of, note=which)


def person_photo(photo_uri: str, size: int) -> np.ndarray:
    """The face in the photo at `photo_uri`, cropped as prepared data is: uint8 [size,size,3]. One line naming
    the file when it is missing, unreadable or holds no face, or when dlib (the extra) is not installed."""
    from data_loader import identities, landmark_mask
    from data_loader.prepare import BadImage

    loc = storage.resolve(photo_uri)
    if not storage.exists(loc):
        raise PrintError(f"{loc.uri}: photo not found")
    problem = landmark_mask.detector_problem()
    if problem:
        raise PrintError(f"{loc.uri}: {problem}")
    try:
        got = identities.face_crop(storage.read_bytes(loc), None, size)
    except BadImage as e:
        raise PrintError(f"{loc.uri}: not a usable photo ({e})") from None
    if got is None:
        raise PrintError(f"{loc.uri}: no face found (dlib HOG); give a frontal photo of the wearer")
    return got[0]


def person_design(state: dict, checkpoint: storage.Location, photo_uri: str, k: int,
                  log=print) -> tuple[torch.Tensor, str]:
    """The design [3,h,w] a conditional checkpoint makes for the person in the photo from universal latent k
    (what the report's for_person/k row had each probe wear), and a line saying which."""
    from data_loader import landmark_mask
    from maskgan import assembly, wearing
    from maskgan.models.generators import CONDITIONAL
    from maskgan.objective import to_float_images

    name = state["arch"]["generator"]
    if name not in CONDITIONAL:
        raise PrintError(f"--for: {checkpoint.uri} is a {name} generator, whose designs are the same for everyone; "
                         f"--for needs a conditional one (model.generator: {' or '.join(CONDITIONAL)})")
    count, seed = universal_settings(state, checkpoint, log)
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < count:
        raise PrintError(f"design {k!r}: evaluation scores {count} latents per person, numbered 0..{count - 1}")
    face = person_photo(photo_uri, int(state["arch"]["size"]))
    cfg = assembly.config_of(state)
    # the photo is cropped as identity folders are (person_photo), so the trunk takes that data's face box
    crop = assembly.face_crop(cfg.data.face_crop, cfg.model.recognizer_weights,
                              {"source": {"kind": "identities", "crop": landmark_mask.CROP}})
    trunk = assembly.load_recognizer(cfg.model.recognizer_weights, "cpu", cfg.data.endpoint_url, crop).trunk
    generator = assembly.generator_from_checkpoint(state, checkpoint.uri).eval()
    with torch.no_grad():
        cond = trunk(to_float_images(torch.from_numpy(face.copy()).unsqueeze(0)))
        z = wearing.universal_latents(state["arch"]["latent_dim"], count, seed)[k:k + 1]
        design = wearing.person_designs(generator, z, cond)[0]
    who = photo_uri.rsplit("/", 1)[-1]
    return design, f"design for {who} from latent {k} of {count} (seed {seed}), epoch {state['epoch'] + 1}"


def print_for_person(state: dict, checkpoint: storage.Location, photo_uri: str, k: int, width_mm: float,
                     height_mm: float, dpi: int, out_pdf: str, sha256_text: str, sha256_of: str,
                     stretch: bool = False, log=print) -> dict:
    """The design for the person in the photo (person_design) as a page and a PNG beside it; see print_pdf."""
    out_png = png_beside(out_pdf)
    design, which = person_design(state, checkpoint, photo_uri, k, log)
    check_aspect(width_mm, height_mm, tuple(design.shape[-2:]), stretch)
    return print_pdf(design, width_mm, height_mm, dpi, out_pdf, out_png, sha256_text, sha256_of, note=which)
