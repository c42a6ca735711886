"""The results tables, built once: the identification-accuracy table and each split's verification /
identification / hubness table, as rows of cells that report.md writes as Markdown and report.html as HTML.

A `Cell` holds the figure, the value the page sorts and shades by, and the small print beside it (an interval,
or a universal row's worst..best); `markdown` joins them into one line per row."""

from __future__ import annotations

from dataclasses import dataclass, field

from maskgan.reporting.textfmt import SPLITS, _ci, _cos, _pct


@dataclass
class Cell:
    text: str
    value: float | None = None  # what the page sorts and shades by (None: not a number)
    small: str = ""  # printed after the figure: an interval, a universal row's (worst..best), the control named


@dataclass
class Table:
    head: list[str]
    rows: list[list[Cell]]
    notes: list[str] = field(default_factory=list)  # Markdown lines under the table (hubs, distinct designs)


def accuracy_table(report: dict) -> Table:
    """Rank-1 over the full gallery per row and split, with its 95 % probe-bootstrap interval."""
    splits = [s for s in SPLITS if any(s in a for a in report["accuracy"].values())]
    rows = []
    for row, acc in report["accuracy"].items():
        cells = [Cell(row)]
        for split in splits:
            lo, hi = acc.get("ci95", {}).get(split) or (None, None)
            small = "" if lo is None or lo != lo else f"[{lo:.1%}, {hi:.1%}]"
            cells.append(Cell(_pct(acc.get(split)), acc.get(split), small))
        rows.append(cells)
    return Table(["row", *splits], rows)


def _paired_cells(s: dict, f0: str) -> tuple[Cell, Cell]:
    """(Δ dodging vs original_mask, or vs the transformed plain mask for a `_physical` row; Δ vs the best control)."""
    physical = s.get("paired_vs_physical_control")
    delta = (physical["diff"] if physical else s.get("paired_vs_original_mask", {})).get(f"dodging@{f0}")
    dcell = Cell("–") if delta is None else Cell(f"{delta['diff']:+.1%}", delta["diff"], _ci(delta["identity95"]))
    if physical and delta is not None:
        dcell.small += f" vs `{physical['control']}`"
    dcell.small = dcell.small.strip()
    best = s.get("paired_vs_best_control")
    bd = best["diff"].get(f"dodging@{f0}") if best else None
    bcell = Cell("–") if bd is None else Cell(f"{bd['diff']:+.1%}", bd["diff"],
                                              f"{_ci(bd['identity95'])} vs `{best['control']}`".strip())
    return dcell, bcell


def _universal_cells(s: dict, f0: str, fl: str) -> list[Cell]:
    m, w, b = s["mean"], s["worst"], s["best"]

    def over(k, fmt=_pct) -> Cell:
        return Cell(fmt(m[k]), m[k], f"({fmt(w[k])}..{fmt(b[k])})")
    return [over(f"dodging@{f0}"), over(f"dodging@{fl}"), over("mean_cosine", _cos), over("rank1"), over("rank5"),
            over("top_share"), over("entropy", _cos)]


def _row_cells(s: dict, f0: str, fl: str) -> list[Cell]:
    v, iv, h = s["verification"], s["intervals"], s["hubness"]
    return [Cell(_pct(v["dodging"][f0]), v["dodging"][f0], _ci(iv[f"dodging@{f0}"]["wilson95"]).strip()),
            Cell(_pct(v["dodging"][fl]), v["dodging"][fl]), Cell(_cos(v["mean_cosine"]), v["mean_cosine"]),
            Cell(_pct(v["rank1"]), v["rank1"], _ci(iv["rank1"]["identity95"]).strip()),
            Cell(_pct(v["rank5"]), v["rank5"]), Cell(_pct(h.get("top_share")), h.get("top_share")),
            Cell(_cos(h.get("entropy")), h.get("entropy"))]


def split_table(report: dict, split: str) -> Table:
    """Every row of one split: dodging at both FARs, mean cosine, rank-1/5, hubness, and the paired differences
    to original_mask and to the best plain control; universal rows give mean (worst..best) over their distinct
    designs. Notes: each hub-dominated row in words, and universal rows with fewer distinct designs than K."""
    fars = list(report["impostors"][split]["thresholds"])
    f0, fl = fars[0], fars[-1]
    table = Table(["row", f"dodging@{f0}", f"dodging@{fl}", "mean cos", "rank-1", "rank-5", "top id share",
                   "entropy", f"Δ dodging@{f0}", "Δ best control"], [])
    hubs, distinct = [], []
    for row, per_split in report["rows"].items():
        s = per_split.get(split)
        if s is None:
            continue
        paired = list(_paired_cells(s, f0))
        if "designs" in s:  # universal: mean (worst..best) over its distinct designs
            table.rows.append([Cell(f"{row} ×{s['designs']} mean (worst..best)"), *_universal_cells(s, f0, fl),
                               *paired])
            if s.get("distinct", s["designs"]) < s["designs"]:
                distinct.append(f"- `{row}`: only {s['distinct']} distinct of {s['designs']} designs; mean, worst "
                                "and best are over the distinct ones.")
            hubs += [f"- `{row}` design: {t}." for t in s.get("hub_sentences", [])]
            continue
        table.rows.append([Cell(row), *_row_cells(s, f0, fl), *paired])
        if s["hubness"].get("hub_dominated"):
            hubs.append(f"- `{row}` is {s['hubness']['sentence']}.")
    if distinct:
        table.notes += ["**Distinct designs:**", *distinct, ""]
    if hubs:
        table.notes += [f"**Hub-dominated rows** (one identity takes more than {report.get('hub_share', 0.3):.0%} "
                        "of the probes):", *hubs, ""]
    return table


def markdown(table: Table) -> list[str]:
    """The table as Markdown lines (each cell: its figure, then its small print)."""
    def text(c: Cell) -> str:
        return f"{c.text} {c.small}" if c.small else c.text
    return ["| " + " | ".join(table.head) + " |", "|" + "---|" * len(table.head),
            *("| " + " | ".join(text(c) for c in row) + " |" for row in table.rows)]
