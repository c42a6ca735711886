"""A sweep's results: every trial's run evaluated, one row per trial, written as results.csv, results.md and the
paper's Table 5 (paper_table.md)."""

from __future__ import annotations

import csv
import io
import json
import math

from data_loader import storage
from maskgan import config as mconfig
from maskgan.design import wearing
from maskgan.reporting import runner
from maskgan.reporting.report_matrix import role_means
from maskgan.run import checkpoints
from tune.guard import METRIC, TIME_ATTR
from tune.space import Space
from tune.trial import LINEAGE

PAPER_ROWS = (  # (label, report row, split); the paper's Table 5
    ("training accuracy", "generated", "train"),
    ("testing accuracy", "generated", "test"),
    ("MaskedFace-Net accuracy (original mask, test)", "original_mask", "test"),
    ("FFHQ accuracy (unmasked, test)", "unmasked", "test"),
)
PAPER_TABLE5 = {"training accuracy": ("6.2%", "15%", "23.8%", "0.6%"),
                "testing accuracy": ("0%", "0%", "0%", "0%"),
                "MaskedFace-Net accuracy (original mask, test)": ("85%", "65.1%", "73.6%", "85.4%"),
                "FFHQ accuracy (unmasked, test)": ("100%", "99%", "100%", "100%")}


def _evaluate(run_uri: str) -> dict | None:
    """The run's report for its latest checkpoint; reused when report.json is already about that checkpoint."""
    run = storage.resolve(run_uri)
    if not storage.exists(run) or not checkpoints.list_checkpoints(run):
        return None
    _, latest = checkpoints.latest_checkpoint(run, log=lambda *_: None)
    rep_loc = run.join("report.json")
    if storage.exists(rep_loc):
        report = json.loads(storage.read_text(rep_loc))
        if report.get("checkpoint") == latest.uri:
            return report
    return runner.evaluate_run(run_uri, log=lambda *_: None)


def _trained_config(run: storage.Location) -> dict:
    """{"section.field": value} of the config in the run's newest good checkpoint ({} when it has none)."""
    try:
        state, _ = checkpoints.latest_checkpoint(run, log=lambda *_: None)
    except (checkpoints.CheckpointError, storage.StorageError):
        return {}
    return {f"{section}.{k}": v for section, values in state["config"].items() if isinstance(values, dict)
            for k, v in values.items()}


def collect(grid, space: Space, runs: storage.Location, log=print) -> list[dict]:
    """One row per trial: axes, status, epochs, objective, and the report's accuracy rows on val and test."""
    import ray

    epochs = space.base.train.epochs
    trials = []
    for result in grid:
        m = dict(result.metrics or {})
        trial_id = m.get("trial_id") or result.path.rstrip("/").rsplit("trial_", 1)[-1]
        cfg = result.config or {}
        trials.append((trial_id, cfg, m, result.error))
    trials.sort(key=lambda t: t[0])
    remote = ray.remote(num_cpus=1)(_evaluate)
    refs = [remote.remote(runs.join(tid).uri) for tid, *_ in trials]
    log(f"evaluating {len(refs)} trial runs ...")
    reports = []
    for (tid, *_), ref in zip(trials, refs):
        try:
            reports.append(ray.get(ref))
        except Exception as e:  # one bad run must not lose the table
            log(f"warning: evaluation of {tid} failed: {str(e).splitlines()[0][:200]}")
            reports.append(None)
    rows = []
    for (tid, cfg, m, error), report in zip(trials, reports):
        done = int(m.get(TIME_ATTR, 0) or 0)
        status = "error" if error else ("completed" if done >= epochs else "stopped early")
        row = {"trial": tid, "status": status}
        for key in space.axes:
            row[key] = cfg.get(key)
        mutations = space.pbt.get("mutations", {})
        trained = _trained_config(runs.join(tid)) if mutations else {}
        for key in mutations:  # PBT sets (and mutates) these on every trial
            # what the run's last checkpoint trained with: Tune's config may hold a perturbation made at the
            # last report, which no epoch trained with
            if key in trained or key in cfg:
                row[key] = trained.get(key, cfg.get(key))
        row["pbt_from"] = _lineage(runs.join(tid))
        row.update({"epochs": done, "objective": m.get(METRIC), "guard_ok": m.get("guard/ok"),
                    "val_generated_last": m.get("acc/val/generated"), "val_unmasked_last": m.get("acc/val/unmasked")})
        for r in wearing.ROWS:
            for split in ("val", "test", "train"):
                acc = (report or {}).get("accuracy", {}).get(r, {})
                row[f"{r}/{split}"] = acc.get(split)
                row[f"{r}/{split}/ci95"] = acc.get("ci95", {}).get(split)
        for r, figure in _dodging(report or {}, "test").items():
            row[f"{r}/test/dodging"] = figure
        # how much the universal designs differ in pixels, on val (the selection set; maskgan.design.diversity)
        row["diversity"] = (report or {}).get("diversity", {}).get("val", {}).get("pixel")
        for r, p in (report or {}).get("printability", {}).get("rows", {}).items():
            row[f"{r}/tv"], row[f"{r}/nps"] = p["tv"], p["nps"]
        row.update(_transfer(report or {}, "test"))
        row["run"] = runs.join(tid).uri
        row["illustrative_only"] = (report or {}).get("illustrative_only")
        rows.append(row)
    return rows


def _dodging(report: dict, split: str) -> dict:
    """{row: dodging at the report's first FAR on `split`} (universal: the mean over its designs)."""
    out, far = {}, (report.get("fars") or [None])[0]
    for row, per_split in report.get("rows", {}).items():
        s = per_split.get(split)
        if s is not None and far is not None:
            out[row] = s["mean"][f"dodging@{far}"] if "designs" in s else s["verification"]["dodging"][far]
    return out


def _transfer(report: dict, split: str) -> dict:
    """{transfer/<role>/<split>: mean transfer line of that role's recognisers} (maskgan.reporting.report.role_means):
    with eval.held_out, whether designs trained against these surrogates move the held-out recognisers too."""
    m, far = report.get("recognizers"), (report.get("fars") or [None])[0]
    if not m or far is None:
        return {}
    return {f"transfer/{role}/{split}": v for role, v in role_means(m, split, far).items()}


# tune/spaces/transfer.yaml's figures: the universal designs' test transfer to the attacked and held-out columns
TRANSFER = ("transfer/attacked/test", "transfer/held-out/test")


SEED_FIGURES = ("generated/test", "original_mask/test", "universal/test/dodging", "original_mask/test/dodging")


def seed_spread(rows: list[dict], space: Space) -> list[str]:
    """Markdown lines: mean ± standard deviation over `train.seed` of each group of trials that differ only in
    their seed (the sweep's seed axis); [] when the sweep has no such axis."""
    if "train.seed" not in space.axes:
        return []
    others = [k for k in _axis_columns(rows, space) if k != "train.seed"]
    groups: dict = {}
    for row in rows:
        groups.setdefault(tuple(_short(row.get(k)) for k in others), []).append(row)
    head = [*others, "seeds", *SEED_FIGURES]
    lines = ["", "## Over training seeds (`train.seed`): mean ± standard deviation", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, group in sorted(groups.items()):
        cells = [*key, str(len(group))]
        for fig in SEED_FIGURES:
            vals = [r[fig] for r in group if isinstance(r.get(fig), (int, float)) and not math.isnan(r[fig])]
            if not vals:
                cells.append("–")
                continue
            mean = sum(vals) / len(vals)
            sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else float("nan")
            cells.append(f"{_pct(mean)} ± {_pct(sd)}")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _lineage(run: storage.Location) -> str | None:
    """'<trial>@<epoch>; ...': the checkpoints PBT cloned into this trial's run, oldest first."""
    loc = run.join(LINEAGE)
    if not storage.exists(loc):
        return None
    return "; ".join(f"{e['from_run'].rstrip('/').rsplit('/', 1)[-1]}@{int(e['epoch']) + 1}"
                     for e in json.loads(storage.read_text(loc)))


def _axis_columns(rows: list[dict], space: Space) -> list[str]:
    return [*space.axes, *[k for k in space.pbt.get("mutations", {}) if k not in space.axes
                           and any(k in r for r in rows)]]


def _pct(v) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.1%}"


def _points(v) -> str:
    return "–" if v is None else f"{v * 100:+.1f} pts"


def _short(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return "–" if v is None else str(v)


# Protection next to printability: the universal designs' test dodging, their TV and NPS, and the
# noise control's TV (the yardstick; a flat design has 0). Read it across a tv_weight x nps_weight sweep.
TRADE_OFF = ("universal/test/dodging", "universal/tv", "universal/nps", "noise/tv")


def write_tables(loc: storage.Location, rows: list[dict], space: Space) -> None:
    storage.write_text(loc.join("results.csv"), results_csv(rows, space))
    storage.write_text(loc.join("results.md"), results_markdown(rows, space))
    paper = paper_table(rows, space)
    if paper:
        storage.write_text(loc.join("paper_table.md"), paper)


def results_csv(rows: list[dict], space: Space) -> str:
    columns = ["trial", "status", *_axis_columns(rows, space), "epochs", "objective", "guard_ok", "pbt_from"]
    columns += [f"{r}/{s}" for r in wearing.ROWS for s in ("val", "test")]
    columns += [f"{r}/{s}/ci95" for r in wearing.ROWS for s in ("val", "test")]
    columns += ["diversity", *TRADE_OFF, *[k for k in TRANSFER if any(k in r for r in rows)], "run"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    return buf.getvalue()


def results_markdown(rows: list[dict], space: Space) -> str:
    axes = _axis_columns(rows, space)
    lineage = any(r.get("pbt_from") for r in rows)
    head = ["trial", "status", *axes, "epochs", "objective", *(["cloned from (PBT)"] if lineage else [])]
    head += [f"{r} {s}" for r in wearing.ROWS for s in ("val", "test")]
    head += ["diversity", "universal dodging test", "universal TV", "universal NPS", "noise TV"]
    transfer = [k for k in TRANSFER if any(k in r for r in rows)]  # only sweeps with eval.held_out have them
    head += [f"{k.split('/')[1]} transfer test" for k in transfer]
    lines = [f"# sweep {space.name}: {len(rows)} trials", "",
             "`objective` = val generated accuracy while the recogniser's unmasked accuracy held up, else 1.0 "
             "(lower is better): val is the selection set, test the figure to quote. Accuracy columns come from "
             "`maskgan evaluate` of each trial's last checkpoint; `diversity` is the mean pairwise pixel distance "
             "between its universal designs on val (0: one design; noise about 0.33).", ""]
    if any(r.get("illustrative_only") for r in rows):
        lines += ["**Illustrative only:** the recogniser has no real pretrained weights.", ""]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in sorted(rows, key=lambda r: (r.get("objective") is None, r.get("objective") or 0, r["trial"])):
        cells = [row["trial"], row["status"], *[_short(row.get(k)) for k in axes], str(row["epochs"]),
                 _short(row.get("objective")), *([row.get("pbt_from") or "–"] if lineage else [])]
        cells += [_pct(row.get(f"{r}/{s}")) for r in wearing.ROWS for s in ("val", "test")]
        cells += [_short(row.get("diversity")), _pct(row.get(TRADE_OFF[0]))]
        cells += [_short(row.get(k)) for k in TRADE_OFF[1:]]
        cells += [_points(row.get(k)) for k in transfer]
        lines.append("| " + " | ".join(cells) + " |")
    lines += seed_spread(rows, space)
    return "\n".join(lines) + "\n"


def paper_table(rows: list[dict], space: Space) -> str | None:
    """The paper's Table 5 (exp0-exp3 columns) from this sweep's fc3 trials: per experiment the trial with the
    best objective; None when the sweep has no fc3 trial with a report."""
    def generator(row):
        return row.get("model.generator", space.base.model.generator)

    def experiment(row):
        return row.get("objective.experiment", space.base.objective.experiment)

    best: dict = {}
    for row in rows:
        if generator(row) != "fc3" or row.get("generated/test") is None:
            continue
        e = experiment(row)
        key = (row.get("objective") if row.get("objective") is not None else 2.0, row["trial"])
        if e not in best or key < best[e][0]:
            best[e] = (key, row)
    if not best:
        return None
    exps = mconfig.EXPERIMENTS
    lines = [f"# The paper's Table 5, reproduced (sweep {space.name}, generator fc3)", "",
             "Per experiment the fc3 trial with the best objective; accuracy over the full gallery with 95 % "
             "bootstrap intervals. Experiments: exp0 generator only; exp1 head fine-tuned on generated-mask faces; "
             "exp2 + unmasked faces; exp3 + original-mask faces.", ""]
    if any(r.get("illustrative_only") for _, r in best.values()):
        lines += ["**Illustrative only:** the recogniser has no real pretrained weights; compare the shape, "
                  "not the numbers.", ""]
    lines += ["| experiment # | " + " | ".join(exps) + " |", "|---|" + "---|" * len(exps)]
    for label, r, split in PAPER_ROWS:
        cells = []
        for e in exps:
            if e not in best:
                cells.append("–")
                continue
            row = best[e][1]
            ci = row.get(f"{r}/{split}/ci95")
            cells.append(_pct(row.get(f"{r}/{split}")) + (f" [{_pct(ci[0])}, {_pct(ci[1])}]" if ci else ""))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("| trial | " + " | ".join(best[e][1]["trial"] if e in best else "–" for e in exps) + " |")
    lines += ["", "The paper's published numbers (Table 5; its test accuracy of 0 % came from the evaluation bugs "
              "this project fixes):", "", "| experiment # | " + " | ".join(exps) + " |", "|---|" + "---|" * len(exps)]
    for label, values in PAPER_TABLE5.items():
        lines.append(f"| {label} | " + " | ".join(values) + " |")
    return "\n".join(lines) + "\n"
