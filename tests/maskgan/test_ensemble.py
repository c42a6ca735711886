"""An ensemble of white-box surrogates (`model.recognizers`): config errors, the step attacking every
surrogate together, checkpoints with their heads, and held-out recognisers untouched by ensemble training."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from data_loader import storage
from maskgan.config import ConfigError, ObjectiveConfig, recipes
from maskgan.design import physical
from maskgan.evaluation import embedders, evaluate
from maskgan.models import ops
from maskgan.models.generators import build_generator
from maskgan.models.projector import Projector
from maskgan.models.recognizer import build_recognizer, refresh_bn_stats
from maskgan.run import build, checkpoints
from maskgan.training import feed, objective, train

SIZE, N, LATENT, SEEDS = 80, 6, 100, (11, 12)  # small images: facenet trunks are slow on CPU


@pytest.mark.parametrize("recognizers, held_out, experiment, msg", [
    (["dlib"], [], "exp1", r"^model\.recognizers\[0\]: 'dlib' cannot be attacked"),
    (["random:7"], ["dlib", "random:7"], "exp1", r"^model\.recognizers\[0\]: 'random:7' is also in eval\.held_out"),
    (["random:3", "random:3"], [], "exp1", r"^model\.recognizers\[1\]: 'random:3' is already attacked"),
    (["random:1234"], [], "exp1", r"^model\.recognizers\[0\]: 'random:1234' is already attacked"),  # = "random"
    (["random:x"], [], "exp1", r"^model\.recognizers\[0\]: 'random:x': the seed must be an integer"),
    ([" random:3"], [], "exp1", r"^model\.recognizers\[0\]: ' random:3': expected"),
])
def test_bad_surrogate_lists_are_one_line_naming_the_entry(recognizers, held_out, experiment, msg):
    cfg = recipes.debug_cpu("x").replace(model={"recognizer_weights": "random"})
    with pytest.raises(ConfigError, match=msg) as e:
        cfg.replace(model={"recognizers": recognizers}, eval={"held_out": held_out},
                    objective={"experiment": experiment})
    assert "\n" not in str(e.value)
    ok = cfg.replace(model={"recognizers": ["random:11", "random:12"]}, eval={"held_out": ["random:7", "dlib"]})
    assert ok.model.recognizers == ["random:11", "random:12"]


def _setup(seeds, experiment="exp0"):
    """A tiny fixed batch: six smooth 'photos' (one identity each) whose lower half is the mask region, the
    primary recogniser (seed 1234) and one surrogate per seed, each head's BatchNorm statistics set on the
    photos wearing random designs (so a random trunk's embeddings tell the six apart)."""
    torch.manual_seed(0)
    photos = F.interpolate(torch.rand(N, 3, 4, 4), size=(SIZE, SIZE), mode="bicubic").clamp(0, 1)
    alpha = torch.zeros(N, 1, SIZE, SIZE)
    alpha[..., SIZE // 2:, 16:-16] = 1
    grid, alpha = physical.mask_warp(alpha)
    space = physical.MaskSpace(grid, alpha)
    worn = torch.cat([physical.wear(photos, space, torch.rand(N, 3, *physical.design_hw(SIZE))) for _ in range(5)]
                     + [photos])

    def recogniser(seed):
        trunk, head = build_recognizer(None, seed=seed)
        with torch.no_grad():
            refresh_bn_stats(head, trunk(worn))
            return trunk, head.eval(), trunk(photos)

    trunk, head, gallery = recogniser(1234)
    surrogates = tuple(objective.Surrogate(f"random:{s}", *recogniser(s)) for s in seeds)
    gen = build_generator("fc3", LATENT, 32, physical.design_hw(SIZE))
    cfg = ObjectiveConfig(experiment=experiment, g_lr=0.1)
    models = objective.Models(gen, trunk, head, LATENT, surrogates=surrogates)
    opts = objective.make_optimizers(gen, head, cfg, surrogates)
    batch = {"masked": photos, "grid": grid, "alpha": alpha, "label": torch.arange(N)}
    return models, opts, batch, gallery, cfg


@torch.no_grad()
def _scores(models, batch, recognisers, k=8):
    """(cross-entropy, accuracy) of each (trunk, head, gallery) on the batch wearing k fixed designs."""
    designs = models.generator(torch.randn(k, LATENT, generator=torch.Generator().manual_seed(5)))
    space = physical.MaskSpace(batch["grid"], batch["alpha"])
    out = []
    for trunk, head, gallery in recognisers:
        lg = torch.cat([ops.logits(head, trunk(physical.wear(batch["masked"], space, d.expand(N, -1, -1, -1))),
                                         gallery, 16.0) for d in designs])
        label = batch["label"].repeat(k)
        out.append((F.cross_entropy(lg, label).item(), (lg.argmax(1) == label).float().mean().item()))
    return out


def _train(seeds_attacked, steps=6):
    """Every recogniser's (ce, acc) before and after `steps` steps attacking the primary + `seeds_attacked`
    (the same surrogates are built either way and the same latents drawn: only the loss differs)."""
    models, opts, batch, gallery, cfg = _setup(SEEDS)
    everyone = [(models.trunk, models.head, gallery)] + [(s.trunk, s.head, s.gallery_feats) for s in models.surrogates]
    before = _scores(models, batch, everyone)
    if not seeds_attacked:
        models.surrogates, opts.surrogates = (), ()
    for _ in range(steps):
        out = objective.train_step(models, opts, batch, gallery, cfg)
    return before, _scores(models, batch, everyone), out


def test_ensemble_training_lowers_every_attacked_recognisers_accuracy():
    held = embedders.random_trunk(7, "cpu")
    fingerprint = embedders.fingerprint(held)
    before, after, out = _train(SEEDS)
    for (ce0, acc0), (ce1, acc1) in zip(before, after):
        assert acc0 >= 0.6 and acc1 <= acc0 - 0.4, (before, after)  # each one recognised them, and no longer
        assert ce1 > ce0
    assert {"train/gen_ce", "train/gen_acc", "train/gen_ce_mean", "train/gen_acc_mean", "train/gen_acc_min"} <= set(out)
    # The surrogates are in the generator's loss: the same steps against the primary alone raise their
    # cross-entropy less (the same latents, the same start: only the loss differs).
    _, alone, out_alone = _train(())
    assert sum(ce for ce, _ in after[1:]) > sum(ce for ce, _ in alone[1:]) + 0.5, (after, alone)
    assert "train/gen_acc_mean" not in out_alone  # the single recogniser: today's scalars only
    # a held-out recogniser (not in the step) is bit for bit what it was
    assert embedders.fingerprint(held) == fingerprint


@pytest.mark.parametrize("experiment", ["exp0", "exp1", "exp2", "exp3"])
def test_each_surrogate_head_trains_on_its_own_loss_as_the_experiment_says(experiment):
    models, opts, batch, gallery, cfg = _setup(SEEDS[:1], experiment)
    (s,) = models.surrogates
    if experiment in ("exp2", "exp3"):  # the real photos' features, as maskgan.training.feed computes them
        raw = {"label": batch["label"].numpy(), "size": np.full(N, SIZE, np.int16),
               "masked": (batch["masked"] * 255).round().byte().permute(0, 2, 3, 1).numpy(),
               "unmasked": (batch["masked"] * 255).round().byte().permute(0, 2, 3, 1).numpy()}
        fed = feed.step_batch(raw, Projector().eval(), models.trunk, experiment, "cpu",
                              surrogate_trunks=(s.trunk,))
        with torch.no_grad():  # every surrogate's own trunk features of the real photos, rows first
            assert torch.allclose(fed["s_feats_unmasked"][:, 0], s.trunk(fed["masked"]), atol=1e-5)
        if experiment == "exp3":
            assert fed["s_feats_masked"].shape == (N, 1, 1792)
        batch = {**batch, **{k: v for k, v in fed.items() if "feats" in k}}
        with pytest.raises(KeyError, match="s_feats_unmasked"):  # never the primary's features in their place
            objective.train_step(models, opts, {k: v for k, v in batch.items() if k != "s_feats_unmasked"},
                                 gallery, cfg)
    h0, t0 = copy.deepcopy(s.head.state_dict()), copy.deepcopy(s.trunk.state_dict())
    objective.train_step(models, opts, batch, gallery, cfg)
    assert (opts.surrogates[0] is None) == (experiment == "exp0")
    assert (not torch.equal(h0["last_linear.weight"], s.head.last_linear.weight)) == (experiment != "exp0")
    assert all(torch.equal(t0[k], v) for k, v in s.trunk.state_dict().items())  # trunks stay frozen
    assert not s.head.training and all(p.requires_grad for p in s.head.parameters())


def test_checkpoint_keeps_the_surrogate_heads_and_refuses_another_list(small_cfg, tmp_path):
    cfg = small_cfg.replace(model={"recognizers": ["random:11"]})
    gen = checkpoints.generator_from_arch(checkpoints.arch(cfg, 128))
    rec = build.load_recognizer(cfg.model.recognizer_weights, "cpu")
    sur = build.load_recognizer("random:11", "cpu")
    assert sur.desc == {"weights": "random:11", "pretrained": False}
    with torch.no_grad():
        sur.head.last_linear.weight.mul_(2)  # a trained head: not what a fresh random:11 would be
    opts = objective.make_optimizers(gen, rec.head, cfg.objective, [objective.Surrogate("random:11", sur.trunk, sur.head, None)])
    run = storage.resolve(str(tmp_path / "runs" / "t"))
    folder = tmp_path / "runs" / "t" / "checkpoint_000000"
    folder.mkdir(parents=True)
    trained = checkpoints.Trained(gen, rec.head, opts.generator, opts.head,
                                  [("random:11", sur.head, opts.surrogates[0])])
    checkpoints.save_checkpoint(str(folder), cfg=cfg, size=128, epoch=0, trained=trained, metrics={})
    data = storage.resolve(cfg.data.uri)
    start = checkpoints.starting_checkpoint(cfg, run, data)
    (saved,) = start.state["surrogates"]
    assert saved["spec"] == "random:11" and torch.equal(saved["head"]["last_linear.weight"], sur.head.last_linear.weight)
    assert saved["h_opt"]["param_groups"]  # exp1: its own optimiser's state
    for other in ([], ["random:12"], ["random:11", "random:12"]):
        with pytest.raises(checkpoints.CheckpointError, match=r"checkpoint attacked model\.recognizers \['random:11'\], "
                                                           "the config lists") as e:
            checkpoints.starting_checkpoint(small_cfg.replace(model={"recognizers": other}), run, data)
        assert "\n" not in str(e.value)
    # a checkpoint from before surrogates (no key) is a single-recogniser run's, as before
    old = {k: v for k, v in start.state.items() if k != "surrogates"}
    assert checkpoints.surrogate_specs(old) == []
    checkpoints.check_resume_arch(old, small_cfg, 128, "old")


@pytest.mark.slow
def test_an_ensemble_run_trains_resumes_and_reports_every_surrogate_as_attacked(ray_session, small_cfg, monkeypatch):
    """Ray Train end to end (2 workers, DDP heads): the surrogate's head trains and is checkpointed, a resume
    continues it, and the report's matrix has the surrogate as an attacked column beside the held-out one,
    whose weights evaluation never touched."""
    cfg = small_cfg.replace(model={"recognizers": ["random:11"]}, eval={"held_out": ["random:7"], "max_probes": 8},
                            train={"epochs": 1, "val_probes": 0})
    first = train.fit(cfg)
    run = storage.resolve(first.run_uri)
    state, _ = checkpoints.latest_checkpoint(run)
    fresh = build.load_recognizer("random:11", "cpu").head.state_dict()
    (saved,) = state["surrogates"]
    assert not torch.equal(saved["head"]["last_linear.weight"], fresh["last_linear.weight"])  # it trained
    assert "train/gen_acc_mean" in first.metrics
    resumed = train.fit(cfg.replace(train={"epochs": 2}), resume=True)
    assert resumed.metrics["epoch"] == 1
    state2, loc = checkpoints.latest_checkpoint(run)
    step = lambda s: int(next(iter(s["surrogates"][0]["h_opt"]["state"].values()))["step"])  # noqa: E731
    assert step(state2) == 2 * step(state)  # its Adam state carried over
    made = []
    real = embedders.from_spec
    monkeypatch.setattr(embedders, "from_spec", lambda *a, **k: made.append(real(*a, **k)) or made[-1])
    rep = evaluate.evaluate_checkpoint(state2, loc, log=lambda *_: None, splits=("test",), universal_k=1,
                                       defender_steps=0).json
    m = rep["recognizers"]
    assert m["order"] == ["attacked", "random:11", "random:7"]
    assert [m["columns"][n]["role"] for n in m["order"]] == ["attacked", "attacked", "held-out"]
    (held,) = made
    assert embedders.fingerprint(held) == embedders.fingerprint(embedders.random_trunk(7, "cpu"))


def test_transfer_space_sweeps_one_surrogate_against_three_and_the_table_shows_both_roles():
    import os

    from maskgan.reporting import report, report_matrix
    from tune import results
    from tune.space import load_space, trial_config

    space = load_space(os.path.join(os.path.dirname(__file__), "..", "..", "tune", "spaces", "transfer.yaml"))
    assert space.grid == {"model.recognizers": [[], ["random:11", "random:12"]]}
    assert space.base.eval.held_out == ["random:7", "dlib"]
    cfg = trial_config(space, {"model.recognizers": ["random:11", "random:12"]}, "/tmp/s/runs", "t_00001")
    assert cfg.model.recognizers == ["random:11", "random:12"] and cfg.eval.held_out == ["random:7", "dlib"]
    col = lambda role, diff: {"role": role, "transfer": {"test": {"dodging@1e-02": {"diff": diff}}}}  # noqa: E731
    m = {"order": ["attacked", "random:11", "random:7", "dlib"],
         "columns": {"attacked": col("attacked", 0.5), "random:11": col("attacked", 0.3),
                     "random:7": col("held-out", 0.1), "dlib": col("held-out", 0.0)}}
    assert report_matrix.role_means(m, "test", "1e-02") == pytest.approx({"attacked": 0.4, "held-out": 0.05})
    assert report_matrix.role_lines(m, "1e-02", ("test",)) == [
        "mean transfer (test, dodging@1e-02 minus original_mask): attacked +40.0 points (2 recognisers), "
        "held-out +5.0 points (2)"]
    row = {"trial": "t_00001", "status": "completed", "model.recognizers": ["random:11", "random:12"], "epochs": 6,
           "objective": 0.2, **results._transfer({"recognizers": m, "fars": ["1e-02"]}, "test")}
    md = results.results_markdown([row], space)
    assert "| attacked transfer test | held-out transfer test |" in md
    assert md.splitlines()[[i for i, l in enumerate(md.splitlines()) if l.startswith("| t_00001")][0]].endswith(
        "| +40.0 pts | +5.0 pts |")
    plain = {k: v for k, v in row.items() if not k.startswith("transfer/")}  # a sweep without eval.held_out
    assert "transfer test" not in results.results_markdown([plain], space)


def test_the_resident_row_budget_counts_every_surrogates_real_photo_features():
    one = feed.ResidentShard.row_bytes(96, "exp3", None)
    assert feed.ResidentShard.row_bytes(96, "exp3", None, surrogates=2) == one + 2 * 2 * 1792 * 4
    assert feed.ResidentShard.row_bytes(96, "exp1", None, surrogates=2) == feed.ResidentShard.row_bytes(96, "exp1", None)
