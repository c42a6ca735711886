"""Screenshot a page in headless Chromium: `python -m maskgan.reporting.pages.screenshot PAGE.html OUT.png`.

`make screenshots` makes the README's two images (docs/img/report_page.png, docs/img/index_page.png) by running
the page tests with MASKGAN_SCREENSHOT_DIR=docs/img: the same tiny run and fake sweep the tests open.
"""

from __future__ import annotations

import argparse
import io
import os
import sys

from maskgan.reporting.pages.browser import Chromium

README_WIDTH = 1400
README_HEIGHT = 1500  # CSS pixels from the top: the part of a page worth a README figure


def compact_png(png: bytes, colours: int = 128) -> bytes:
    """A page screenshot as a palette PNG: text and flat colours survive, the file shrinks several times."""
    from PIL import Image

    img = Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=colours, method=Image.Quantize.MEDIANCUT)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def save_readme_png(visit, out: str, max_height: int = README_HEIGHT) -> None:
    """The top of an open page, compacted, at `out` (a local path)."""
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "wb") as f:
        f.write(compact_png(visit.screenshot(max_height=max_height)))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m maskgan.reporting.pages.screenshot", description=__doc__.splitlines()[0])
    p.add_argument("page", help="a local .html file (report.html, index.html)")
    p.add_argument("out", help="the PNG to write")
    p.add_argument("--width", type=int, default=README_WIDTH)
    p.add_argument("--max-height", type=int, default=README_HEIGHT)
    args = p.parse_args(argv)
    if not os.path.isfile(args.page):
        print(f"error: {args.page}: no such file", file=sys.stderr)
        return 2
    with Chromium(width=args.width) as browser:
        visit = browser.open("file://" + os.path.abspath(args.page))
        save_readme_png(visit, args.out, args.max_height)
        for e in visit.console_errors:
            print(f"warning: the page logged: {e}", file=sys.stderr)
        visit.close()
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
