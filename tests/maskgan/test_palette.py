"""Palette file, chart and reading a photographed chart back (maskgan.design.palette): fast, no Ray."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image

from maskgan.design import palette


def photograph(chart: np.ndarray, seed: int, tilt: float = 0.04, blur: float = 1.5, gain: float = 0.8,
               offset: float = 0.04, noise: float = 0.015) -> np.ndarray:
    """A synthetic photo of a printed chart: perspective tilt on a grey table, lens blur, exposure, sensor noise.
    (Exposure keeps paper white below 255: a photo that clips the paper has lost its white reference.)"""
    import kornia.filters as KF
    import kornia.geometry.transform as KT

    g = torch.Generator().manual_seed(seed)
    h, w, _ = chart.shape
    x = torch.from_numpy(chart).permute(2, 0, 1).float().unsqueeze(0) / 255
    out_h, out_w = int(h * 1.3), int(w * 1.3)
    ox, oy = (out_w - w) / 2, (out_h - h) / 2
    src = torch.tensor([[[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]]], dtype=torch.float32)
    corners = torch.tensor([[ox, oy], [ox + w, oy], [ox + w, oy + h], [ox, oy + h]])
    dst = (corners + (torch.rand(4, 2, generator=g) * 2 - 1) * tilt * w).unsqueeze(0)
    m = KT.get_perspective_transform(src, dst)
    photo = KT.warp_perspective(x, m, (out_h, out_w), align_corners=True)
    paper = KT.warp_perspective(torch.ones_like(x[:, :1]), m, (out_h, out_w), align_corners=True)
    photo = photo + (1 - paper) * 0.3  # the table around the sheet
    photo = KF.gaussian_blur2d(photo, (9, 9), (blur, blur))
    photo = photo * gain + offset + noise * torch.randn(photo.shape, generator=g)
    return (photo.clamp(0, 1)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def test_the_default_palette_ships_labelled_uncalibrated():
    assert 25 <= len(palette.DEFAULT.colours) <= 40
    assert palette.DEFAULT.calibrated is False and "uncalibrated" in palette.DEFAULT.note
    assert palette.load("default") is palette.DEFAULT


def test_a_palette_file_round_trips_and_bad_files_are_named(tmp_path):
    path = str(tmp_path / "p.json")
    palette.save(palette.DEFAULT, path)
    assert json.load(open(path))["calibrated"] is False
    assert palette.load(path) == palette.DEFAULT
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": palette.FORMAT, "colours": [[1, 2]]}))
    with pytest.raises(ValueError, match="bad.json"):
        palette.load(str(bad))
    with pytest.raises(Exception, match="missing.json"):
        palette.load(str(tmp_path / "missing.json"))


@pytest.mark.parametrize("seed, tilt, blur, gain", [(0, 0.04, 1.5, 0.8), (1, 0.06, 2.0, 0.92)])
def test_fit_recovers_the_colours_of_a_photographed_chart(tmp_path, seed, tilt, blur, gain):
    chart = palette.chart_image(palette.DEFAULT, px_per_mm=4.0)
    path = tmp_path / "photo.jpg"
    Image.fromarray(photograph(chart, seed, tilt=tilt, blur=blur, gain=gain)).save(path, quality=92)
    fitted = palette.fit_scan(str(path), len(palette.DEFAULT.colours))
    err = np.abs(np.array(fitted.colours, float) - np.array(palette.DEFAULT.colours, float))
    assert err.max() <= 8 and err.mean() <= 3, err
    assert fitted.calibrated and "photo.jpg" in fitted.note


def test_fit_refuses_a_chart_of_another_size(tmp_path):
    chart = palette.chart_image(palette.DEFAULT, px_per_mm=4.0)
    Image.fromarray(photograph(chart, 3)).save(tmp_path / "chart30.png")
    with pytest.raises(ValueError, match="chart30.png.*12 colours"):
        palette.fit_scan(str(tmp_path / "chart30.png"), 12)


def test_fit_names_the_file_when_the_fiducials_are_not_found(tmp_path):
    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((600, 800, 3), 230, np.uint8)).save(blank)
    with pytest.raises(ValueError, match="blank.png.*fiducials"):
        palette.fit_scan(str(blank), 30)
    # A photo of only dark patches (no ring-shaped fiducials) fails the same way, not with a wrong palette.
    patches = np.full((600, 800, 3), 240, np.uint8)
    patches[100:200, 100:200] = 10
    patches[300:400, 500:600] = 10
    Image.fromarray(patches).save(tmp_path / "patches.png")
    with pytest.raises(ValueError, match="patches.png"):
        palette.fit_scan(str(tmp_path / "patches.png"), 30)


@pytest.mark.skipif(shutil.which("pdfinfo") is None, reason="poppler-utils (pdfinfo) is not installed")
def test_the_chart_pdf_is_an_a4_landscape_page(tmp_path):
    path = tmp_path / "chart.pdf"
    palette.chart_pdf(palette.DEFAULT, str(path))
    info = subprocess.run(["pdfinfo", str(path)], capture_output=True, text=True, check=True).stdout
    w, h = (float(v) for v in info.split("Page size:")[1].split("pts")[0].split(" x "))
    assert w == pytest.approx(297 / 25.4 * 72, rel=0.01) and h == pytest.approx(210 / 25.4 * 72, rel=0.01)
