"""Held-out real recognisers (`zoo:<name>` in eval.held_out, or `maskgan evaluate --recognizers`): a zoo model as
maskgan.transfer's matrix sees it, frozen and run under no_grad only.

Each photo is aligned from its twin's landmarks (the row's `landmarks`, the same points for every version of the
photo) with the model's own warp; a row whose landmarks the data does not know is aligned from the gallery's
median landmarks and counted as not found (the report says how many). The weights are never trained: the
embedder's modules are the model alone, so `embedders.fingerprint` is its weights' sha256.
"""

from __future__ import annotations

import torch

from maskgan.config import zoo_name
from maskgan.embedders import HELD_OUT, Embedder, _known, _landmarks
from maskgan.zoo_surrogate import fill_unknown, median_landmarks, read_gallery_landmarks

BATCH = 32  # photos per forward: bounds the memory of a 224 px chip on CPU


def held_out(spec: str, device, root=None) -> Embedder:
    """The zoo model `spec` names, frozen (ZooMissing, one line, where its weights were never fetched). `root`:
    the data whose gallery's median landmarks stand in for a row's unknown ones (None: such rows are refused)."""
    from maskgan.models.zoo import registry

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
    from maskgan.config import ZOO, ConfigError
    from maskgan.models.zoo import ZOO_NAMES

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
    import dataclasses

    return dataclasses.asdict(prov) if prov is not None else None
