"""report.md from report.json's dict: today's accuracy table, then per split the wearer's figures.

Compact on purpose: one table per split (verification, identification, hubness, paired differences to
`original_mask` and to the best plain control), and a sentence for every hub-dominated row. The JSON holds
everything else. The demo's printed headline and the verdicts' sentences: maskgan.reporting.headline.
"""

from __future__ import annotations

from maskgan.evaluation import verdicts
from maskgan.reporting import results_table
from maskgan.reporting.report_matrix import data_realism, recognizers_section
from maskgan.reporting.textfmt import ROLE, SPLITS, _ci, _ci_pts, _cos, _cos3, _pct, _row_figures  # noqa: F401


def illustrative_line(report: dict) -> str:
    """What is still not real in this report: the faces always (synthetic data), and the primary recogniser when it
    has no pretrained weights; the real recognisers it was scored by are named, so a reader knows which columns
    are real models."""
    cols = (report.get("recognizers") or {}).get("columns", {})
    real = [n for n in cols if n.startswith("zoo:") or n == "dlib"]
    line = (f"Illustrative only: the faces are synthetic, and the recogniser the generator adapted "
            f"({report['recognizer_weights']}) has no real pretrained weights")
    if real:
        return line + f"; {', '.join(real)} are real pretrained recognisers, on synthetic faces."
    return line + "; these numbers say nothing about real face recognition."


def report_markdown(report: dict) -> str:
    # epochs count from 1 wherever users read them (evaluate, sample, export); report.json keeps the 0-based index
    lines = [f"# maskgan report: {report['experiment']} / {report['generator']} (epoch {report['epoch'] + 1})", ""]
    if report["illustrative_only"]:
        lines += [f"**{illustrative_line(report)}**", ""]
    if report.get("run_failed"):
        lines += [f"**This run failed** ({report['run_failed']}): the figures are of its last good checkpoint, "
                  "not of a finished run.", ""]
    if report.get("self_match"):
        lines += ["**Self-match data:** MaskedFace-Net draws its mask onto the FFHQ photo that is also the gallery "
                  "photo, so `unmasked` is a self-match and `original_mask` near-duplicate retrieval; compare rows "
                  "with each other, not with a real deployment.", ""]
    else:
        lines += ["Gallery and probes are different photos of each person: no probe is its gallery photo.", ""]
    lines += [f"Identification accuracy over a gallery of {report['gallery_size']} identities "
              f"(chance {report['chance']:.2%}); 95 % probe-bootstrap intervals in brackets.", "",
              *results_table.markdown(results_table.accuracy_table(report))]
    lines += ["", "Rows: `unmasked` no mask; `original_mask` as photographed; `generated` the generator's designs in "
              "the mask region; `blue`/`black`/`white`/`noise` control designs in the same region; `for_person` "
              "(conditional generators) each probe wearing the design made from its own unmasked photo; `_physical` "
              "rows: printed and photographed under held-out transforms, `original_mask_physical` the plain mask "
              "photographed under the same draws.", ""]
    distinct = report.get("universal_distinct")
    if distinct and report.get("universal_k"):
        lines += [f"Universal designs: {distinct['distinct']} distinct of {report['universal_k']} (closest pair "
                  f"{_cos3(distinct.get('min_distance'))} per pixel); every mean, worst and best over them counts "
                  "each distinct design once." + (f" **Warning:** {distinct['warning']}." if distinct["warning"]
                                                   else ""), ""]
    realism = data_realism(report, report["verdicts"]["split"] if report.get("verdicts") else "test")
    if realism:
        lines += [realism[0].strip(), "", *(f"- {line.strip()}" for line in realism[1:]), ""]
    if report.get("verdicts"):
        lines += [f"## Verdicts ({report['verdicts']['split']}: met only when the interval's conservative end clears "
                  "the bar, not met when its optimistic end misses, else undecided)", "",
                  *(f"- {line}" for line in verdicts.verdict_lines(report["verdicts"])), ""]
    for split in SPLITS:
        if split in report.get("impostors", {}):
            lines += _split_section(report, split)
    if report.get("recognizers"):
        lines += recognizers_section(report["recognizers"], report["fars"])
    if report.get("after_defender"):
        lines += _defender_section(report)
    if report.get("printability"):
        lines += printability_section(report["printability"])
    if report.get("diversity"):
        lines += diversity_section(report["diversity"], report["fars"][0])
    return "\n".join(lines)


def diversity_section(d: dict, far: str) -> list[str]:
    """Per split, how much the K universal designs differ (maskgan.design.diversity) and how much protection moves
    with the design a wearer happens to print."""
    lines = ["## Diversity of the universal designs", "",
             "pixels: mean pairwise mean |difference| of the designs ([0, 1] scale; identical designs 0, noise "
             "about 0.33). features: mean pairwise cosine distance between the embeddings of one probe wearing "
             "each design. identities: how many distinct identities the designs send one probe to, mean (max) "
             "over the probes. spread: max - min over the designs.", "",
             f"| split | designs × probes | pixels | features | distinct designs | identities per probe "
             f"| spread dodging@{far} | spread rank-1 |", "|---|---|---|---|---|---|---|---|"]
    for split in SPLITS:
        v = d.get(split)
        if v is None:
            continue
        ids, sp = v["distinct_identities"], v["protection_spread"]
        lines.append(f"| {split} | {v['designs']} × {v['probes']} | {_cos3(v['pixel'])} | {_cos3(v['feature'])} | "
                     f"{_distinct(v)} | {ids['mean']:.1f} ({ids['max']}) of {v['designs']} | "
                     f"{_pct(sp.get(f'dodging@{far}'))} | {_pct(sp.get('rank1'))} |")
    warnings = {d[s]["warning"] for s in SPLITS if d.get(s, {}).get("warning")}
    lines += [""] + [f"**Warning:** {w}." for w in sorted(warnings)] if warnings else []
    people = {split: d[split]["across_people"] for split in SPLITS if "across_people" in d.get(split, {})}
    if people:  # a conditional generator (cond_fc3, cond_conv): one design per wearer
        lines += ["", "Designs for each wearer (conditional generator; latent of `for_person/0`): pixels across "
                  "people is the mean pairwise mean |difference| of the designs made for different people (0: it "
                  "ignores the wearer); same person again is the largest difference when one person's design is "
                  "made twice (0: reproducible).", "",
                  "| split | people | pixels across people | same person again |", "|---|---|---|---|"]
        lines += [f"| {split} | {v['people']} | {_cos3(v['pixel'])} | {v['same_person_max_diff']:.1e} |"
                  for split, v in people.items()]
    return lines + [""]


def _distinct(v: dict) -> str:
    """'n distinct of K (min pair 0.123)' of a diversity entry (older reports: '–')."""
    if "distinct" not in v:
        return "–"
    return f"{v['distinct']} of {v['designs']} (closest pair {_cos3(v.get('min_distance'))})"


def diversity_line(d: dict, split: str, far: str) -> str:
    """One line for the demo's headline: the universal designs' diversity on `split`."""
    v = d.get(split)
    if v is None:
        return f"diversity: no universal designs on {split}"
    sp = v["protection_spread"]
    return (f"diversity of the universal designs: {_distinct(v)} distinct; pixels {_cos3(v['pixel'])}, features "
            f"{_cos3(v['feature'])}, {v['distinct_identities']['mean']:.1f} distinct identities per probe "
            f"(max {v['distinct_identities']['max']}); dodging spread {_pct(sp.get(f'dodging@{far}'))}")


def printability_section(p: dict) -> list[str]:
    """TV and NPS per design row, with the printability target (every distinct universal design's TV <= 1/5
    and NPS <= 1/2 of the noise control's), judged on the worst distinct design."""
    cal = "calibrated" if p["calibrated"] else "uncalibrated"
    lines = [f"## Printability (palette: {p['palette']}, {cal})", "",
             "TV: mean absolute neighbour difference ([0, 1] scale; noise ~0.33, a flat colour 0). NPS: mean RGB "
             "distance to the nearest palette colour. Mean (worst) over the row's designs (universal: its distinct "
             "designs).", "",
             "| design | TV | NPS |", "|---|---|---|"]
    for row, v in p["rows"].items():
        lines.append(f"| {row} | {v['tv']:.3f} ({v['tv_max']:.3f}) | {v['nps']:.3f} ({v['nps_max']:.3f}) |")
    lines += ["", printability_verdict(p), ""]
    return lines


def printability_verdict(p: dict, row: str = "universal") -> str:
    return verdicts.verdict_line(verdicts.PRINTABILITY, verdicts.printability(p, row))


def _defender_section(report: dict) -> list[str]:
    d = report["after_defender"]
    far = report["fars"][0]
    splits = [s for s in SPLITS if s in d["impostors"]]
    lr = f" at rate {d['lr']:g}" if "lr" in d else ""
    lines = [f"## After an adaptive defender ({d['steps']} steps{lr} on {d['trained_on']} identities wearing the "
             f"{d['designs']} distinct universal designs)", ""]
    if "loss" in d:
        own = d["own_designs_rank1"]
        lines += [f"Its cross-entropy: {d['loss']['sentence']}. Rank-1 on its own training photos (train identities "
                  f"wearing the designs, {own['photos']} photos): {_pct(own['before'])} before, {_pct(own['after'])} "
                  "after.", ""]
    lines += [f"Each cell: before → after the defender adapts (dodging@{far}, rank-1, top id share), then the "
              "paired change in dodging (after minus before, same probes, identity bootstrap, points) and, after, "
              "the row minus the best plain control; universal: the mean over its distinct designs.", "",
              "| row | " + " | ".join(splits) + " |", "|---|" + "---|" * len(splits)]
    for row, per_split in d["rows"].items():
        cells = []
        for split in splits:
            before, after = report["rows"].get(row, {}).get(split), per_split.get(split)
            if before is None or after is None:
                cells.append("–")
                continue
            (bd, br, _), (ad, ar, at) = _row_figures(before, far), _row_figures(after, far)
            ch = after.get("paired_vs_before", {}).get(f"dodging@{far}")
            change = "" if ch is None else f"; Δ {ch['diff'] * 100:+.1f}{_ci_pts(ch['identity95'])}"
            best = after.get("paired_vs_best_control")
            if best and f"dodging@{far}" in best["diff"]:
                b = best["diff"][f"dodging@{far}"]
                change += f"; vs `{best['control']}` {b['diff'] * 100:+.1f}{_ci_pts(b['identity95'])}"
            cells.append(f"{_pct(bd)} → {_pct(ad)}, {_pct(br)} → {_pct(ar)}, {_pct(at)}{change}")
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return lines + [""]


def calibration_line(imp: dict) -> str:
    """Where a split's thresholds came from, with the pair counts and any FAR level dropped."""
    thr = ", ".join(f"FAR {k}: {t:.3f}" for k, t in imp["thresholds"].items())
    if imp.get("held_apart"):
        where = (f"fixed for the run on {imp['pairs']} impostor pairs of unmasked photos of {imp['identities']} "
                 f"identities held apart from every scored split ({imp['source']})")
    else:
        where = (f"calibrated on this split's own {imp['pairs']} impostor pairs of unmasked photos (the data has no "
                 "held-apart calibration set: the scored people set their own bar)")
    dropped = "".join(f"; FAR {k} {note}" for k, note in imp.get("dropped", {}).items())
    rough = "".join(f"; FAR {k}: fewer than 10 impostor pairs lie above its threshold, read it as rough"
                    for k in imp.get("rough", []))
    return f"Verification thresholds {where} ({thr}){dropped}{rough}."


def _split_section(report: dict, split: str) -> list[str]:
    imp = report["impostors"][split]
    fars = list(imp["thresholds"])
    if not fars:
        return [f"## {split} ({ROLE.get(split, split)})", "", calibration_line(imp), ""]
    lines = [f"## {split} ({ROLE.get(split, split)})", "", calibration_line(imp) + " "
             f"Dodging = share of probes below the threshold (Wilson 95 %); rank-1 with its identity-bootstrap "
             f"95 %; Δ = row minus `original_mask` on the same probes, Δ best control = row minus the plain control "
             f"that dodges most (identity bootstrap). Rows under held-out physical transforms (`_physical`) are "
             f"compared with `original_mask_physical` and the controls photographed under the same draws.", ""]
    table = results_table.split_table(report, split)
    return lines + results_table.markdown(table) + [""] + table.notes


def design_lines(name: str, by_split: dict) -> str:
    """`maskgan evaluate --design`: one line per split of the design's figures (score_design's rows)."""
    lines = [f"design {name}, worn by every probe:"]
    for split, s in by_split.items():
        v, h = s["verification"], s["hubness"]
        far = next(iter(v["dodging"]))
        delta = s.get("paired_vs_original_mask", {}).get(f"dodging@{far}", {}).get("diff")
        lines.append(f"  {split} ({ROLE.get(split, split)}): dodging@{far} {_pct(v['dodging'][far])}"
                     f"{_ci(s['intervals'][f'dodging@{far}']['wilson95'])}, rank-1 {_pct(v['rank1'])}, "
                     f"mean cos {_cos(v['mean_cosine'])}, top id share {_pct(h.get('top_share'))}, "
                     f"Δ dodging vs original_mask {'–' if delta is None else f'{delta:+.1%}'}")
    return "\n".join(lines)
