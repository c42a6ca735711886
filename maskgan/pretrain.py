"""The frozen parts, fitted before the GAN: the projector, and (for synthetic data) the recogniser's head.

`train_projector`: the paper's 5-layer CNN fitted with MSE to alpha labels (synthetic ground truth, or labels
derived from masked/unmasked pairs by `prepare`), reporting IoU on held-out (val) images.

`adapt_recognizer`: the synthetic stand-in for vggface2 pretraining. With random trunk weights the head is
refitted (last_linear + last_bn, cosine-softmax over identities) on trunk features of extra unmasked and
plain-masked photos of the gallery identities (the dataset's `adapt` set), which turns a random network into a
mask-aware adversary worth fooling. Its numbers remain illustrative only, and reports say so.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from data_loader import ranges, shards, storage
from data_loader.progress import Progress
from maskgan import assembly
from maskgan.models import weights
from maskgan.models.projector import Projector
from maskgan.models.recognizer import recognizer_state, refresh_bn_stats
from maskgan.objective import to_float_images, trunk_features


def _pairs(root: storage.Location, set_name: str, limit: int) -> tuple[torch.Tensor, torch.Tensor]:
    masked, alpha, n = [], [], 0
    for batch in shards.iter_set(root, set_name, columns=["size", "masked", "alpha"]):
        take = min(limit - n, len(batch["masked"]))
        masked.append(batch["masked"][:take])
        alpha.append(batch["alpha"][:take])
        n += take
        if n >= limit:
            break
    return to_float_images(torch.from_numpy(np.concatenate(masked))), to_float_images(torch.from_numpy(np.concatenate(alpha)))


@torch.no_grad()
def alpha_iou(projector: Projector, masked: torch.Tensor, alpha: torch.Tensor) -> float:
    pred = torch.cat([projector(masked[i:i + 64]) for i in range(0, len(masked), 64)]) > 0.5
    truth = alpha > 0.5
    inter = (pred & truth).flatten(1).sum(1).float()
    union = (pred | truth).flatten(1).sum(1).float().clamp(min=1)
    return float((inter / union).mean())


def train_projector(data_uri: str, out_uri: str, *, epochs: int = 10, batch_size: int = 16, lr: float = 1e-2,
                    max_images: int = 2000, seed: int = 0, endpoint: str | None = None, log=print) -> dict:
    # Checked here, not only in the CLI, so no caller writes an untrained projector (epochs 0) or divides by 0.
    ranges.check("--epochs", epochs, "[1, 100000]", integer=True)
    ranges.check("--max-images", max_images, "[1, 10000000]", integer=True)
    ranges.check("batch_size", batch_size, "[1, 65536]", integer=True)
    ranges.check("lr", lr, "(0, 10]")
    torch.manual_seed(seed)
    root = storage.resolve(data_uri, endpoint)
    masked, alpha = _pairs(root, "train", max_images)
    manifest = shards.read_manifest(root)
    held_out = "val" if "val" in manifest["sets"] else "train"
    val_masked, val_alpha = _pairs(root, held_out, 256)
    proj = Projector()
    opt = torch.optim.Adam(proj.parameters(), lr=lr)
    for epoch in range(epochs):
        perm = torch.randperm(len(masked))
        total = 0.0
        for i in range(0, len(masked), batch_size):
            idx = perm[i:i + batch_size]
            loss = F.mse_loss(proj(masked[idx]), alpha[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        log(f"projector epoch {epoch + 1}/{epochs}: mse {total / len(masked):.4f}")
    proj.eval()
    iou = alpha_iou(proj, val_masked, val_alpha)
    log(f"projector IoU on {len(val_masked)} held-out ({held_out}) images: {iou:.3f}")
    result = {"iou": iou, "held_out": held_out, "images": len(masked), "epochs": epochs}
    weights.save_torch({"state_dict": proj.state_dict(), "meta": {"data": data_uri, **result}}, out_uri, endpoint)
    return result


def adapt_recognizer(data_uri: str, out_uri: str, *, base: str = "random", steps: int = 300, lr: float = 1e-3,
                     scale: float = 16.0, seed: int = 0, endpoint: str | None = None, log=print) -> dict:
    ranges.check("--steps", steps, "[1, 1000000]", integer=True)  # steps <= 0 would write unadapted weights
    ranges.check("lr", lr, "(0, 10]")
    ranges.check("scale", scale, "(0, 1000]")
    torch.manual_seed(seed)
    root = storage.resolve(data_uri, endpoint)
    manifest = shards.read_manifest(root)
    if "adapt" not in manifest["sets"]:
        raise shards.ShardError(f"{root.uri}: no 'adapt' set; adaptation is for synthetic data "
                                f"(real data: use recognizer_weights: vggface2)")
    device = torch.device("cpu")
    rec = assembly.load_recognizer(base, device, endpoint)
    feats, labels = [], []
    extracting = Progress("adapt: trunk features", int(manifest["sets"]["adapt"]["rows"]), "photos", log=log)
    done = 0
    for batch in shards.iter_set(root, "adapt", columns=["label", "size", "masked", "unmasked"]):
        for i in range(0, len(batch["label"]), 32):  # a shard is ~1 s a photo on a busy CPU: report as we go
            for key in ("unmasked", "masked"):
                feats.append(trunk_features(rec.trunk, to_float_images(torch.from_numpy(batch[key][i:i + 32]))))
                labels.append(torch.from_numpy(batch["label"][i:i + 32].astype(np.int64)))
            done += len(batch["label"][i:i + 32])
            extracting.update(done)
    feats_t, labels_t = torch.cat(feats), torch.cat(labels)
    log(f"adapt: trunk features of the gallery ({manifest['sets']['gallery']['rows']} photos) ...")
    gallery_feats = assembly.gallery(root, rec.trunk, device)[0]
    log(f"adapting recogniser head on {len(feats_t)} photos of {len(gallery_feats)} identities ...")

    head = rec.head
    both = torch.cat([feats_t, gallery_feats])
    n = len(feats_t)
    head.train()
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    stepping = Progress("adapt", steps, "steps", log=log)
    for step in range(steps):
        emb = head(both)  # one forward: probes and gallery share the batch statistics
        loss = F.cross_entropy(scale * emb[:n] @ emb[n:].T, labels_t)
        opt.zero_grad()
        loss.backward()
        opt.step()
        stepping.update(step + 1, note=f"loss {loss.item():.3f}")
    refresh_bn_stats(head, both)
    head.eval()
    with torch.no_grad():
        acc = float(((head(feats_t) @ head(gallery_feats).T).argmax(1) == labels_t).float().mean())
    meta = {"base": base, "adapted_on": data_uri, "pretrained": rec.desc.get("pretrained", False),
            "adapt_accuracy": acc, "steps": steps}
    weights.save_torch({"state_dict": recognizer_state(rec.trunk, head), "meta": meta}, out_uri, endpoint)
    log(f"adapted recogniser written to {out_uri} (fit accuracy {acc:.1%})")
    return meta
