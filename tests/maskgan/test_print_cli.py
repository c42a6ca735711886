"""`maskgan palette chart|fit` and `maskgan print`, through the CLI: fast, no Ray (the run is a checkpoint written
directly with checkpoints.save_checkpoint from a freshly built generator, not trained: printing only reads it)."""

from __future__ import annotations

import hashlib
import json
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image
from test_palette import photograph  # the synthetic camera: tilt, blur, exposure, noise
from test_printing import needs_poppler

from cli.main import main
from data_loader import storage
from maskgan import config
from maskgan.design import page, palette, wearing
from maskgan.models.recognizer import Head
from maskgan.run import checkpoints

SEED = 7  # train.seed of the tiny run: the universal designs' seed, so not the default 0 by accident


def cli(argv, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("maskgan: error: "), err
    return lines[0]


# ---- palette chart -> print -> photo -> palette fit -----------------------------------------------------------


@needs_poppler
@pytest.mark.parametrize("custom", [False, True], ids=["default-palette", "palette-file"])
def test_a_photographed_chart_is_fitted_back_to_its_palette(tmp_path, capsys, custom):
    pal = palette.DEFAULT
    argv = ["palette", "chart", "--out", tmp_path / "chart.pdf"]
    if custom:  # a 12-colour palette file: the chart shows ITS colours, and fit reads 12 back
        pal = palette.Palette("mine", tuple(palette.DEFAULT.colours[i] for i in range(0, 30, 5)) + (
            (200, 40, 40), (40, 200, 40), (40, 40, 200), (220, 220, 60), (60, 200, 220), (150, 60, 180)), False)
        palette.save(pal, str(tmp_path / "mine.json"))
        argv += ["--palette", tmp_path / "mine.json"]
    code, out, _ = cli(argv, capsys)
    assert code == 0 and f"--colours {len(pal.colours)}" in out
    # The printer: the PDF rendered at 4 px/mm; the camera: a tilted, blurred, under-exposed, noisy photo.
    subprocess.run(["pdftoppm", "-r", str(4 * 25.4), "-png", "-singlefile", str(tmp_path / "chart.pdf"),
                    str(tmp_path / "page")], check=True, capture_output=True)
    page = np.array(Image.open(tmp_path / "page.png").convert("RGB"))  # writable: the camera is torch
    Image.fromarray(photograph(page, seed=5, tilt=0.05, blur=1.8, gain=0.85)).save(tmp_path / "photo.jpg",
                                                                                    quality=92)
    code, out, _ = cli(["palette", "fit", "--scan", tmp_path / "photo.jpg", "--colours", len(pal.colours),
                        "--out", tmp_path / "fitted.json"], capsys)
    assert code == 0 and "fitted.json" in out
    fitted = palette.load(str(tmp_path / "fitted.json"))
    err = np.abs(np.array(fitted.colours, float) - np.array(pal.colours, float))
    assert err.max() <= 6 and err.mean() <= 2, err  # measured: max 1, mean 0.2 levels of 255
    assert json.loads((tmp_path / "fitted.json").read_text())["calibrated"] is True


def test_palette_errors_name_the_file_in_one_line(tmp_path, capsys):
    Image.fromarray(np.full((600, 800, 3), 230, np.uint8)).save(tmp_path / "blank.png")
    code, _, err = cli(["palette", "fit", "--scan", tmp_path / "blank.png", "--out", tmp_path / "p.json"], capsys)
    line = one_line_error(err)
    assert code == 2 and "blank.png" in line and "fiducials" in line
    (tmp_path / "notes.jpg").write_text("not a photo")
    code, _, err = cli(["palette", "fit", "--scan", tmp_path / "notes.jpg", "--out", tmp_path / "p.json"], capsys)
    assert code == 2 and "notes.jpg: not an image" in one_line_error(err)
    code, _, err = cli(["palette", "fit", "--scan", tmp_path / "gone.jpg", "--out", tmp_path / "p.json"], capsys)
    assert code == 2 and "gone.jpg" in one_line_error(err)
    code, _, err = cli(["palette", "fit", "--scan", tmp_path / "blank.png", "--colours", 0,
                        "--out", tmp_path / "p.json"], capsys)
    assert code == 2 and one_line_error(err) == "maskgan: error: --colours: must be an integer in [1, 200], got 0"
    assert not (tmp_path / "p.json").exists()
    (tmp_path / "colours.json").write_text('{"format": "maskgan-palette/1", "colours": [[1, 2]]}')
    code, _, err = cli(["palette", "chart", "--palette", tmp_path / "colours.json", "--out", tmp_path / "c.pdf"], capsys)
    assert code == 2 and "colours.json" in one_line_error(err) and not (tmp_path / "c.pdf").exists()


# ---- maskgan print ---------------------------------------------------------------------------------------------


@pytest.fixture
def tiny_run(tmp_path):
    """A run folder with one verified checkpoint of an untrained fc3 generator (32x64 mask-space designs)."""
    cfg = config.from_dict({"data": {"uri": str(tmp_path / "no-data")},
                            "train": {"seed": SEED, "storage": str(tmp_path), "name": "run"}})
    ckpt = tmp_path / "run" / "checkpoint_000000"
    ckpt.mkdir(parents=True)
    torch.manual_seed(0)
    generator = checkpoints.generator_from_arch(checkpoints.arch(cfg, 64))
    trained = checkpoints.Trained(generator, Head(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4)),
                                  torch.optim.Adam(generator.parameters()), None)
    checkpoints.save_checkpoint(str(ckpt), cfg=cfg, size=64, epoch=2, trained=trained,
                                metrics={"acc/val/generated": 0.1, "acc/val/unmasked": 0.9})
    return tmp_path / "run"


def page_and_image(pdf) -> tuple[tuple[float, float], tuple[int, int], str]:
    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True).stdout
    w_pt, h_pt = (float(v) for v in info.split("Page size:")[1].split("pts")[0].split(" x "))
    listing = subprocess.run(["pdfimages", "-list", str(pdf)], capture_output=True, text=True, check=True).stdout
    rows = [line.split() for line in listing.splitlines()[2:] if line.strip()]
    assert len(rows) == 1, listing
    text = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    return (w_pt, h_pt), (int(rows[0][3]), int(rows[0][4])), text


@needs_poppler
@pytest.mark.parametrize("width_mm, height_mm, dpi, extra", [(180, 90, 300, []), (90, 90, 150, ["--stretch"])])
def test_print_from_a_run_is_the_scored_design_at_physical_size(tmp_path, capsys, tiny_run, width_mm, height_mm,
                                                                dpi, extra):
    pdf = tmp_path / "out" / "mask.pdf"
    code, out, _ = cli(["print", "--run", tiny_run, "--design", 3, "--width-mm", width_mm, "--height-mm", height_mm,
                        "--dpi", dpi, "--out", pdf, *extra], capsys)
    assert code == 0, out
    (w_pt, h_pt), (w_px, h_px), text = page_and_image(pdf)
    assert w_pt == pytest.approx(width_mm / 25.4 * 72, rel=0.01)
    assert h_pt == pytest.approx(height_mm / 25.4 * 72, rel=0.01)
    assert (w_px, h_px) == (round(width_mm / 25.4 * dpi), round(height_mm / 25.4 * dpi))
    png = Image.open(tmp_path / "out" / "mask.png")
    assert png.size == (w_px, h_px)
    # No export: the page names the checkpoint's state.pt by its sha256, and says that is what it is.
    state_sha = hashlib.sha256((tiny_run / "checkpoint_000000" / "state.pt").read_bytes()).hexdigest()
    flat = text.replace("\n", " ")
    assert state_sha in flat.replace(" ", "") and "state.pt (no export)" in flat
    assert "universal design 3 of 8 (seed 7)" in flat
    # What is printed is what evaluation scored as universal/3: its seeded designs, upscaled, pixel for pixel.
    state = checkpoints.read_checkpoint(storage.resolve(str(tiny_run / "checkpoint_000000")))
    gen = checkpoints.generator_from_checkpoint(state, "tiny").eval()
    scored = wearing.universal_designs(gen, state["arch"]["latent_dim"], wearing.UNIVERSAL_K, seed=SEED)[3]
    want = page.upscale(page.to_uint8_image(scored), w_px, h_px)
    assert np.array_equal(np.asarray(png.convert("RGB")), want)
    other = page.upscale(page.to_uint8_image(
        wearing.universal_designs(gen, state["arch"]["latent_dim"], wearing.UNIVERSAL_K, seed=0)[3]), w_px, h_px)
    assert not np.array_equal(other, want)  # the seed matters: seed 0 would have printed another design


def test_print_takes_the_number_and_seed_of_universal_designs_from_the_report_that_scored_them(tmp_path, capsys,
                                                                                                tiny_run):
    ckpt = storage.resolve(str(tiny_run / "checkpoint_000000"))
    (tiny_run / "report.json").write_text(json.dumps({"checkpoint": ckpt.uri, "universal_k": 4, "universal_seed": 3}))
    argv = ["print", "--run", tiny_run, "--width-mm", 180, "--height-mm", 90, "--dpi", 72, "--out", tmp_path / "m.pdf"]
    code, _, err = cli([*argv, "--design", 4], capsys)
    assert code == 2 and "design 4: evaluation scores 4 universal designs, numbered 0..3" in one_line_error(err)
    code, out, _ = cli([*argv, "--design", 1], capsys)
    assert code == 0 and "warning" not in out
    state = checkpoints.read_checkpoint(ckpt)
    gen = checkpoints.generator_from_checkpoint(state, "tiny").eval()
    scored = wearing.universal_designs(gen, state["arch"]["latent_dim"], 4, seed=3)[1]
    png = np.asarray(Image.open(tmp_path / "m.png").convert("RGB"))
    assert np.array_equal(png, page.upscale(page.to_uint8_image(scored), *png.shape[1::-1]))
    # A report of another checkpoint did not score what is printed: said so; evaluation's defaults are used.
    (tiny_run / "report.json").write_text(json.dumps({"checkpoint": "elsewhere", "universal_k": 4}))
    code, out, _ = cli([*argv, "--design", 7], capsys)
    assert code == 0 and "warning:" in out and "scored elsewhere" in out


@needs_poppler
def test_print_from_an_export_carries_the_model_card_sha256(tmp_path, capsys, tiny_run):
    from data_loader import storage
    from tune import export

    # The run's own report of this checkpoint (export ships it instead of evaluating again; the tiny run has no
    # data or projector to evaluate with).
    ckpt_uri = storage.resolve(str(tiny_run)).join("checkpoint_000000").uri
    (tiny_run / "report.json").write_text(json.dumps({"checkpoint": ckpt_uri, "universal_k": 8,
                                                      "universal_seed": SEED}))
    export.export(str(tiny_run), str(tmp_path / "exported"), log=lambda *_: None)
    card_sha = hashlib.sha256((tmp_path / "exported" / "model_card.json").read_bytes()).hexdigest()
    code, out, _ = cli(["print", "--run", tmp_path / "exported", "--design", 0, "--width-mm", 120, "--height-mm", 60,
                        "--out", tmp_path / "mask.pdf"], capsys)
    assert code == 0 and card_sha in out
    _, (w_px, _), text = page_and_image(tmp_path / "mask.pdf")
    assert w_px == round(120 / 25.4 * 300) and Image.open(tmp_path / "mask.png").size[0] == w_px
    assert "model card sha256" in text and card_sha in text.replace("\n", "") and "no export" not in text
    # An export whose model card is gone is unfinished: refused (the reader `sample` uses), nothing printed.
    (tmp_path / "exported" / "model_card.json").unlink()
    code, _, err = cli(["print", "--run", tmp_path / "exported", "--design", 0, "--width-mm", 120, "--height-mm", 60,
                        "--out", tmp_path / "again.pdf"], capsys)
    assert code == 2 and "unfinished export" in one_line_error(err) and not (tmp_path / "again.pdf").exists()


@pytest.mark.parametrize("flags, message", [
    (["--design", 8], "design 8: evaluation scores 8 universal designs, numbered 0..7"),
    (["--design", -1], "design -1: evaluation scores 8 universal designs, numbered 0..7"),
    (["--design", 0, "--width-mm", 90, "--height-mm", 90], "or pass --stretch"),
    (["--design", 0, "--dpi", 5], "--dpi: must be an integer in [72, 600], got 5"),
    (["--design", 0, "--width-mm", 0], "--width-mm: must be a finite number in [10, 500], got 0.0"),
], ids=["k-too-big", "k-negative", "aspect", "dpi", "width"])
def test_print_refusals_are_one_line(tmp_path, capsys, tiny_run, flags, message):
    size = [] if "--width-mm" in flags else ["--width-mm", 180, "--height-mm", 90]
    code, _, err = cli(["print", "--run", tiny_run, *size, *flags, "--out", tmp_path / "mask.pdf"], capsys)
    assert code == 2 and message in one_line_error(err)
    assert not (tmp_path / "mask.pdf").exists() and not (tmp_path / "mask.png").exists()


def test_print_from_something_else_names_it(tmp_path, capsys):
    code, _, err = cli(["print", "--run", tmp_path, "--design", 0, "--out", tmp_path / "mask.pdf"], capsys)
    assert code == 2 and str(tmp_path) in one_line_error(err)
