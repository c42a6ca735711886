"""How printable a run's designs are, for report.json: total variation and non-printability (maskgan.design.physical)
of the generated designs, the K universal designs and every design control, against the run's palette.

Measured on the designs as the generator makes them (mask-space panels, what is printed), on fixed seeds so
two evaluations of one checkpoint agree. `noise` is the yardstick the printability bars are set against (TV about 1/3,
NPS about 0.2 with the default palette); a flat control has TV 0.
"""

from __future__ import annotations

import torch

from maskgan.design import physical
from maskgan.models.generators import universal as universal_of
from maskgan.models.ops import unwrap

SAMPLES = 64  # generated and noise designs measured per report


@torch.no_grad()
def design_rows(generator, latent_dim: int, universal: torch.Tensor, controls: dict, seed: int = 0) -> dict:
    """{row: designs [N,3,h,w] in [0,1]}: generated (seeded latents), universal, noise, and each flat control."""
    gen = torch.Generator().manual_seed(seed)
    device = universal.device
    h, w = universal.shape[-2:]
    # a conditional generator's samples are made for the mean train-gallery feature (generators.universal)
    rows = {"generated": universal_of(unwrap(generator), torch.randn(SAMPLES, latent_dim, generator=gen).to(device)),
            "universal": universal,
            "noise": torch.rand(SAMPLES, 3, h, w, generator=gen).to(device)}
    for name, rgb in controls.items():
        rows[name] = torch.tensor(rgb, device=device).view(1, 3, 1, 1).expand(1, 3, h, w)
    return rows


@torch.no_grad()
def report(rows: dict, palette) -> dict:
    """{"palette": ..., "rows": {row: {"tv": mean, "tv_max": worst, "nps": mean, "nps_max": worst}}}."""
    colours = palette.tensor()
    out = {}
    for name, designs in rows.items():
        d = designs.float().cpu()
        tv, nps = physical.tv(d), physical.nps(d, colours)
        out[name] = {"tv": float(tv.mean()), "tv_max": float(tv.max()), "nps": float(nps.mean()),
                     "nps_max": float(nps.max())}
    return {"palette": palette.name, "calibrated": palette.calibrated, "rows": out}
