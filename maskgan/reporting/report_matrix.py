"""The recogniser x row matrix in report.md and the transfer lines: each recogniser at its own run-wide
thresholds, universal designs against the plain mask and the best plain control, random trunks kept apart
from real recognisers."""

from __future__ import annotations

from maskgan.evaluation import verdicts
from maskgan.reporting.textfmt import SPLITS, _ci, _pct, _row_figures

HONEST = ("Illustrative: the faces are synthetic (data_loader.synth), so no figure here is a measurement on real people. "
          "`zoo:<name>` and `dlib` columns are real pretrained recognisers (their weights' provenance is listed "
          "below); `random:<seed>` columns are randomly initialised facenet trunks, not face recognisers. Read "
          "transfer between these columns, not as real-world protection.")


def recognizers_section(m: dict, fars: list[str]) -> list[str]:
    """The recogniser x row matrix: cells dodging@first FAR / rank-1, per split; then the transfer lines."""
    far, order = fars[0], m["order"]
    splits = [s for s in SPLITS if s in m["columns"][order[0]]["splits"]]
    lines = [f"## Recognisers (first {m['max_probes']} probes per split)", "", HONEST, "",
             f"Each cell: dodging@{far} / rank-1, at that recogniser's own thresholds (fixed for the run on its "
             f"impostor pairs of the held-apart calibration photos); universal: the mean over its distinct designs; "
             f"blue/black/white: the plain controls.", "",
             "| row | " + " | ".join(f"{split}: {n} ({m['columns'][n]['role']})" for split in splits for n in order)
             + " |", "|---|" + "---|" * (len(splits) * len(order))]
    first = m["columns"][order[0]]["splits"][splits[0]]["rows"] if splits else {}
    for row in first:
        cells = []
        for split in splits:
            for n in order:
                s = m["columns"][n]["splits"][split]["rows"].get(row)
                if s is None:
                    cells.append("–")
                    continue
                d, r, _ = _row_figures(s, far)
                cells.append(f"{_pct(d)} / {_pct(r)}")
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    lines.append("")
    for n in order:
        col = m["columns"][n]
        cal = col.get("calibration")
        pairs = f"; thresholds from {cal['pairs']} calibration pairs" if cal else ""
        lines.append(f"- `{n}` ({col['role']}): {col['desc']}{pairs}" + "".join(
            f"; {split}: face found on {_pct(col['splits'][split]['found']['probes'])} of the twins"
            for split in splits if "found" in col["splits"][split]) + provenance_text(col.get("provenance")))
    lines += ["", *transfer_lines(m, far), *real_role_lines(m, far, splits), ""]
    return lines


def provenance_text(prov: dict | None) -> str:
    """A real recogniser's provenance, for its column's line ('' for the others)."""
    if not prov:
        return ""
    return (f"; weights: {prov['package']}, `{prov['file']}` (sha256 {prov['sha256'][:12]}…, {prov['licence']}; "
            f"{prov['family']}; trained on {prov['training_data']})")


def is_random_trunk(name: str) -> bool:
    """A `random:<seed>` column: a randomly initialised trunk, not a face recogniser."""
    return name.startswith("random:")


def real_role_lines(m: dict, far: str, splits=SPLITS, indent: str = "") -> list[str]:
    """role_lines with the random trunks kept out of the held-out mean whenever a real held-out recogniser is
    there (a random trunk's cosines sit in a sliver near 1: averaging it with dlib says nothing about either),
    and said apart."""
    held = [n for n in m["order"] if m["columns"][n]["role"] != "attacked"]
    real = [n for n in held if not is_random_trunk(n)]
    if not real or len(real) == len(held):
        return role_lines(m, far, splits, indent)
    keep = [n for n in m["order"] if m["columns"][n]["role"] == "attacked" or n in real]
    out = [line.replace("held-out", "held-out real recognisers") for line in
           role_lines({**m, "order": keep}, far, splits, indent)]
    return out + [f"{indent}random trunks ({', '.join(n for n in held if n not in real)}) are listed above, never "
                  "averaged with the real recognisers"]


def role_means(m: dict, split: str, far: str) -> dict:
    """{role: mean over that role's columns of the transfer line's diff at `far` on `split`}: how much more the
    designs make the attacked recognisers (white-box) and the held-out ones reject their own people than the
    plain mask does. The gap between the two is what an ensemble of surrogates should close."""
    diffs: dict = {}
    for name in m["order"]:
        col = m["columns"][name]
        t = col["transfer"].get(split, {}).get(f"dodging@{far}")
        if t is not None:
            diffs.setdefault(col["role"], []).append(t["diff"])
    return {role: sum(v) / len(v) for role, v in diffs.items()}


def role_lines(m: dict, far: str, splits=SPLITS, indent: str = "") -> list[str]:
    """Per split: the mean transfer line of the attacked recognisers next to that of the held-out ones."""
    out = []
    for split in splits:
        means = role_means(m, split, far)
        if "held-out" in means and "attacked" in means:
            count = {r: sum(m["columns"][n]["role"] == r for n in m["order"]) for r in means}
            out.append(f"{indent}mean transfer ({split}, dodging@{far} minus original_mask): attacked "
                       f"{means['attacked'] * 100:+.1f} points ({count['attacked']} recognisers), held-out "
                       f"{means['held-out'] * 100:+.1f} points ({count['held-out']})")
    return out


def transfer_lines(m: dict, far: str, splits=SPLITS, indent: str = "") -> list[str]:
    """One line per recogniser and split: universal dodging minus original_mask dodging, with its interval;
    minus the best plain control's; and, when the plain mask leaves no room, that said in words."""
    out = []
    for n in m["order"]:
        col = m["columns"][n]
        for split in splits:
            t = col["transfer"].get(split, {})
            d = t.get(f"dodging@{far}")
            if d is None:
                continue
            line = (f"{indent}transfer to `{n}` ({col['role']}, {split}): universal dodging@{far} minus "
                    f"original_mask {d['diff'] * 100:+.1f} points{_ci(d['identity95'])} (identity bootstrap)")
            best = t.get("vs_best_control", {}).get(f"dodging@{far}")
            if best is not None:
                line += (f"; minus the best plain control (`{t['vs_best_control']['control']}`) "
                         f"{best['diff'] * 100:+.1f} points{_ci(best['identity95'])}")
            base = col.get("splits", {}).get(split, {}).get("rows", {}).get("original_mask")
            rate = base["verification"]["dodging"].get(far) if base else None
            note = verdicts.headroom_note(f"original_mask's dodging@{far}", rate, 1 - rate) if rate is not None else ""
            out.append(line + (f" ({note})" if note else ""))
    return out


# What masks do to real recognisers on real faces (NISTIR 8311, 2020: digitally masked probes, 89 algorithms):
# the best algorithms' false non-match rate rose from about 0.3 % to 5-50 %. Data whose plain mask dodges far more
# than that makes any design look strong; the line below says where this run's own data stands.
REAL_FACE_DODGING = (0.05, 0.60)


def data_realism(report: dict, split: str) -> list[str]:
    """How the real recognisers see this run's own people, from the report's matrix (no extra scoring): per real
    recogniser, unmasked rank-1 and verification at the first FAR, and the plain mask's rank-1 and dodging, beside
    what masks do to real faces. [] when no real recogniser scored `split`."""
    m = report.get("recognizers") or {}
    far = (report.get("fars") or ["1e-02"])[0]
    parts, identities = [], None
    for n in (n for n in m.get("order", []) if n.startswith("zoo:") or n == "dlib"):
        rows = m["columns"][n]["splits"].get(split, {}).get("rows", {})
        if "unmasked" not in rows or "original_mask" not in rows:
            continue
        un, mask = rows["unmasked"]["verification"], rows["original_mask"]["verification"]
        identities = rows["unmasked"].get("identities", identities)
        parts.append(f"{n} rank-1 {_pct(un['rank1'])}, verified {_pct(1 - un['dodging'][far])} at FAR {far}; "
                     f"plain mask rank-1 {_pct(mask['rank1'])}, dodging {_pct(mask['dodging'][far])}")
    if not parts:
        return []
    lo, hi = REAL_FACE_DODGING
    return [f"  realism of this data ({split}, {identities} identities): how real recognisers see these synthetic "
            f"people (on real faces a plain mask dodges about {lo:.0%}-{hi:.0%}):",
            *[f"    {p}" for p in parts]]
