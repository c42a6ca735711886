"""Print export at physical size (maskgan.reporting.printing): fast, no Ray; the PDF checks need poppler-utils."""

from __future__ import annotations

import os
import shutil
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image

from maskgan.design import page

# Skipped where poppler is missing, except in CI (CI=true), which installs it: there a missing poppler fails.
needs_poppler = pytest.mark.skipif((shutil.which("pdfinfo") is None or shutil.which("pdfimages") is None)
                                   and os.environ.get("CI") != "true",
                                   reason="poppler-utils (pdfinfo, pdfimages) is not installed")


def smooth_design(h: int = 64, w: int = 128) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    return torch.stack([xx, yy, 0.5 + 0.4 * torch.sin(6 * xx) * torch.cos(4 * yy)])


@needs_poppler
@pytest.mark.parametrize("width_mm, height_mm, dpi", [(180, 90, 300), (150.5, 80, 150)])
def test_the_page_has_the_requested_size_and_the_image_its_pixels(tmp_path, width_mm, height_mm, dpi):
    pdf, png = tmp_path / "mask.pdf", tmp_path / "mask.png"
    out = page.print_pdf(smooth_design(), width_mm, height_mm, dpi, str(pdf), str(png), "ab12" * 16)
    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True).stdout
    w_pt, h_pt = (float(v) for v in info.split("Page size:")[1].split("pts")[0].split(" x "))
    assert w_pt == pytest.approx(width_mm / 25.4 * 72, rel=0.01)
    assert h_pt == pytest.approx(height_mm / 25.4 * 72, rel=0.01)
    listing = subprocess.run(["pdfimages", "-list", str(pdf)], capture_output=True, text=True, check=True).stdout
    rows = [line.split() for line in listing.splitlines()[2:] if line.strip()]
    assert len(rows) == 1
    assert int(rows[0][3]) == round(width_mm / 25.4 * dpi) and int(rows[0][4]) == round(height_mm / 25.4 * dpi)
    assert out["pixels"] == (int(rows[0][3]), int(rows[0][4]))
    if shutil.which("pdftotext"):  # the model card's sha256 is on the page, as text
        text = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
        assert "ab12" * 16 in text.replace("\n", "")


def test_the_png_has_the_print_pixels_and_upscaling_keeps_a_smooth_design_smooth(tmp_path):
    pdf, png = tmp_path / "mask.pdf", tmp_path / "mask.png"
    page.print_pdf(smooth_design(), 180, 90, 300, str(pdf), str(png), "0" * 64)
    image = Image.open(png)
    assert image.size == (round(180 / 25.4 * 300), round(90 / 25.4 * 300))
    assert image.info["dpi"][0] == pytest.approx(300, abs=0.5)
    a = np.asarray(image).astype(np.int16)
    # Nearest-neighbour upscaling by ~16x would leave steps of a design pixel's difference (~2-5 levels) at
    # every 16th column and zeros between; bicubic spreads them: no neighbour step above 2 levels.
    assert np.abs(np.diff(a[a.shape[0] // 2, :, 0])).max() <= 2


def test_designs_of_every_layout_are_accepted_and_bad_sizes_refused(tmp_path):
    for design in (torch.rand(3, 8, 16), torch.rand(1, 3, 8, 16), (np.random.rand(8, 16, 3) * 255).astype(np.uint8)):
        assert page.to_uint8_image(design).shape == (8, 16, 3)
    with pytest.raises(ValueError, match="print size"):
        page.print_pdf(torch.rand(3, 8, 16), 0, 90, 300, str(tmp_path / "a.pdf"), str(tmp_path / "a.png"), "x")
