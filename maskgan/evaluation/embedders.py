"""Recognisers as the report sees them: one interface, `embed(faces, twins) -> (emb, found)`, for the recogniser
the generator attacked and for the held-out ones it never saw (maskgan.evaluation.transfer scores them); an embedder that
`wants_landmarks` (a zoo model) is called as `embed(faces, twins, landmarks)`.

faces, twins: float [N,3,S,S] in [0,1]; twins[i] is the unmasked photo faces[i] was made from (pixel-aligned);
landmarks: float [N,68,2] pixels of each twin (NaN where the data does not know them), or None.
emb: float [N,D], L2-normalised; found: bool [N], False where the recogniser scored a photo on a guess (dlib's
fallback crop where it found no face on the twin; a zoo model's fallback landmarks where the row has none);
facenet-style recognisers see the whole crop: all True.

Held-out recognisers are built here, in eval mode with every parameter frozen, and only ever run under
no_grad: nothing trains them (tests check their weights' sha256 before and after an evaluation).
"""

from __future__ import annotations

import dataclasses
import hashlib
import tempfile
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from maskgan.config import RANDOM_TRUNK, ZOO, ConfigError, zoo_name
from maskgan.models import dlib_recognizer
from maskgan.models.ops import trunk_features, unwrap
from maskgan.models.recognizer import CompactNet, build_recognizer
from maskgan.models.zoo import ZOO_NAMES, registry
from maskgan.models.zoo_surrogate import fill_unknown, median_landmarks, read_gallery_landmarks
from maskgan.run import build

ATTACKED, HELD_OUT = "attacked", "held-out"


@dataclass
class Embedder:
    name: str  # the column's name: "attacked" or the eval.held_out spec
    role: str  # ATTACKED | HELD_OUT
    embed: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, np.ndarray]]
    modules: tuple = ()  # the torch modules behind it (for the "never touched" check); dlib has none
    reports_found: bool = False  # whether `found` can be False (the report counts those photos)
    desc: str = ""  # what the column is, for the report's labels
    provenance: dict | None = None  # a zoo model's ZooModel.provenance (package, file, sha256, licence, ...)
    wants_landmarks: bool = False  # aligns from each twin's landmarks (the data's `landmarks` column)


def _all_found(n: int) -> np.ndarray:
    return np.ones(n, bool)


def attacked(trunk, head, desc: str = "", name: str = "attacked") -> Embedder:
    """A recogniser the generator attacked: trunk + fine-tuned head, as maskgan.evaluation.evaluate scores it. `name`:
    "attacked" for model.recognizer_weights, the spec for each model.recognizers surrogate."""

    if getattr(trunk, "needs_landmarks", False):  # a zoo surrogate: aligned from each twin's landmarks
        return zoo_attacked(trunk, head, desc, name)

    @torch.no_grad()
    def embed(faces, twins):
        return unwrap(head)(trunk_features(trunk, faces)).float(), _all_found(len(faces))

    return Embedder(name, ATTACKED, embed, (trunk, unwrap(head)), desc=desc or "the head the generator attacked")


def zoo_attacked(trunk, head, desc: str, name: str) -> Embedder:
    """A zoo surrogate the generator attacked: its frozen network up to the last layer + the fine-tuned copy of
    that layer, each photo aligned from its twin's landmarks (rows without: the gallery's median, not found)."""

    @torch.no_grad()
    def embed(faces, twins, landmarks=None):
        lm = _landmarks(landmarks, len(faces), faces.device)
        return unwrap(head)(trunk_features(trunk, faces, landmarks=lm)).float(), _known(lm)

    return Embedder(name, ATTACKED, embed, (trunk, unwrap(head)), reports_found=True, desc=desc,
                    provenance=getattr(trunk, "provenance", None), wants_landmarks=True)


def _landmarks(landmarks, n: int, device) -> torch.Tensor:
    if landmarks is None:
        return torch.full((n, 68, 2), float("nan"), device=device)
    return torch.as_tensor(landmarks, dtype=torch.float32).to(device)


def _known(landmarks: torch.Tensor) -> np.ndarray:
    return ~torch.isnan(landmarks).flatten(1).any(1).cpu().numpy()


def facenet(trunk, head, name: str, desc: str) -> Embedder:
    """A held-out facenet recogniser: its own trunk and head (loaded weights), frozen."""
    for m in (trunk, head):
        m.requires_grad_(False).eval()

    @torch.no_grad()
    def embed(faces, twins):
        return head(trunk_features(trunk, faces)).float(), _all_found(len(faces))

    return Embedder(name, HELD_OUT, embed, (trunk, head), desc=desc)


def random_trunk(seed: int, device) -> Embedder:
    """A facenet InceptionResnetV1 trunk randomly initialised from `seed`: its 1792-d features, normalised."""
    trunk, _head = build_recognizer(None, seed=seed)
    trunk = trunk.to(device)

    @torch.no_grad()
    def embed(faces, twins):
        return F.normalize(trunk_features(trunk, faces).float(), dim=1), _all_found(len(faces))

    return Embedder(f"{RANDOM_TRUNK}{seed}", HELD_OUT, embed, (trunk,),
                    desc=f"randomly initialised facenet trunk, seed {seed} (not a face recogniser)")


def _u8(x: torch.Tensor) -> np.ndarray:
    """float [N,3,S,S] in [0,1] -> uint8 [N,S,S,3], C-contiguous (what dlib reads)."""
    return np.ascontiguousarray((x.detach().clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy())


def dlib(cache_dir: str | None = None) -> Embedder:
    """dlib's pretrained ResNet as a black box (DlibMissing, one line, without the extra): uint8 photos, aligned
    from the twin's landmarks, descriptors cached under `cache_dir` (default: a fresh temporary folder)."""
    rec = dlib_recognizer.load(cache_dir or tempfile.mkdtemp(prefix="maskgan-dlib-"))

    def embed(faces, twins):
        desc, found = rec.describe(_u8(faces), _u8(twins))
        return torch.from_numpy(desc), found

    return Embedder("dlib", HELD_OUT, embed, reports_found=True,
                    desc="dlib face-recognition ResNet v1 (pretrained on real faces; black box)")


def from_spec(spec: str, device, endpoint: str | None = None, cache_dir: str | None = None,
              crop: tuple | None = None, root=None) -> Embedder:
    """The held-out recogniser an eval.held_out entry names (its syntax is checked in maskgan.config); `crop`:
    the face box a facenet recogniser with weights crops to (build.face_crop; random trunks see the whole
    photo, dlib aligns on its own); `root`: the data, whose gallery landmarks a zoo model falls back on."""
    if spec == "dlib":
        return dlib(cache_dir)
    if zoo_name(spec) is not None:
        return held_out(spec, device, root)
    if spec.startswith(RANDOM_TRUNK):
        return random_trunk(int(spec[len(RANDOM_TRUNK):]), device)
    rec = build.load_recognizer(spec, device, endpoint, crop)
    trunk = "compact trunk" if isinstance(rec.trunk.net, CompactNet) else "facenet"
    return facenet(rec.trunk, rec.head, spec, f"{trunk} weights {spec} (trunk + head, frozen)")


def fingerprint(embedder: Embedder) -> str:
    """sha256 over the state dicts of the modules behind an embedder ('' for a black box)."""
    h = hashlib.sha256()
    for m in embedder.modules:
        for k, v in sorted(m.state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest() if embedder.modules else ""

# ---- real pretrained recognisers held out (zoo:<name> in eval.held_out, or `maskgan evaluate --recognizers`) ----
# A zoo model as the transfer matrix sees it, frozen and run under no_grad only. Each photo is aligned from its
# twin's landmarks (the row's `landmarks`, the same points for every version of the photo) with the model's own
# warp; a row whose landmarks the data does not know is aligned from the gallery's median landmarks and counted as
# not found (the report says how many). The weights are never trained.

BATCH = 32  # photos per forward: bounds the memory of a 224 px chip on CPU


def held_out(spec: str, device, root=None) -> Embedder:
    """The zoo model `spec` names, frozen (ZooMissing, one line, where its weights were never fetched). `root`:
    the data whose gallery's median landmarks stand in for a row's unknown ones (None: such rows are refused)."""
    name = zoo_name(spec)
    model = registry.build(name, device=device).requires_grad_(False).eval()
    fallback = median_landmarks(read_gallery_landmarks(root)) if root is not None else None
    prov = model.provenance

    @torch.no_grad()
    def embed(faces, twins, landmarks=None):
        lm = _landmarks(landmarks, len(faces), faces.device)
        filled = fill_unknown(lm, fallback, name)
        emb = torch.cat([model.embed(faces[i:i + BATCH], filled[i:i + BATCH]) for i in range(0, len(faces), BATCH)])
        return emb.float(), _known(lm)

    what = f"{prov.package}, {prov.family}" if prov is not None else "ported to torch"
    return Embedder(spec, HELD_OUT, embed, (model,), reports_found=True,
                    desc=f"{name}: real pretrained recogniser ({what}; frozen, aligned from the row's landmarks)",
                    provenance=_provenance_dict(prov), wants_landmarks=True)


def specs_from_flag(text: str, flag: str) -> list[str]:
    """`dlib,hse` (or `zoo:dlib,zoo:hse`) -> ["zoo:dlib", "zoo:hse"]; an unknown name is one line naming `flag`."""
    out = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name = part[len(ZOO):] if part.startswith(ZOO) else part
        if name not in ZOO_NAMES:
            raise ConfigError(f"{flag}: {part!r}: unknown real recogniser (known: {', '.join(ZOO_NAMES)})")
        if ZOO + name not in out:
            out.append(ZOO + name)
    return out


def _provenance_dict(prov) -> dict | None:
    return dataclasses.asdict(prov) if prov is not None else None
