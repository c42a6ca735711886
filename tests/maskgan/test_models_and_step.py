import copy
import io
import os
import pickle

import pytest
import torch

from maskgan.config import GENERATORS, ObjectiveConfig
from maskgan.design import physical
from maskgan.models import weights
from maskgan.models.generators import build_generator, is_conditional
from maskgan.models.projector import Projector
from maskgan.models.recognizer import FEATURE_DIM, CompactNet, build_recognizer, recognizer_state
from maskgan.training import objective


@pytest.mark.parametrize("name", ["fc3", "fc_deep", "conv"])
def test_generators_make_designs(name):
    g = build_generator(name, 100, 32, physical.design_hw(128))
    d = g(torch.randn(3, 100))
    assert d.shape == (3, 3, 64, 128) and 0 <= d.min() and d.max() <= 1  # a 2:1 mask panel


@pytest.mark.parametrize("name", GENERATORS)
def test_every_generator_the_config_accepts_builds_and_makes_designs(name):
    g = build_generator(name, 100, 32, physical.design_hw(128))
    assert is_conditional(g) == name.startswith("cond_")
    z = torch.randn(3, 100)
    d = g(z, torch.rand(3, FEATURE_DIM)) if is_conditional(g) else g(z)
    assert d.shape == (3, 3, 64, 128) and 0 <= d.min() and d.max() <= 1


def test_unknown_generator():
    with pytest.raises(ValueError, match="unknown generator 'vit'"):
        build_generator("vit", 100, 32, (64, 128))


def test_projector_has_the_papers_layers():
    p = Projector()
    assert [m.out_channels for m in p.net if isinstance(m, torch.nn.Conv2d)] == [6, 12, 18, 24, 1]
    assert p(torch.rand(2, 3, 16, 16)).shape == (2, 1, 16, 16)


def test_projector_arch_is_chosen_for_the_data_and_kept_by_its_checkpoint(tmp_path):
    from maskgan.models.projector import arch_for
    from maskgan.run import build

    assert arch_for({"source": {"kind": "identities"}}) == "dilated" and arch_for({"source": {}}) == "paper"
    assert arch_for({"source": {"kind": "identities"}}, "paper") == "paper"
    with pytest.raises(ValueError, match="projector architecture 'unet': expected auto, paper, dilated"):
        arch_for({}, "unet")
    dilated = Projector("dilated")
    assert [m.dilation[0] for m in dilated.net if isinstance(m, torch.nn.Conv2d)] == [1, 2, 4, 8, 1]
    assert dilated(torch.rand(2, 3, 40, 40)).shape == (2, 1, 40, 40)
    x = torch.rand(1, 3, 40, 40)
    weights.save_torch({"state_dict": dilated.state_dict(), "meta": {"arch": "dilated"}}, str(tmp_path / "d.pt"))
    loaded = build.load_projector(str(tmp_path / "d.pt"), "cpu")
    assert loaded.arch == "dilated" and torch.allclose(loaded(x), dilated.eval()(x))
    weights.save_torch({"state_dict": Projector().state_dict()}, str(tmp_path / "old.pt"))  # before arch was kept
    assert build.load_projector(str(tmp_path / "old.pt"), "cpu").arch == "paper"
    weights.save_torch({"state_dict": Projector().state_dict(), "meta": {"arch": "dilated"}}, str(tmp_path / "x.pt"))
    with pytest.raises(weights.WeightsError, match="x.pt does not fit the projector"):
        build.load_projector(str(tmp_path / "x.pt"), "cpu")


def test_random_recogniser_is_reproducible_and_trunk_frozen():
    t1, h1 = build_recognizer(None)
    t2, h2 = build_recognizer(None)
    assert torch.equal(h1.last_linear.weight, h2.last_linear.weight)
    assert not any(p.requires_grad for p in t1.parameters())
    assert all(p.requires_grad for p in h1.parameters())
    t1.train()
    assert not t1.training  # BatchNorm statistics of the trunk stay fixed


def test_random_compact_weights_build_the_small_trunk_and_a_file_of_it_loads_as_it(tmp_path):
    from maskgan.config import RunConfig, absolute_paths
    from maskgan.run import build

    rec = build.load_recognizer("random-compact", "cpu")
    assert isinstance(rec.trunk.net, CompactNet) and rec.desc == {"weights": "random-compact", "pretrained": False}
    assert not isinstance(build.load_recognizer("random", "cpu").trunk.net, CompactNet)  # `random` stays facenet
    x = torch.rand(3, 3, 128, 128)
    feats = rec.trunk(x)
    assert feats.shape == (3, FEATURE_DIM) and feats.std() > 0  # the width every caller of a trunk expects
    # written and read back as a weights file, its keys say what it is: the same features, the same embeddings
    state = recognizer_state(rec.trunk, rec.head)
    weights.save_torch({"state_dict": state, "meta": {"base": "random-compact"}}, str(tmp_path / "c.pt"))
    again = build.load_recognizer(str(tmp_path / "c.pt"), "cpu")
    assert isinstance(again.trunk.net, CompactNet) and torch.equal(again.trunk(x), feats)
    assert torch.allclose(again.head(feats), rec.head(feats))
    del state["body.3.weight"]  # a layer short: one line naming the file and the trunk it does not fit
    weights.save_torch({"state_dict": state, "meta": {}}, str(tmp_path / "short.pt"))
    with pytest.raises(weights.WeightsError, match=r"short\.pt: recogniser weights do not fit the compact trunk "
                                                   r"\(missing: \['body\.3\.weight'\]"):
        build.load_recognizer(str(tmp_path / "short.pt"), "cpu")
    # a name, not a file: never made absolute against the working directory
    cfg = RunConfig().replace(data={"uri": "d"}, train={"storage": "s"}, model={"recognizer_weights": "random-compact"})
    assert absolute_paths(cfg).model.recognizer_weights == "random-compact"


def _models(experiment):
    trunk, head = build_recognizer(None)
    gen = build_generator("fc3", 100, 32, physical.design_hw(128))
    cfg = ObjectiveConfig(experiment=experiment)
    opts = objective.Optimizers(torch.optim.Adam(gen.parameters(), lr=1e-2),
                                None if experiment == "exp0" else torch.optim.Adam(head.parameters(), lr=1e-3))
    return objective.Models(gen, trunk, head.eval(), 100), opts, cfg


def _batch(trunk, n=4, identities=6):
    torch.manual_seed(0)
    masked = torch.rand(n, 3, 128, 128)
    alpha = torch.zeros(n, 1, 128, 128)
    alpha[..., 64:, 16:-16] = 1
    grid, alpha = physical.mask_warp(alpha)
    b = {"masked": masked, "grid": grid, "alpha": alpha, "label": torch.arange(n) % identities}
    with torch.no_grad():
        b["feats_unmasked"] = trunk(torch.rand(n, 3, 128, 128))
        b["feats_masked"] = trunk(masked)
        gallery = trunk(torch.rand(identities, 3, 128, 128))
    return b, gallery


@pytest.mark.parametrize("experiment", ["exp0", "exp1", "exp2", "exp3"])
def test_step_updates_what_the_experiment_names(experiment):
    models, opts, cfg = _models(experiment)
    batch, gallery = _batch(models.trunk)
    g0 = copy.deepcopy(models.generator.state_dict())
    h0 = copy.deepcopy(models.head.state_dict())
    t0 = copy.deepcopy(models.trunk.state_dict())
    out = objective.train_step(models, opts, batch, gallery, cfg)
    assert all(isinstance(v, float) for v in out.values())
    assert any(not torch.equal(g0[k], v) for k, v in models.generator.state_dict().items())
    assert all(torch.equal(t0[k], v) for k, v in models.trunk.state_dict().items())
    head_changed = not torch.equal(h0["last_linear.weight"], models.head.last_linear.weight)
    assert head_changed == (experiment != "exp0")
    assert not models.head.training


def test_generator_gradient_ascends_cross_entropy():
    """The generator's update must raise the recogniser's loss on its faces, not lower it."""
    models, opts, cfg = _models("exp0")
    batch, gallery = _batch(models.trunk)
    torch.manual_seed(1)
    before = [objective.train_step(models, opts, batch, gallery, cfg)["train/gen_ce"] for _ in range(6)]
    assert before[-1] > before[0]


def test_weights_errors_name_the_file(tmp_path):
    bad = tmp_path / "junk.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(weights.WeightsError, match="unreadable recogniser weights file .*junk.pt"):
        weights.recognizer_state(str(bad))
    with pytest.raises(weights.WeightsError, match="missing.pt: not found"):
        weights.recognizer_state(str(tmp_path / "missing.pt"))


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/maskgan-pwned",))


def test_code_in_a_weights_file_is_refused_and_never_runs(tmp_path):
    marker = "/tmp/maskgan-pwned"
    if os.path.exists(marker):
        os.remove(marker)
    p = tmp_path / "evil.pt"
    buf = io.BytesIO()
    torch.save({"state_dict": _Evil()}, buf, pickle_module=pickle)
    p.write_bytes(buf.getvalue())
    with pytest.raises(weights.WeightsError, match="evil.pt"):
        weights.load_torch(str(p))
    assert not os.path.exists(marker)


def _design_scores(weights: dict, steps: int = 12) -> tuple[float, float]:
    """(TV, NPS) of the generator's designs after `steps` exp0 steps with these objective weights."""
    from maskgan.design import palette, physical

    torch.manual_seed(0)
    models, opts, _ = _models("exp0")
    cfg = ObjectiveConfig(experiment="exp0", **weights)
    batch, gallery = _batch(models.trunk)
    out = {}
    for _ in range(steps):
        out = objective.train_step(models, opts, batch, gallery, cfg)
    with torch.no_grad():
        d = models.generator(torch.randn(16, 100, generator=torch.Generator().manual_seed(1)))
    tv, nps = float(physical.tv(d).mean()), float(physical.nps(d, palette.DEFAULT.tensor()).mean())
    if weights:  # the step reports what it minimised
        assert 0 <= out["train/design_tv"] <= 1 and 0 <= out["train/design_nps"] <= 2
    return tv, nps


def test_tv_and_nps_weights_make_the_generator_smoother_and_more_printable():
    tv0, nps0 = _design_scores({})
    tv1, _ = _design_scores({"tv_weight": 20.0})
    _, nps1 = _design_scores({"nps_weight": 20.0})
    assert tv1 < 0.5 * tv0, (tv0, tv1)
    assert nps1 < 0.8 * nps0, (nps0, nps1)


def test_printability_report_measures_each_design_row():
    from maskgan.design import palette, printability

    gen = build_generator("fc3", 100, 32, (16, 32))
    universal = torch.full((3, 3, 16, 32), 0.5)
    rows = printability.design_rows(gen, 100, universal, {"black": (0.0, 0.0, 0.0)}, seed=0)
    p = printability.report(rows, palette.DEFAULT)
    assert set(p["rows"]) == {"generated", "universal", "noise", "black"}
    assert rows["noise"].shape[-2:] == rows["generated"].shape[-2:] == (16, 32)  # controls in mask space too
    assert p["rows"]["black"]["tv"] == 0 and p["rows"]["black"]["nps"] == pytest.approx(20 * 3 ** 0.5 / 255, abs=1e-4)
    assert p["rows"]["universal"]["tv"] == 0
    assert 0.3 < p["rows"]["noise"]["tv"] < 0.37 and p["rows"]["noise"]["nps"] > 0.1
    assert p["calibrated"] is False
    # seeded: the generated and noise designs are drawn again exactly, so two reports of one checkpoint agree
    again = printability.design_rows(gen, 100, universal, {"black": (0.0, 0.0, 0.0)}, seed=0)
    assert torch.equal(again["generated"], rows["generated"]) and torch.equal(again["noise"], rows["noise"])
    other = printability.design_rows(gen, 100, universal, {"black": (0.0, 0.0, 0.0)}, seed=1)
    assert not torch.equal(other["noise"], rows["noise"])


def test_printability_verdict_refuses_noise_like_designs_and_passes_smooth_ones():
    from maskgan.reporting import report

    noise = {"tv": 0.333, "tv_max": 0.335, "nps": 0.201, "nps_max": 0.203}
    p = {"palette": "default (uncalibrated)", "calibrated": False,
         "rows": {"universal": dict(noise), "noise": noise}}
    assert "NOT MET" in report.printability_verdict(p)  # a planted noise design must not pass
    # judged on the worst distinct design: every design within both bars passes
    p["rows"]["universal"] = {"tv": 0.06, "tv_max": 0.066, "nps": 0.1, "nps_max": 0.1}
    assert ": MET:" in report.printability_verdict(p)
    p["rows"]["universal"]["nps_max"] = 0.11  # printable colours matter as much as smoothness
    assert "NOT MET" in report.printability_verdict(p)
    md = "\n".join(report.printability_section(p))
    assert "## Printability (palette: default (uncalibrated), uncalibrated)" in md and "| noise | 0.333 (0.335)" in md


def test_eot_prints_and_photographs_the_generated_faces_inside_the_step():
    from maskgan.config import PhysicalConfig
    from maskgan.design import physical

    def one_step(eot):
        torch.manual_seed(0)
        models, opts, cfg = _models("exp1")
        models.eot = eot
        batch, gallery = _batch(models.trunk)
        g0 = copy.deepcopy(models.generator.state_dict())
        out = objective.train_step(models, opts, batch, gallery, cfg)
        moved = any(not torch.equal(g0[k], v) for k, v in models.generator.state_dict().items())
        return out, moved

    plain, _ = one_step(None)
    eot = physical.EOT(PhysicalConfig(enabled=True), run_seed=0, rank=0)
    with_eot, moved = one_step(eot)
    again, _ = one_step(physical.EOT(PhysicalConfig(enabled=True), run_seed=0, rank=0))
    assert moved and eot.calls == 1  # the gradient went through kornia's transforms to the generator
    assert with_eot["train/gen_ce"] != plain["train/gen_ce"]  # the faces the trunk saw were transformed
    assert with_eot == again  # seeded: the same draw for the same step, run and rank
    other_rank, _ = one_step(physical.EOT(PhysicalConfig(enabled=True), run_seed=0, rank=1))
    assert other_rank["train/gen_ce"] != with_eot["train/gen_ce"]  # workers draw differently


def test_a_full_frame_checkpoint_from_before_mask_space_is_refused_in_one_line():
    from maskgan.run import checkpoints

    with pytest.raises(checkpoints.CheckpointError) as e:
        checkpoints.generator_from_arch({"generator": "fc3", "latent_dim": 100, "hidden": 32, "size": 128}, "old/ckpt")
    assert "old/ckpt" in str(e.value) and "mask" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("name", ["fc3", "conv"])
def test_cells_make_smooth_blocks_and_cell_px_1_is_per_pixel(name):
    torch.manual_seed(0)
    fine = build_generator(name, 16, 32, (64, 128))
    coarse = build_generator(name, 16, 32, (64, 128), cell_px=8)
    z = torch.randn(4, 16)
    d_fine, d_coarse = fine(z), coarse(z)
    assert d_coarse.shape == d_fine.shape == (4, 3, 64, 128)
    if name == "fc3":  # one output per cell: 64x fewer in the last layer
        assert coarse.net[-1].out_features * 64 == fine.net[-1].out_features
    assert physical.tv(d_coarse).mean() < physical.tv(d_fine).mean() / 3  # smooth by construction


def test_a_conv_grid_that_does_not_fit_is_refused_on_the_driver(small_cfg):
    from maskgan.config import ConfigError
    from maskgan.run import preflight

    with pytest.raises(ConfigError, match="model.generator 'conv'.*cell_px 16"):
        preflight.inputs(small_cfg.replace(model={"generator": "conv", "cell_px": 16}))
