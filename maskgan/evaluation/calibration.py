"""One calibration set per run, held apart from every scored split: where verification thresholds come from.

A deployed recogniser sets its threshold once, on people it will never be asked about; it does not recompute
it from the probes it is scoring. So every recogniser here gets ONE set of thresholds per run, from impostor
pairs of UNMASKED photos of identities that appear in no scored split and not in the gallery:
  - a `calibration` set in the manifest, when the data has one, else
  - the `adapt` pool (synthetic data: identities of their own, `synth-adapt-*`). The attacked head was adapted
    on these people, so its impostor pairs there are a little further apart than for strangers; the report
    says which set was used.
Pairs are every two photos of different identities in the set (at most MAX_PHOTOS photos). A FAR level needs
at least scoring.MIN_PAIRS_PER_FAR / FAR pairs, else it is dropped with a note (scoring.calibrated).

A calibration set that holds a scored identity is refused (one line naming one of them): its thresholds
would be set on the very people they are then used to score. Data with neither set (real FFHQ /
MaskedFace-Net data today) falls back to per-split calibration on the split's own unmasked photos, marked
`held_apart: false` and said in report.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from data_loader import shards, storage
from maskgan.evaluation import scoring
from maskgan.models.ops import to_float_images
from maskgan.models.zoo_surrogate import landmarks_column

SETS = ("calibration", "adapt")  # where held-apart calibration photos come from, first found wins
MAX_PHOTOS = 2000  # 2 million pairs at most: enough for FAR 1e-5, bounded memory


class CalibrationError(shards.ShardError):
    """A calibration set that would set thresholds on scored identities."""


@dataclass
class CalibrationPhotos:
    set_name: str
    images: np.ndarray  # uint8 [N, S, S, 3], unmasked photos
    identity: np.ndarray  # [N] identity strings
    landmarks: np.ndarray | None = None  # float32 [N, 68, 2] pixels (NaN: unknown), for recognisers that align

    @property
    def identities(self) -> int:
        return int(len(np.unique(self.identity)))


def scored_identities(root: storage.Location, manifest: dict) -> set[str]:
    """Every identity a report scores or searches: the gallery's and every split's."""
    ids: set[str] = set()
    for name in ("gallery", *shards.SPLITS):
        if name in manifest["sets"] and manifest["sets"][name]["rows"]:
            for batch in shards.iter_set(root, name, columns=["identity"]):
                ids.update(batch["identity"].tolist())
    return ids


def load_photos(root: storage.Location, manifest: dict | None = None,
                max_photos: int = MAX_PHOTOS) -> CalibrationPhotos | None:
    """The held-apart calibration photos, or None when the data has no calibration or adapt set. Refused
    (CalibrationError) when any of its identities is scored."""
    manifest = manifest or shards.read_manifest(root)
    name = next((s for s in SETS if s in manifest["sets"] and manifest["sets"][s]["rows"]), None)
    if name is None:
        return None
    images, ident, marks = [], [], []
    for batch in shards.iter_set(root, name, columns=["identity", "size", "unmasked", "landmarks"]):
        images.append(batch["unmasked"])
        ident.append(np.asarray(batch["identity"]))
        marks.append(landmarks_column(batch, len(batch["unmasked"])))
    images_a, ident_a = np.concatenate(images)[:max_photos], np.concatenate(ident)[:max_photos]
    overlap = sorted(set(ident_a.tolist()) & scored_identities(root, manifest))
    if overlap:
        raise CalibrationError(f"{root.uri}: the '{name}' set holds {len(overlap)} scored identities (e.g. "
                               f"{overlap[0]}); thresholds must be calibrated on people no split scores")
    return CalibrationPhotos(name, images_a, ident_a, np.concatenate(marks)[:max_photos])


def impostor_pairs(emb: np.ndarray, identity: np.ndarray) -> np.ndarray:
    """Cosine similarity of every unordered pair of photos of DIFFERENT identities (emb L2-normalised [N,D])."""
    sims = emb @ emb.T
    i, j = np.triu_indices(len(identity), 1)
    different = identity[i] != identity[j]
    return sims[i[different], j[different]].astype(np.float32)


@torch.no_grad()
def features(photos: CalibrationPhotos, fn, device, batch: int = 32, with_landmarks: bool = False) -> torch.Tensor:
    """fn(images [B,3,S,S] in [0,1]) over the calibration photos, concatenated on the CPU: a recogniser's
    embeddings, or a frozen trunk's features that several heads then share. with_landmarks: fn(images,
    landmarks [B,68,2]) for a recogniser that aligns each photo from its landmarks (a zoo model)."""
    out = []
    for i in range(0, len(photos.images), batch):
        images = to_float_images(torch.from_numpy(photos.images[i:i + batch])).to(device)
        if with_landmarks:
            marks = photos.landmarks[i:i + batch] if photos.landmarks is not None else None
            out.append(fn(images, marks).float().cpu())
        else:
            out.append(fn(images).float().cpu())
    return torch.cat(out)


def from_embeddings(photos: CalibrationPhotos, emb: torch.Tensor, fars=scoring.FARS) -> dict:
    """One recogniser's thresholds for the whole run from its embeddings [N,D] of the calibration photos
    (scoring.calibrated's dict, plus the set's size)."""
    unit = torch.nn.functional.normalize(emb.float(), dim=-1).numpy()
    out = scoring.calibrated(impostor_pairs(unit, photos.identity), fars, source=f"the '{photos.set_name}' set",
                             held_apart=True)
    return {**out, "photos": int(len(photos.images)), "identities": photos.identities}


def calibrate(photos: CalibrationPhotos, embed, device, fars=scoring.FARS, with_landmarks: bool = False) -> dict:
    """from_embeddings of `embed(images)` (or `embed(images, landmarks)`): a recogniser's run-wide thresholds."""
    return from_embeddings(photos, features(photos, embed, device, with_landmarks=with_landmarks), fars)
