"""report.html's recogniser x row matrix: a column per recogniser (attacked, held out, real ones with where their
weights came from), each cell dodging / rank-1 at that recogniser's own thresholds, as report.md's matrix."""

from __future__ import annotations

from maskgan.reporting.pages.html import cell, esc, pct, table

ROWS = ("unmasked", "original_mask", "universal")


def _figures(summary: dict, far: str) -> tuple:
    if "designs" in summary:  # the universal row: the mean over its designs
        return summary["mean"][f"dodging@{far}"], summary["mean"]["rank1"]
    v = summary["verification"]
    return v["dodging"][far], v["rank1"]


def _weights(prov: dict | None) -> str:
    if not prov:
        return ""
    return (f"<br><small>{esc(prov['package'])}, <code>{esc(prov['file'])}</code> (sha256 "
            f"{esc(prov['sha256'][:12])}…; {esc(prov['licence'])}; {esc(prov['family'])}; trained on "
            f"{esc(prov['training_data'])})</small>")


def section(report: dict) -> str:
    """The matrix's HTML ('' when the report has none)."""
    m = report.get("recognizers")
    if not m:
        return ""
    far = report["fars"][0]
    splits = [s for s in ("val", "test") if s in m["columns"][m["order"][0]]["splits"]]
    head = ["recogniser", "role"] + [f"{split}: {row}" for split in splits for row in ROWS]
    rows = []
    for name in m["order"]:
        col = m["columns"][name]
        cells = [f"<td><b>{esc(name)}</b><br><small>{esc(col['desc'])}</small>{_weights(col.get('provenance'))}"
                 f"</td>", f"<td>{esc(col['role'])}</td>"]
        for split in splits:
            for row in ROWS:
                s = col["splits"][split]["rows"].get(row)
                if s is None:
                    cells.append(cell("–"))
                    continue
                d, r = _figures(s, far)
                cells.append(cell(f"{pct(d)} / {pct(r)}", r))
        rows.append(cells)
    return "\n".join([f"<h2>Recognisers (first {m['max_probes']} probes per split)</h2>",
                      f'<p class="note">Each cell: dodging at FAR {esc(far)} / rank-1, at that recogniser\'s own '
                      "thresholds; universal: the mean over its designs. Held-out recognisers were never seen by "
                      "the generator.</p>", table(head, rows)])
