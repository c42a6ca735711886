"""What each row's probe wears: the controls, the generator's designs, the K universal designs (the ones a
wearer would print) and their PNGs, and the universal designs again under held-out physical transforms.

Rows: `unmasked` (the probe photo without a mask), `original_mask` (as photographed), `generated` (the
generator's designs worn in the mask region, a fresh latent per probe), control designs worn the same way:
`blue`, `black`, `white`, `noise` (uniform noise), and `universal`: K fixed designs, each worn by every probe,
summarised as mean, worst and best over the K. maskgan.evaluation.evaluate scores them.

A conditional generator (maskgan.models.generators: cond_fc3, cond_conv) makes each wearer's own design from
the trunk features of their unmasked photo: its `generated` row uses each probe's own features, and the
`for_person` row (K entries `for_person/<i>`, summarised like `universal`) has each probe wear the design made
for them from universal latent i, the same latents as the universal rows. Its universal designs are made for
the mean train-gallery feature (generators.universal): one design for everyone, for comparison.

Every design here is a mask-space panel (maskgan.design.physical: [N,3,h,w], h x w = physical.design_hw(image size)),
worn through `physical.wear` exactly as the training step wears it: the warp onto the mask region, the mask's
shading, the composite. So the PNG a user prints is the picture every row scored.
"""

from __future__ import annotations

import functools
import io

import torch

from data_loader import shards, storage
from maskgan.config import UNIVERSAL_K
from maskgan.design import design_file, physical
from maskgan.models.generators import is_conditional, universal
from maskgan.models.ops import to_float_images, trunk_features, unwrap

ROWS = ("unmasked", "original_mask", "generated", "blue", "black", "white", "noise")


# `blue` is near the synthetic masks' surgical blue (140, 190, 225), never equal to it: a control, not the mask itself.
CONTROLS = {"blue": (120 / 255, 172 / 255, 214 / 255), "black": (0.0, 0.0, 0.0), "white": (1.0, 1.0, 1.0)}
UNIVERSAL = "universal"
# The universal designs again under HELD-OUT physical transforms (maskgan.design.physical: the print's colour, noise,
# blur and geometry, then the camera's blur, exposure, noise and JPEG; every range 1.5x the run's `physical`
# config, seeds from the odd stream training never draws), on the held-out splits: robustness measured on
# transforms not trained on.
PHYSICAL = "universal_physical"
# The paired physical controls: the plain mask and every plain control, printed (controls) and photographed
# under the SAME held-out draws as the designs (one seed per batch for every physical row), so a delta taken
# within the transformed rows is the design's, not the camera's: blur, noise and JPEG alone lower rank-1.
PHYSICAL_SUFFIX = "_physical"
ORIGINAL_PHYSICAL = "original_mask" + PHYSICAL_SUFFIX
PHYSICAL_CONTROLS = (ORIGINAL_PHYSICAL, *(c + PHYSICAL_SUFFIX for c in CONTROLS))
FOR_PERSON = "for_person"  # conditional generators: each probe wears the design made from its own features


@torch.no_grad()
def mask_space(projector, masked: torch.Tensor) -> physical.MaskSpace:
    """The mask space of photos [B,3,S,S]: the warp onto the projector's mask region (the step's constant)."""
    return physical.mask_warp(projector(masked).float())


PROBE_COLUMNS = ["label", "size", "masked", "unmasked"]


@torch.no_grad()
def probe_photos(batch: dict, projector, device) -> tuple[torch.Tensor, torch.Tensor, physical.MaskSpace]:
    """A decoded probe batch (PROBE_COLUMNS) -> (masked, unmasked) float [B,3,S,S] on `device`, and the masked
    photos' mask space: what every scorer needs before a row's probe wears anything."""
    masked = to_float_images(torch.from_numpy(batch["masked"])).to(device)
    unmasked = to_float_images(torch.from_numpy(batch["unmasked"])).to(device)
    return masked, unmasked, mask_space(projector, masked)


def worn(masked: torch.Tensor, space: physical.MaskSpace, design: torch.Tensor) -> torch.Tensor:
    """Photos wearing a design: one per photo [B,3,h,w], or one for all [1,3,h,w]."""
    return physical.wear(masked, space, design.expand(masked.shape[0], -1, -1, -1))


@torch.no_grad()
def row_images(row: str, masked, unmasked, space: physical.MaskSpace, generator, latent_dim: int,
               gen: torch.Generator, cond: torch.Tensor | None = None):
    """The probes as `row` covers them. `cond`: the probes' unmasked trunk features, for a conditional
    generator's `generated` row (each probe wears a design made for it)."""
    if row == "unmasked":
        return unmasked
    if row == "original_mask":
        return masked
    n = masked.shape[0]
    h, w = physical.design_hw(masked.shape[-1])
    if row == "generated":
        z = torch.randn(n, latent_dim, generator=gen).to(masked.device)
        d = unwrap(generator)(z) if cond is None else unwrap(generator)(z, cond)
    elif row == "noise":
        d = torch.rand(n, 3, h, w, generator=gen).to(masked.device)
    else:
        d = torch.tensor(CONTROLS[row], device=masked.device).view(1, 3, 1, 1).expand(n, 3, h, w)
    return worn(masked, space, d)


def worn_physically(masked: torch.Tensor, space: physical.MaskSpace, design: torch.Tensor | None,
                    index: int, ranges: physical.PhysicalRanges | None = None) -> torch.Tensor:
    """One fixed design [1,3,h,w] printed and photographed under held-out transforms: each probe gets its own
    draw (the print's, then the camera's), from seed physical.transform_seed(index, held_out=True). `design`
    None: the photo as it is (the plain mask), photographed with the same camera draws. `ranges`: the run's
    `physical` config, widened by physical.held_out (default: the default ranges)."""
    design_tf, face_tf = _held_out_transforms(tuple(sorted(vars(ranges or physical.PhysicalRanges()).items())))
    seed = physical.transform_seed(index, held_out=True)
    if design is None:
        return face_tf(masked, seed)
    return physical.print_and_photograph(design_tf, face_tf, masked, space,
                                         design.expand(masked.shape[0], -1, -1, -1).contiguous(), seed)


@functools.lru_cache(maxsize=4)
def _held_out_transforms(ranges: tuple):
    """The held-out pipelines of one set of ranges (as sorted (field, value) pairs), built once per process
    (their draws come from each call's seed, not from state)."""
    held = physical.held_out(physical.PhysicalRanges(**dict(ranges)))
    return physical.design_transforms(held), physical.face_transforms(held)


def universal_latents(latent_dim: int, k: int = UNIVERSAL_K, seed: int = 0, device="cpu") -> torch.Tensor:
    """The K seeded latents [K, latent_dim] of the universal designs (and of the for-person rows)."""
    return torch.randn(k, latent_dim, generator=torch.Generator().manual_seed(seed)).to(device)


@torch.no_grad()
def universal_designs(generator, latent_dim: int, k: int = UNIVERSAL_K, seed: int = 0, device="cpu") -> torch.Tensor:
    """K fixed designs [K,3,h,w] from seeded latents, quantised to 8 bits: exactly what a PNG of them holds.
    A conditional generator's are made for the mean train-gallery feature (generators.universal)."""
    return quantise(universal(unwrap(generator), universal_latents(latent_dim, k, seed, device)))


@torch.no_grad()
def person_designs(generator, z: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
    """Each wearer's own design [B,3,h,w] from one latent z [1, latent_dim] and their unmasked-photo trunk
    features cond [B,1792], quantised like the universal designs (what a PNG of each holds)."""
    return quantise(unwrap(generator)(z.expand(cond.shape[0], -1), cond))


def for_person_latents(generator, latent_dim: int, k: int = UNIVERSAL_K, seed: int = 0, device="cpu") -> dict:
    """{"for_person/<i>": universal latent i [1, latent_dim]} for a conditional generator; {} otherwise."""
    if not is_conditional(unwrap(generator)) or not k:
        return {}
    return {f"{FOR_PERSON}/{i}": z.unsqueeze(0) for i, z in enumerate(universal_latents(latent_dim, k, seed, device))}


def quantise(design: torch.Tensor) -> torch.Tensor:
    return (design.clamp(0, 1) * 255).round() / 255


def design_png(design: torch.Tensor) -> bytes:
    """One design ([3,h,w] or [1,3,h,w], in [0,1]) as PNG bytes (w wide, h high)."""
    from PIL import Image

    img = (quantise(design.reshape(3, *design.shape[-2:])) * 255).byte().permute(1, 2, 0).cpu().numpy()
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def design_from_png(data: bytes, where: str = "design") -> torch.Tensor:
    """PNG bytes -> a design [1,3,h,w] in [0,1] (the inverse of design_png), read by the one design-file reader
    (maskgan.design.design_file: transparency composited onto white paper, a blank file refused naming `where`)."""
    return design_file.to_tensor(design_file.decode(data, where))


def with_physical(designs: dict, split: str) -> dict:
    """The universal designs, plus the same under held-out physical transforms on the held-out splits."""
    if split == "train":
        return designs
    return {**designs, **{f"{PHYSICAL}/{n.split('/')[1]}": d for n, d in designs.items()
                          if n.startswith(UNIVERSAL + "/")}}


def with_physical_controls(designs: dict, split: str) -> dict:
    """with_physical, plus the paired physical controls wherever physical rows are scored: ORIGINAL_PHYSICAL
    (None: the photo itself, photographed) and each plain control's flat panel, printed and photographed."""
    out = with_physical(designs, split)
    some = next((d for n, d in out.items() if n.startswith(PHYSICAL + "/")), None)
    if some is None:
        return out
    controls = {c + PHYSICAL_SUFFIX: torch.tensor(rgb, device=some.device).view(1, 3, 1, 1).expand_as(some).clone()
                for c, rgb in CONTROLS.items()}
    return {**out, ORIGINAL_PHYSICAL: None, **controls}


def universal_pngs(generator, latent_dim: int, k: int = UNIVERSAL_K, seed: int = 0) -> dict[str, bytes]:
    """designs/universal_<i>.png of the K universal designs, seeded as evaluation seeds them: the files
    `export` and `sample` write, byte for byte what evaluation scored."""
    return {f"designs/{UNIVERSAL}_{i}.png": design_png(d)
            for i, d in enumerate(universal_designs(generator, latent_dim, k, seed=seed))}


@torch.no_grad()
def designs_png(root: storage.Location, generator, latent_dim: int, projector, device, trunk=None, n: int = 8,
                seed: int = 0) -> bytes:
    """A grid: original masked faces (top) above the same faces wearing generated designs (bottom). `trunk`:
    the recogniser's, from which a conditional generator makes each face its own design."""
    from PIL import Image  # PIL's import is paid only where a picture is drawn

    sets = shards.read_manifest(root)["sets"]
    set_name = next(s for s in ("test", "val", "train") if s in sets and sets[s]["rows"])  # the first with probes
    batch = next(shards.iter_set(root, set_name, columns=["label", "size", "masked", "unmasked"]))
    batch = {k: v[:n] for k, v in batch.items()}
    masked = to_float_images(torch.from_numpy(batch["masked"])).to(device)
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(masked.shape[0], latent_dim, generator=gen).to(device)
    g = unwrap(generator)
    if is_conditional(g) and trunk is not None:  # each face wears the design made for it, from its own photo
        d = g(z, trunk_features(trunk, to_float_images(torch.from_numpy(batch["unmasked"])).to(device)))
    else:  # without a trunk (export's copy), a conditional generator's universal designs
        d = universal(g, z)
    faces = worn(masked, mask_space(projector, masked), d)
    top = torch.cat(list(masked), 2)
    bottom = torch.cat(list(faces), 2)
    grid = (torch.cat([top, bottom], 1).clamp(0, 1) * 255).byte().permute(1, 2, 0).cpu().numpy()
    buf = io.BytesIO()
    Image.fromarray(grid).save(buf, format="PNG")
    return buf.getvalue()
