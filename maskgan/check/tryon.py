"""Try a design on before printing it: the person's own unmasked photos wearing it, as a camera would see the
printed mask.

Per unmasked photo: a plain light mask is drawn from its 68 landmarks (data_loader.landmark_mask.draw, the
surgical outline identity data gets, lit by the face beneath it): that gives the mask region (its exact alpha)
and the mask's shading. The design is then worn exactly as evaluation's held-out physical row wears a universal
design (maskgan.design.wearing.worn_physically: warped onto the region, shaded, printed and photographed under the
held-out transforms, seeds training never draws). A plain mask (the evaluation's blue control, one flat colour)
is worn the same way with the same draws, so the two differ only by the design. Landmarks are the unmasked
photo's own, so every recogniser aligns the try-on exactly as it aligned the photo.
"""

from __future__ import annotations

import numpy as np
import torch

from data_loader import landmark_mask
from maskgan.check.photos import TRY_ON, Face
from maskgan.design import physical, wearing

MASK_BASE = (205, 205, 205)  # the drawn mask's colour: only its shading and region are used
PLAIN = "plain mask"
DRAWS = 2  # held-out print-and-photograph draws per unmasked photo


def masked_photos(faces: list[Face]) -> tuple[torch.Tensor, physical.MaskSpace]:
    """(photos wearing a drawn plain mask [N,3,S,S] in [0,1], their mask space): what a design is worn on."""
    masked, alpha = zip(*[landmark_mask.draw(f.image, f.landmarks, 0, colour=MASK_BASE)[:2] for f in faces])
    m = torch.from_numpy(np.stack(masked)).permute(0, 3, 1, 2).float() / 255.0
    a = torch.from_numpy(np.stack(alpha)).float().unsqueeze(1) / 255.0
    return m, physical.mask_warp(a)


def wear(masked: torch.Tensor, space: physical.MaskSpace, design: torch.Tensor, draw: int) -> torch.Tensor:
    """The photos wearing `design` [1,3,h,w], printed and photographed (held-out draw number `draw`).
    Differentiable in the design (a test optimises a design through it)."""
    return wearing.worn_physically(masked, space, design, index=draw)


def plain_design() -> torch.Tensor:
    return torch.tensor(wearing.CONTROLS["blue"]).view(1, 3, 1, 1).expand(1, 3, *physical.TEMPLATE_HW).contiguous()


@torch.no_grad()
def try_on(faces: list[Face], designs: dict[str, torch.Tensor]) -> dict[str, list[Face]]:
    """{label: the unmasked faces wearing that design, DRAWS per photo} for each design and the plain mask."""
    masked, space = masked_photos(faces)
    out = {}
    for label, design in {**designs, PLAIN: plain_design()}.items():
        worn = []
        for draw in range(DRAWS):
            img = (wear(masked, space, design.float(), draw).clamp(0, 1) * 255).round().byte()
            img = img.permute(0, 2, 3, 1).numpy()
            worn += [Face(f"try-on/{label}/{f.name.split('/', 1)[1]}#{draw}", img[i], f.landmarks.copy(), TRY_ON)
                     for i, f in enumerate(faces)]
        out[label] = worn
    return out


def attack(faces: list[Face], model, steps: int = 40, lr: float = 0.1) -> torch.Tensor:
    """A design [1,3,h,w] made for this person against one differentiable zoo model: Adam on the design's logits,
    lowering the model's similarity of the worn photos to the unmasked ones, through this module's own wearing
    path on TRAINING transforms (even seeds: never the held-out draws `try_on` scores with)."""
    masked, space = masked_photos(faces)
    imgs = torch.from_numpy(np.stack([f.image for f in faces])).permute(0, 3, 1, 2).float() / 255
    pts = torch.from_numpy(np.stack([f.landmarks for f in faces]))
    with torch.no_grad():
        target = model.embed(imgs, pts)
    ranges = physical.PhysicalRanges()
    design_tf, face_tf = physical.design_transforms(ranges), physical.face_transforms(ranges)
    logits = torch.zeros(1, 3, *physical.TEMPLATE_HW, requires_grad=True)
    opt = torch.optim.Adam([logits], lr=lr)
    for step in range(steps):
        design = torch.sigmoid(logits).expand(len(faces), -1, -1, -1)
        worn = physical.print_and_photograph(design_tf, face_tf, masked, space, design,
                                             physical.transform_seed(step, held_out=False))
        loss = (model.embed(worn, pts) * target).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return wearing.quantise(torch.sigmoid(logits).detach())
