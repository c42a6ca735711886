"""Real recognisers in the loop (`zoo:<name>`): attacked white-box through their alignment, held out frozen.

A stand-in obeys the ZooModel contract (a small random CNN, 24 px chips cut from the landmarks): the plumbing
(config, split into trunk + last layer, landmarks through the step, checkpoints, held-out columns) is tested here
on it; the real ports' own tests live beside them (maskgan.models.zoo)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from data_loader import storage
from maskgan.config import ConfigError, ObjectiveConfig, recipes
from maskgan.design import physical
from maskgan.evaluation import embedders
from maskgan.models import ops, zoo_surrogate
from maskgan.models.generators import build_generator
from maskgan.models.recognizer import build_recognizer, refresh_bn_stats
from maskgan.models.zoo import Alignment, Provenance, ZooModel
from maskgan.run import build, checkpoints
from maskgan.training import objective

SIZE, N, LATENT, CHIP = 80, 6, 100, 24


class StandIn(ZooModel):
    """A random CNN with the zoo contract: forward(aligned chips) -> L2-normalised embeddings."""

    dim = 32

    def __init__(self, name: str, seed: int):
        super().__init__()
        self.name = name
        self.alignment = Alignment("arcface", CHIP)
        self.provenance = Provenance(package=f"stand-in {name}", file="none", sha256="0" * 64, licence="test",
                                     training_data="none (random weights)", family="StandInNet")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.body = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(2), nn.Flatten())
            self.fc = nn.Linear(128, self.dim)
        self.requires_grad_(False)

    def forward(self, aligned):
        return F.normalize(self.fc(self.body(aligned * 2 - 1)), dim=1)


def box_align(images, landmarks68, alignment):
    """A differentiable stand-in for the zoo's warp (until its own lands): the landmarks' box, widened 20 %,
    sampled to the chip with grid_sample (the same operation the real alignments end in)."""
    n, _, h, w = images.shape
    lo, hi = landmarks68.amin(1), landmarks68.amax(1)
    centre, half = (lo + hi) / 2, (hi - lo).amax(1, keepdim=True) * 0.6
    theta = torch.zeros(n, 2, 3, dtype=images.dtype, device=images.device)
    theta[:, 0, 0], theta[:, 1, 1] = half[:, 0] * 2 / w, half[:, 0] * 2 / h
    theta[:, 0, 2], theta[:, 1, 2] = centre[:, 0] * 2 / w - 1, centre[:, 1] * 2 / h - 1
    grid = F.affine_grid(theta, (n, 3, alignment.size, alignment.size), align_corners=False)
    return F.grid_sample(images, grid, align_corners=False)


@pytest.fixture(autouse=True)
def zoo(monkeypatch):
    """registry.build returns stand-ins (each name its own seed); the warp is the zoo's own once it exists."""
    from maskgan.models.zoo import align, registry

    seeds = {"dlib": 1, "hse": 2, "faceplugin": 3, "expo": 4}
    monkeypatch.setattr(registry, "build", lambda name, cache_dir=None, device="cpu": StandIn(name, seeds[name]))
    try:
        align.align(torch.rand(1, 3, 32, 32), torch.rand(1, 68, 2) * 32, Alignment("arcface", CHIP))
    except NotImplementedError:
        monkeypatch.setattr(align, "align", box_align)


def landmarks(n=N):
    """A face's 68 points as the synthetic data draws them (a frontal, centred shot of one person in an 80 px
    photo), the same for every photo."""
    import dataclasses

    from data_loader import faces

    rng = np.random.default_rng(0)
    p = faces.person(rng)
    shot = dataclasses.replace(faces.people.shot(rng), yaw=0.0, roll=0.0, scale=1.0, dx=0.0, dy=0.0)
    pts = faces.geometry.landmarks68(p, shot, SIZE)
    return torch.from_numpy(pts.astype(np.float32)).expand(n, 68, 2).contiguous()


@pytest.mark.parametrize("recognizers, held_out, msg", [
    (["zoo:bogus"], [], r"^model\.recognizers\[0\]: 'zoo:bogus': unknown zoo recogniser 'bogus' \(known: zoo:dlib"),
    ([], ["zoo:"], r"^eval\.held_out\[0\]: 'zoo:': unknown zoo recogniser"),
    (["zoo:dlib"], ["dlib"], r"^model\.recognizers\[0\]: 'zoo:dlib' is also in eval\.held_out \(as 'dlib'\)"),
    (["zoo:hse"], ["zoo:hse"], r"^model\.recognizers\[0\]: 'zoo:hse' is also in eval\.held_out;"),
    (["zoo:expo", "zoo:expo"], [], r"^model\.recognizers\[1\]: 'zoo:expo' is already attacked"),
])
def test_zoo_specs_are_checked_at_the_config_edge_in_one_line(recognizers, held_out, msg):
    cfg = recipes.debug_cpu("x").replace(model={"recognizer_weights": "random"})
    with pytest.raises(ConfigError, match=msg) as e:
        cfg.replace(model={"recognizers": recognizers}, eval={"held_out": held_out})
    assert "\n" not in str(e.value)
    ok = cfg.replace(model={"recognizers": ["zoo:faceplugin", "zoo:expo"]}, eval={"held_out": ["zoo:dlib", "dlib",
                                                                                               "zoo:hse"]})
    assert ok.model.recognizers == ["zoo:faceplugin", "zoo:expo"]
    with pytest.raises(ConfigError, match=r"^--recognizers: 'arcface': unknown real recogniser \(known: dlib, hse"):
        embedders.specs_from_flag("dlib,arcface", "--recognizers")
    assert embedders.specs_from_flag(" dlib, zoo:hse,dlib", "--recognizers") == ["zoo:dlib", "zoo:hse"]


def test_trunk_and_last_layer_are_the_model_and_the_gradient_flows_through_the_warp():
    trunk, head, desc = zoo_surrogate.build("zoo:faceplugin", "cpu")
    assert desc["provenance"]["family"] == "StandInNet" and desc["zoo"] == "faceplugin"
    photos = torch.rand(N, 3, SIZE, SIZE, requires_grad=True)
    lm = landmarks()
    emb = head(trunk(photos, lm))
    from maskgan.models.zoo import align

    with torch.no_grad():  # trunk + the fine-tuned copy of the last layer = the model's own embedding
        assert torch.allclose(emb, trunk.model(align.align(photos, lm, trunk.model.alignment)), atol=1e-5)
    emb.sum().backward()
    g = photos.grad
    assert torch.isfinite(g).all() and g.abs().sum() > 0
    # the warp samples the face the landmarks place, not the whole photo: pixels it never reads get no gradient
    assert (g.abs().sum((0, 1)) == 0).float().mean() > 0.2
    assert not any(p.requires_grad for p in trunk.parameters()) and all(p.requires_grad for p in head.parameters())
    # the head is a copy: training it never moves the pretrained layer
    assert head.layer is not trunk.model.fc and torch.equal(head.layer.weight, trunk.model.fc.weight)
    # a photo whose landmarks are unknown is aligned from the fallback, or refused in one line without one
    unknown = lm.clone()
    unknown[0] = float("nan")
    with pytest.raises(zoo_surrogate.ZooSplitError, match="no fallback landmarks"):
        trunk(photos, unknown)
    zoo_surrogate.set_fallback(trunk, lm.numpy())
    assert torch.allclose(trunk(photos, unknown), trunk(photos, lm))


def _setup(experiment="exp1"):
    """Six smooth 'photos' (one identity each), mask in the lower half of the face box; the primary facenet
    recogniser (seed 1234) and a zoo surrogate whose gallery is its own features of the unmasked photos."""
    torch.manual_seed(0)
    photos = F.interpolate(torch.rand(N, 3, 4, 4), size=(SIZE, SIZE), mode="bicubic").clamp(0, 1)
    alpha = torch.zeros(N, 1, SIZE, SIZE)
    alpha[..., 38:72, 14:66] = 1  # below the eyes to below the chin
    grid, alpha = physical.mask_warp(alpha)
    space = physical.MaskSpace(grid, alpha)
    worn = torch.cat([physical.wear(photos, space, torch.rand(N, 3, *physical.design_hw(SIZE))) for _ in range(5)]
                     + [photos])
    trunk, head = build_recognizer(None, seed=1234)
    with torch.no_grad():
        refresh_bn_stats(head, trunk(worn))
        gallery = trunk(photos)
    z_trunk, z_head, _ = zoo_surrogate.build("zoo:expo", "cpu")
    lm = landmarks()
    with torch.no_grad():
        z_gallery = z_trunk(photos, lm)
    sur = objective.Surrogate("zoo:expo", z_trunk, z_head, z_gallery)
    gen = build_generator("fc3", LATENT, 32, physical.design_hw(SIZE))
    cfg = ObjectiveConfig(experiment=experiment, g_lr=0.1, cosine_scale=32.0)
    models = objective.Models(gen, trunk, head.eval(), LATENT, surrogates=(sur,))
    opts = objective.make_optimizers(gen, head, cfg, (sur,))
    batch = {"masked": photos, "grid": grid, "alpha": alpha, "label": torch.arange(N), "landmarks": lm}
    return models, opts, batch, gallery, cfg, photos


@torch.no_grad()
def _zoo_score(models, batch, k=8):
    """The zoo surrogate's (cross-entropy, accuracy) on the batch wearing k fixed designs."""
    s = models.surrogates[0]
    designs = models.generator(torch.randn(k, LATENT, generator=torch.Generator().manual_seed(5)))
    space = physical.MaskSpace(batch["grid"], batch["alpha"])
    lg = torch.cat([ops.logits(s.head, s.trunk(physical.wear(batch["masked"], space, d.expand(N, -1, -1, -1)),
                                                     batch["landmarks"]), s.gallery_feats, 32.0) for d in designs])
    label = batch["label"].repeat(k)
    return F.cross_entropy(lg, label).item(), (lg.argmax(1) == label).float().mean().item()


def test_a_zoo_surrogate_is_attacked_through_its_alignment_and_its_head_fine_tunes():
    models, opts, batch, gallery, cfg, _ = _setup("exp1")
    s = models.surrogates[0]
    pretrained = embedders.fingerprint(embedders.Embedder("m", "x", None, (s.trunk.model,)))
    h0 = copy.deepcopy(s.head.state_dict())
    ce0, acc0 = _zoo_score(models, batch)
    for _ in range(8):
        out = objective.train_step(models, opts, batch, gallery, cfg)
    ce1, acc1 = _zoo_score(models, batch)
    assert acc0 >= 0.6 and acc1 <= acc0 - 0.3, (ce0, acc0, ce1, acc1)  # it recognised them, and no longer
    assert ce1 > ce0 + 0.5
    assert "train/gen_acc_min" in out
    assert not torch.equal(h0["layer.weight"], s.head.layer.weight)  # exp1: its last layer fine-tuned
    # the pretrained network itself (its own last layer included) is bit for bit what it was
    assert embedders.fingerprint(embedders.Embedder("m", "x", None, (s.trunk.model,))) == pretrained


def test_the_zoo_models_gradient_is_what_moves_it():
    """Control: the same steps (same seeds) with the zoo model only watching, not in the generator's loss, move
    its cross-entropy less (exp0: the heads stay fixed, so only the generator's loss differs)."""
    def run(attack: bool) -> float:
        models, opts, batch, gallery, cfg, _ = _setup("exp0")
        watched = models.surrogates
        if not attack:
            models.surrogates, opts.surrogates = (), ()
        for _ in range(16):
            objective.train_step(models, opts, batch, gallery, cfg)
        models.surrogates = watched
        return _zoo_score(models, batch)[0]

    assert run(True) > run(False) + 0.08


def test_zoo_surrogate_features_of_real_photos_are_padded_per_surrogate_for_exp3():
    from maskgan.models.projector import Projector
    from maskgan.training import feed

    models, opts, batch, gallery, cfg, photos = _setup("exp3")
    s = models.surrogates[0]
    u8 = (photos * 255).round().byte().permute(0, 2, 3, 1).numpy()
    raw = {"label": np.arange(N), "size": np.full(N, SIZE, np.int16), "masked": u8, "unmasked": u8,
           "landmarks": np.asarray([x.numpy().astype("<f4").tobytes() for x in batch["landmarks"]], dtype=object)}
    fed = feed.step_batch(raw, Projector().eval(), models.trunk, "exp3", "cpu",
                          surrogate_trunks=(models.trunk, s.trunk))  # a facenet and a zoo trunk: 1792 and 128 wide
    assert fed["s_feats_masked"].shape == (N, 2, 1792)
    with torch.no_grad():
        own = s.trunk(fed["masked"], batch["landmarks"])
    assert torch.allclose(fed["s_feats_masked"][:, 1, :own.shape[1]], own, atol=1e-5)
    assert (fed["s_feats_masked"][:, 1, own.shape[1]:] == 0).all()
    assert torch.equal(fed["landmarks"], batch["landmarks"])
    step_batch = {**batch, **{k: v for k, v in fed.items() if "feats" in k}}
    step_batch["s_feats_masked"] = fed["s_feats_masked"][:, 1:]
    step_batch["s_feats_unmasked"] = fed["s_feats_unmasked"][:, 1:]
    h0 = copy.deepcopy(s.head.state_dict())
    objective.train_step(models, opts, step_batch, gallery, cfg)
    assert not torch.equal(h0["layer.weight"], s.head.layer.weight)


def test_a_zoo_surrogates_head_survives_a_checkpoint_round_trip(small_cfg, tmp_path):
    cfg = small_cfg.replace(model={"recognizers": ["zoo:faceplugin"]})
    gen = checkpoints.generator_from_arch(checkpoints.arch(cfg, 128))
    rec = build.load_recognizer(cfg.model.recognizer_weights, "cpu")
    sur = build.load_recognizer("zoo:faceplugin", "cpu")
    assert sur.desc["provenance"]["package"] == "stand-in faceplugin"
    with torch.no_grad():
        sur.head.layer.weight.mul_(2)  # a trained head: not what a fresh split would be
    opts = objective.make_optimizers(gen, rec.head, cfg.objective,
                                     [objective.Surrogate("zoo:faceplugin", sur.trunk, sur.head, None)])
    folder = tmp_path / "runs" / "t" / "checkpoint_000000"
    folder.mkdir(parents=True)
    trained = checkpoints.Trained(gen, rec.head, opts.generator, opts.head,
                                  [("zoo:faceplugin", sur.head, opts.surrogates[0])])
    checkpoints.save_checkpoint(str(folder), cfg=cfg, size=128, epoch=0, trained=trained, metrics={})
    start = checkpoints.starting_checkpoint(cfg, storage.resolve(str(tmp_path / "runs" / "t")),
                                         storage.resolve(cfg.data.uri))
    (saved,) = start.state["surrogates"]
    fresh = build.load_recognizer("zoo:faceplugin", "cpu")
    assert not torch.equal(fresh.head.layer.weight, sur.head.layer.weight)
    fresh.head.load_state_dict(saved["head"])
    feats = torch.rand(3, 128)
    assert torch.equal(fresh.head(feats), sur.head(feats))
    assert saved["h_opt"]["param_groups"]


def test_a_held_out_zoo_model_is_frozen_unchanged_and_scores_rows_without_landmarks_as_not_found():
    held = embedders.from_spec("zoo:hse", "cpu")
    assert held.role == embedders.HELD_OUT and held.wants_landmarks and held.reports_found
    assert held.provenance["family"] == "StandInNet"
    before = embedders.fingerprint(held)
    faces = torch.rand(N, 3, SIZE, SIZE, requires_grad=True)
    lm = landmarks().clone()
    emb, found = held.embed(faces, faces, lm)
    assert not emb.requires_grad and found.all() and torch.allclose(emb.norm(dim=1), torch.ones(N))
    lm[1] = float("nan")
    with pytest.raises(zoo_surrogate.ZooSplitError, match="^zoo:hse: photos without landmarks"):
        held.embed(faces, faces, lm)  # no data root given: no fallback to stand in for the unknown row
    assert not any(p.requires_grad for m in held.modules for p in m.parameters())
    assert embedders.fingerprint(held) == before


def test_evaluate_scores_zoo_models_named_on_the_command_line_as_held_out_columns(assets, monkeypatch):
    from maskgan.evaluation import evaluate, scoring
    from maskgan.reporting import report

    cfg = recipes.debug_cpu(str(assets)).replace(eval={"held_out": ["random:7"], "max_probes": 8})
    parts = build.build(cfg, "cpu")
    gen = checkpoints.generator_from_arch(checkpoints.arch(cfg, 128)).eval()
    state = {"arch": checkpoints.arch(cfg, 128), "epoch": 0, "config": cfg.to_dict(), "generator": gen.state_dict(),
             "head": parts.recognizer.head.state_dict()}
    made = []
    real = embedders.from_spec
    monkeypatch.setattr(embedders, "from_spec", lambda *a, **k: made.append(real(*a, **k)) or made[-1])
    flag = embedders.specs_from_flag("hse,faceplugin", "--recognizers")
    rep = evaluate.evaluate_checkpoint(state, storage.resolve(str(cfg.data.uri)), log=lambda *_: None,
                                       splits=("test",), universal_k=1, defender_steps=0, recognizers=flag).json
    m = rep["recognizers"]
    assert m["order"] == ["attacked", "random:7", "zoo:hse", "zoo:faceplugin"]
    for name in ("zoo:hse", "zoo:faceplugin"):
        col = m["columns"][name]
        assert col["role"] == "held-out" and col["provenance"]["package"] == f"stand-in {name[4:]}"
        assert col["splits"]["test"]["found"]["probes"] == 1.0  # synthetic data records every photo's landmarks
        assert col["splits"]["test"]["rows"]["original_mask"]["probes"] == 8
    zoo_cols = [e for e in made if e.name.startswith("zoo:")]
    assert [embedders.fingerprint(e) for e in zoo_cols] == \
        [embedders.fingerprint(embedders.from_spec(e.name, "cpu")) for e in zoo_cols]  # never trained
    rep["fars"] = [scoring.far_key(f) for f in scoring.FARS]
    md = report.report_markdown(rep)
    assert "| test: zoo:hse (held-out) | test: zoo:faceplugin (held-out) |" in md
    assert "weights: stand-in hse, `none` (sha256 000000000000…, test; StandInNet; trained on none" in md
    # a recogniser the run attacked cannot be held out: one line naming the field
    attacked = state | {"config": cfg.replace(model={"recognizers": ["zoo:hse"]}).to_dict(),
                        "surrogates": [{"spec": "zoo:hse", "head": build.load_recognizer("zoo:hse", "cpu")
                                        .head.state_dict(), "h_opt": {}}]}
    with pytest.raises(ConfigError, match=r"^model\.recognizers\[0\]: 'zoo:hse' is also in eval\.held_out"):
        evaluate.evaluate_checkpoint(attacked, storage.resolve(str(cfg.data.uri)), log=lambda *_: None,
                                     splits=("test",), universal_k=1, defender_steps=0, recognizers=flag)
