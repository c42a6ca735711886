"""Alpha labels derived from a pair: where a masked photo differs from its unmasked original.

MaskedFace-Net draws a mask onto the FFHQ photo of the same number and saves it as JPEG, so outside the mask
the two images differ only by JPEG noise. The label is: per-pixel colour difference, smoothed with a box
filter (JPEG noise is high-frequency, a mask is a large blob), thresholded (Otsu, with a floor so a pair with
no mask finds nothing), the largest 4-connected region kept (stray blocks of JPEG ringing elsewhere are
dropped) and its holes filled (mask colours close to the skin below leave gaps). numpy only: no scipy.

`derive` returns a binary uint8 label (255 = mask) or None with the reason the pair gave no usable label.
"""

from __future__ import annotations

import numpy as np

FLOOR = 12.0  # minimum threshold on the smoothed difference (0..255): well above JPEG q>=75 noise after smoothing
MIN_COVER = 0.01  # a label covering less than this fraction of the image is "no mask found"
MAX_COVER = 0.90  # more than this: the two images are not the same photo (misaligned or wrong partner)


def derive(masked: np.ndarray, unmasked: np.ndarray) -> tuple[np.ndarray | None, str]:
    """(alpha uint8 [S,S] of 0/255, "") or (None, reason) for a masked/unmasked pair of equal shape."""
    if masked.shape != unmasked.shape:
        return None, f"pair shapes differ ({masked.shape} vs {unmasked.shape})"
    diff = np.abs(masked.astype(np.int16) - unmasked.astype(np.int16)).max(axis=2).astype(np.float32)
    smooth = box_blur(diff, kernel_size(masked.shape[0]))
    fg = smooth > max(FLOOR, otsu(smooth))
    if not fg.any():
        return None, "no mask found (masked image equals its original)"
    fg = fill_holes(largest_component(fg))
    cover = float(fg.mean())
    if cover < MIN_COVER:
        return None, f"no mask found (difference covers {cover:.1%} of the image)"
    if cover > MAX_COVER:
        return None, f"masked image differs from its original almost everywhere ({cover:.0%}): not the same photo"
    return fg.astype(np.uint8) * 255, ""


def kernel_size(size: int) -> int:
    # 5 px at 128²: wider than a JPEG block's ringing, narrower than a mask's edge detail.
    return max(3, (size // 32) | 1)


def box_blur(x: np.ndarray, k: int) -> np.ndarray:
    """Mean over a k×k window (k odd), edges replicated; via an integral image."""
    r = k // 2
    p = np.pad(x, r, mode="edge").astype(np.float64)
    c = np.zeros((p.shape[0] + 1, p.shape[1] + 1))
    c[1:, 1:] = p.cumsum(0).cumsum(1)
    h, w = x.shape
    s = c[k:k + h, k:k + w] - c[:h, k:k + w] - c[k:k + h, :w] + c[:h, :w]
    return (s / (k * k)).astype(np.float32)


def otsu(x: np.ndarray) -> float:
    """Otsu's threshold of values in 0..255 (256 bins): maximises between-class variance."""
    hist = np.bincount(np.clip(x, 0, 255).astype(np.int64).ravel(), minlength=256).astype(np.float64)
    levels = np.arange(256, dtype=np.float64)
    w0 = hist.cumsum()
    w1 = w0[-1] - w0
    m0 = (hist * levels).cumsum()
    mu0 = m0 / np.maximum(w0, 1)
    mu1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return float(np.argmax(between))


def label_components(fg: np.ndarray) -> np.ndarray:
    """4-connected components: each foreground pixel gets its component's smallest flat index, background -1.

    Min-label propagation between neighbours plus pointer jumping (a pixel takes its label's label), which
    converges in a few dozen vectorised passes even for long thin regions.
    """
    h, w = fg.shape
    big = h * w
    lab = np.where(fg, np.arange(big).reshape(h, w), big)
    while True:
        new = lab.copy()
        np.minimum(new[1:, :], lab[:-1, :], out=new[1:, :])
        np.minimum(new[:-1, :], lab[1:, :], out=new[:-1, :])
        np.minimum(new[:, 1:], lab[:, :-1], out=new[:, 1:])
        np.minimum(new[:, :-1], lab[:, 1:], out=new[:, :-1])
        new[~fg] = big
        flat = new.ravel()
        on = flat < big
        for _ in range(4):  # pointer jumping: labels are indices of pixels of the same component
            flat[on] = flat[flat[on]]
        if np.array_equal(new, lab):
            break
        lab = new
    return np.where(fg, lab, -1)


def largest_component(fg: np.ndarray) -> np.ndarray:
    lab = label_components(fg)
    on = lab[lab >= 0]
    if on.size == 0:
        return fg.copy()
    counts = np.bincount(on)
    return lab == int(np.argmax(counts))


def fill_holes(fg: np.ndarray) -> np.ndarray:
    """Background regions that do not touch the border become foreground."""
    lab = label_components(~fg)
    border = np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]])
    outside = np.isin(lab, border[border >= 0])
    return fg | ((lab >= 0) & ~outside)
