"""Scores, thresholds and verdicts: pure numpy, no models (maskgan.check.runner feeds it embeddings).

A probe photo's score is its best match among the person's unmasked photos (the highest cosine similarity, or
the lowest L2 distance): a recogniser that enrolled several photos of a person matches a probe to the closest.

Thresholds come from one of two places, and every verdict names which:
- calibrated on a crowd at a false-accept rate (FAR): the impostor scores are every crowd photo against the
  person's unmasked photos and against every other crowd person's photos (each scored as above); the threshold
  is the (1 - FAR) quantile of them ("higher" method: with fewer than 1/FAR impostor scores it is the highest
  one, and the source says so). Refused for a crowd of fewer than MIN_CROWD people;
- documented by the recogniser's makers (dlib's 0.6 rule).
The verdict threshold is the crowd's FAR 1e-2 where there is a crowd (the lenient of the two points, where a
recogniser accepts more: "not recognised" there is the stronger claim), else the documented one, else none.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FARS = (1e-2, 1e-3)
MIN_CROWD = 10  # people; below this a calibrated threshold is a guess


@dataclass(frozen=True)
class Threshold:
    label: str  # "FAR 1e-2 (crowd)", "documented"
    value: float
    source: str  # printed beside the verdicts made with it


def pair_scores(probes: np.ndarray, enrolled: np.ndarray, lower_is_same: bool) -> np.ndarray:
    """[P, D] x [E, D] -> [P, E]: cosine similarity of normalised rows, or L2 distance."""
    if lower_is_same:
        return np.sqrt(np.maximum(((probes[:, None, :] - enrolled[None, :, :]) ** 2).sum(-1), 0.0))
    a = probes / np.maximum(np.linalg.norm(probes, axis=1, keepdims=True), 1e-12)
    b = enrolled / np.maximum(np.linalg.norm(enrolled, axis=1, keepdims=True), 1e-12)
    return a @ b.T


def best(probes: np.ndarray, enrolled: np.ndarray, lower_is_same: bool) -> np.ndarray:
    """[P]: each probe's best score among the enrolled photos."""
    s = pair_scores(probes, enrolled, lower_is_same)
    return s.min(1) if lower_is_same else s.max(1)


def oriented(scores, lower_is_same: bool) -> np.ndarray:
    """Scores with "more alike" upwards (distances negated)."""
    s = np.asarray(scores, np.float64)
    return -s if lower_is_same else s


def recognised(scores, threshold: float, lower_is_same: bool) -> np.ndarray:
    """bool: the recogniser accepts the match (strictly past the threshold)."""
    return oriented(scores, lower_is_same) > oriented(threshold, lower_is_same)


def impostor_scores(person: np.ndarray, crowd: dict[str, np.ndarray], lower_is_same: bool) -> np.ndarray:
    """Every crowd photo against the person, and against every other crowd person (best-of each)."""
    out = [best(emb, person, lower_is_same) for emb in crowd.values()]
    names = list(crowd)
    for i, a in enumerate(names):
        for b in names[:i] + names[i + 1:]:
            out.append(best(crowd[b], crowd[a], lower_is_same))
    return np.concatenate(out) if out else np.zeros(0)


def calibrate(impostors: np.ndarray, far: float, lower_is_same: bool, people: int) -> Threshold:
    """The threshold accepting at most a share `far` of the impostor scores."""
    s = oriented(impostors, lower_is_same)
    thr = float(np.quantile(s, 1 - far, method="higher"))
    value = -thr if lower_is_same else thr
    note = "" if len(s) * far >= 1 else f"; fewer than {round(1 / far)} scores, so the highest impostor score"
    return Threshold(f"FAR {far:.0e} (crowd)", value,
                     f"calibrated on a crowd of {people} people: {len(s)} impostor scores at FAR {far:g}{note}")


def thresholds(documented, impostors: np.ndarray | None, people: int, lower_is_same: bool) -> list[Threshold]:
    """The crowd's (when it has MIN_CROWD people or more) then the documented one (`documented`: an
    OperatingPoint or None)."""
    out = []
    if impostors is not None and people >= MIN_CROWD and len(impostors):
        out += [calibrate(impostors, far, lower_is_same, people) for far in FARS]
    if documented is not None:
        out.append(Threshold("documented", float(documented.value), documented.source))
    return out


def verdict_threshold(ths: list[Threshold]) -> Threshold | None:
    return ths[0] if ths else None


def ranks(probes: np.ndarray, person: np.ndarray, crowd: dict[str, np.ndarray], lower_is_same: bool) -> np.ndarray:
    """[P] int: the person's place (1 = first) among the crowd and the person, by each probe's best score."""
    own = oriented(best(probes, person, lower_is_same), lower_is_same)
    if not crowd:
        return np.ones(len(probes), int)
    others = np.stack([oriented(best(probes, emb, lower_is_same), lower_is_same) for emb in crowd.values()], 1)
    return 1 + (others > own[:, None]).sum(1)


def unmasked_disagreement(unmasked: np.ndarray, names: list[str], th: Threshold,
                          lower_is_same: bool) -> str | None:
    """The least alike pair of the person's unmasked photos when this recogniser says they are two people."""
    s = pair_scores(unmasked, unmasked, lower_is_same)
    o = oriented(s, lower_is_same)
    np.fill_diagonal(o, np.inf)
    i, j = np.unravel_index(np.argmin(o), o.shape)
    if recognised(s[i, j], th.value, lower_is_same):
        return None
    return f"{names[i]} and {names[j]}"
