"""report.md from report.json's dict: today's accuracy table, then per split the wearer's figures.

Compact on purpose: one table per split (verification, identification, hubness, paired difference to
`original_mask`), and a sentence for every hub-dominated row. The JSON holds everything else.
"""

from __future__ import annotations

SPLITS = ("train", "val", "test")
ROLE = {"train": "the generator's own identities", "val": "selection set: checkpoints are chosen on it",
        "test": "the figure to quote"}


def _pct(x) -> str:
    return "–" if x is None or x != x else f"{x:.1%}"


def _ci(iv) -> str:
    return "" if not iv or iv[0] != iv[0] else f" [{iv[0]:.0%}, {iv[1]:.0%}]"


def report_markdown(report: dict) -> str:
    # epochs count from 1 wherever users read them (evaluate, sample, export); report.json keeps the 0-based index
    lines = [f"# maskgan report: {report['experiment']} / {report['generator']} (epoch {report['epoch'] + 1})", ""]
    if report["illustrative_only"]:
        lines += ["**Illustrative only:** the recogniser has no real pretrained weights "
                  f"({report['recognizer_weights']}); these numbers say nothing about real face recognition.", ""]
    lines += [f"Identification accuracy over a gallery of {report['gallery_size']} identities "
              f"(chance {report['chance']:.2%}); 95 % probe-bootstrap intervals in brackets.", "",
              "| row | train | val | test |", "|---|---|---|---|"]
    for row, acc in report["accuracy"].items():
        cells = []
        for split in SPLITS:
            if split in acc:
                lo, hi = acc["ci95"][split]
                cells.append(f"{acc[split]:.1%} [{lo:.1%}, {hi:.1%}]")
            else:
                cells.append("–")
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    lines += ["", "Rows: `unmasked` no mask; `original_mask` as photographed; `generated` the generator's designs in "
              "the mask region; `blue`/`black`/`white`/`noise` control designs in the same region.", ""]
    for split in SPLITS:
        if split in report.get("impostors", {}):
            lines += _split_section(report, split)
    return "\n".join(lines)


def _split_section(report: dict, split: str) -> list[str]:
    imp = report["impostors"][split]
    fars = list(imp["thresholds"])
    f0 = fars[0]
    thr = ", ".join(f"FAR {k}: {t:.3f}" for k, t in imp["thresholds"].items())
    lines = [f"## {split} ({ROLE.get(split, split)})", "",
             f"Verification thresholds on {imp['pairs']} impostor pairs of unmasked photos ({thr}). "
             f"Dodging = share of probes below the threshold (Wilson 95 %); rank-1 with its identity-bootstrap "
             f"95 %; Δ = row minus `original_mask` on the same probes (identity bootstrap).", ""]
    short = [k for k in fars if imp["pairs"] * float(k) < 10]
    if short:
        lines += [f"FAR {' and '.join(short)}: fewer than 10 impostor pairs lie above the threshold; read it as "
                  "rough.", ""]
    lines += [f"| row | dodging@{f0} | dodging@{fars[-1]} | mean cos | rank-1 | rank-5 | top id share | entropy "
              f"| Δ dodging@{f0} |", "|---|---|---|---|---|---|---|---|---|"]
    hubs = []
    for row, per_split in report["rows"].items():
        s = per_split.get(split)
        if s is None:
            continue
        delta = s.get("paired_vs_original_mask", {}).get(f"dodging@{f0}")
        dcell = "–" if delta is None else f"{delta['diff']:+.1%}{_ci(delta['identity95'])}"
        if "designs" in s:  # universal: mean (worst..best) over the K designs
            m, w, b = s["mean"], s["worst"], s["best"]
            cell = lambda k, fmt=_pct: f"{fmt(m[k])} ({fmt(w[k])}..{fmt(b[k])})"  # noqa: E731
            lines.append(f"| {row} ×{s['designs']} mean (worst..best) | {cell(f'dodging@{f0}')} | "
                         f"{cell(f'dodging@{fars[-1]}')} | {cell('mean_cosine', _cos)} | {cell('rank1')} | "
                         f"{cell('rank5')} | {cell('top_share')} | {cell('entropy', _cos)} | {dcell} |")
            hubs += [f"- `{row}` design: {t}." for t in s.get("hub_sentences", [])]
            continue
        v, iv, h = s["verification"], s["intervals"], s["hubness"]
        lines.append(f"| {row} | {_pct(v['dodging'][f0])}{_ci(iv[f'dodging@{f0}']['wilson95'])} | "
                     f"{_pct(v['dodging'][fars[-1]])} | {_cos(v['mean_cosine'])} | "
                     f"{_pct(v['rank1'])}{_ci(iv['rank1']['identity95'])} | {_pct(v['rank5'])} | "
                     f"{_pct(h.get('top_share'))} | {_cos(h.get('entropy'))} | {dcell} |")
        if h.get("hub_dominated"):
            hubs.append(f"- `{row}` is {h['sentence']}.")
    lines.append("")
    if hubs:
        lines += [f"**Hub-dominated rows** (one identity takes more than {report.get('hub_share', 0.3):.0%} of the "
                  "probes):", *hubs, ""]
    return lines


def _cos(x) -> str:
    return "–" if x is None or x != x else f"{x:.2f}"
