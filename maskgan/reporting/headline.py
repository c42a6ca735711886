"""What `maskgan demo` prints after report.md: the figures to quote and the verdicts, honestly framed.

The caveat that opens report.md (illustrative recogniser, synthetic faces, self-match data) opens the headline
too, so a figure copied from the terminal carries it. Every design row gives its delta against the plain mask
AND against the best plain control; rows under held-out physical transforms against the plain mask photographed
under the same draws. A figure whose baseline leaves no room (0 %, 100 %, or within 10 points of either) says so
next to it. Targets are read from report.json's `verdicts` (maskgan.evaluation.verdicts: met / not met / undecided on
intervals). Random trunks are never averaged with real recognisers into one held-out figure.
"""

from __future__ import annotations

import numpy as np

from maskgan.evaluation import verdicts
from maskgan.reporting.report import diversity_line, illustrative_line
from maskgan.reporting.report_matrix import data_realism, is_random_trunk, real_role_lines, transfer_lines
from maskgan.reporting.textfmt import ROLE, _ci, _pct


def caveat(report: dict) -> list[str]:
    """The lines report.md opens with, shortened: what these numbers can and cannot say."""
    out = []
    if report.get("illustrative_only"):
        out.append(illustrative_line(report))
    if report.get("self_match"):
        out.append("Self-match data: each probe is its gallery photo with a mask drawn on; compare rows with each "
                   "other, not with a deployment.")
    if report.get("run_failed"):
        out.append(f"This run failed ({report['run_failed']}): figures of its last good checkpoint.")
    return out


def _saturated(rate) -> str:
    return "  (saturated: at 0 % or 100 % this figure cannot move)" if rate in (0.0, 1.0) else ""


def _delta(d: dict | None, far: str, label: str) -> str:
    if not d or f"dodging@{far}" not in d:
        return ""
    x = d[f"dodging@{far}"]
    return f"; {x['diff'] * 100:+.1f} points vs {label}{_ci(x['identity95'])}"


def _row_line(row: str, s: dict, far: str) -> str:
    phys = s.get("paired_vs_physical_control")
    base = _delta(phys["diff"], far, f"`{phys['control']}`") if phys else _delta(
        s.get("paired_vs_original_mask"), far, "original_mask")
    best = s.get("paired_vs_best_control")
    base += _delta(best["diff"], far, f"the best plain control `{best['control']}`") if best else ""
    if "designs" in s:
        m, w = s["mean"], s["worst"]
        n = s.get("distinct", s["designs"])
        return (f"    {row:<22} dodging {_pct(m[f'dodging@{far}'])} mean over {n} distinct of {s['designs']} designs "
                f"(worst {_pct(w[f'dodging@{far}'])}){base}; rank-1 {_pct(m['rank1'])}, top id share "
                f"{_pct(m['top_share'])} (worst {_pct(w['top_share'])})")
    v, iv, h = s["verification"], s["intervals"][f"dodging@{far}"], s["hubness"]
    return (f"    {row:<22} dodging {_pct(v['dodging'][far])}{_ci(iv['identity95'])} identity bootstrap,"
            f"{_ci(iv['wilson95'])} Wilson{base}; rank-1 {_pct(v['rank1'])}, top id share {_pct(h.get('top_share'))}"
            + ("  HUB" if h.get("hub_dominated") else "") + _saturated(v["dodging"][far]))


REAL_ROWS = (("unmasked", "unmasked"), ("original_mask", "plain mask"), ("universal", "universal designs"),
             ("black", "black panel"))


def real_recognisers(report: dict, split: str) -> list[str]:
    """The real pretrained recognisers first (held-out ones before attacked ones): rank-1 and mean cosine to the
    wearer's own photo for the rows a reader compares, so a saturated dodging figure is not the only one quoted."""
    m = report.get("recognizers") or {}
    real = [n for n in m.get("order", []) if n.startswith("zoo:") or n == "dlib"]
    real.sort(key=lambda n: m["columns"][n]["role"] == "attacked")
    out = []
    for n in real:
        rows = m["columns"][n]["splits"].get(split, {}).get("rows", {})
        cells = []
        for row, label in REAL_ROWS:
            if row in rows:
                s = rows[row]
                v = s["mean"] if "designs" in s else s["verification"]
                cells.append(f"{label} {_pct(v['rank1'])} (cos {v['mean_cosine']:.2f})")
        if cells:
            out.append(f"    {n} ({m['columns'][n]['role']}): " + ", ".join(cells))
    if out:
        out.insert(0, f"  real pretrained recognisers, {split}: rank-1 (mean cosine to the wearer's own photo), "
                      "held-out first:")
    return out


def headline(report: dict, split: str = "test") -> str:
    """What `maskgan demo` prints: the caveat; per row dodging at the first FAR with its identity-bootstrap and
    Wilson 95 % intervals and its deltas; the same after the defender; the verdicts; the held-out recognisers."""
    far = report["fars"][0]
    blocks = [("white-box (the head the generator attacked)", report["rows"])]
    d = report.get("after_defender")
    if d:
        blocks.append((f"after the defender adapts ({d['steps']} steps on train identities wearing the designs)",
                       d["rows"]))
    lines = [*caveat(report), *real_recognisers(report, split), *data_realism(report, split),
             f"{split} ({ROLE.get(split, split)}), dodging = similarity to the own gallery photo below the "
             f"FAR {far} threshold (fixed per recogniser for the run):"]
    for title, rows in blocks:
        lines.append(f"  {title}:")
        lines += [_row_line(row, per_split[split], far) for row, per_split in rows.items() if split in per_split]
    if d and "loss" in d:
        own = d["own_designs_rank1"]
        lines.append(f"  the defender: {d['loss']['sentence']}; rank-1 on its own training designs "
                     f"{_pct(own['before'])} -> {_pct(own['after'])}")
    v = report.get("verdicts") or verdicts.all_verdicts(report, split)
    lines += ["  " + line for line in verdicts.verdict_lines(v)]
    if report.get("recognizers"):
        m = report["recognizers"]
        held = [n for n in m["order"] if m["columns"][n]["role"] != "attacked"]
        lines.append("  held-out recognisers (synthetic faces" + (
            "; random:<seed> = random trunks, not face recognisers" if any(map(is_random_trunk, held)) else "") + "):")
        lines += transfer_lines({**m, "order": held}, far, (split,), indent="    ")
        lines += real_role_lines(m, far, (split,), indent="    ")
    distinct = report.get("universal_distinct", {})
    if distinct.get("warning"):
        lines.append(f"  warning: {distinct['warning']}")
    if report.get("diversity"):
        lines.append("  " + diversity_line(report["diversity"], split, far))
    return "\n".join(lines)


def spread(xs: list[float]) -> str:
    """'mean ± sd' in points over the finite values ('–' when none is)."""
    x = np.asarray(xs, np.float64)
    x = x[np.isfinite(x)]
    return "–" if not x.size else f"{x.mean() * 100:.1f} ± {x.std() * 100:.1f}"


SEED_COLUMNS = (("protection", "gain", "points vs plain mask"), ("robustness", "rank1_drop", "rank-1 drop"))


def seeds_table(reports: list[dict], split: str = "test") -> str:
    """`maskgan demo --seeds N`: one row per training seed (each target's verdict and its figure, the universal
    designs' dodging, distinct designs), then the mean and standard deviation over the seeds: a verdict that
    changes from seed to seed is not a property of the method."""
    far = reports[0]["fars"][0]
    head = ["seed", "universal dodging", "original_mask dodging", "distinct designs"]
    head += [f"{name} ({label})" for name, _, label in SEED_COLUMNS] + ["printability"]
    lines = [f"Over {len(reports)} training seeds ({split}, dodging@{far}; same data, same config):", "",
             "| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    figures: dict = {k: [] for k in ("uni", "orig", *(key for _, key, _ in SEED_COLUMNS))}
    for rep in reports:
        v = rep.get("verdicts") or verdicts.all_verdicts(rep, split)
        uni = rep["rows"].get("universal", {}).get(split, {}).get("mean", {}).get(f"dodging@{far}", float("nan"))
        orig = rep["rows"]["original_mask"][split]["verification"]["dodging"][far]
        figures["uni"].append(uni)
        figures["orig"].append(orig)
        cells = [str(rep.get("universal_seed", "?")), _pct(uni), _pct(orig),
                 f"{rep.get('universal_distinct', {}).get('distinct', '?')} of {rep.get('universal_k', '?')}"]
        for name, key, _ in SEED_COLUMNS:
            t = v.get(name, {})
            figures[key].append(t.get(key, float("nan")))
            cells.append(f"{t.get('verdict', '–')} ({t.get(key, float('nan')) * 100:+.1f})")
        cells.append(v.get("printability", {}).get("verdict", "–"))
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("| mean ± sd | " + " | ".join([f"{spread(figures['uni'])} %", f"{spread(figures['orig'])} %", "–"]
                                                + [f"{spread(figures[k])} points" for _, k, _ in SEED_COLUMNS]
                                                + ["–"]) + " |")
    return "\n".join(lines)
