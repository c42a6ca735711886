"""`maskgan palette chart|fit`: the printable colour chart, and a photo of the printed chart read back into a palette."""

from __future__ import annotations

from cli.args import COLOURS_RANGE


def chart(a) -> None:
    from maskgan.design import palette

    pal = palette.load(a.palette)
    palette.chart_pdf(pal, a.out)
    print(f"wrote {a.out}: {len(pal.colours)} colours of palette {pal.name!r} on an A4 landscape page; print it at "
          f"100 % on the mask's material, photograph it, then: maskgan palette fit --scan photo.jpg "
          f"--colours {len(pal.colours)} --out palette.json")


def fit(a) -> None:
    from data_loader import ranges
    from maskgan.design import palette

    ranges.check("--colours", a.colours, COLOURS_RANGE, integer=True)
    pal = palette.fit_scan(a.scan, a.colours)
    palette.save(pal, a.out)
    print(f"wrote {a.out}: {len(pal.colours)} colours read from {a.scan} (calibrated)")
