"""Designs you can wear: mask space, the warp onto the mask region, shading, EOT, and the TV/NPS losses.

A design is a flat picture of the mask's front panel (the template: TEMPLATE_ASPECT wide per unit of height,
drawn by the generator at any resolution). For each photo, `mask_warp(alpha)` builds once (a per-image constant
like alpha) the sampling grid that maps the template onto that photo's mask region:
  - the region is the projector's alpha thresholded, opened (thin bridges and specks go) and cut to its largest
    connected component (the projector leaks stray blobs near the eyes: a design must never paint eyes or skin);
  - per row, the region's left/right extent spans the template's width; per column, its top/bottom edge spans
    the template's height. So the template's left edge lands on the region's left edge row by row, its top edge
    follows the mask's curved top, its bottom the chin;
  - alpha is confined to the pixels the warp covers: nothing outside them is ever composited.
`place` warps a design into image coordinates (grid_sample, bilinear: differentiable in the design);
`composite_shaded` multiplies it by the original mask's shading (luminance relative to its mean over the
region), so a flat print takes the photo's lighting and pleats. `wear` is the one call for step and evaluation.

EOT (expectation over transformation): `design_transforms` (the print: contrast, brightness, colour shift,
noise, blur, small rotation/scale/translation) and `face_transforms` (the camera: blur, noise, exposure,
JPEG-like degradation) are kornia pipelines, batched and differentiable on the input's device; each image of a
batch draws its own parameters. Their ranges (`PhysicalRanges`) default to the anchors' (AdversarialMask, Zolfi
et al. 2022; adversarial-yolo, Thys et al. 2019); `held_out(ranges)` widens every range 1.5x; a strength of 0
turns its transform off.
Seeds: a transform's parameters are a pure function of one integer seed (`transform_seed`): training draws
even seeds, held-out evaluation odd ones, so evaluation never sees a transform training drew.

Losses on the design in mask space, [0, 1] scale, one value per design: `tv` (mean absolute neighbour
difference) and `nps` (per pixel, the distance to the nearest palette colour, averaged).
"""

from __future__ import annotations

from dataclasses import fields, replace
from typing import NamedTuple

import kornia.augmentation as K
import kornia.morphology
import torch
import torch.nn.functional as F

from maskgan.config import PhysicalConfig

# The template: a surgical mask's front panel is about 175 x 90 mm flat, so 2:1 width:height. Generators may
# draw designs of any resolution; TEMPLATE_HW is the shape a mask-space design should have to keep pixels square.
TEMPLATE_ASPECT = 2.0
TEMPLATE_HW = (64, 128)
ALPHA_THRESHOLD = 0.5  # projector alpha above this is mask
OPEN_PX = 3  # opening kernel (px at 128²): removes specks and one-pixel bridges between the mask and a stray blob
LUMA = (0.299, 0.587, 0.114)  # Rec. 601 luminance weights
SHADING_MAX = 2.0  # a highlight may at most double the design's brightness (then it clips at 1)


def design_hw(size: int) -> tuple[int, int]:
    """The generator's design shape (height, width) for data of `size` x `size`: the template at the data's
    width, so a design pixel spans about one image pixel across the mask (size // 2 high, size wide)."""
    return max(size // int(TEMPLATE_ASPECT), 1), size


class MaskSpace(NamedTuple):
    """Per-image constants of the warp: grid [B,H,W,2] for grid_sample (outside the region: off the template),
    alpha [B,1,H,W] confined to the warped region."""

    grid: torch.Tensor
    alpha: torch.Tensor


# ---- the mask region and the warp ------------------------------------------------------------------------


def largest_component(fg: torch.Tensor) -> torch.Tensor:
    """bool [B,1,H,W] -> the largest 8-connected component of each image (bool, same shape).

    Max-label propagation (3x3 max-pool restricted to the foreground) with pointer jumping until nothing changes;
    batched, any device. A label is 1 + the flat index of the pixel it started at, which is in the same component,
    and that pixel's own label is at least as large and of the component too: taking it moves labels along a
    region in doubling steps, where a max-pool moves them one pixel a pass (a mask region 100 pixels across took
    about 110 passes; an evaluation spent a quarter of its time here)."""
    b, _, h, w = fg.shape
    if h * w >= 2 ** 24:
        raise ValueError(f"largest_component: {h}x{w} pixels exceed float32's exact integers (labels)")
    fgf = fg.float()
    labels = (torch.arange(1, h * w + 1, device=fg.device, dtype=torch.float32).view(1, 1, h, w) * fgf)
    labels = labels.expand(b, 1, h, w).contiguous()
    # Only the images still changing go on: most masks settle in under 10 rounds, a ragged one can take 60.
    active = torch.arange(b, device=fg.device)
    while active.numel():
        prev = labels[active]
        mine, now = fgf[active], prev
        for _ in range(4):  # 4 rounds between checks: one device sync per 4
            flat = (F.max_pool2d(now, 3, stride=1, padding=1) * mine).view(-1, h * w)
            origin = (flat.long() - 1).clamp(min=0)  # background (0) reads pixel 0, then is zeroed again
            now = (torch.gather(flat, 1, origin) * (flat > 0)).view(-1, 1, h, w)
        labels[active] = now
        active = active[(now != prev).flatten(1).any(1)]
    flat = labels.view(b, -1).long()
    offset = torch.arange(b, device=fg.device).view(b, 1) * (h * w + 1)
    counts = torch.bincount((flat + offset).view(-1), minlength=b * (h * w + 1)).view(b, h * w + 1)
    counts[:, 0] = 0  # background
    biggest = counts.argmax(1).view(b, 1)
    return ((flat == biggest) & (flat > 0)).view(b, 1, h, w)


def mask_region(alpha: torch.Tensor, threshold: float = ALPHA_THRESHOLD) -> torch.Tensor:
    """Soft alpha [B,1,H,W] -> bool region: thresholded, opened, largest connected component."""
    kernel = torch.ones(OPEN_PX, OPEN_PX, device=alpha.device)
    opened = kornia.morphology.opening((alpha > threshold).float(), kernel) > 0.5
    return largest_component(opened)


@torch.no_grad()
def mask_warp(alpha: torch.Tensor, threshold: float = ALPHA_THRESHOLD) -> MaskSpace:
    """Projector alpha [B,1,H,W] in [0,1] -> MaskSpace (grid from the template onto each image's mask region,
    and alpha confined to it). A per-image constant: compute once per image, outside the step.

    A pixel (x, y) of the region reads the template at u = (x - left(y)) / width(y) across and
    v = (y - top(x)) / height(x) down (pixel centres; left/right: the row's extent, top/bottom: the column's).
    Pixels between a row's extremes or a column's that are not region (holes) are covered too, so a hole in the
    projector's alpha does not punch a hole in the print."""
    region = mask_region(alpha, threshold)[:, 0]  # [B,H,W]
    b, h, w = region.shape
    xs = torch.arange(w, device=alpha.device, dtype=torch.float32).view(1, 1, w).expand(b, h, w)
    ys = torch.arange(h, device=alpha.device, dtype=torch.float32).view(1, h, 1).expand(b, h, w)
    big = float(h + w)
    left = torch.where(region, xs, big).amin(2, keepdim=True)  # [B,H,1]
    right = torch.where(region, xs, -big).amax(2, keepdim=True)
    top = torch.where(region, ys, big).amin(1, keepdim=True)  # [B,1,W]
    bottom = torch.where(region, ys, -big).amax(1, keepdim=True)
    covered = (xs >= left) & (xs <= right) & (ys >= top) & (ys <= bottom)
    u = (xs - left + 0.5) / (right - left + 1).clamp(min=1)
    v = (ys - top + 0.5) / (bottom - top + 1).clamp(min=1)
    grid = torch.stack([u * 2 - 1, v * 2 - 1], -1)
    grid = torch.where(covered.unsqueeze(-1), grid, torch.full_like(grid, -3.0))  # off the template: zeros
    return MaskSpace(grid=grid, alpha=alpha * covered.unsqueeze(1).to(alpha.dtype))


def at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """fp16/bf16 -> fp32; fp32 and fp64 as they are (a float64 check of the step stays float64)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def place(design: torch.Tensor, grid: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Design [B,3,h,w] in mask space -> [B,3,H,W] in image coordinates (zero where alpha is zero).

    Bilinear with border padding: a region edge reads the template's edge pixel, not black beyond it. In fp32
    even under autocast: a bf16 grid would be off by up to half a template pixel."""
    with torch.autocast(design.device.type, enabled=False):
        placed = F.grid_sample(at_least_fp32(design), at_least_fp32(grid).to(at_least_fp32(design).dtype),
                               mode="bilinear", padding_mode="border", align_corners=False)
    return placed * (alpha > 0).to(placed.dtype)


def shading(masked: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """The original mask's shading [B,1,H,W]: its luminance relative to its alpha-weighted mean over the region."""
    luma = (masked * torch.tensor(LUMA, device=masked.device, dtype=masked.dtype).view(1, 3, 1, 1)).sum(1, keepdim=True)
    mean = (luma * alpha).sum((2, 3), keepdim=True) / alpha.sum((2, 3), keepdim=True).clamp(min=1e-6)
    return (luma / mean.clamp(min=1e-3)).clamp(0, SHADING_MAX)


def composite_shaded(masked: torch.Tensor, alpha: torch.Tensor, placed: torch.Tensor) -> torch.Tensor:
    """alpha * (placed design x the mask's shading) + (1 - alpha) * photo."""
    return alpha * (placed * shading(masked, alpha)).clamp(0, 1) + (1 - alpha) * masked


def wear(masked: torch.Tensor, space: MaskSpace, design: torch.Tensor, seed: int | None = None,
         design_eot: "Transforms | None" = None, face_eot: "Transforms | None" = None) -> torch.Tensor:
    """The face wearing the design: [print transforms] -> place -> shade -> composite -> [camera transforms].
    The step and evaluation both call this (seed: `transform_seed(...)`; None with no transforms)."""
    if design_eot is not None:
        design = design_eot(design, seed)
    face = composite_shaded(masked, space.alpha, place(design, space.grid, space.alpha))
    if face_eot is not None:
        face = face_eot(face, seed)
    return face


# ---- losses on the design (mask space) -------------------------------------------------------------------


def tv(design: torch.Tensor) -> torch.Tensor:
    """Total variation [B]: the mean absolute difference between horizontal and vertical neighbours (all
    channels), [0, 1] scale. A constant design has 0; uniform noise about 1/3."""
    dx = (design[..., :, 1:] - design[..., :, :-1]).abs().flatten(1)
    dy = (design[..., 1:, :] - design[..., :-1, :]).abs().flatten(1)
    return torch.cat([dx, dy], 1).mean(1)


def nps(design: torch.Tensor, palette: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Non-printability score [B]: per pixel, the Euclidean RGB distance ([0, 1] scale) to the nearest palette
    colour (palette [P,3] in [0,1]), averaged. eps keeps the gradient finite at a palette colour.
    Memory: a [B, h*w, P] distance table (B=256 at 64x128 with 30 colours: 250 MB in fp32)."""
    pixels = design.flatten(2).transpose(1, 2)  # [B,HW,3]
    pal = palette.to(design.device, design.dtype)
    d2 = (pixels.unsqueeze(2) - pal.view(1, 1, -1, 3)).pow(2).sum(-1)  # [B,HW,P]
    return (d2.amin(2) + eps).sqrt().mean(1)


# ---- EOT ---------------------------------------------------------------------------------------------------


# The ranges live in the config (maskgan.config.PhysicalConfig: the `physical` section, validated at the edge);
# `enabled` turns EOT on in training, the rest are the strengths every function here reads.
PhysicalRanges = PhysicalConfig
NUMERIC = tuple(f.name for f in fields(PhysicalConfig) if f.name != "enabled")


MIN_SIGMA = 0.1  # blur sigmas are drawn from [MIN_SIGMA, max]
BEST_JPEG = 95.0


def held_out(ranges: PhysicalRanges, factor: float = 1.5) -> PhysicalRanges:
    """Every strength x `factor` (each range 1.5x as wide): transforms training never drew."""
    return replace(ranges, **{name: getattr(ranges, name) * factor for name in NUMERIC})


def transform_seed(index: int, held_out: bool, run_seed: int = 0) -> int:
    """The seed of one batch's transforms. Training: index = the global step, an even seed; held-out
    evaluation: index = the batch number, an odd seed. The two streams are disjoint for every index and run."""
    return ((run_seed << 40) + index) * 2 + int(held_out)


def _odd(sigma: float) -> int:
    return 2 * max(1, int(round(3 * sigma))) + 1  # kernel covering +-3 sigma


class Transforms:
    """Two kornia pipelines with per-pixel noise between them, whose random parameters are drawn from one seed
    per call: `t(images, seed)` = after(noise(before(images))). Empty pipelines and zero noise are skipped.

    Parameters are drawn on the CPU under a forked RNG (the caller's random state is left as it was); the noise
    comes from a generator on the images' device seeded from the seed and `salt` (so the print's noise and the
    camera's are not one stream)."""

    def __init__(self, before: list, noise: tuple[str, float], after: list, salt: int):
        self.before = K.AugmentationSequential(*before) if before else None
        self.after = K.AugmentationSequential(*after) if after else None
        self.noise_kind, self.noise_level = noise
        self.salt = salt

    def __call__(self, images: torch.Tensor, seed: int) -> torch.Tensor:
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            before = self.before.forward_parameters(images.shape) if self.before is not None else None
            after = self.after.forward_parameters(images.shape) if self.after is not None else None
        out = self.before(images, params=before) if self.before is not None else images
        if self.noise_level > 0:
            gen = torch.Generator(device=images.device).manual_seed(seed * 4 + self.salt)
            if self.noise_kind == "uniform":
                noise = torch.rand(out.shape, generator=gen, device=out.device, dtype=out.dtype) * 2 - 1
            else:
                noise = torch.randn(out.shape, generator=gen, device=out.device, dtype=out.dtype)
            out = out + self.noise_level * noise
        out = out.clamp(0, 1)
        return self.after(out, params=after).clamp(0, 1) if self.after is not None else out


def _blur(max_sigma: float) -> list:
    if max_sigma <= MIN_SIGMA:
        return []
    return [K.RandomGaussianBlur(_odd(max_sigma), (MIN_SIGMA, max_sigma), p=1.0)]


def design_transforms(ranges: PhysicalRanges) -> Transforms:
    """The print's transforms of a design [B,3,h,w] in mask space: colour, noise, then blur and geometry."""
    r = ranges
    before = []
    if r.contrast > 0:  # kornia's contrast multiplies (x factor), as the anchor
        before.append(K.RandomContrast(contrast=(max(1 - r.contrast, 0.01), 1 + r.contrast), p=1.0))
    if r.brightness > 0:  # kornia adds factor - 1
        before.append(K.RandomBrightness(brightness=(1 - r.brightness, 1 + r.brightness), p=1.0))
    if r.colour_shift > 0:
        before.append(K.RandomRGBShift(r.colour_shift, r.colour_shift, r.colour_shift, p=1.0))
    after = _blur(r.blur_sigma)
    if r.rotation_deg > 0 or r.translate > 0 or r.scale > 0:
        after.append(K.RandomAffine(degrees=r.rotation_deg, translate=(r.translate, r.translate),
                                    scale=(max(1 - r.scale, 0.01), 1 + r.scale), padding_mode="border", p=1.0))
    return Transforms(before, ("uniform", r.noise), after, salt=1)


def face_transforms(ranges: PhysicalRanges) -> Transforms:
    """The camera's transforms of a composited face [B,3,H,W]: blur, exposure, sensor noise, then JPEG."""
    r = ranges
    before = _blur(r.camera_blur_sigma)
    if r.exposure > 0:  # exposure: a gain on every pixel
        before.append(K.RandomContrast(contrast=(max(1 - r.exposure, 0.01), 1 + r.exposure), p=1.0))
    after = []
    if r.jpeg_drop > 0:
        after.append(K.RandomJPEG(jpeg_quality=(max(BEST_JPEG - r.jpeg_drop, 1.0), BEST_JPEG), p=1.0))
    return Transforms(before, ("gaussian", r.camera_noise), after, salt=2)


def print_and_photograph(design_tf: Transforms, face_tf: Transforms, masked: torch.Tensor, space: MaskSpace,
                         designs: torch.Tensor, seed: int) -> torch.Tensor:
    """Designs [B,3,h,w] in mask space printed (design_tf), worn in the mask region, photographed (face_tf): one
    draw per image from `seed`. Training's EOT and evaluation's held-out rows both go through here."""
    return wear(masked, space, designs, seed, design_eot=design_tf, face_eot=face_tf)


class EOT:
    """Training's transforms (config `physical`, enabled): each call draws from the even seed stream,
    transform_seed(calls * 4096 + rank, held_out=False, run_seed), so workers draw differently and never what
    evaluation's held-out rows draw. Differentiable (kornia): the generator's gradient goes through them."""

    def __init__(self, ranges: PhysicalConfig, run_seed: int = 0, rank: int = 0):
        self.design_tf, self.face_tf = design_transforms(ranges), face_transforms(ranges)
        self.run_seed, self.rank, self.calls = run_seed, rank, 0

    def wear(self, masked: torch.Tensor, space: MaskSpace, designs: torch.Tensor) -> torch.Tensor:
        seed = transform_seed(self.calls * 4096 + self.rank, held_out=False, run_seed=self.run_seed)
        self.calls += 1
        return print_and_photograph(self.design_tf, self.face_tf, masked, space, designs, seed)
