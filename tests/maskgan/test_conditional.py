"""Designs conditioned on the wearer: cond_fc3 / cond_conv make each person's own design from the trunk
features of their unmasked photo; the step feeds them, evaluation scores a for_person row on every split, and
`maskgan print --for photo.jpg` prints the design for the person in a photo (after finding their face)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image

from maskgan.config import ObjectiveConfig
from maskgan.design import physical
from maskgan.models.generators import build_generator, is_conditional, set_cond_stats, universal
from maskgan.models.projector import Projector
from maskgan.models.recognizer import FEATURE_DIM, build_recognizer
from maskgan.training import feed, objective

LATENT = 100


def _mean_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().mean())


@pytest.mark.parametrize("name", ["cond_fc3", "cond_conv"])
def test_two_people_get_different_designs_and_one_person_the_same_design_again(name):
    torch.manual_seed(0)
    g = build_generator(name, LATENT, 32, physical.design_hw(128)).eval()
    assert is_conditional(g) and not is_conditional(build_generator(name[5:], LATENT, 32, (64, 128)))
    z = torch.randn(1, LATENT).expand(2, -1)
    people = torch.rand(2, FEATURE_DIM) * 3  # two wearers' (non-negative, pooled) trunk features
    with torch.no_grad():
        d = g(z, people)
        again = g(z, people)
        latents = g(torch.randn(2, LATENT), people[:1].expand(2, -1))  # one person, two latents
    assert d.shape == (2, 3, 64, 128) and 0 <= d.min() and d.max() <= 1
    assert torch.equal(d, again)  # same person, same latent: the same design
    across_people, across_latents = _mean_abs(d[0], d[1]), _mean_abs(latents[0], latents[1])
    # the wearer moves the design about as much as the latent does (measured at init: 0.64x conv, 1.1x fc3)
    assert across_people > 0.3 * across_latents > 0, (across_people, across_latents)
    with pytest.raises(ValueError, match="conditional generator needs cond"):
        g(z)
    with pytest.raises(ValueError, match=r"cond: expected \[2, 1792\]"):
        g(z, people[:1])
    # the universal designs: made for the stored mean train-gallery feature, one design for everyone
    assert universal(g, z[:1]).shape == (1, 3, 64, 128)


def _step_setup(name: str, experiment: str = "exp1"):
    trunk, head = build_recognizer(None)
    torch.manual_seed(0)
    gen = build_generator(name, LATENT, 32, physical.design_hw(96))
    opts = objective.Optimizers(torch.optim.Adam(gen.parameters(), lr=1e-2),
                                torch.optim.Adam(head.parameters(), lr=1e-3))
    return objective.Models(gen, trunk, head.eval(), LATENT), opts, ObjectiveConfig(experiment=experiment)


def _raw(n=4, size=96, seed=0):
    rng = np.random.default_rng(seed)
    return {"label": np.arange(n, dtype=np.int32) % 3, "size": np.full(n, size, np.int16),
            "masked": rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
            "unmasked": rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)}


def test_the_step_feeds_a_conditional_generator_each_wearers_features():
    models, opts, cfg = _step_setup("cond_fc3")
    projector = Projector().eval().requires_grad_(False)
    raw = _raw()
    # exp1's head uses no unmasked features: feed computes them only because the generator is conditional
    assert "feats_unmasked" not in feed.step_batch(raw, projector, models.trunk, "exp1", "cpu")
    batch = feed.step_batch(raw, projector, models.trunk, "exp1", "cpu", conditional=True)
    assert batch["feats_unmasked"].shape == (4, FEATURE_DIM)
    with torch.no_grad():
        gallery = models.trunk(torch.rand(3, 3, 96, 96))
    before = copy.deepcopy(models.generator.state_dict())
    out = objective.train_step(models, opts, batch, gallery, cfg)
    assert np.isfinite(out["train/gen_ce"])
    after = models.generator.state_dict()
    # the projection of the wearer's features learnt: the designs depended on them
    assert not torch.equal(before["project.weight"], after["project.weight"])
    assert torch.equal(before["cond_mean"], after["cond_mean"])  # a constant, not trained
    with pytest.raises(KeyError, match="feats_unmasked"):  # a batch without the wearer is refused, not guessed
        objective.train_step(models, opts, {k: v for k, v in batch.items() if k != "feats_unmasked"}, gallery, cfg)


def _people_distance_after_training(weight: float, steps: int = 6) -> tuple[float, dict]:
    models, opts, _ = _step_setup("cond_fc3")
    cfg = ObjectiveConfig(experiment="exp0", diversity_weight=weight)  # exp0: only the generator moves
    projector = Projector().eval().requires_grad_(False)
    batch = feed.step_batch(_raw(), projector, models.trunk, "exp0", "cpu", conditional=True)
    with torch.no_grad():
        gallery = models.trunk(torch.rand(3, 3, 96, 96, generator=torch.Generator().manual_seed(1)))
    set_cond_stats(models.generator, batch["feats_unmasked"])  # as the worker does, from the wearers' features
    torch.manual_seed(0)
    for _ in range(steps):
        out = objective.train_step(models, opts, batch, gallery, cfg)
    z = torch.randn(1, LATENT, generator=torch.Generator().manual_seed(2)).expand(4, -1)
    with torch.no_grad():
        d = models.generator(z, batch["feats_unmasked"])  # one latent, the batch's four wearers
    i, j = torch.triu_indices(4, 4, offset=1)
    return float((d[i] - d[j]).abs().mean()), out


def test_the_diversity_weight_pays_a_conditional_generator_for_differing_across_people():
    plain, out0 = _people_distance_after_training(0.0)
    seeking, out1 = _people_distance_after_training(0.1)
    assert "train/design_diversity_people" not in out0 and out1["train/design_diversity_people"] > 0
    # one latent on four wearers: the wearer-seeking term pushes their designs apart
    assert seeking > 2 * plain and seeking > 0.02, (plain, seeking)


def test_the_resident_row_budget_counts_a_conditional_generators_features():
    base = feed.ResidentShard.row_bytes(96, "exp1", None)
    assert feed.ResidentShard.row_bytes(96, "exp1", None, conditional=True) == base + FEATURE_DIM * 4
    assert feed.ResidentShard.row_bytes(96, "exp2", None, conditional=True) == feed.ResidentShard.row_bytes(
        96, "exp2", None)


# ---- evaluation ----------------------------------------------------------------------------------------------


def _cond_checkpoint(cfg, tmp_path, size=128, stats=None):
    from maskgan.models.generators import set_cond_stats
    from maskgan.run import build, checkpoints
    from maskgan.training.objective import make_optimizers

    torch.manual_seed(0)
    gen = checkpoints.generator_from_arch(checkpoints.arch(cfg, size))
    head = build.load_recognizer(cfg.model.recognizer_weights, "cpu").head
    if stats is None and cfg.model.recognizer_weights != "random":  # as the worker sets them
        stats = build.TrainGallery.of(build.data_root(cfg), build.build(cfg, "cpu").gallery_feats).feats
    if stats is not None:
        set_cond_stats(gen, stats)
    opts = make_optimizers(gen, head, cfg.objective)
    ckpt = tmp_path / "runs" / "r" / "checkpoint_000000"
    ckpt.mkdir(parents=True)
    checkpoints.save_checkpoint(str(ckpt), cfg=cfg, size=size, epoch=0,
                                trained=checkpoints.Trained(gen, head, opts.generator, opts.head),
                                metrics={"acc/val/generated": 0.5, "acc/val/unmasked": 0.9})
    return tmp_path / "runs" / "r"


def test_evaluation_scores_each_probe_wearing_its_own_design_on_identities_never_trained_on(assets, tmp_path):
    from maskgan.config import recipes
    from maskgan.evaluation import evaluate
    from maskgan.reporting import report
    from maskgan.run import checkpoints

    cfg = recipes.debug_cpu(str(assets)).replace(model={"generator": "cond_fc3"},
                                                 train={"storage": str(tmp_path / "runs"), "name": "r"})
    run = _cond_checkpoint(cfg, tmp_path)
    state, loc = checkpoints.latest_checkpoint(storage_resolve(run), log=lambda *_: None)
    assert state["generator"]["cond_mean"].abs().sum() > 0  # the train gallery's mean face is stored
    rep = evaluate.evaluate_checkpoint(state, loc, log=lambda *_: None, universal_k=2, defender_steps=0).json
    person = rep["rows"]["for_person"]
    assert {"val", "test"} <= set(person)  # identities the generator never trained on
    assert person["test"]["designs"] == 2 and "universal" in rep["rows"]  # next to the universal designs
    people = rep["diversity"]["test"]["across_people"]
    assert people["people"] >= 2 and people["pixel"] > 1e-3 and people["same_person_max_diff"] == 0
    md = report.report_markdown({k: v for k, v in rep.items() if not k.startswith("_")})
    assert any(line.startswith("| for_person ×2 mean (worst..best) |") for line in md.splitlines())
    assert "| split | people | pixels across people | same person again |" in md


def storage_resolve(path):
    from data_loader import storage

    return storage.resolve(str(path))


# ---- maskgan print --for ------------------------------------------------------------------------------------------


def _tiny_run(tmp_path, generator, stats=None):
    from maskgan import config

    cfg = config.from_dict({"data": {"uri": str(tmp_path / "no-data")}, "model": {"generator": generator},
                            "train": {"seed": 7, "storage": str(tmp_path / "runs"), "name": "r"}})
    return _cond_checkpoint(cfg, tmp_path, stats=stats)


def _cli(argv, capsys):
    from cli.main import main

    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    return code, out, lines


def test_print_for_a_photo_without_a_face_fails_in_one_line_naming_the_file(tmp_path, capsys):
    run = _tiny_run(tmp_path, "cond_fc3")
    Image.fromarray(np.full((300, 300, 3), 200, np.uint8)).save(tmp_path / "wall.jpg")
    code, _, err = _cli(["print", "--for", tmp_path / "wall.jpg", "--run", run, "--design", 0,
                         "--out", tmp_path / "mask.pdf"], capsys)
    assert code == 2 and len(err) == 1 and "wall.jpg" in err[0], err
    assert "no face found" in err[0] or "pip install -e '.[dlib]'" in err[0]  # the latter without the dlib extra
    assert not (tmp_path / "mask.pdf").exists()
    code, _, err = _cli(["print", "--for", tmp_path / "gone.jpg", "--run", run, "--design", 0,
                         "--out", tmp_path / "mask.pdf"], capsys)
    assert code == 2 and len(err) == 1 and "gone.jpg: photo not found" in err[0], err


def test_print_for_on_a_universal_generator_is_one_line(tmp_path, capsys):
    run = _tiny_run(tmp_path, "fc3")
    Image.fromarray(np.full((300, 300, 3), 200, np.uint8)).save(tmp_path / "me.jpg")
    code, _, err = _cli(["print", "--for", tmp_path / "me.jpg", "--run", run, "--design", 0,
                         "--out", tmp_path / "mask.pdf"], capsys)
    assert code == 2 and len(err) == 1 and "fc3 generator" in err[0] and "cond_fc3" in err[0], err


def test_print_for_prints_the_design_made_for_the_person_in_the_photo(tmp_path, capsys, monkeypatch):
    """With a face found (dlib's detection planted: no real face photo ships with the tests), the page holds
    exactly the design the generator makes from that crop's trunk features and latent 1."""
    from data_loader import landmark_mask
    from maskgan.design import wearing
    from maskgan.models.ops import to_float_images
    from maskgan.run import build, checkpoints

    trunk = build.load_recognizer("random", "cpu").trunk
    with torch.no_grad():  # the "gallery" statistics: a random trunk's features of a few noise photos
        run = _tiny_run(tmp_path, "cond_fc3", stats=trunk(torch.rand(8, 3, 128, 128)))
    ann = np.zeros((300, 300, 3), np.uint8)
    ann[..., 0] = np.linspace(0, 255, 300).astype(np.uint8)[None, :]  # two "people" who look nothing alike
    bob = np.zeros((300, 300, 3), np.uint8)
    bob[(np.arange(300)[:, None] // 25 + np.arange(300)[None, :] // 25) % 2 == 0] = (40, 60, 230)
    photos = {}
    for who, pixels in (("ann", ann), ("bob", bob)):
        photos[who] = tmp_path / f"{who}_photo.png"  # not {who}.png: the print's PNG goes beside {who}.pdf
        Image.fromarray(pixels).save(photos[who])
    monkeypatch.setattr(landmark_mask, "detector_problem", lambda: None)
    monkeypatch.setattr(landmark_mask, "detect", lambda im: (np.array([100., 110., 200., 210.]), np.zeros((68, 2))))
    printed = {}
    for who, photo in photos.items():
        code, out, err = _cli(["print", "--for", photo, "--run", run, "--design", 1, "--dpi", 72,
                               "--out", tmp_path / f"{who}.pdf"], capsys)
        assert code == 0 and f"the design for {photo} from latent 1" in out, (out, err)
        printed[who] = np.asarray(Image.open(tmp_path / f"{who}.png"))
    state, loc = checkpoints.latest_checkpoint(storage_resolve(run), log=lambda *_: None)
    from data_loader import identities

    face = identities.face_crop(photos["ann"].read_bytes(), None, 128)[0]
    gen = checkpoints.generator_from_checkpoint(state, loc.uri).eval()
    with torch.no_grad():
        z = wearing.universal_latents(LATENT, wearing.UNIVERSAL_K, 7)[1:2]
        want = wearing.person_designs(gen, z, trunk(to_float_images(torch.from_numpy(face.copy()).unsqueeze(0))))[0]
    from maskgan.design import page

    expect = page.upscale(page.to_uint8_image(want), *printed["ann"].shape[1::-1])
    assert np.array_equal(printed["ann"], expect)
    apart = np.abs(printed["ann"].astype(int) - printed["bob"].astype(int)).mean()
    assert apart > 0.5  # another person's design differs (measured: 0.94 of 255 levels, untrained generator)


@pytest.mark.slow
def test_a_conditional_run_trains_through_the_worker_and_reports_designs_per_person(ray_session, small_cfg):
    """The worker path end to end: feature statistics set from the train gallery, the wearer's features fed
    (streamed, then resident), the per-epoch val scoring, then the report's for_person rows."""
    from data_loader import storage
    from maskgan.reporting import runner
    from maskgan.run import checkpoints
    from maskgan.training import train

    cfg = small_cfg.replace(model={"generator": "cond_fc3"}, train={"epochs": 2, "val_probes": 16})
    result = train.fit(cfg)
    state, _ = checkpoints.latest_checkpoint(storage.resolve(result.run_uri), log=lambda *_: None)
    assert not torch.equal(state["generator"]["cond_std"], torch.ones(FEATURE_DIM))  # set by the worker
    rep = runner.evaluate_run(result.run_uri, log=lambda *_: None, universal_k=2, defender_steps=0)
    assert rep["generator"] == "cond_fc3" and {"train", "val", "test"} <= set(rep["rows"]["for_person"])
    people = rep["diversity"]["test"]["across_people"]
    assert people["pixel"] > 1e-3 and people["same_person_max_diff"] == 0
    far = rep["fars"][0]
    print("measured:", {s: {"across_people": rep["diversity"][s]["across_people"]["pixel"],
                            "universal_pixel": rep["diversity"][s]["pixel"],
                            "for_person_dodging": rep["rows"]["for_person"][s]["mean"][f"dodging@{far}"],
                            "universal_dodging": rep["rows"]["universal"][s]["mean"][f"dodging@{far}"],
                            "original_mask_dodging": rep["rows"]["original_mask"][s]["verification"]["dodging"][far]}
                        for s in ("val", "test")})
