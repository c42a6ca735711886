"""`maskgan check`: parse what to check with, open the design's source, hand it to maskgan.check, print the
summary. Every refusal is one line and comes before anything is written."""

from __future__ import annotations

import hashlib


class CheckUsage(ValueError):
    user_error = True


def _design(a) -> tuple[dict, object]:
    """({label: design}, DesignSource) of --try-on; ({}, DesignSource or None) without it."""
    from maskgan.check.runner import DesignSource

    if a.design is not None and a.source is None:
        raise CheckUsage("--design N needs --run URI (the run or export it comes from)")
    if a.try_on and not a.design_file and a.design is None:
        raise CheckUsage("--try-on needs a design: --run URI --design N, or --design-file PNG")
    if a.design_file and a.design is not None:
        raise CheckUsage("give --design N (of --run) or --design-file PNG, not both")
    if not a.try_on and (a.design_file or a.design is not None):
        raise CheckUsage("--design/--design-file are tried on with --try-on; add it (or drop them)")
    attacked, src = None, None
    if a.source is not None:
        from maskgan.run import checkpoints
        from tune import sample

        src = sample.open_source(a.source)
        cfg = checkpoints.config_of(src.state)
        attacked = [cfg.model.recognizer_weights, *cfg.model.recognizers]
    if a.design_file:
        from maskgan.design import design_file

        design, data = design_file.read(a.design_file)
        label = a.design_file.rsplit("/", 1)[-1]
        return {label: design}, DesignSource(label, f"{a.design_file} (sha256 {hashlib.sha256(data).hexdigest()})",
                                             attacked)
    if a.design is not None:
        from maskgan.reporting import printing

        design, which = printing.universal_design(src.state, src.checkpoint, a.design)
        label = f"universal design {a.design}"
        return {label: design.unsqueeze(0)}, DesignSource(label, f"{src.checkpoint.uri}: {which}", attacked)
    return {}, (DesignSource("(the printed design)", a.source, attacked) if a.source else None)


def check(a) -> None:
    from maskgan.check import recognisers, runner

    designs, source = _design(a)
    if a.recognizers:
        recs, missing = [recognisers.build(n) for n in a.recognizers], []
    else:
        recs, missing = recognisers.available()
    req = runner.Request(a.folder, recs, crowd=a.crowd, designs=designs, source=source, missing=missing)
    checked = runner.check(req)
    paths = runner.write(checked, a.out or a.folder)
    for line in checked.report.summary:
        print(line)
    print(f"wrote {paths[0]} and {paths[1]}")
