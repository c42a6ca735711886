"""The optimised step computes what the objective says, and the cached constants change nothing.

`reference_step` below is the objective written out plainly (the design worn in mask space: grid_sample onto
the mask region, the mask's shading, the composite; trunk, cosine logits, cross-entropy,
gradient ascent for the generator, descent for the head with L1, the head's BatchNorm by hand), with no
caching, no autocast and no fused shortcuts. `maskgan.training.objective.train_step` must give the same losses, the
same gradients and the same updated parameters. fp32 on CPU is compared tightly; bf16 only where a GPU is.
"""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from maskgan.config import ObjectiveConfig
from maskgan.design import physical
from maskgan.models.generators import build_generator
from maskgan.models.projector import Projector
from maskgan.models.recognizer import build_recognizer
from maskgan.training import feed, objective, train

SIZE = 96  # small images keep the trunk cheap on CPU; the computation is the same at 128
LATENT = 100
IDENTITIES = 6


def _bn_train(h, bn):
    """BatchNorm1d in training mode, by hand: batch statistics, running statistics updated in place."""
    mean, var = h.mean(0), h.var(0, unbiased=False)
    with torch.no_grad():
        m = bn.momentum
        bn.running_mean.mul_(1 - m).add_(m * mean)
        bn.running_var.mul_(1 - m).add_(m * h.var(0, unbiased=True))
        bn.num_batches_tracked += 1
    return (h - mean) / torch.sqrt(var + bn.eps) * bn.weight + bn.bias


def _bn_eval(h, bn):
    return (h - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias


def _embed(head, feats, train_mode):
    h = feats @ head.last_linear.weight.T
    if head.last_linear.bias is not None:
        h = h + head.last_linear.bias
    h = _bn_train(h, head.last_bn) if train_mode else _bn_eval(h, head.last_bn)
    return h / h.norm(dim=1, keepdim=True).clamp_min(1e-12)


def _worn(masked, grid, alpha, design):
    """The design worn, plainly: sampled onto the mask region (bilinear, border), times the mask's luminance
    relative to its mean over the region (at most 2x), composited by alpha."""
    placed = F.grid_sample(design, grid, mode="bilinear", padding_mode="border", align_corners=False)
    placed = placed * (alpha > 0)
    luma = 0.299 * masked[:, 0:1] + 0.587 * masked[:, 1:2] + 0.114 * masked[:, 2:3]
    mean = (luma * alpha).sum((2, 3), keepdim=True) / alpha.sum((2, 3), keepdim=True)
    shade = (luma / mean).clamp(0, 2)
    return alpha * (placed * shade).clamp(0, 1) + (1 - alpha) * masked


def reference_step(gen, trunk, head, g_opt, h_opt, batch, gallery, cfg):
    """The objective, plainly. Draws the latents first, as train_step does, so one seed gives both the same."""
    masked, alpha, label = batch["masked"], batch["alpha"], batch["label"]
    z = torch.randn(masked.shape[0], LATENT)
    designs = gen(z)
    faces = _worn(masked, batch["grid"], alpha, designs)
    feats = trunk(faces)
    with torch.no_grad():
        gallery_emb = _embed(head, gallery, train_mode=False)
    gen_logits = cfg.cosine_scale * _embed(head, feats, train_mode=False) @ gallery_emb.T
    gen_ce = F.cross_entropy(gen_logits, label)
    out = {"train/gen_ce": gen_ce.item(), "train/gen_acc": (gen_logits.argmax(1) == label).float().mean().item()}
    g_loss = -gen_ce  # ascent: the generator maximises CE
    if cfg.diversity_weight:  # MSGAN: image distance per unit of latent distance, first half vs second half
        h = len(z) // 2
        lz = torch.stack([(designs[i] - designs[h + i]).abs().mean() / (z[i] - z[h + i]).abs().mean()
                          for i in range(h)]).mean()
        g_loss = g_loss + cfg.diversity_weight / (lz + 1e-5)
        out["train/design_diversity"] = lz.item()
    g_params = list(gen.parameters())
    for p, g in zip(g_params, torch.autograd.grad(g_loss, g_params)):
        p.grad = g
    g_opt.step()
    terms = objective.HEAD_TERMS[cfg.experiment]
    if not terms:
        out["train/head_loss"] = 0.0
        return out
    real = {"generated": feats.detach(), "unmasked": batch.get("feats_unmasked"),
            "original_mask": batch.get("feats_masked")}
    probe = torch.cat([real[t] for t in terms])
    emb = _embed(head, torch.cat([probe, gallery]), train_mode=True)  # BatchNorm over probes + gallery
    ce = F.cross_entropy(cfg.cosine_scale * emb[: len(probe)] @ emb[len(probe):].T, label.repeat(len(terms)))
    h_params = list(head.parameters())
    l1 = sum(p.abs().sum() for p in h_params) / sum(p.numel() for p in h_params)
    loss = ce + cfg.l1_lambda * l1
    for p, g in zip(h_params, torch.autograd.grad(loss, h_params)):  # descent
        p.grad = g
    h_opt.step()
    out.update({"train/head_ce": ce.item(), "train/head_loss": loss.item()})
    return out


def _setup(experiment, device="cpu", n=4):
    torch.manual_seed(0)
    trunk, head = build_recognizer(None)
    trunk, head = trunk.to(device), head.to(device).eval()
    gen = build_generator("fc3", LATENT, 32, physical.design_hw(SIZE)).to(device)
    masked = torch.rand(n, 3, SIZE, SIZE, device=device)
    alpha = torch.zeros(n, 1, SIZE, SIZE, device=device)
    alpha[..., SIZE // 2:, 10:-10] = 1
    grid, alpha = physical.mask_warp(alpha)
    with torch.no_grad():
        batch = {"masked": masked, "grid": grid, "alpha": alpha, "label": torch.arange(n, device=device) % IDENTITIES,
                 "feats_unmasked": trunk(torch.rand(n, 3, SIZE, SIZE, device=device)), "feats_masked": trunk(masked)}
        gallery = trunk(torch.rand(IDENTITIES, 3, SIZE, SIZE, device=device))
    return trunk, head, gen, batch, gallery, ObjectiveConfig(experiment=experiment)


def _optimizers(gen, head, experiment):
    # Plain SGD: an update is lr * gradient, so updated weights compare as tightly as gradients do (Adam's
    # first step is ~lr * sign(g), which turns last-bit differences of near-zero gradients into lr-sized ones).
    return (torch.optim.SGD(gen.parameters(), lr=0.5),
            None if experiment == "exp0" else torch.optim.SGD(head.parameters(), lr=0.5))


# float64 shows the two are the same computation (agreement to ~1e-13); float32, the CPU's precision in
# training, agrees to its rounding (the head's BatchNorm over 10 rows amplifies last-bit differences).
TOLERANCE = {torch.float64: dict(loss=1e-10, rtol=1e-9, atol=1e-12), torch.float32: dict(loss=1e-5, rtol=2e-3, atol=1e-6)}


@pytest.fixture
def default_dtype(request):
    """The step draws its latents in the default dtype; float64 runs need float64 latents."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(request.param)
    yield request.param
    torch.set_default_dtype(old)


def _close(a, b, tol, what):
    scale = b.abs().max().item()  # relative to the tensor's largest entry: tiny entries carry rounding only
    torch.testing.assert_close(a, b, rtol=tol["rtol"], atol=tol["atol"] + tol["rtol"] * scale, msg=what)


@pytest.mark.parametrize("default_dtype", [torch.float64, torch.float32], indirect=True, ids=["fp64", "fp32"])
# diversity_weight 0 (the default) is today's step, with no mode-seeking key; 0.1 adds MSGAN's term, written
# plainly in reference_step.
@pytest.mark.parametrize("experiment, diversity_weight", [("exp0", 0.0), ("exp1", 0.0), ("exp2", 0.0),
                                                          ("exp3", 0.0), ("exp1", 0.1)])
def test_step_matches_plain_reference(experiment, diversity_weight, default_dtype):
    dtype, tol = default_dtype, TOLERANCE[default_dtype]
    trunk, head, gen, batch, gallery, cfg = _setup(experiment)
    cfg = replace(cfg, diversity_weight=diversity_weight)
    trunk, head, gen, gallery = trunk.to(dtype), head.to(dtype), gen.to(dtype), gallery.to(dtype)
    batch = {k: v.to(dtype) if v.is_floating_point() else v for k, v in batch.items()}
    ref_gen, ref_head = copy.deepcopy(gen), copy.deepcopy(head)
    g_opt, h_opt = _optimizers(gen, head, experiment)
    rg_opt, rh_opt = _optimizers(ref_gen, ref_head, experiment)
    models = objective.accelerate(objective.Models(gen, trunk, head, LATENT), "cpu", precision="auto")
    assert models.autocast is None  # auto is plain fp32 (no autocast) on CPU

    for step in range(2):  # the second step starts from updated weights and BatchNorm statistics
        torch.manual_seed(100 + step)
        got = objective.train_step(models, objective.Optimizers(g_opt, h_opt), batch, gallery, cfg)
        torch.manual_seed(100 + step)
        want = reference_step(ref_gen, trunk, ref_head, rg_opt, rh_opt, batch, gallery, cfg)
        assert set(want) <= set(got)
        assert ("train/design_diversity" in got) == bool(diversity_weight)
        for key, value in want.items():
            if key == "train/gen_acc" and dtype == torch.float32:
                continue  # a random trunk's logits nearly tie: an argmax flips on fp32's last bits (fp64 checks it)
            assert got[key] == pytest.approx(value, rel=tol["loss"], abs=tol["loss"]), key
        for (name, p), q in zip(gen.named_parameters(), ref_gen.parameters()):
            _close(p.grad, q.grad, tol, f"step {step}: generator gradient {name}")
            _close(p, q, tol, f"step {step}: generator {name}")
        for (name, t), r in zip(head.state_dict().items(), ref_head.state_dict().values()):
            _close(t, r, tol, f"step {step}: head {name}")
        if experiment != "exp0":
            for (name, p), q in zip(head.named_parameters(), ref_head.parameters()):
                _close(p.grad, q.grad, tol, f"step {step}: head gradient {name}")
    assert not head.training and not trunk.training
    assert all(p.grad is None for p in trunk.parameters())  # the frozen trunk never gets weight gradients


@pytest.mark.skipif(not torch.cuda.is_available(), reason="bf16 autocast is checked on a GPU only")
def test_bf16_step_on_gpu_stays_close_to_fp32():
    trunk, head, gen, batch, gallery, cfg = _setup("exp3", device="cuda", n=32)
    runs = {}
    for precision in ("fp32", "bf16"):
        g, h = copy.deepcopy(gen), copy.deepcopy(head)
        models = objective.accelerate(objective.Models(g, trunk, h, LATENT), "cuda", precision=precision)
        torch.manual_seed(3)
        out = objective.train_step(models, objective.Optimizers(*_optimizers(g, h, "exp3")), batch, gallery, cfg)
        runs[precision] = (out, torch.cat([p.grad.flatten() for p in g.parameters()]))
    (o32, g32), (o16, g16) = runs["fp32"], runs["bf16"]
    for key in ("train/gen_ce", "train/head_ce", "train/head_loss"):
        assert o16[key] == pytest.approx(o32[key], rel=3e-2), key
    assert F.cosine_similarity(g16, g32, dim=0) > 0.98


# ---- the constants cache ----------------------------------------------------------------------------------


def _raw_batch(n=6, seed=0):
    """A decoded numpy batch as the Ray Data stream yields it."""
    rng = np.random.default_rng(seed)
    return {"label": np.arange(n, dtype=np.int32) % IDENTITIES, "size": np.full(n, SIZE, np.int16),
            "masked": rng.integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8),
            "unmasked": rng.integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)}


def test_resident_constants_give_the_same_step_as_recomputing():
    """exp3 needs the mask space and both real-photo features: kept once, they must give exactly what recomputing
    them per batch gives (same rows in the same order, same seed -> same losses and updates)."""
    trunk, head, gen, _, gallery, cfg = _setup("exp3")
    projector = Projector().eval().requires_grad_(False)
    raw = _raw_batch()
    n = len(raw["label"])

    resident = feed.ResidentShard(capacity=n)
    resident.add(feed.constants(raw, projector, trunk, "exp3", "cpu"))
    assert resident.seal() and resident.rows == n
    (cached, _), = list(resident.batches(batch_size=n, seed=5))
    order = torch.randperm(n, generator=torch.Generator().manual_seed(5)).numpy()
    # Recomputed plainly, per batch, as the step used to get them: projector and trunk over the photos.
    to_float = lambda x: torch.from_numpy(x[order]).permute(0, 3, 1, 2).float() / 255  # noqa: E731
    with torch.no_grad():
        masked = to_float(raw["masked"])
        grid, alpha = physical.mask_warp(projector(masked))
        recomputed = {"masked": masked, "grid": grid, "alpha": alpha,
                      "label": torch.from_numpy(raw["label"][order]).long(),
                      "feats_unmasked": trunk(to_float(raw["unmasked"])), "feats_masked": trunk(masked)}

    assert set(cached) == set(recomputed) == {"masked", "grid", "alpha", "label", "feats_unmasked", "feats_masked"}
    for key in recomputed:
        torch.testing.assert_close(cached[key], recomputed[key], rtol=1e-5, atol=1e-6, msg=key)
    outs = []
    for batch in (cached, recomputed):
        g, h = copy.deepcopy(gen), copy.deepcopy(head)
        torch.manual_seed(11)
        outs.append(objective.train_step(objective.Models(g, trunk, h, LATENT),
                                         objective.Optimizers(*_optimizers(g, h, "exp3")), batch, gallery, cfg))
    for key in outs[1]:
        assert outs[0][key] == pytest.approx(outs[1][key], rel=1e-5, abs=1e-6), key


def test_resident_shard_serves_every_row_once_per_epoch_and_gives_up_when_over_capacity():
    projector = Projector().eval().requires_grad_(False)
    trunk, _ = build_recognizer(None)
    resident = feed.ResidentShard(capacity=10)
    for seed in (0, 1):
        resident.add(feed.constants(_raw_batch(n=5, seed=seed), projector, trunk, "exp1", "cpu"))
    assert resident.seal()
    epochs = [torch.cat([b["masked"] for b, _ in resident.batches(batch_size=4, seed=s)]) for s in (0, 1)]
    assert [len(e) for e in epochs] == [10, 10]
    key = lambda x: sorted(x.flatten(1).sum(1).tolist())  # noqa: E731 - the same rows, in another order
    assert key(epochs[0]) == pytest.approx(key(epochs[1])) and not torch.equal(epochs[0], epochs[1])

    small = feed.ResidentShard(capacity=8)  # the manifest promised fewer rows than arrived: stream instead
    for seed in (0, 1):
        small.add(feed.constants(_raw_batch(n=5, seed=seed), projector, trunk, "exp1", "cpu"))
    assert not small.seal() and small.capacity == 0


def test_training_with_resident_rows_sees_every_row_each_epoch(small_cfg, ray_session):
    """Two workers keep their rows after epoch 1 (over gloo they agree to); epoch 2 draws from them and
    trains on exactly as many images as the streamed epoch 1, with finite losses."""
    import json

    from data_loader import shards, storage
    from maskgan.run import checkpoints

    cfg = small_cfg.replace(objective={"experiment": "exp3"},
                            train={"epochs": 2, "resident_gib": 0.5, "val_probes": 0, "num_to_keep": 2})
    result = train.fit(cfg, log=lambda *_: None)
    run = storage.resolve(result.run_uri)
    metrics = {e: json.loads(storage.read_text(loc.join(checkpoints.META_FILE)))["metrics"]
               for e, loc in checkpoints.list_checkpoints(run)}
    assert sorted(metrics) == [0, 1]
    assert [metrics[e]["train/resident"] for e in (0, 1)] == [0.0, 1.0]
    root = storage.resolve(cfg.data.uri)
    rows = sum(s["rows"] for s in shards.set_shards(root, shards.read_manifest(root), "train"))
    assert metrics[0]["train/images"] == metrics[1]["train/images"] == rows // cfg.train.num_workers
    assert all(np.isfinite(metrics[1][k]) for k in ("train/gen_ce", "train/head_ce", "train/head_loss"))
