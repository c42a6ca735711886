"""Builds what a run needs from a config: the attacked recogniser (trunk + head), the frozen projector, the
gallery's trunk features, each surrogate, and the train-only gallery the GAN trains against: the one way to build
them, shared by the Ray Train worker, evaluation, the sweep's guard, pretraining and the benchmark."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from data_loader import face_box, shards, storage
from maskgan.config import PRETRAINED, RANDOM_TRUNK, RANDOM_WEIGHTS, RunConfig, zoo_name
from maskgan.models import weights, zoo_surrogate
from maskgan.models.ops import to_float_images, trunk_features
from maskgan.models.projector import Projector
from maskgan.models.recognizer import Head, Surrogate, Trunk, build_recognizer


@dataclass
class Recognizer:
    trunk: Trunk
    head: Head
    desc: dict  # which weights, and whether the numbers mean anything


def load_recognizer(spec: str, device, endpoint: str | None = None, crop: tuple | None = None) -> Recognizer:
    """Trunk + head from weights (`random`, `random-compact`, a pretrained name, a path or s3:// URI) or, for a
    model.recognizers surrogate, `random:<seed>`: the trunk embedders.random_trunk builds, with its own head.
    `crop`: the face box its trunk crops every input to (`face_crop`; None: the whole photo)."""
    if zoo_name(spec) is not None:  # a real pretrained recogniser: its network frozen, its last layer the head
        return Recognizer(*zoo_surrogate.build(spec, device))
    if spec.startswith(RANDOM_TRUNK):
        state, desc = None, {"weights": spec, "pretrained": False}
        seed = int(spec[len(RANDOM_TRUNK):])
    else:
        (state, desc), seed = weights.recognizer_state(spec, endpoint), None
    try:
        trunk, head = (build_recognizer(state, arch=RANDOM_WEIGHTS.get(spec, "facenet")) if seed is None
                       else build_recognizer(None, seed=seed))
    except ValueError as e:
        raise weights.WeightsError(f"{spec}: {e}") from None
    trunk.face_box = crop
    if crop is not None:
        desc = {**desc, "face_crop": list(crop)}
    trunk.to(device).to(memory_format=torch.channels_last)
    head.to(device).eval()  # identification mode; train_step switches it for the head's own update
    return Recognizer(trunk, head, desc)


def load_projector(uri: str, device, endpoint: str | None = None) -> Projector:
    if not uri:
        raise weights.WeightsError("model.projector: no projector checkpoint given; train one with `maskgan projector train`")
    obj = weights.load_torch(uri, "projector checkpoint", endpoint)
    arch = obj.get("meta", {}).get("arch", "paper") if isinstance(obj, dict) else "paper"  # older: the paper's
    try:
        proj = Projector(arch)
    except ValueError as e:
        raise weights.WeightsError(f"projector checkpoint {uri}: {e}") from None
    try:
        proj.load_state_dict(obj.get("state_dict", obj))
    except RuntimeError as e:
        raise weights.WeightsError(f"projector checkpoint {uri} does not fit the projector ({str(e).splitlines()[0]})") from None
    proj.requires_grad_(False)
    return proj.to(device).eval()


class FaceCropError(ValueError):
    user_error = True


def face_crop(mode: str, spec: str, manifest: dict, where: str = "") -> tuple | None:
    """data.face_crop for recogniser weights `spec` on data with `manifest`: the face box its trunk crops to,
    or None (the whole photo). auto: the box for facenet's pretrained weights (trained on face crops) where
    the data records one; random and adapted weights were made on whole prepared photos."""
    if mode == "full":
        return None
    found = face_box.of_manifest(manifest)
    if mode == "face":
        if found is None:
            kind = manifest.get("source", {}).get("kind")
            raise FaceCropError(f"data.face_crop face: the data{' at ' + where if where else ''} records no face box "
                                f"(source kind {kind!r}; known: identities, synthetic, ffhq+maskedfacenet)")
        return found[0]
    return found[0] if spec in PRETRAINED and found is not None else None


def data_root(cfg: RunConfig) -> storage.Location:
    return storage.resolve(cfg.data.uri, cfg.data.endpoint_url)


def image_size(root: storage.Location) -> int:
    """The side of the prepared images, from the manifest of the data at `root`."""
    return int(shards.read_manifest(root)["size"])


@dataclass
class Parts:
    """What every user of a run's models needs besides the generator: the recogniser, the frozen projector
    and the gallery's trunk features (the generator comes from the config or a checkpoint, per caller)."""

    recognizer: Recognizer
    projector: Projector
    gallery_feats: torch.Tensor  # [identities, 1792], in label order
    gallery_labels: np.ndarray
    surrogates: list[Surrogate] = field(default_factory=list)  # one per model.recognizers spec, in order


def build(cfg: RunConfig, device, root: storage.Location | None = None) -> Parts:
    """Recogniser (trunk + head) + projector + gallery features from a config, and each model.recognizers
    surrogate with its own gallery features: the one way to build them.
    `root`: the data's Location when the caller resolved it already (else resolved from cfg.data)."""
    root = root if root is not None else data_root(cfg)
    manifest = shards.read_manifest(root)
    crop = face_crop(cfg.data.face_crop, cfg.model.recognizer_weights, manifest, root.uri)
    rec = load_recognizer(cfg.model.recognizer_weights, device, cfg.data.endpoint_url, crop)
    projector = load_projector(cfg.model.projector, device, cfg.data.endpoint_url)
    feats, labels = gallery(root, rec.trunk, device)
    surrogates = []
    for spec in cfg.model.recognizers:
        s_rec = load_recognizer(spec, device, cfg.data.endpoint_url,
                                face_crop(cfg.data.face_crop, spec, manifest, root.uri))
        surrogates.append(Surrogate(spec, s_rec.trunk, s_rec.head, gallery(root, s_rec.trunk, device)[0]))
    return Parts(rec, projector, feats, labels, surrogates)


def gallery(root: storage.Location, trunk: Trunk, device) -> tuple[torch.Tensor, np.ndarray]:
    """Trunk features of the gallery (one unmasked photo per identity, all splits), in label order."""
    feats, labels = [], []
    # a zoo trunk aligns from landmarks (where a photo has none: the gallery's median, set here)
    marks = zoo_surrogate.gallery_landmarks(root, trunk)
    for batch in shards.iter_set(root, "gallery", columns=["label", "size", "unmasked"]):
        images = to_float_images(torch.from_numpy(batch["unmasked"])).to(device)
        start = sum(len(x) for x in labels)
        lm = None if marks is None else torch.from_numpy(marks[start:start + len(images)]).to(device)
        feats.append(trunk_features(trunk, images, landmarks=lm))
        labels.append(batch["label"])
    labels_arr = np.concatenate(labels)
    order = np.argsort(labels_arr)
    if not np.array_equal(labels_arr[order], np.arange(len(labels_arr))):
        raise shards.ShardError(f"{root.uri}: gallery labels are not 0..N-1 (one photo per identity expected)")
    return torch.cat(feats)[torch.from_numpy(order).to(device)], labels_arr[order]


class TrainGallery:
    """The gallery the GAN trains against: the TRAIN identities' photos only, a per-run constant.

    The head's softmax, its BatchNorm batch and the generator's cross-entropy use these rows, so training never
    sees a val/test identity (with every identity's gallery the generator learnt to pull faces onto val
    people: hubs that made val look protected). `remap` turns a probe's label (its index in the full gallery,
    which evaluation keeps) into its index here; non-train labels map to -1 (the train stream has none)."""

    def __init__(self, gallery_feats: torch.Tensor, splits: np.ndarray):
        train = np.flatnonzero(splits == "train")
        if train.size == 0:
            raise shards.ShardError("the gallery has no train identities to train against")
        self._index = torch.from_numpy(train).to(gallery_feats.device)
        self.feats = self.select(gallery_feats)
        self.labels = train  # full-gallery labels of the rows of `feats`, in order
        remap = torch.full((len(splits),), -1, dtype=torch.long)
        remap[torch.from_numpy(train)] = torch.arange(train.size)
        self.remap = remap.to(gallery_feats.device)

    @classmethod
    def of(cls, root: storage.Location, gallery_feats: torch.Tensor) -> "TrainGallery":
        """From the gallery set's split column (label order, as `gallery` orders the features)."""
        labels, splits = [], []
        for batch in shards.iter_set(root, "gallery", columns=["label", "split"]):
            labels.append(batch["label"])
            splits.append(batch["split"])
        labels_arr, splits_arr = np.concatenate(labels), np.concatenate(splits)
        return cls(gallery_feats, splits_arr[np.argsort(labels_arr)].astype(str))

    def select(self, gallery_feats: torch.Tensor) -> torch.Tensor:
        """The train rows of a full gallery's features (another recogniser's: a model.recognizers surrogate)."""
        return gallery_feats.index_select(0, self._index.to(gallery_feats.device))

    def batch(self, batch: dict) -> dict:
        """The step's batch with labels indexing `feats`."""
        return {**batch, "label": self.remap[batch["label"]]}
