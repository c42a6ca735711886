"""Mask space, shading, EOT and the TV/NPS losses (maskgan.design.physical): fast, no Ray."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from data_loader import synth
from maskgan.design import physical
from maskgan.design.palette import DEFAULT


def synthetic_faces(n: int = 4, seed: int = 0):
    """masked [n,3,S,S] and true alpha [n,1,S,S] in [0,1] from the synthetic renderer."""
    rng = np.random.default_rng(seed)
    masked, alpha = [], []
    for _ in range(n):
        _, ma, al = synth.render(synth.identity_params(rng), rng)
        masked.append(ma)
        alpha.append(al)
    masked = torch.from_numpy(np.stack(masked)).permute(0, 3, 1, 2).float() / 255
    alpha = torch.from_numpy(np.stack(alpha)).float().unsqueeze(1) / 255
    return masked, alpha


def checkerboard(n: int, h: int = physical.TEMPLATE_HW[0], w: int = physical.TEMPLATE_HW[1], cell: int = 8):
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    board = (((yy // cell) + (xx // cell)) % 2).float()
    return torch.stack([board, 1 - board, torch.full_like(board, 0.5)]).expand(n, 3, h, w).contiguous()


def dilate(region: torch.Tensor, px: int) -> torch.Tensor:
    return torch.nn.functional.max_pool2d(region.float(), 2 * px + 1, stride=1, padding=px) > 0


def test_tv_of_a_constant_design_is_zero_and_of_noise_about_a_third():
    assert physical.tv(torch.full((2, 3, 64, 128), 0.37)).abs().max().item() == 0.0
    noise = physical.tv(torch.rand(2, 3, 64, 128, generator=torch.Generator().manual_seed(0)))
    assert noise.shape == (2,) and torch.allclose(noise, torch.full((2,), 1 / 3), atol=0.01)


def test_nps_is_about_zero_on_a_palette_colour_and_large_far_from_every_colour():
    pal = DEFAULT.tensor()
    on_palette = pal[7].view(1, 3, 1, 1).expand(1, 3, 16, 32)
    assert physical.nps(on_palette, pal).item() < 1e-3
    # Far from all of a dark palette: white against black and dark grey is at least sqrt(3) * 0.7 away.
    dark = torch.tensor([[0.0, 0.0, 0.0], [0.3, 0.3, 0.3]])
    assert physical.nps(torch.ones(1, 3, 16, 32), dark).item() > 1.2
    # And a palette colour scores lower than uniform noise against the default palette.
    assert physical.nps(torch.rand(1, 3, 16, 32), pal).item() > 0.05


def test_a_checkerboard_template_lands_inside_the_mask_region_only():
    masked, alpha = synthetic_faces()
    space = physical.mask_warp(alpha)
    placed = physical.place(checkerboard(masked.shape[0]), space.grid, space.alpha)
    painted = placed.abs().sum(1, keepdim=True) > 0
    true_region = alpha > 0.5
    # No painted pixel (and no composited alpha) more than 2 px outside the true mask region...
    assert not (painted & ~dilate(true_region, 2)).any()
    assert not ((space.alpha > 0) & ~dilate(true_region, 2)).any()
    # ...and the region is covered: the design is not a small stamp in the middle of the mask.
    cover = (painted & true_region).sum((1, 2, 3)).float() / true_region.sum((1, 2, 3))
    assert cover.min().item() > 0.97
    # Both colours of the board show in every image (the template is spread over the region, not one cell).
    for b in range(masked.shape[0]):
        red = placed[b, 0][painted[b, 0]]
        assert (red > 0.9).float().mean() > 0.3 and (red < 0.1).float().mean() > 0.3


def test_a_stray_projector_blob_near_the_eyes_is_never_painted():
    masked, alpha = synthetic_faces(2)
    leaky = alpha.clone()
    leaky[:, :, 30:38, 40:48] = 0.9  # a blob at eye height, apart from the mask
    space = physical.mask_warp(leaky)
    assert space.alpha[:, :, 30:38, 40:48].max().item() == 0.0
    face = physical.wear(masked, space, torch.zeros(2, 3, *physical.TEMPLATE_HW))
    assert torch.equal(face[:, :, 30:38, 40:48], masked[:, :, 30:38, 40:48])


def _largest_component_by_flood_fill(fg: np.ndarray) -> np.ndarray:
    """The reference: a plain breadth-first flood fill, 8-connected; ties go to the component met last in row
    order (largest_component keeps the one with the largest label, its last pixel in row order)."""
    h, w = fg.shape
    seen = np.zeros_like(fg)
    best, best_key = np.zeros_like(fg), (0, -1)
    for y0, x0 in zip(*np.nonzero(fg)):
        if seen[y0, x0]:
            continue
        queue, comp = [(y0, x0)], []
        seen[y0, x0] = True
        while queue:
            y, x = queue.pop()
            comp.append((y, x))
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    ny, nx = y + dy, x + dx
                    if 0 <= ny < h and 0 <= nx < w and fg[ny, nx] and not seen[ny, nx]:
                        seen[ny, nx] = True
                        queue.append((ny, nx))
        key = (len(comp), max(yy * w + xx for yy, xx in comp))
        if key > best_key:
            best_key, best = key, np.zeros_like(fg)
            best[tuple(np.array(comp).T)] = True
    return best


def test_the_mask_region_is_the_largest_8_connected_component_even_a_long_thin_one():
    """A spiral 1 px wide (a label must travel about 2,000 pixels along it) beside a more compact but smaller blob,
    two regions that touch only at a corner (one component, 8-connected), and random blobs: the same pixels as a
    plain flood fill."""
    spiral = np.zeros((64, 64), dtype=bool)
    top, left, bottom, right = 2, 2, 61, 61
    while top < bottom and left < right:
        spiral[top, left:right + 1] = True
        spiral[top:bottom + 1, right] = True
        spiral[bottom, left + 2:right + 1] = True
        spiral[top + 2:bottom + 1, left + 2] = True
        top, left, bottom, right = top + 4, left + 4, bottom - 4, right - 4
    corner = np.zeros((64, 64), dtype=bool)
    corner[5:20, 5:20] = True
    corner[20:40, 20:40] = True  # touches the first square only at (19, 19)-(20, 20)
    corner[50:60, 2:12] = True  # apart: smaller than the two squares together
    rng = np.random.default_rng(0)
    noise = [torch.rand(1, 1, 64, 64, generator=torch.Generator().manual_seed(k)) for k in range(6)]
    blobs = [torch.nn.functional.avg_pool2d(x, 7, 1, 3)[0, 0].numpy() > 0.5 for x in noise]
    cases = [spiral, corner, *blobs, rng.random((64, 64)) > 0.6, np.zeros((64, 64), dtype=bool)]
    got = physical.largest_component(torch.from_numpy(np.stack(cases)).unsqueeze(1))[:, 0].numpy()
    for k, fg in enumerate(cases):
        assert np.array_equal(got[k], _largest_component_by_flood_fill(fg)), k
    assert got[1][5:40, 5:40].sum() == 15 * 15 + 20 * 20 and not got[1][50:60, 2:12].any()


def test_the_composite_carries_the_masks_shading_onto_the_design():
    masked, alpha = synthetic_faces(2)
    space = physical.mask_warp(alpha)
    grey = torch.full((2, 3, *physical.TEMPLATE_HW), 0.5)
    face = physical.wear(masked, space, grey)
    inside = space.alpha[:, 0] > 0.99
    luma = (masked * torch.tensor(physical.LUMA).view(1, 3, 1, 1)).sum(1)
    for b in range(2):
        got, ref = face[b, 0][inside[b]], luma[b][inside[b]]
        # A flat grey print takes the photo's lighting: brightness follows the original mask's luminance...
        assert np.corrcoef(got.numpy(), ref.numpy())[0, 1] > 0.9
        # ...about the design's own level.
        assert abs(got.mean().item() - 0.5) < 0.02


def test_held_out_transforms_never_repeat_trainings_seeds_and_are_wider():
    train = {physical.transform_seed(i, held_out=False, run_seed=r) for r in range(3) for i in range(5000)}
    held = {physical.transform_seed(i, held_out=True, run_seed=r) for r in range(3) for i in range(5000)}
    assert len(train) == 15000 and len(held) == 15000 and not train & held
    base, wide = physical.PhysicalRanges(), physical.held_out(physical.PhysicalRanges())
    assert wide.rotation_deg == pytest.approx(7.5) and wide.contrast == pytest.approx(0.3)  # x U(0.7, 1.3)
    assert wide.translate == pytest.approx(1.5 * base.translate) and wide.jpeg_drop == pytest.approx(67.5)


def test_transforms_are_a_function_of_their_seed_and_change_the_image():
    design = torch.rand(3, 3, *physical.TEMPLATE_HW, generator=torch.Generator().manual_seed(1))
    t = physical.design_transforms(physical.PhysicalRanges())
    state = torch.get_rng_state()
    a, b, c = t(design, 2), t(design, 2), t(design, 4)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's random stream is untouched
    assert torch.equal(a, b)
    assert (a - c).abs().mean().item() > 0.01 and (a - design).abs().mean().item() > 0.01
    # Each image of a batch draws its own parameters.
    same = design[:1].expand(3, -1, -1, -1)
    out = t(same, 6)
    assert (out[0] - out[1]).abs().mean().item() > 0.005


def test_zero_strengths_turn_the_transforms_off():
    off = physical.PhysicalRanges(**{f: 0.0 for f in physical.PhysicalRanges.__dataclass_fields__})
    design = torch.rand(2, 3, *physical.TEMPLATE_HW, generator=torch.Generator().manual_seed(2))
    assert torch.equal(physical.design_transforms(off)(design, 8), design)
    assert torch.equal(physical.face_transforms(off)(design, 8), design)


def test_gradients_flow_from_the_face_through_eot_composite_and_place_to_the_design():
    masked, alpha = synthetic_faces(2)
    space = physical.mask_warp(alpha)
    design = torch.full((2, 3, *physical.TEMPLATE_HW), 0.5, requires_grad=True)
    ranges = physical.PhysicalRanges()
    face = physical.wear(masked, space, design, seed=physical.transform_seed(0, held_out=False),
                         design_eot=physical.design_transforms(ranges), face_eot=physical.face_transforms(ranges))
    loss = face.mean() + physical.tv(design).mean() + physical.nps(design, DEFAULT.tensor()).mean()
    loss.backward()
    assert torch.isfinite(design.grad).all()
    assert (design.grad.abs().sum((1, 2, 3)) > 0).all()  # every image's design receives a gradient


def test_held_out_physical_wear_is_seeded_per_batch_and_design_and_changes_the_face():
    from maskgan.design import wearing

    torch.manual_seed(0)
    masked = torch.rand(4, 3, 64, 64)
    alpha = torch.zeros(4, 1, 64, 64)
    alpha[..., 32:, 8:-8] = 1
    space = physical.mask_warp(alpha)
    design = torch.full((1, 3, *physical.design_hw(64)), 0.5)
    a = wearing.worn_physically(masked, space, design, index=3)
    assert a.shape == masked.shape and 0 <= a.min() and a.max() <= 1
    assert torch.equal(a, wearing.worn_physically(masked, space, design, index=3))  # same seed: same photo
    assert not torch.equal(a, wearing.worn_physically(masked, space, design, index=4))  # another batch/design
    flat = wearing.worn(masked, space, design)
    assert (a - flat).abs().mean() > 0.01  # printed and photographed, not pasted flat
    # each probe gets its own draw: the same probe photo twice in one batch comes out differently
    one = physical.MaskSpace(space.grid[:1].expand(2, -1, -1, -1), space.alpha[:1].expand(2, -1, -1, -1))
    twice = wearing.worn_physically(masked[:1].expand(2, -1, -1, -1), one, design, index=3)
    assert not torch.allclose(twice[0], twice[1], atol=1e-3)


def test_physical_rows_are_scored_on_held_out_splits_only():
    from maskgan.design import wearing

    designs = {"universal/0": torch.zeros(1, 3, 8, 8), "universal/1": torch.ones(1, 3, 8, 8)}
    assert wearing.with_physical(designs, "train") == designs
    test = wearing.with_physical(designs, "test")
    assert set(test) == {"universal/0", "universal/1", "universal_physical/0", "universal_physical/1"}
    assert test["universal_physical/1"] is designs["universal/1"]
