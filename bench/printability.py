"""Printability against protection: train the laptop recipe at several (tv_weight, nps_weight) points and
evaluate each, printing the universal designs' TV, NPS and test dodging next to original_mask's.

    python -m bench.printability [--root demo_out] [--points 0.3:0.5 3:5] [--epochs 8] [--universal-k 4]
                                 [--eot] [--out /tmp/printability]

--root is a `make demo` output folder (its data, projector and recogniser are reused). Each point is one run of
`maskgan.training.train.fit(recipes.debug_cpu(root))` with those weights under --out, on a local Ray (2 CPUs unless
RAY_ADDRESS names a cluster), then `runner.evaluate_run`. The figures in docs/printing.md come from
`python -m bench.printability --points 0.3:0.5 3:5` on a 2-core CPU machine. Each line also gives the robustness
robustness figure: rank-1 of the universal designs printed and photographed under HELD-OUT transforms, against
original_mask's (the bar: >= 20 points lower). The last line is JSON for scripts.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import time

from cli.args import ranged


def point(text: str) -> tuple[float, float]:
    from data_loader import ranges

    try:
        tv, nps = (float(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected TV_WEIGHT:NPS_WEIGHT, e.g. 0.3:0.5") from None
    for name, v in (("tv_weight", tv), ("nps_weight", nps)):
        try:
            ranges.check(name, v, "[0, 1000]")
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return tv, nps


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="python -m bench.printability")
    p.add_argument("--root", default="demo_out", help="a `make demo` output folder (data, projector.pt, "
                   "recognizer.pt); default demo_out")
    p.add_argument("--points", nargs="+", type=point, default=[(0.3, 0.5), (3.0, 5.0)],
                   help="TV_WEIGHT:NPS_WEIGHT pairs, each in [0, 1000] (default: 0.3:0.5 3:5)")
    p.add_argument("--epochs", type=ranged(int, "[1, 100000]"), default=8,
                   help="epochs per run, integer in [1, 100000] (default 8, the demo's)")
    p.add_argument("--universal-k", type=ranged(int, "[1, 1000]"), default=4,
                   help="universal designs scored, integer in [1, 1000] (default 4, the demo's)")
    p.add_argument("--cell-px", type=ranged(int, "[1, 64]"), default=None,
                   help="model.cell_px, integer in [1, 64] (default: the recipe's, 8; 1 is the paper's per-pixel fc3)")
    p.add_argument("--g-lr", type=ranged(float, "(0, 10]"), default=None,
                   help="objective.g_lr, in (0, 10] (default: the recipe's, 0.1)")
    p.add_argument("--eot", action="store_true", help="train with EOT (physical.enabled: every generated face "
                   "printed and photographed through random transforms; default off, as the recipe)")
    p.add_argument("--out", default="/tmp/printability", help="where the runs go (default /tmp/printability)")
    a = p.parse_args(argv)
    from data_loader.ray_session import ensure_ray
    from maskgan.config import recipes
    from maskgan.reporting import runner
    from maskgan.training import train

    ensure_ray(None, print)
    root = os.path.abspath(a.root)
    rows = []
    for tv_w, nps_w in a.points:
        t0 = time.time()
        base = recipes.debug_cpu(root)
        cfg = base.replace(
            train={"storage": os.path.abspath(a.out), "name": f"tv{tv_w:g}-nps{nps_w:g}-{int(t0)}", "epochs": a.epochs},
            objective={"tv_weight": tv_w, "nps_weight": nps_w, "g_lr": a.g_lr or base.objective.g_lr},
            model={"cell_px": a.cell_px or base.model.cell_px}, physical={"enabled": a.eot})
        result = train.fit(cfg, log=lambda *_: None)
        report = runner.evaluate_run(result.run_uri, log=lambda *_: None, universal_k=a.universal_k)
        far = report["fars"][0]
        uni, orig = report["rows"]["universal"]["test"], report["rows"]["original_mask"]["test"]
        pr = report["printability"]["rows"]
        row = {"tv_weight": tv_w, "nps_weight": nps_w, "cell_px": cfg.model.cell_px, "g_lr": cfg.objective.g_lr, "universal_tv": pr["universal"]["tv"],
               "universal_nps": pr["universal"]["nps"], "noise_tv": pr["noise"]["tv"], "noise_nps": pr["noise"]["nps"],
               "universal_dodging": uni["mean"][f"dodging@{far}"],
               "original_mask_dodging": orig["verification"]["dodging"][far],
               "universal_top_share_worst": uni["worst"]["top_share"], "eot": a.eot,
               "original_mask_rank1": orig["verification"]["rank1"],
               "physical_rank1": report["rows"]["universal_physical"]["test"]["mean"]["rank1"],
               "physical_dodging": report["rows"]["universal_physical"]["test"]["mean"][f"dodging@{far}"],
               "seconds": round(time.time() - t0),
               "run": result.run_uri}
        rows.append(row)
        print(f"cell {cfg.model.cell_px} g_lr {cfg.objective.g_lr:g} tv {tv_w:g} nps {nps_w:g}: universal TV {row['universal_tv']:.3f} NPS {row['universal_nps']:.3f} "
              f"(noise {row['noise_tv']:.3f} / {row['noise_nps']:.3f}); test dodging universal "
              f"{row['universal_dodging']:.1%} vs original_mask {row['original_mask_dodging']:.1%}; worst top id "
              f"share {row['universal_top_share_worst']:.0%}; held-out physical: rank-1 {row['physical_rank1']:.1%} vs "
              f"original_mask {row['original_mask_rank1']:.1%}, dodging {row['physical_dodging']:.1%} "
              f"({row['seconds']} s)", flush=True)
    out = {"date": datetime.date.today().isoformat(), "eot": a.eot, "points": rows}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
