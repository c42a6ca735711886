"""The one reader of design files (a PNG a user holds): `maskgan evaluate --design`, `maskgan print
--design-file` and `maskgan check --try-on --design-file` all read through here, so a file is scored, printed
and tried on as the same picture.

A design file is printed on white paper: where it is transparent the paper shows. So a PNG with an alpha channel
(RGBA, LA, or a palette with a transparent entry) is composited onto white, exactly as it would print. A file
with no opaque pixel at all is refused in one line: it prints as blank paper, which is no design (scoring it as
black, as converting its colour channels alone would, scores a picture nobody can print).
"""

from __future__ import annotations

import io

import numpy as np
import torch

from data_loader import storage

PAPER = 255  # white paper behind a transparent pixel (8-bit)


class DesignFileError(ValueError):
    user_error = True  # the CLI prints it as one line


def decode(data: bytes, where: str = "design") -> np.ndarray:
    """PNG (or any Pillow image) bytes -> uint8 [h, w, 3] as printed on white paper. DesignFileError (one line
    naming `where`) for bytes that are not an image or an image with no opaque pixel."""
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise DesignFileError(f"{where}: not a readable image ({str(e).splitlines()[0] if str(e) else 'unknown'})") \
            from None
    has_alpha = img.mode in ("RGBA", "LA", "PA") or (img.mode in ("P", "L", "RGB") and "transparency" in img.info)
    if not has_alpha:
        return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    rgba = np.asarray(img.convert("RGBA"), dtype=np.float64)
    alpha = rgba[..., 3:4] / 255.0
    if not (alpha > 0).any():
        raise DesignFileError(f"{where}: every pixel is fully transparent; it would print as blank paper "
                              "(save the design with opaque colours)")
    on_paper = rgba[..., :3] * alpha + PAPER * (1 - alpha)
    return np.clip(np.rint(on_paper), 0, 255).astype(np.uint8)


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 [h, w, 3] -> float [1, 3, h, w] in [0, 1] (a mask-space design)."""
    return torch.from_numpy(image.copy()).permute(2, 0, 1).unsqueeze(0).float() / 255.0


def read(uri: str) -> tuple[torch.Tensor, bytes]:
    """(design [1, 3, h, w] in [0, 1] as printed on white, the file's bytes) of the file at `uri` (local or
    s3://). DesignFileError naming the file when it is missing, unreadable or blank."""
    loc = storage.resolve(uri)
    if not storage.exists(loc):
        raise DesignFileError(f"{loc.uri}: design file not found")
    data = storage.read_bytes(loc)
    return to_tensor(decode(data, loc.uri)), data
