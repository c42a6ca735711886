"""Verdicts on intervals: whether a run meets a target, said so that a second run of the same commit agrees.

A mean that lands 1 point above a bar in one run and 0.5 below it in the next says nothing; its interval says
whether the data can decide. So a target is
  - "met" only when the interval's CONSERVATIVE end clears the bar,
  - "not met" when even its OPTIMISTIC end misses it,
  - "undecided" otherwise (the interval straddles the bar: more probes or more seeds would decide it).
Intervals are the identity-bootstrap 95 % of paired differences (scoring.paired) and Wilson 95 % of shares.
Printability is a property of the designs themselves (no sampling), judged on the WORST distinct design.

The targets, named by what they measure:
  - protection: the universal designs make the recogniser reject its own people at least 30 points more often
    than the plain mask does, and no identity takes more than 30 % of any row's probes;
  - robustness: printed and photographed under held-out transforms, the designs lower rank-1 by at least 20
    points against the plain mask photographed under the same transforms, and raise dodging;
  - printability: every distinct design's TV at most 1/5 of the noise control's, its NPS at most 1/2.
"""

from __future__ import annotations

from maskgan.evaluation.scoring import wilson

MET, NOT_MET, UNDECIDED = "met", "not met", "undecided"
TARGET_POINTS, TARGET_TOP_SHARE = 0.30, 0.30  # protection: >= 30 points more dodging; no identity > 30 %
ROBUST_POINTS = 0.20  # robustness: rank-1 at least 20 points below the photographed plain mask's
TV_OF_NOISE, NPS_OF_NOISE = 0.2, 0.5  # printability: at most 1/5 of noise's TV and 1/2 of its NPS
HEADROOM = 0.10  # a baseline within 10 points of 0 % or 100 % leaves no room to show a difference


def _nan(x) -> bool:
    return x is None or x != x


def on_interval(interval, bar: float, at_least: bool = True) -> str:
    """met / not met / undecided for "value >= bar" (at_least) or "value <= bar", from a [lo, hi] interval."""
    lo, hi = interval
    if _nan(lo) or _nan(hi):
        return UNDECIDED
    if at_least:
        return MET if lo >= bar else NOT_MET if hi < bar else UNDECIDED
    return MET if hi <= bar else NOT_MET if lo > bar else UNDECIDED


def both(*verdicts: str) -> str:
    """All parts met: met; any part not met: not met; else undecided."""
    if all(v == MET for v in verdicts):
        return MET
    return NOT_MET if NOT_MET in verdicts else UNDECIDED


def headroom_note(what: str, rate: float, room: float) -> str:
    """A sentence when a baseline leaves less than HEADROOM of room in the direction a difference needs
    (`room`: 1 - rate for a rise, rate for a fall), else ''."""
    if _nan(rate) or room >= HEADROOM:
        return ""
    return (f"saturated baseline: {what} is already {rate:.1%}, leaving {room * 100:.1f} points of room, so this "
            "difference cannot show protection")


def _top_share_interval(s: dict) -> list:
    if "designs" in s:
        return s.get("worst_top_share_wilson95", [float("nan")] * 2)
    h = s["hubness"]
    return wilson(round(h.get("top_share", 0.0) * h["probes"]), h["probes"]) if h.get("probes") else [float("nan")] * 2


def protection(rows: dict, split: str, far: str) -> dict:
    """The protection target on `split` from a block of rows (white-box or after the defender)."""
    uni, orig = rows.get("universal", {}).get(split), rows.get("original_mask", {}).get(split)
    if uni is None or orig is None or f"dodging@{far}" not in uni.get("paired_vs_original_mask", {}):
        return {"verdict": UNDECIDED, "sentence": "no universal or original_mask row"}
    gain = uni["paired_vs_original_mask"][f"dodging@{far}"]
    shares = {r: _top_share_interval(v[split]) for r, v in rows.items() if split in v}
    worst = max(shares, key=lambda r: -1 if _nan(shares[r][0]) else shares[r][0])
    share_verdicts = [on_interval(iv, TARGET_TOP_SHARE, at_least=False) for iv in shares.values()]
    verdict = both(on_interval(gain["identity95"], TARGET_POINTS), both(*share_verdicts))
    base = orig["verification"]["dodging"][far]
    out = {"verdict": verdict, "gain": gain["diff"], "gain95": gain["identity95"], "worst_top_share_row": worst,
           "worst_top_share95": shares[worst], "saturated": headroom_note(f"original_mask's dodging@{far}", base,
                                                                          1 - base)}
    best = uni.get("paired_vs_best_control")
    if best and f"dodging@{far}" in best["diff"]:
        out["vs_best_control"] = {"control": best["control"], **best["diff"][f"dodging@{far}"]}
    lo, hi = gain["identity95"]
    out["sentence"] = (f"universal dodges {gain['diff'] * 100:+.1f} points vs original_mask [{lo * 100:+.0f}, "
                       f"{hi * 100:+.0f}] (need >= +{TARGET_POINTS * 100:.0f}); largest top id share's Wilson "
                       f"interval [{shares[worst][0]:.0%}, {shares[worst][1]:.0%}] ({worst}; need <= "
                       f"{TARGET_TOP_SHARE:.0%})")
    return out


def robustness(rows: dict, split: str, far: str) -> dict:
    """The robustness target on `split`: universal_physical against original_mask_physical (the same held-out
    draws), paired per probe."""
    phys = rows.get("universal_physical", {}).get(split)
    ctrl = (phys or {}).get("paired_vs_physical_control")
    if phys is None or ctrl is None:
        return {"verdict": UNDECIDED, "sentence": f"no universal_physical row with its paired control on {split}"}
    rank, dodge = ctrl["diff"]["rank1"], ctrl["diff"][f"dodging@{far}"]
    drop95 = [-rank["identity95"][1], -rank["identity95"][0]]
    verdict = both(on_interval(drop95, ROBUST_POINTS), on_interval(dodge["identity95"], 1e-12))
    base = rows.get(ctrl["control"], {}).get(split, {}).get("verification", {}).get("rank1", float("nan"))
    return {"verdict": verdict, "control": ctrl["control"], "rank1_drop": -rank["diff"], "rank1_drop95": drop95,
            "dodging_gain": dodge["diff"], "dodging_gain95": dodge["identity95"],
            "saturated": headroom_note(f"{ctrl['control']}'s rank-1", base, base),
            "sentence": (f"rank-1 {-rank['diff'] * 100:+.1f} points lower than {ctrl['control']} "
                         f"[{drop95[0] * 100:+.0f}, {drop95[1] * 100:+.0f}] (need >= {ROBUST_POINTS * 100:.0f}), dodging "
                         f"{dodge['diff'] * 100:+.1f} points [{dodge['identity95'][0] * 100:+.0f}, "
                         f"{dodge['identity95'][1] * 100:+.0f}] (need > 0)")}


def printability(p: dict, row: str = "universal") -> dict:
    """The printability target on the worst distinct design of `row` (p: report.json's printability)."""
    r, noise = p["rows"].get(row), p["rows"].get("noise")
    if r is None or noise is None:
        return {"verdict": UNDECIDED, "sentence": f"no {row} or noise row"}
    tv_bar, nps_bar = TV_OF_NOISE * noise["tv"], NPS_OF_NOISE * noise["nps"]
    met = r["tv_max"] <= tv_bar and r["nps_max"] <= nps_bar
    return {"verdict": MET if met else NOT_MET, "tv_worst": r["tv_max"], "nps_worst": r["nps_max"],
            "sentence": f"worst distinct design TV {r['tv_max']:.3f} vs {tv_bar:.3f}, NPS {r['nps_max']:.3f} vs "
                        f"{nps_bar:.3f}"}


def all_verdicts(report: dict, split: str) -> dict:
    """report.json's `verdicts`: every target's verdict on `split` (the figure to quote)."""
    fars = report.get("fars") or []
    out: dict = {"split": split}
    if not fars:
        return {**out, "note": "no FAR level could be calibrated: no verdicts"}
    far = fars[0]
    out["protection"] = protection(report["rows"], split, far)
    if report.get("after_defender"):
        out["protection_after_defender"] = protection(report["after_defender"]["rows"], split, far)
    out["robustness"] = robustness(report["rows"], split, far)
    if report.get("printability"):
        out["printability"] = printability(report["printability"])
    return out


PROTECTION = (f"protection target (universal designs dodge >= {TARGET_POINTS * 100:.0f} points more than the plain "
              f"mask, no identity takes > {TARGET_TOP_SHARE:.0%} of any row's probes)")
ROBUSTNESS = (f"robustness target (printed and photographed under held-out transforms, rank-1 >= "
              f"{ROBUST_POINTS * 100:.0f} points below the plain mask photographed the same way, and more dodging)")
PRINTABILITY = (f"printability target (every distinct universal design's TV <= {TV_OF_NOISE:g} x noise's, NPS <= "
                f"{NPS_OF_NOISE:g} x noise's)")


def verdict_line(name: str, v: dict | None) -> str:
    """'<target>: MET|NOT MET|UNDECIDED: <figures>[; saturated baseline ...][; vs the best plain control ...]'."""
    if not v:
        return ""
    extra = f"; {v['saturated']}" if v.get("saturated") else ""
    best = v.get("vs_best_control")
    if best:
        lo, hi = best["identity95"]
        extra += (f"; vs the best plain control `{best['control']}` {best['diff'] * 100:+.1f} points "
                  f"[{lo * 100:+.0f}, {hi * 100:+.0f}]")
    return f"{name}: {v['verdict'].upper()}: {v['sentence']}{extra}"


def verdict_lines(v: dict) -> list[str]:
    """Every target's line from report.json's `verdicts` (all_verdicts)."""
    lines = (verdict_line(f"{PROTECTION}, white-box", v.get("protection")),
             verdict_line(f"{PROTECTION}, after the defender", v.get("protection_after_defender")),
             verdict_line(ROBUSTNESS, v.get("robustness")), verdict_line(PRINTABILITY, v.get("printability")))
    return [line for line in lines if line]
