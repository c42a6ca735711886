"""report.html in a real headless Chromium: a tiny run (three checkpoints saved from freshly built models, no Ray)
evaluated by `maskgan evaluate`'s own function, which writes the page; then opened from its folder with
JavaScript on. Skipped when chromium is absent, except in CI (CI=true), where that is a failure."""

from __future__ import annotations

import os

import pytest
import torch

from maskgan.reporting.pages import browser, screenshot

SHOTS = os.environ.get("MASKGAN_SCREENSHOT_DIR")  # `make screenshots`: the README's images


@pytest.fixture(scope="module")
def chromium():
    if browser.find_chromium() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is required in CI (make system-packages installs Debian's chromium)")
        pytest.skip("chromium not installed")
    with browser.Chromium(width=screenshot.README_WIDTH, height=900) as b:
        yield b


def tiny_run(cfg, run_dir, epochs: int = 3):
    """Checkpoints of `epochs` epochs written by the one save function; the generator moves between them."""
    from data_loader import storage
    from maskgan.run import build, checkpoints
    from maskgan.training.objective import make_optimizers

    size = build.image_size(build.data_root(cfg))
    rec = build.load_recognizer(cfg.model.recognizer_weights, "cpu")
    torch.manual_seed(0)
    gen = checkpoints.generator_from_arch(checkpoints.arch(cfg, size))
    opts = make_optimizers(gen, rec.head, cfg.objective)
    for epoch in range(epochs):
        with torch.no_grad():
            for p in gen.parameters():
                p.add_(torch.randn_like(p) * 0.3)
        folder = run_dir / f"checkpoint_{epoch:06d}"
        folder.mkdir(parents=True)
        metrics = {"epoch": epoch, "train/gen_ce": 1.0 + 0.4 * epoch, "train/head_loss": 2.0 - 0.3 * epoch,
                   "acc/val/generated": 0.5 - 0.1 * epoch, "acc/val/unmasked": 0.8, "train/images_per_s": 9.0}
        checkpoints.save_checkpoint(str(folder), cfg=cfg, size=size, epoch=epoch,
                                    trained=checkpoints.Trained(gen, rec.head, opts.generator, opts.head),
                                    metrics=metrics)
    return storage.resolve(str(run_dir))


def test_report_page_shows_designs_tables_and_curves_with_nothing_from_outside_its_folder(small_cfg, tmp_path,
                                                                                          chromium):
    from maskgan.design import wearing
    from maskgan.reporting import runner

    run = tiny_run(small_cfg, tmp_path / "runs" / "t")
    report = runner.evaluate_run(run.uri, log=lambda *_: None, universal_k=3, defender_steps=5)  # short defender
    page = tmp_path / "runs" / "t" / "report.html"
    assert page.exists() and (page.parent / "report.md").exists()
    assert sorted(p.name for p in (page.parent / "designs").glob("epoch_*.png")) == \
        ["epoch_1.png", "epoch_2.png", "epoch_3.png"]

    visit = chromium.open(page.as_uri())
    assert visit.console_errors == []
    assert browser.outside(visit.requests, str(page.parent)) == []
    assert visit.evaluate(browser.BROKEN_IMAGES_JS) == []
    srcs = visit.evaluate("[...document.images].map(i => i.getAttribute('src'))")
    assert sum(s.startswith("designs/universal_") and s.endswith("_faces.png") for s in srcs) == 3
    assert {"curves/losses.png", "curves/val.png"} <= set(srcs)
    text = visit.evaluate("document.body.innerText")
    for row in wearing.ROWS:
        assert row in text
    assert f"{report['accuracy']['generated']['test']:.1%}" in text  # the table shows the report's numbers
    assert "checkpoint sha256" in text and "latent_dim" in text  # provenance and config
    # each design again at printed size: 90 mm high at its own W:H, drawn at CSS's 96 px per inch
    from PIL import Image

    from maskgan.design import page as print_page  # not `page`: that name is the report.html path above

    w_px, h_px = Image.open(page.parent / "designs" / "universal_0.png").size
    w_mm, h_mm = print_page.panel_size((h_px, w_px))
    printed = visit.evaluate("[...document.querySelectorAll('img.printed')].map(i => "
                             "[i.getAttribute('src'), i.getBoundingClientRect().width, i.getBoundingClientRect().height])")
    assert [p[0] for p in printed] == [f"designs/universal_{i}.png" for i in range(3)]
    assert all(abs(p[1] - w_mm / 25.4 * 96) < 1 and abs(p[2] - h_mm / 25.4 * 96) < 1 for p in printed), printed
    assert f"{w_mm:g} × {h_mm:g} mm" in text and "maskgan print --from" in text

    # the slider steps back through the epochs: the shown frame changes and still loads
    last = visit.evaluate("document.getElementById('epoch-frame').getAttribute('src')")
    assert last == "designs/epoch_3.png"
    shown = visit.evaluate("""new Promise(done => { const r = document.getElementById('epoch-slider'),
        img = document.getElementById('epoch-frame'); r.value = 0; r.dispatchEvent(new Event('input'));
        img.decode().then(() => done([img.getAttribute('src'), img.naturalWidth])); })""")
    assert shown[0] == "designs/epoch_1.png" and shown[1] > 0
    shot = visit.screenshot()
    (tmp_path / "report.png").write_bytes(shot)
    assert shot[:8] == b"\x89PNG\r\n\x1a\n"
    if SHOTS:  # the README's figure: the last epoch's frame, the top of the page
        visit.evaluate("const r = document.getElementById('epoch-slider'); r.value = r.max; "
                       "r.dispatchEvent(new Event('input'))")
        screenshot.save_readme_png(visit, os.path.join(SHOTS, "report_page.png"))
    visit.close()


def test_the_page_renders_what_evaluation_built_and_shows_report_mds_figures(small_cfg, tmp_path, monkeypatch):
    """designs.png and report.html come from the Report evaluation returned: the scored checkpoint is read once
    (to score it) and never again by the page; the page's results tables hold report.md's figures, row by row."""
    import html
    import re

    from maskgan.reporting import runner
    from maskgan.run import checkpoints

    run = tiny_run(small_cfg, tmp_path / "runs" / "t", epochs=1)
    reads, real = [], checkpoints.read_checkpoint
    monkeypatch.setattr(checkpoints, "read_checkpoint", lambda loc: reads.append(loc.uri) or real(loc))
    report = runner.evaluate_run(run.uri, log=lambda *_: None, universal_k=2, defender_steps=0)
    assert reads == [report["checkpoint"]]
    folder = tmp_path / "runs" / "t"
    assert (folder / "designs.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (folder / "designs" / "epoch_1.png").exists()
    page = (folder / "report.html").read_text()
    shown = {}  # the page's rows: first cell -> the figures (each cell's text before its small print)
    for tr in re.findall(r"<tr>(.*?)</tr>", page, re.S):
        cells = [html.unescape(re.sub(r"<span.*?</span>|<[^>]+>", "", c)).strip()
                 for c in re.findall(r"<td[^>]*>(.*?)</td>", tr, re.S)]
        if cells:
            shown.setdefault(cells[0], []).append(cells[1:])
    md = (folder / "report.md").read_text().splitlines()
    compared, results = 0, False  # inside report.md's accuracy table or a split's results table
    for line in md:
        if re.match(r"\| row \| (train|val|test|dodging@)", line):
            results = True
            continue
        results = results and line.startswith("|")
        if not results or set(line) <= set("|-"):
            continue
        cells = [c.strip() for c in line.strip("| ").split(" | ")]
        figures = [c.split(" [")[0].split(" (")[0].split(" vs ")[0] for c in cells[1:]]
        assert figures in shown.get(cells[0], []), (line, shown.get(cells[0]))
        compared += 1
    assert compared >= 2 * len(report["accuracy"])  # the accuracy table and a split's table, every row
