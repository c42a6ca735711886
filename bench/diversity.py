"""Designs that differ against protection: train the laptop recipe with and without the mode-seeking
term and print, for each, the universal designs' pixel diversity and their test dodging.

    python -m bench.diversity [--root demo_out] [--weights 0 0.03] [--epochs 8] [--universal-k 4]
                              [--generator fc3] [--out /tmp/diversity]

--root is a `make demo` output folder (data, projector.pt, recognizer.pt); when it has no data the demo's first
three steps make them there (40 synthetic identities, about a minute). Each weight is one run of
`maskgan.training.train.fit(recipes.debug_cpu(root))` with `objective.diversity_weight` set, on a local Ray (2 CPUs unless
RAY_ADDRESS names a cluster), then `runner.evaluate_run` without the defender (it does not change these
figures). The first weight is the baseline the others are compared with: the diversity bar is pixel diversity at
least 3x the baseline's with test dodging at most 5 points lower. With a conditional `--generator` (cond_fc3,
cond_conv) each line also gives the designs' pixel distance across people (one latent, the split's first 8
wearers) and the for_person row's test dodging. The last line is JSON for scripts.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import time

from cli.args import ranged
from data_loader import shards, storage
from data_loader.ray_session import ensure_ray
from maskgan import demo
from maskgan.config import GENERATORS, RunConfig, recipes
from maskgan.reporting import runner
from maskgan.training import train

BAR_RATIO, BAR_POINTS = 3.0, 0.05  # the diversity bar: diversity >= 3x the run without the term, dodging <= 5 points worse


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="python -m bench.diversity")
    p.add_argument("--root", default="demo_out", help="a `make demo` output folder; made there when it has no "
                   "data (default demo_out)")
    p.add_argument("--weights", nargs="+", type=ranged(float, "[0, 100]"), default=[0.0, 0.03],
                   help="objective.diversity_weight per run, each in [0, 100]; the first is the baseline "
                   "(default: 0 0.03)")
    p.add_argument("--epochs", type=ranged(int, "[1, 100000]"), default=8,
                   help="epochs per run, integer in [1, 100000] (default 8, the demo's)")
    p.add_argument("--universal-k", type=ranged(int, "[2, 1000]"), default=4,
                   help="universal designs scored, integer in [2, 1000] (default 4, the demo's)")
    p.add_argument("--generator", default="fc3", choices=GENERATORS,
                   help="model.generator of every run (default fc3, the recipe's; cond_*: designs per wearer)")
    p.add_argument("--out", default="/tmp/diversity", help="where the runs go (default /tmp/diversity)")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    a = parse_args(argv)
    os.environ.setdefault("MASKGAN_METRICS_FLUSH_S", "0")  # no Prometheus to wait for
    root = os.path.abspath(a.root)
    base = recipes.debug_cpu(root)
    if not storage.exists(storage.resolve(base.data.uri).join(shards.MANIFEST)):
        demo.prepare(base)
    ensure_ray(None, print)
    rows = []
    for weight in a.weights:
        row = train_and_measure(base, weight, a)
        rows.append(row)
        print_row(row)
    judge_against_baseline(rows)
    out = {"date": datetime.date.today().isoformat(), "generator": a.generator, "epochs": a.epochs,
           "universal_k": a.universal_k, "runs": rows}
    print(json.dumps(out))
    return out


def train_and_measure(base: RunConfig, weight: float, a: argparse.Namespace) -> dict:
    """One run at this diversity_weight, evaluated without the defender: its designs' diversity and dodging."""
    t0 = time.time()
    cfg = base.replace(train={"storage": os.path.abspath(a.out), "name": f"div{weight:g}-{int(t0)}",
                              "epochs": a.epochs}, objective={"diversity_weight": weight},
                       model={"generator": a.generator})
    result = train.fit(cfg, log=lambda *_: None)
    report = runner.evaluate_run(result.run_uri, log=lambda *_: None, universal_k=a.universal_k,
                                 defender_steps=0)
    far = report["fars"][0]
    uni, orig, div = (report["rows"]["universal"]["test"], report["rows"]["original_mask"]["test"],
                      report["diversity"]["test"])
    row = {"diversity_weight": weight, "pixel_diversity": div["pixel"], "feature_diversity": div["feature"],
           "distinct_identities": div["distinct_identities"]["mean"],
           "universal_dodging": uni["mean"][f"dodging@{far}"],
           "universal_dodging_worst": uni["worst"][f"dodging@{far}"],
           "dodging_spread": div["protection_spread"][f"dodging@{far}"],
           "original_mask_dodging": orig["verification"]["dodging"][far], "seconds": round(time.time() - t0),
           "run": result.run_uri}
    people = div.get("across_people")
    if people is not None:  # a conditional generator: its designs for different wearers, one latent
        row["across_people"] = people["pixel"]
        row["for_person_dodging"] = report["rows"]["for_person"]["test"]["mean"][f"dodging@{far}"]
    return row


def print_row(row: dict) -> None:
    people = "across_people" in row
    print(f"diversity_weight {row['diversity_weight']:g}: universal designs pixel diversity "
          f"{row['pixel_diversity']:.4f}, feature {row['feature_diversity']:.4f}, {row['distinct_identities']:.1f} "
          f"identities per probe; test dodging {row['universal_dodging']:.1%} (worst "
          f"{row['universal_dodging_worst']:.1%}, spread {row['dodging_spread']:.1%}) vs original_mask "
          f"{row['original_mask_dodging']:.1%} ({row['seconds']} s)"
          + (f"; across people {row['across_people']:.4f}, for_person dodging "
             f"{row['for_person_dodging']:.1%}" if people else ""), flush=True)


def judge_against_baseline(rows: list[dict]) -> None:
    """Each run after the first against the first (the baseline): the diversity bar, printed and added to its row."""
    base_row = rows[0]
    for row in rows[1:]:
        ratio = row["pixel_diversity"] / base_row["pixel_diversity"] if base_row["pixel_diversity"] else float("inf")
        loss = base_row["universal_dodging"] - row["universal_dodging"]
        met = ratio >= BAR_RATIO and loss <= BAR_POINTS
        row.update({"diversity_ratio": ratio, "dodging_points_lost": loss, "diversity_bar_met": met})
        print(f"diversity bar at diversity_weight {row['diversity_weight']:g} (pixel diversity >= {BAR_RATIO:g}x "
              f"weight {base_row['diversity_weight']:g}'s, test dodging <= {BAR_POINTS * 100:.0f} points lower): "
              f"{'MET' if met else 'NOT met'}: {ratio:.2f}x, dodging {-loss * 100:+.1f} points", flush=True)


if __name__ == "__main__":
    main()
