"""`maskgan check` end to end: a wearer's folder -> a CheckReport -> check.json, check.html and their images,
written whole at the end (every input problem is found before anything is written; files go to a temporary
folder beside the output and are moved in last, so a failed run leaves the folder as it was).

The report's roles: a recogniser named among those a design's run attacked (its checkpoint's config:
model.recognizer_weights and model.recognizers) is "white-box"; any other is "held-out"; with a design file and
no run, "unknown" (a PNG does not record what it was made against).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from maskgan.check import photos as ph
from maskgan.check import tryon, verdicts
from maskgan.check.recognisers import DISTANCE, DLIB_BOX, Recogniser
from maskgan.reporting.pages import check_page

WHITE_BOX, HELD_OUT, UNKNOWN = "white-box", "held-out", "unknown"
FILES = "check_files"


@dataclass
class DesignSource:
    label: str  # e.g. "universal design 0" or the file's name
    where: str  # the run's checkpoint URI or the file's URI, and its sha256
    attacked: list[str] | None  # the recognisers its run attacked; None: unknown (a design file alone)


@dataclass
class Request:
    folder: str
    recognisers: list[Recogniser]
    crowd: str | None = None
    designs: dict[str, torch.Tensor] = field(default_factory=dict)  # try-on: label -> design [1,3,h,w]
    source: DesignSource | None = None
    missing: list[str] = field(default_factory=list)  # recognisers asked for that are not there (one line each)


@dataclass
class PhotoResult:
    photo: str
    how: str
    score: float
    rank: int | None  # among the crowd and the person (1 = the person first); None without a crowd
    recognised: dict[str, bool]  # threshold label -> accepted


@dataclass
class GroupResult:
    group: str  # wearing, plain, try-on/<label>
    photos: list[PhotoResult]
    mean_score: float
    verdict: str | None  # "recognised" (in at least one photo) / "not recognised" / None (no threshold)
    recognised_photos: int | None


@dataclass
class RecogniserResult:
    name: str
    desc: str
    metric: str
    role: str
    thresholds: list[verdicts.Threshold]
    verdict_by: str | None  # the threshold label verdicts use
    no_verdict: str | None  # why there is none
    unmasked_disagree: str | None  # two unmasked photos this recogniser takes for two people
    groups: list[GroupResult]


@dataclass
class CheckReport:
    folder: str
    photos: dict[str, list[dict]]  # group -> [{photo, how, file}]
    no_face: list[str]
    crowd_people: int
    crowd_note: str | None
    design: DesignSource | None
    recognisers: list[RecogniserResult]
    missing: list[str]
    summary: list[str]


def role_of(name: str, attacked: list[str] | None) -> str:
    """white-box when the design's run attacked this recogniser (`zoo:<name>` specs name zoo models; dlib-box is
    the same network as `zoo:dlib`), held-out otherwise, unknown without a run."""
    if attacked is None:
        return UNKNOWN
    names = set(attacked) | {s[len("zoo:"):] for s in attacked if s.startswith("zoo:")}
    if "dlib" in names:
        names.add(DLIB_BOX)
    return WHITE_BOX if name in names else HELD_OUT


def _faces(req: Request, log) -> tuple[dict[str, list[ph.Face]], list[str], dict[str, list[ph.Face]]]:
    unmasked = ph.read_unmasked(req.folder, log)
    geometry = ph.geometry_of(unmasked.faces)
    groups, no_face = {"unmasked": unmasked.faces}, list(unmasked.no_face)
    for label, required in (("wearing", not req.designs), ("plain", False)):
        got = ph.read_covered(req.folder, label, geometry, required, log)
        if got is not None:
            groups[label], no_face = got.faces, no_face + got.no_face
    crowd = ph.read_crowd(req.crowd, log) if req.crowd else {}
    if req.designs:
        log(f"try-on: {len(req.designs)} design(s) and the plain mask on {len(unmasked.faces)} unmasked photos, "
            f"{tryon.DRAWS} held-out print-and-photograph draws each")
        for label, faces in tryon.try_on(unmasked.faces, req.designs).items():
            groups[f"try-on/{label}"] = faces
    return groups, no_face, crowd


def _embed(rec: Recogniser, faces: list[ph.Face]) -> np.ndarray:
    return rec.embed(np.stack([f.image for f in faces]), np.stack([f.landmarks for f in faces]))


def _group(name: str, faces, emb, person, crowd_emb, rec: Recogniser, ths) -> GroupResult:
    lower = rec.lower_is_same
    scores = verdicts.best(emb, person, lower)
    rk = verdicts.ranks(emb, person, crowd_emb, lower) if crowd_emb else [None] * len(faces)
    acc = {t.label: verdicts.recognised(scores, t.value, lower) for t in ths}
    photos = [PhotoResult(f.name, f.how, float(s), None if r is None else int(r),
                          {k: bool(v[i]) for k, v in acc.items()}) for i, (f, s, r) in enumerate(zip(faces, scores, rk))]
    by = verdicts.verdict_threshold(ths)
    hits = None if by is None else int(acc[by.label].sum())
    verdict = None if by is None else ("recognised" if hits else "not recognised")
    return GroupResult(name, photos, float(scores.mean()), verdict, hits)


def score_recogniser(rec: Recogniser, groups, crowd, role: str, log) -> RecogniserResult:
    """One recogniser over every group: thresholds, verdicts, ranks, and the unmasked photos' agreement."""
    log(f"{rec.name}: embedding {sum(len(v) for v in groups.values()) + sum(len(v) for v in crowd.values())} faces")
    emb = {g: _embed(rec, faces) for g, faces in groups.items()}
    crowd_emb = {p: _embed(rec, faces) for p, faces in crowd.items()}
    lower, person = rec.lower_is_same, emb["unmasked"]
    impostors = verdicts.impostor_scores(person, crowd_emb, lower) if crowd_emb else None
    ths = verdicts.thresholds(rec.documented, impostors, len(crowd_emb), lower)
    by = verdicts.verdict_threshold(ths)
    no_verdict = None
    if by is None:
        no_verdict = (f"no verdict: {rec.name} has no documented operating point and "
                      + (f"the crowd has {len(crowd_emb)} people (at least {verdicts.MIN_CROWD} calibrate one)"
                         if crowd_emb else f"there is no crowd (--crowd DIR, {verdicts.MIN_CROWD}+ people)"))
    disagree = (verdicts.unmasked_disagreement(person, [f.name for f in groups["unmasked"]], by, lower)
                if by is not None else None)
    results = [_group(g, groups[g], emb[g], person, crowd_emb, rec, ths) for g in groups if g != "unmasked"]
    return RecogniserResult(rec.name, rec.desc, rec.metric, role, ths, by.label if by else None, no_verdict,
                            disagree, results)


def _baseline(group: str, groups: list[str]) -> str | None:
    """The plain-mask group a group is compared with: plain/ for wearing/, the plain try-on for a try-on."""
    if group == "wearing" and "plain" in groups:
        return "plain"
    if group.startswith("try-on/") and group != f"try-on/{tryon.PLAIN}":
        return f"try-on/{tryon.PLAIN}"
    return None


def summary_lines(results: list[RecogniserResult], groups: list[str]) -> list[str]:
    """Per group: protected from how many recognisers of how many (those with a verdict), and against the plain
    mask: its count, and for how many recognisers the group's mean score is less alike than the plain mask's."""
    judged = [r for r in results if r.verdict_by is not None]
    lines = [] if judged else [f"no verdicts: none of the {len(results)} recognisers has a documented operating "
                               f"point and there is no crowd of {verdicts.MIN_CROWD}+ people to calibrate one "
                               "(--crowd DIR); similarities and ranks only"]

    def of(r, g):
        return next(x for x in r.groups if x.group == g)

    for g in groups:
        if g in ("unmasked", "plain", f"try-on/{tryon.PLAIN}"):
            continue
        parts = []
        if judged:
            safe = sum(of(r, g).verdict == "not recognised" for r in judged)
            parts.append(f"protected from {safe} of {len(judged)} recognisers (not recognised in any photo)")
        base = _baseline(g, groups)
        if base:
            if judged:
                plain = sum(of(r, base).verdict == "not recognised" for r in judged)
                parts.append(f"the plain mask: {plain} of {len(judged)}")
            lower = [r.name for r in results if verdicts.oriented(of(r, g).mean_score, r.metric == DISTANCE)
                     < verdicts.oriented(of(r, base).mean_score, r.metric == DISTANCE)]
            parts.append(f"less alike than the plain mask for {len(lower)} of {len(results)} "
                         f"({', '.join(lower) or 'none'})")
        if parts:
            lines.append(f"{g}: " + "; ".join(parts))
    return lines


@dataclass
class Checked:
    """The report and the pictures behind it (the faces and the recognisers that draw their chips)."""

    report: CheckReport
    faces: dict[str, list[ph.Face]]
    recognisers: list[Recogniser]


def check(req: Request, log=print) -> Checked:
    """Everything in memory; raises CheckInputError (one line) on bad input. `write` puts it on disk."""
    if not req.recognisers:
        raise ph.CheckInputError("no recognisers to check with: " + ("; ".join(req.missing) or "none named"))
    groups, no_face, crowd = _faces(req, log)
    crowd_note = None
    if crowd and len(crowd) < verdicts.MIN_CROWD:
        crowd_note = (f"the crowd has {len(crowd)} people with a face, fewer than {verdicts.MIN_CROWD}: no "
                      "calibrated thresholds (similarities and ranks are still shown)")
        log(crowd_note)
    attacked = req.source.attacked if req.source else None
    results = [score_recogniser(r, groups, crowd, role_of(r.name, attacked) if req.source else UNKNOWN, log)
               for r in req.recognisers]
    judged = [r for r in results if r.verdict_by is not None]
    split = [r for r in judged if r.unmasked_disagree]
    if split and 2 * len(split) > len(judged):  # a majority of the recognisers with a verdict
        raise ph.CheckInputError(f"{os.path.join(req.folder, 'unmasked')}: {split[0].unmasked_disagree} look like "
                                 f"two different people to {len(split)} of {len(judged)} recognisers; keep only "
                                 "photos of the person who wears the mask")
    photos = {g: [{"photo": f.name, "how": f.how, "file": f"{FILES}/photos/{_safe(g)}_{i}.png",
                   "chip": f"{_safe(g)}_{i}.png"} for i, f in enumerate(faces)] for g, faces in groups.items()}
    report = CheckReport(req.folder, photos, no_face, len(crowd), crowd_note, req.source, results, req.missing,
                         summary_lines(results, list(groups)))
    return Checked(report, groups, req.recognisers)


def _safe(name: str) -> str:
    return name.replace("/", "_").replace(" ", "_").replace(":", "_")


def _png(a: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(a)).save(buf, "PNG")
    return buf.getvalue()


def _images(checked: Checked, tmp: str) -> None:
    """check_files/photos/<group>_<i>.png and check_files/<recogniser>/<group>_<i>.png (its aligned chip)."""
    os.makedirs(os.path.join(tmp, FILES, "photos"))
    for g, faces in checked.faces.items():
        imgs, pts = np.stack([f.image for f in faces]), np.stack([f.landmarks for f in faces])
        for rec in checked.recognisers:
            folder = os.path.join(tmp, FILES, _safe(rec.name))
            os.makedirs(folder, exist_ok=True)
            for chip, entry in zip(rec.chips(imgs, pts), checked.report.photos[g]):
                with open(os.path.join(folder, entry["chip"]), "wb") as f:
                    f.write(_png(chip))
        for face, entry in zip(faces, checked.report.photos[g]):
            with open(os.path.join(tmp, entry["file"]), "wb") as f:
                f.write(_png(face.image))


def write(checked: Checked, out: str) -> tuple[str, str]:
    """check.json, check.html and check_files/ into `out`, moved in only once all of them are made."""
    os.makedirs(out, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".check-", dir=out)
    try:
        _images(checked, tmp)
        data = to_json(checked.report)
        with open(os.path.join(tmp, "check.json"), "w") as f:
            f.write(json.dumps(data, indent=1, allow_nan=False) + "\n")
        with open(os.path.join(tmp, "check.html"), "w") as f:
            f.write(check_page.render(data, {r.name: f"{FILES}/{_safe(r.name)}" for r in checked.recognisers}))
        old = os.path.join(out, FILES)
        if os.path.isdir(old):
            shutil.rmtree(old)
        os.replace(os.path.join(tmp, FILES), old)
        for name in ("check.json", "check.html"):
            os.replace(os.path.join(tmp, name), os.path.join(out, name))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return os.path.join(out, "check.json"), os.path.join(out, "check.html")


def to_json(report: CheckReport) -> dict:
    return asdict(report)
