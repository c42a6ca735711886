"""A sweep's index.html in a real headless Chromium, from a fake sweep folder (three trials' rows, their runs'
meta.json metrics, best-design thumbnails and report pages): no Ray, no training. Also written to an S3 prefix
(moto's server) and opened from a copy of that prefix, which is what "works from a bucket" means for a static
page. Skipped when chromium is absent, except in CI (CI=true), where that is a failure."""

from __future__ import annotations

import json
import os

import pytest

from data_loader import storage
from maskgan.config import recipes
from maskgan.reporting.pages import browser, screenshot
from tune.index_page import write_index_page
from tune.space import parse_space

SHOTS = os.environ.get("MASKGAN_SCREENSHOT_DIR")  # `make screenshots`: the README's images
OBJECTIVES = {"a1": 0.42, "b2": 0.05, "c3": 0.21}


@pytest.fixture(scope="module")
def chromium():
    if browser.find_chromium() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is required in CI (make system-packages installs Debian's chromium)")
        pytest.skip("chromium not installed")
    with browser.Chromium(width=screenshot.README_WIDTH, height=900) as b:
        yield b


def _design_png(seed: int) -> bytes:
    """A design as a trial's run would hold it: drawn by a freshly built generator (seeded)."""
    import torch

    from maskgan.design import wearing
    from maskgan.run import checkpoints

    torch.manual_seed(seed)
    gen = checkpoints.generator_from_arch({"generator": "fc3", "latent_dim": 16, "hidden": 64, "size": 32,
                                         "design_hw": [16, 32]}).eval()
    return wearing.design_png(wearing.universal_designs(gen, 16, k=1, seed=seed)[0])


def fake_sweep(loc: storage.Location):
    """Three trials as sweep.run leaves them: rows from results.collect's shape, run folders under runs/."""
    space = parse_space({"name": "fake", "base": recipes.debug_cpu("x").to_dict(),
                         "grid": {"objective.experiment": ["exp0", "exp1", "exp2"]}})
    runs, rows = loc.join("runs"), []
    for i, (tid, objective) in enumerate(OBJECTIVES.items()):
        run = runs.join(tid)
        for epoch in range(3):
            meta = {"epoch": epoch, "metrics": {"acc/val/generated": objective + 0.1 * (2 - epoch),
                                                "acc/val/unmasked": 0.8, "train/gen_ce": 1.0 + epoch * (i + 1)}}
            storage.write_text(run.join(f"checkpoint_{epoch:06d}", "meta.json"), json.dumps(meta))
        storage.write_bytes(run.join("designs/best.png"), _design_png(i))
        storage.write_text(run.join("report.html"), f"<!doctype html><title>{tid}</title><p>report of {tid}")
        rows.append({"trial": tid, "status": "completed", "objective.experiment": f"exp{i}", "epochs": 3,
                     "objective": objective, "guard_ok": True, "pbt_from": "a1@2" if tid == "c3" else None,
                     "generated/val": objective, "generated/val/ci95": [objective / 2, objective * 1.5],
                     "generated/test": objective, "original_mask/test": 0.7, "unmasked/test": 0.9,
                     "diversity": 0.01 * (i + 1), "run": run.uri, "illustrative_only": True})
    return space, rows, runs


def check_index(chromium, folder, tmp_path, shot_name: str, readme_png: str | None = None):
    page = os.path.join(folder, "index.html")
    visit = chromium.open("file://" + os.path.abspath(page))
    assert visit.console_errors == []
    assert browser.outside(visit.requests, folder) == []
    assert visit.evaluate(browser.BROKEN_IMAGES_JS) == []
    assert visit.evaluate("document.querySelectorAll('#trials tbody tr').length") == len(OBJECTIVES)
    assert visit.evaluate("document.querySelectorAll('img.thumb').length") == len(OBJECTIVES)
    assert visit.evaluate("document.querySelectorAll('.curves img').length") == 3
    links = visit.evaluate("[...document.querySelectorAll('#trials a')].map(a => a.getAttribute('href'))")
    assert links == [f"runs/{t}/report.html" for t in sorted(OBJECTIVES)]
    assert all(os.path.exists(os.path.join(folder, link)) for link in links)
    column = visit.evaluate("[...document.querySelectorAll('#trials th')]"
                            ".findIndex(th => th.textContent === 'objective')")
    assert column >= 0
    diversity = visit.evaluate("[...document.querySelectorAll('#trials th')].findIndex(th => th.textContent === "
                               "'diversity')")
    cells = visit.evaluate(f"[...document.querySelectorAll('#trials tbody tr')].map(r => r.cells[{diversity}]"
                           ".textContent)")
    assert diversity >= 0 and sorted(cells) == ["0.01", "0.02", "0.03"], cells  # the universal designs' pixels
    order = f"[...document.querySelectorAll('#trials tbody tr')].map(r => r.cells[0].textContent)"
    click = f"document.querySelectorAll('#trials th')[{column}].click()"
    visit.evaluate(click)
    assert visit.evaluate(order) == sorted(OBJECTIVES, key=OBJECTIVES.get)
    visit.evaluate(click)
    assert visit.evaluate(order) == sorted(OBJECTIVES, key=OBJECTIVES.get, reverse=True)
    visit.evaluate(click)
    shot = visit.screenshot()
    assert shot[:8] == b"\x89PNG\r\n\x1a\n"
    (tmp_path / shot_name).write_bytes(shot)
    if readme_png:
        screenshot.save_readme_png(visit, readme_png)
    visit.close()


def test_index_page_lists_every_trial_sorts_by_objective_and_loads_only_its_own_folder(tmp_path, chromium):
    folder = tmp_path / "sweeps" / "fake"
    loc = storage.resolve(str(folder))
    space, rows, runs = fake_sweep(loc)
    write_index_page(loc, rows, space, runs)
    check_index(chromium, str(folder), tmp_path, "index.png",
                os.path.join(SHOTS, "index_page.png") if SHOTS else None)


def test_index_page_written_to_a_bucket_works_from_a_copy_of_the_prefix(bucket, tmp_path, chromium):
    loc = storage.resolve(f"s3://{bucket}/sweeps/fake")
    space, rows, runs = fake_sweep(loc)
    write_index_page(loc, rows, space, runs)
    copy = tmp_path / "copy"
    for rel, _ in storage.walk_files(loc):  # what `aws s3 sync` of the prefix would bring down
        (copy / rel).parent.mkdir(parents=True, exist_ok=True)
        (copy / rel).write_bytes(storage.read_bytes(loc.join(rel)))
    check_index(chromium, str(copy), tmp_path, "index_from_bucket.png")


def test_every_link_and_image_of_the_index_page_is_relative_to_its_folder(tmp_path):
    """Without a browser too: a page that names an absolute path or a host would break from a bucket copy."""
    from html.parser import HTMLParser

    loc = storage.resolve(str(tmp_path / "sweeps" / "fake"))
    space, rows, runs = fake_sweep(loc)
    page = write_index_page(loc, rows, space, runs)
    targets = []

    class Links(HTMLParser):
        def handle_starttag(self, tag, attrs):
            targets.extend(v for k, v in attrs if k in ("src", "href"))

    Links().feed(storage.read_text(page))
    assert len(targets) >= 3 + 3 + 3  # thumbnails, report links, curves
    assert [t for t in targets if ":" in t or t.startswith("/") or ".." in t] == []
    assert all(storage.exists(loc.join(t)) for t in targets if t != "sweep.json" and not t.startswith("results"))
