"""The ruler: verification, identification, hubness and honest intervals, from similarities alone.

Pure functions over numpy arrays (no Ray, no storage, no models): `maskgan.evaluation.evaluate` embeds the probes and
hands the cosine similarities here, and the tests plant known distributions to check each number.

- Verification, as a deployed system decides: a probe is accepted as its own identity when its cosine
  similarity to that identity's gallery photo reaches a threshold; the threshold is set so that a chosen
  share (the FAR) of impostor pairs would be accepted. **Dodging** is the share of probes rejected.
- Identification: rank of the probe's own gallery photo among all gallery photos (rank-1, rank-5).
- Hubness: when a design pulls every face onto one identity, identification accuracy alone misleads (that
  identity's own probes count as right), so each row reports how concentrated its predictions are.
- Intervals: probes of one person are correlated (same face, same lighting), so the honest bootstrap resamples
  identities and keeps all their probes; Wilson intervals keep a 0/32 rate from claiming [0 %, 0 %].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FARS = (1e-2, 1e-3)
# A row is hub-dominated when its most-predicted identity takes more than this share of the probes (and more
# than any identity's own share of them, so a split of three people, each recognised, is not a "hub").
HUB_SHARE = 0.30
# At most this many impostor gallery photos per probe (seeded choice): all of them for small galleries, and a
# bounded memory for large ones (1 000 probes x 256 = 256 000 pairs still resolve a FAR of 1e-3).
IMPOSTORS_PER_PROBE = 256
# A FAR is reported only from at least this many / FAR impostor pairs: 10 pairs above its threshold, so the
# threshold is not the 2nd-highest of a handful of correlated pairs.
MIN_PAIRS_PER_FAR = 10
N_BOOT = 1000
Z95 = 1.959963984540054


def far_key(far: float) -> str:
    """JSON key of a FAR: '1e-02', '1e-03'."""
    return f"{far:.0e}"


@dataclass
class ProbeScores:
    """Per probe, in probe order: true label, predicted label (nearest gallery photo), cosine similarity to
    the own gallery photo, and the 0-based rank of the own gallery photo among all of them."""

    label: np.ndarray
    pred: np.ndarray
    own_sim: np.ndarray
    rank: np.ndarray

    @property
    def correct(self) -> np.ndarray:
        return self.pred == self.label

    @staticmethod
    def concat(parts: list["ProbeScores"]) -> "ProbeScores":
        fields = ("label", "pred", "own_sim", "rank")
        if not parts:
            return ProbeScores(*(np.zeros(0, np.float32 if f == "own_sim" else np.int64) for f in fields))
        return ProbeScores(*(np.concatenate([getattr(p, f) for p in parts]) for f in fields))


def probe_scores(sims: np.ndarray, label: np.ndarray) -> ProbeScores:
    """From a [probes, gallery] cosine-similarity matrix and each probe's label (= its gallery index)."""
    label = np.asarray(label, np.int64)
    own = sims[np.arange(len(label)), label]
    rank = (sims > own[:, None]).sum(1)  # ties count in the probe's favour, as argmax's first-index rule does
    return ProbeScores(label, sims.argmax(1).astype(np.int64), own.astype(np.float32), rank.astype(np.int64))


def impostor_similarities(sims: np.ndarray, label: np.ndarray, rng: np.random.Generator,
                          per_probe: int = IMPOSTORS_PER_PROBE) -> np.ndarray:
    """Cosine similarities of each probe to gallery photos of OTHER identities (at most `per_probe` each)."""
    n, g = sims.shape
    others = np.ones((n, g), bool)
    others[np.arange(n), np.asarray(label, np.int64)] = False
    if g - 1 <= per_probe:
        return sims[others]
    picks = np.stack([rng.choice(np.flatnonzero(row), per_probe, replace=False) for row in others])
    return np.take_along_axis(sims, picks, 1).ravel()


def far_threshold(impostor: np.ndarray, far: float) -> float:
    """The similarity that a share `far` of impostor pairs reaches: the (1 - far) quantile (nan: no pairs)."""
    if impostor.size == 0:
        return float("nan")
    return float(np.quantile(impostor, 1.0 - far))


def thresholds(impostor: np.ndarray, fars=FARS) -> dict[str, float]:
    return {far_key(f): far_threshold(impostor, f) for f in fars}


def dodged(scores: ProbeScores, threshold: float) -> np.ndarray:
    """Per probe: rejected as its own identity (similarity to its own gallery photo below the threshold)."""
    return scores.own_sim < threshold


# ---- intervals -------------------------------------------------------------------------------------------


def wilson(k: float, n: int, z: float = Z95) -> list[float]:
    """Wilson score interval for k successes in n trials (0/32 -> [0, 10.7 %], not [0, 0])."""
    if n == 0:
        return [float("nan"), float("nan")]
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return [float(max(0.0, centre - half)), float(min(1.0, centre + half))]


def probe_bootstrap(values: np.ndarray, n_boot: int = N_BOOT, seed: int = 0) -> list[float]:
    """95 % percentile bootstrap of the mean, resampling probes (treats correlated probes as independent)."""
    if values.size == 0:
        return [float("nan"), float("nan")]
    rng = np.random.default_rng(seed)
    means = rng.choice(values.astype(np.float64), size=(n_boot, values.size), replace=True).mean(1)
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def identity_bootstrap(values: np.ndarray, identity: np.ndarray, n_boot: int = N_BOOT, seed: int = 0) -> list[float]:
    """95 % cluster bootstrap of the mean: resample identities with replacement, keep all of their probes."""
    if values.size == 0:
        return [float("nan"), float("nan")]
    ids, inverse = np.unique(identity, return_inverse=True)
    sums = np.bincount(inverse, weights=values.astype(np.float64), minlength=len(ids))
    counts = np.bincount(inverse, minlength=len(ids)).astype(np.float64)
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(ids), size=(n_boot, len(ids)))
    means = sums[pick].sum(1) / counts[pick].sum(1)
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def paired_difference(a: np.ndarray, b: np.ndarray, identity: np.ndarray, seed: int = 0) -> dict:
    """mean(a - b) over the same probes, with its identity-bootstrap 95 % interval."""
    d = a.astype(np.float64) - b.astype(np.float64)
    return {"diff": float(d.mean()) if d.size else float("nan"),
            "identity95": identity_bootstrap(d, identity, seed=seed)}


# ---- hubness ---------------------------------------------------------------------------------------------


def hubness(scores: ProbeScores, gallery_size: int, hub_share: float = HUB_SHARE) -> dict:
    """How concentrated the predictions are: top identity's share, normalised entropy, per-identity accuracy.

    Entropy is divided by log(min(probes, gallery)), its largest possible value: 1 = predictions as spread
    as they can be, 0 = every probe predicted as one identity."""
    n = len(scores.pred)
    if n == 0:
        return {"probes": 0, "hub_dominated": False, "sentence": ""}
    counts = np.bincount(scores.pred, minlength=gallery_size)
    top = int(counts.argmax())
    top_share = float(counts[top] / n)
    p = counts[counts > 0] / n
    ceiling = np.log(min(n, gallery_size))
    entropy = float(-(p * np.log(p)).sum() / ceiling) if ceiling > 0 else 0.0
    own = np.bincount(scores.label, minlength=gallery_size)
    dominated = bool(top_share > hub_share and counts[top] > own.max())
    per_identity = {str(int(i)): float(scores.correct[scores.label == i].mean()) for i in np.unique(scores.label)}
    sentence = ""
    if dominated:
        sentence = (f"hub-dominated: {counts[top]} of {n} probes ({top_share:.0%}) are identified as identity {top} "
                    f"(only {int(own[top])} of them are its own probes) and {int((counts > 0).sum())} identities are "
                    "ever predicted: its rank-1 counts the hub's own probes, read dodging instead")
    return {"probes": n, "top_identity": top, "top_share": top_share, "top_own_probes": int(own[top]),
            "distinct_predicted": int((counts > 0).sum()), "entropy": entropy, "per_identity_accuracy": per_identity,
            "hub_dominated": dominated, "sentence": sentence}


# ---- one row, and aggregates over designs ---------------------------------------------------------------


def summarise(scores: ProbeScores, thr: dict[str, float], gallery_size: int, seed: int = 0) -> dict:
    """Everything report.json holds for one row and split: verification, hubness, intervals."""
    n, ident = len(scores.label), scores.label
    out: dict = {"probes": n, "identities": int(len(np.unique(ident)))}
    rates = {"rank1": scores.correct, "rank5": scores.rank < 5}
    for key, t in thr.items():
        rates[f"dodging@{key}"] = dodged(scores, t) if np.isfinite(t) else np.full(n, np.nan)
    out["verification"] = {
        "thresholds": dict(thr),
        "mean_cosine": float(scores.own_sim.mean()) if n else float("nan"),
        "dodging": {k: _mean(rates[f"dodging@{k}"]) for k in thr},
        "rank1": _mean(rates["rank1"]),
        "rank5": _mean(rates["rank5"]),
    }
    out["intervals"] = {"mean_cosine": {"identity95": identity_bootstrap(scores.own_sim, ident, seed=seed),
                                        "probe95": probe_bootstrap(scores.own_sim, seed=seed)}}
    for key, v in rates.items():
        known = not np.isnan(v).any()  # no impostor pairs, no threshold: no dodging rate and no interval
        out["intervals"][key] = {"wilson95": wilson(float(v.sum()), n) if known else [float("nan")] * 2,
                                 "identity95": identity_bootstrap(v, ident, seed=seed),
                                 "probe95": probe_bootstrap(v, seed=seed)}
    out["hubness"] = hubness(scores, gallery_size)
    return out


def per_probe_values(scores: ProbeScores, thr: dict[str, float]) -> dict[str, np.ndarray]:
    """The per-probe quantities that paired differences compare (same keys as `flat`)."""
    v = {"rank1": scores.correct.astype(np.float64), "rank5": (scores.rank < 5).astype(np.float64),
         "mean_cosine": scores.own_sim.astype(np.float64)}
    for key, t in thr.items():
        unknown = np.full(v["rank1"].shape, np.nan)
        v[f"dodging@{key}"] = dodged(scores, t).astype(np.float64) if np.isfinite(t) else unknown
    return v


def paired(a: dict[str, np.ndarray], b: dict[str, np.ndarray], identity: np.ndarray, seed: int = 0) -> dict:
    """Row a minus row b, metric by metric, on the same probes."""
    return {k: paired_difference(a[k], b[k], identity, seed=seed) for k in a}


def flat(summary: dict) -> dict[str, float]:
    """One row's headline numbers as a flat dict (what universal designs aggregate)."""
    v = summary["verification"]
    out = {"rank1": v["rank1"], "rank5": v["rank5"], "mean_cosine": v["mean_cosine"]}
    out.update({f"dodging@{k}": d for k, d in v["dodging"].items()})
    h = summary["hubness"]
    out.update({"top_share": h.get("top_share", float("nan")), "entropy": h.get("entropy", float("nan"))})
    return out


def protective_sign(metric: str) -> int:
    """+1 where a larger value protects the wearer more (dodging, entropy), -1 where it protects less."""
    return 1 if metric.startswith("dodging") or metric == "entropy" else -1


def over_designs(per_design: list[dict[str, float]]) -> dict:
    """Mean, worst (least protective) and best (most protective) of every metric over K designs."""
    keys = per_design[0].keys()
    out: dict = {"mean": {}, "worst": {}, "best": {}}
    for k in keys:
        vals = np.array([d[k] for d in per_design], np.float64)
        signed = protective_sign(k) * vals
        out["mean"][k] = float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
        out["worst"][k] = float(vals[np.nanargmin(signed)]) if np.isfinite(vals).any() else float("nan")
        out["best"][k] = float(vals[np.nanargmax(signed)]) if np.isfinite(vals).any() else float("nan")
    return out


def _mean(v: np.ndarray) -> float:
    return float(v.mean()) if v.size else float("nan")


def calibrated(impostor: np.ndarray, fars=FARS, source: str = "per-split unmasked probes",
               held_apart: bool = False) -> dict:
    """Thresholds from impostor pairs, one per FAR the pairs can support: a FAR needs at least
    MIN_PAIRS_PER_FAR / FAR pairs (10 pairs above the threshold); a level with fewer is dropped, with a note,
    rather than set by the 2nd-highest of a handful of pairs."""
    n = int(impostor.size)
    thr, dropped = {}, {}
    for f in fars:
        need = int(np.ceil(MIN_PAIRS_PER_FAR / f))
        if n >= need:
            thr[far_key(f)] = far_threshold(impostor, f)
        else:
            dropped[far_key(f)] = f"dropped: {n} impostor pairs, FAR {far_key(f)} needs at least {need}"
    rough = []
    if not thr and n:  # no level supportable: keep the coarsest as a rough one, said so, rather than no verification
        coarsest = far_key(max(fars))
        thr[coarsest] = far_threshold(impostor, max(fars))
        dropped.pop(coarsest)
        rough.append(coarsest)
    return {"source": source, "held_apart": held_apart, "pairs": n, "thresholds": thr, "dropped": dropped,
            "rough": rough}


def _best_control(values: dict, controls, key: str | None) -> str | None:
    """The control that protects most at `key` (highest mean dodging): the bar a design must clear."""
    present = [c for c in controls if c in values]
    if not present or key is None:
        return None
    return max(present, key=lambda c: np.nan_to_num(np.nanmean(values[c][key]), nan=-1.0))


def _baselines(name: str, values: dict, controls, physical_suffix: str, key: str | None) -> dict:
    """{what: row} a row is compared with on the same probes: the plain mask and the best plain control, taken
    among the transformed rows for a row under physical transforms (the transform alone is not protection)."""
    physical = name.endswith(physical_suffix) or "_physical/" in name
    if physical and "original_mask" + physical_suffix in values:
        return {"original_mask": "original_mask" + physical_suffix,
                "best_control": _best_control(values, [c + physical_suffix for c in controls], key)}
    return {"original_mask": "original_mask", "best_control": _best_control(values, controls, key)}


def summarise_rows(scored: dict[str, ProbeScores], calibration, gallery_size: int, designs=(),
                   groups=(), seed: int = 0, distinct: dict | None = None, controls=(),
                   physical_suffix: str = "_physical") -> dict:
    """One split of one recogniser: every row summarised at the recogniser's thresholds (`calibration`: the
    dict `calibrated` returns, fixed per recogniser per run; an impostor array: thresholds at every FAR from
    it, those with fewer than MIN_PAIRS_PER_FAR / FAR pairs listed as `rough`), with its
    paired differences to `original_mask` and to the best of `controls` (rows under physical transforms: to
    their transformed twins), and the designs named `<group>/<i>` aggregated into a `<group>` row (mean,
    worst, best over the DISTINCT ones: `distinct[group]` lists the kept indices). maskgan.evaluation.evaluate and
    maskgan.evaluation.transfer both score through it, so the attacked and held-out columns of the matrix are one ruler."""
    if isinstance(calibration, np.ndarray):  # a caller's own impostor pairs: every FAR, the thin ones flagged
        n = int(calibration.size)
        calibration = {"source": "per-split unmasked probes", "held_apart": False, "pairs": n,
                       "thresholds": thresholds(calibration), "dropped": {},
                       "rough": [far_key(f) for f in FARS if n < MIN_PAIRS_PER_FAR / f]}
    thr = calibration["thresholds"]
    key = f"dodging@{next(iter(thr))}" if thr else None
    label = scored["original_mask"].label
    values = {name: per_probe_values(scored[name], thr) for name in scored}
    out = {"impostors": calibration, "rows": {}, "_values": values, "_label": label}
    for name in scored:
        summary = summarise(scored[name], thr, gallery_size, seed=seed)
        _add_paired(summary, name, values, label, controls, physical_suffix, key, seed)
        out["rows"][name] = summary
    for group in groups:
        members = [n for n in designs if n.startswith(group + "/")]
        if not members:
            continue
        kept = set((distinct or {}).get(group, range(len(members))))
        use = [n for n in members if int(n.split("/")[1]) in kept]
        summaries = {n: out["rows"].pop(n) for n in members}
        per_design = [flat(summaries[n]) for n in members]
        values[group] = {k: np.mean([values[n][k] for n in use], 0) for k in values["original_mask"]}
        row = {"designs": len(members), "distinct": len(use), **over_designs([flat(summaries[n]) for n in use]),
               "per_design": per_design, "hub_sentences": [summaries[n]["hubness"]["sentence"] for n in use
                                                           if summaries[n]["hubness"]["hub_dominated"]],
               "worst_top_share_wilson95": _worst_share_interval([summaries[n] for n in use])}
        _add_paired(row, group + "/", values, label, controls, physical_suffix, key, seed, own=group)
        out["rows"][group] = row
    return out


def _add_paired(summary: dict, name: str, values: dict, label, controls, suffix: str, key, seed: int,
                own: str | None = None) -> None:
    base = _baselines(name, values, controls, suffix, key)
    me = values[own or name]
    if (own or name) != "original_mask":
        summary["paired_vs_original_mask"] = paired(me, values["original_mask"], label, seed=seed)
    if base["original_mask"] != "original_mask" and (own or name) != base["original_mask"]:
        summary["paired_vs_physical_control"] = {"control": base["original_mask"],
                                                 "diff": paired(me, values[base["original_mask"]], label, seed=seed)}
    best = base["best_control"]
    if best is not None and best != (own or name) and (own or name) not in controls:
        summary["paired_vs_best_control"] = {"control": best, "diff": paired(me, values[best], label, seed=seed)}


def _worst_share_interval(summaries: list[dict]) -> list[float]:
    """Wilson 95 % of the largest top-identity share among the designs (its count out of the probes)."""
    worst = max(summaries, key=lambda s: s["hubness"].get("top_share", -1.0))
    h = worst["hubness"]
    return wilson(round(h.get("top_share", 0.0) * h["probes"]), h["probes"]) if h["probes"] else [float("nan")] * 2
