"""What evaluation scores probes with, as one typed thing: the attacked recogniser (trunk + head), the frozen
projector, the gallery as that head embeds it, and the generator whose designs the rows wear.

Every scorer takes a `Scorer` (maskgan.evaluation.validation, maskgan.evaluation.evaluate, the defender, the
training worker's per-epoch score, the sweep's guard); `load` builds one from a checkpoint through the one model
builder (maskgan.run.build) and the one checkpoint reader (maskgan.run.checkpoints)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from data_loader import shards, storage
from maskgan.config import PhysicalConfig, RunConfig
from maskgan.evaluation import calibration
from maskgan.models.ops import trunk_features, unwrap
from maskgan.run import build, checkpoints


class TrunkMemo:
    """The frozen trunk's features of probe images one evaluation has already embedded, by (set, batch, row).

    Why: the adaptive defender scores the held-out splits again with another head on the same trunk, on the very
    same images, and the trunk's forward is most of an evaluation's time (on the test assets, 24 of 35 s). Each
    entry keeps a fingerprint of its images (shape, and each image's sum and position-weighted sum in float32), so
    other images under the same key are embedded afresh, never answered from here. Only the `sets` named are kept
    (those scored again), up to `max_bytes` of features; beyond that they are computed again. Features stay where
    the trunk put them."""

    def __init__(self, sets=(), max_bytes: int = 1 << 30):
        self.sets, self.max_bytes, self.kept_bytes, self.hits = set(sets), max_bytes, 0, 0
        self._entries: dict = {}

    @staticmethod
    def fingerprint(images: torch.Tensor) -> tuple:
        """Each image's sum and position-weighted sum (one matrix-vector product: no copy of the batch)."""
        flat = images.detach().reshape(images.shape[0], -1).float()  # half precision would blur the sums
        weights = torch.linspace(1.0, 2.0, flat.shape[1], device=flat.device)
        return tuple(images.shape), tuple(flat.sum(1).tolist()), tuple((flat @ weights).tolist())

    def __len__(self) -> int:
        return len(self._entries)

    def features(self, key, images: torch.Tensor, compute) -> torch.Tensor:
        mark = self.fingerprint(images)
        kept = self._entries.get(key)
        if kept is not None and kept[0] == mark:
            self.hits += 1
            return kept[1]
        feats = compute(images)
        size = feats.numel() * feats.element_size()
        if kept is None and key[0] in self.sets and self.kept_bytes + size <= self.max_bytes:
            self._entries[key] = (mark, feats)
            self.kept_bytes += size
        return feats


@dataclass(frozen=True)
class Scorer:
    """The models a probe is scored with. `gallery_emb`: the head's embedding of the gallery, [identities, D] in
    label order; `generator` None (and latent_dim 0) where only rows without a generated design are scored;
    `physical`: the run's physical ranges, which the `_physical` rows widen to their held-out draws; `memo`: where
    one evaluation keeps the trunk's features of its probes (TrunkMemo; shared by `with_head`), None to keep none."""

    trunk: torch.nn.Module
    head: torch.nn.Module
    projector: torch.nn.Module
    gallery_emb: torch.Tensor
    device: torch.device | str
    generator: torch.nn.Module | None = None
    latent_dim: int = 0
    physical: PhysicalConfig | None = None
    memo: TrunkMemo | None = None

    @classmethod
    def of(cls, trunk, head, projector, gallery_feats: torch.Tensor, device, generator=None, latent_dim: int = 0,
           physical: PhysicalConfig | None = None, memo: TrunkMemo | None = None) -> "Scorer":
        """A scorer whose gallery is `gallery_feats` (the trunk's features of the gallery) embedded by `head`."""
        with torch.no_grad():
            gallery_emb = unwrap(head)(gallery_feats)
        return cls(trunk, head, projector, gallery_emb, device, generator, latent_dim, physical, memo)

    def with_head(self, head, gallery_feats: torch.Tensor) -> "Scorer":
        """The same scorer with another head on the same trunk (the adaptive defender's), its gallery re-embedded."""
        with torch.no_grad():
            return dataclasses.replace(self, head=head, gallery_emb=unwrap(head)(gallery_feats))

    def embed(self, images: torch.Tensor, key=None) -> torch.Tensor:
        """Trunk then head: the embedding a probe is matched to the gallery with. With a `key` (set, batch, row) and
        a memo, the trunk's features of these very images are computed once per evaluation."""
        if key is None or self.memo is None:
            return unwrap(self.head)(trunk_features(self.trunk, images))
        return unwrap(self.head)(self.memo.features(key, images, lambda x: trunk_features(self.trunk, x)))

    @property
    def gallery_size(self) -> int:
        return int(self.gallery_emb.shape[0])


@dataclass
class Loaded:
    """One checkpoint, ready to score: its config, data root and manifest (read once here and passed down), the
    scorer, and the built parts (surrogates, gallery features) the recogniser matrix and the defender need."""

    cfg: RunConfig
    root: storage.Location
    manifest: dict
    scorer: Scorer
    parts: build.Parts


@dataclass
class RunCalibration:
    """The held-apart calibration photos, the attacked recogniser's run-wide thresholds from them, and the frozen
    trunk's features of those photos (another head on the same trunk, the defender's, calibrates from them).
    All None when the data has no calibration set: scorers then calibrate per split."""

    photos: calibration.CalibrationPhotos | None = None
    attacked: dict | None = None
    features: torch.Tensor | None = None


def load(state: dict, ckpt_loc: storage.Location, device) -> Loaded:
    """The scorer of one checkpoint: the head and generator it holds, on the models its config builds."""
    cfg = checkpoints.config_of(state)
    root = build.data_root(cfg)
    parts = build.build(cfg, device, root)
    rec = parts.recognizer
    rec.head.load_state_dict(state["head"])
    checkpoints.check_surrogates(state, cfg, ckpt_loc.uri)
    for s, saved in zip(parts.surrogates, state.get("surrogates", [])):
        s.head.load_state_dict(saved["head"])
    generator = checkpoints.generator_from_checkpoint(state, ckpt_loc.uri).to(device).eval()
    scorer = Scorer.of(rec.trunk, rec.head, parts.projector, parts.gallery_feats, device, generator,
                       state["arch"]["latent_dim"], cfg.physical)
    return Loaded(cfg, root, shards.read_manifest(root), scorer, parts)


def run_calibration(root: storage.Location, scorer: Scorer, manifest: dict | None = None) -> RunCalibration:
    """The attacked recogniser's run-wide thresholds from the held-apart calibration set (RunCalibration)."""
    photos = calibration.load_photos(root, manifest)
    if photos is None:
        return RunCalibration()
    feats = calibration.features(photos, lambda x: trunk_features(scorer.trunk, x), scorer.device)
    with torch.no_grad():
        emb = unwrap(scorer.head)(feats.to(scorer.device)).cpu()
    return RunCalibration(photos, calibration.from_embeddings(photos, emb), feats)
