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


@dataclass(frozen=True)
class Scorer:
    """The models a probe is scored with. `gallery_emb`: the head's embedding of the gallery, [identities, D] in
    label order; `generator` None (and latent_dim 0) where only rows without a generated design are scored;
    `physical`: the run's physical ranges, which the `_physical` rows widen to their held-out draws."""

    trunk: torch.nn.Module
    head: torch.nn.Module
    projector: torch.nn.Module
    gallery_emb: torch.Tensor
    device: torch.device | str
    generator: torch.nn.Module | None = None
    latent_dim: int = 0
    physical: PhysicalConfig | None = None

    @classmethod
    def of(cls, trunk, head, projector, gallery_feats: torch.Tensor, device, generator=None, latent_dim: int = 0,
           physical: PhysicalConfig | None = None) -> "Scorer":
        """A scorer whose gallery is `gallery_feats` (the trunk's features of the gallery) embedded by `head`."""
        with torch.no_grad():
            gallery_emb = unwrap(head)(gallery_feats)
        return cls(trunk, head, projector, gallery_emb, device, generator, latent_dim, physical)

    def with_head(self, head, gallery_feats: torch.Tensor) -> "Scorer":
        """The same scorer with another head on the same trunk (the adaptive defender's), its gallery re-embedded."""
        with torch.no_grad():
            return dataclasses.replace(self, head=head, gallery_emb=unwrap(head)(gallery_feats))

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Trunk then head: the embedding a probe is matched to the gallery with."""
        return unwrap(self.head)(trunk_features(self.trunk, images))

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
