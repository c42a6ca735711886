"""`maskgan print`: universal design N of an export or a run as a page at physical size, and a PNG beside it;
with --for photo.jpg, the design a conditional generator makes for the person in the photo, from latent N."""

from __future__ import annotations

from cli.args import DPI_RANGE, PRINT_MM_RANGE


def print_design(a) -> None:
    from data_loader import ranges
    from maskgan.design import page
    from maskgan.reporting import printing
    from tune import sample

    ranges.check("--width-mm", a.width_mm, PRINT_MM_RANGE)
    ranges.check("--height-mm", a.height_mm, PRINT_MM_RANGE)
    ranges.check("--dpi", a.dpi, DPI_RANGE, integer=True)
    page.png_beside(a.out)  # refuse a bad --out before loading anything
    if a.design_file:
        return _print_file(a, printing)
    if a.source is None or a.design is None:
        raise page.PrintError("print needs --run URI with --design N, or --design-file PNG")
    src = sample.open_source(a.source)
    if src.card_sha256 is not None:
        sha, of = src.card_sha256, "model card"
    else:  # a run that was never exported: name the checkpoint's weights instead, and say so on the page
        from maskgan.run import checkpoints

        # meta.json's sha256 of state.pt, which read_checkpoint just verified against the bytes it loaded
        sha, of = checkpoints.read_meta(src.checkpoint)["sha256"], "checkpoint state.pt (no export)"
    spec = _spec(a, sha, of)
    if a.for_photo:
        out = printing.print_for_person(src.state, src.checkpoint, a.for_photo, a.design, spec)
        what = f"the design for {a.for_photo} from latent {a.design}"
    else:
        out = printing.print_universal(src.state, src.checkpoint, a.design, spec)
        what = f"universal design {a.design}"
    w, h = out["pixels"]
    print(f"wrote {out['pdf']} ({a.width_mm:g} x {a.height_mm:g} mm, {w} x {h} px at {a.dpi} dpi) and {out['png']}: "
          f"{what} of {src.checkpoint.uri}; {of} sha256 {sha}")


def _print_file(a, printing) -> None:
    """A design file as it is (read by the one design-file reader: transparency prints as white paper)."""
    import hashlib

    from maskgan.design import design_file, page

    if a.source is not None or a.design is not None or a.for_photo:
        raise page.PrintError("--design-file prints that file; it does not take --run, --design or --for")
    design, data = design_file.read(a.design_file)
    sha = hashlib.sha256(data).hexdigest()
    out = page.print_design(design, _spec(a, sha, "design file"), note=a.design_file.rsplit("/", 1)[-1])
    w, h = out["pixels"]
    print(f"wrote {out['pdf']} ({a.width_mm:g} x {a.height_mm:g} mm, {w} x {h} px at {a.dpi} dpi) and {out['png']}: "
          f"{a.design_file}; design file sha256 {sha}")


def _spec(a, sha256_text: str, sha256_of: str):
    """The page the flags ask for: --width-mm x --height-mm at --dpi into --out, naming the sha256 given."""
    from maskgan.design.page import PrintSpec

    return PrintSpec(a.width_mm, a.height_mm, a.dpi, a.out, sha256_text, sha256_of, stretch=a.stretch)
