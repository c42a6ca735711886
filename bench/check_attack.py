"""A design made for one person against one zoo model, tried on with `maskgan check`'s own path: how much less
alike than a plain mask it makes the attacked model (white-box) and every other fetched zoo model (held-out).

    python -m bench.check_attack [--against faceplugin] [--steps 30] [--out DIR]

The person: scikit-image's astronaut, three photos (the photo, two crops at other exposures, one mirrored; the
tests' own variants). The design: maskgan.check.tryon.attack (Adam on the design through the try-on's wearing
path, training transforms). Scored: maskgan.check.runner on held-out draws, no crowd (similarities only). Needs
the dlib extra and `maskgan recognizers fetch`. The last line is JSON.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time

from cli.args import ranged


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m bench.check_attack", description=__doc__.split("\n\n")[0])
    p.add_argument("--against", default="faceplugin", help="the zoo model the design is made against")
    p.add_argument("--steps", type=ranged(int, "[1, 10000]"), default=30, help="optimiser steps (default: 30)")
    p.add_argument("--out", default=None, help="folder for the person's photos and check.html (default: a temp dir)")
    a = p.parse_args(argv)
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "maskgan"))
    from check_photos import astronaut, save, variants  # the tests' photos: installed packages only

    from maskgan.check import photos, recognisers, runner, tryon
    from maskgan.models.zoo import ZOO_NAMES, registry

    out = a.out or tempfile.mkdtemp(prefix="bench-check-")
    save(os.path.join(out, "unmasked"), variants(astronaut()))
    faces = photos.read_unmasked(out, log=lambda *_: None).faces
    model = registry.build(a.against)
    t0 = time.perf_counter()
    design = tryon.attack(faces, model, steps=a.steps)
    seconds = time.perf_counter() - t0
    recs = [recognisers.zoo(model)] + [recognisers.build(n) for n in ZOO_NAMES if n != a.against]
    source = runner.DesignSource(f"made against {a.against}", "bench.check_attack", [a.against])
    checked = runner.check(runner.Request(out, recs, designs={"design": design}, source=source), log=print)
    runner.write(checked, out)
    rows = {r.name: {"role": r.role, **{g.group: round(g.mean_score, 4) for g in r.groups}}
            for r in checked.report.recognisers}
    for name, row in rows.items():
        print(f"{name:11s} {row['role']:9s} design {row['try-on/design']:.3f}  plain mask {row['try-on/plain mask']:.3f}")
    result = {"against": a.against, "steps": a.steps, "attack_s": round(seconds, 1), "cosine": rows,
              "date": datetime.date.today().isoformat(), "out": out}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
