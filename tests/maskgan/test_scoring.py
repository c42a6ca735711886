"""The ruler, checked with planted bugs: each test plants what a misleading evaluation would hide."""

import json

import numpy as np
import pytest

from maskgan.design import wearing
from maskgan.evaluation import evaluate, scoring
from maskgan.reporting import report, runner


def _scores(label, pred, own_sim=None, rank=None):
    label, pred = np.asarray(label), np.asarray(pred)
    own = np.zeros(len(label), np.float32) if own_sim is None else np.asarray(own_sim, np.float32)
    rank = (pred != label).astype(np.int64) if rank is None else np.asarray(rank)
    return scoring.ProbeScores(label, pred, own, rank)


LABELS = np.repeat(np.arange(8), 4)  # 8 identities x 4 probes = 32, as in a small split


def test_every_probe_predicted_as_one_identity_is_flagged_as_a_hub_and_said_in_words():
    hub = scoring.hubness(_scores(LABELS, np.full(32, 3)), gallery_size=24)
    assert hub["hub_dominated"] and hub["top_identity"] == 3 and hub["top_share"] == 1.0
    assert hub["entropy"] == 0.0 and hub["distinct_predicted"] == 1
    assert hub["per_identity_accuracy"]["3"] == 1.0 and hub["per_identity_accuracy"]["0"] == 0.0
    assert "32 of 32 probes" in hub["sentence"] and "identity 3" in hub["sentence"]
    honest = scoring.hubness(_scores(LABELS, LABELS), gallery_size=24)
    assert not honest["hub_dominated"] and honest["entropy"] == pytest.approx(np.log(8) / np.log(24))
    # three people, each recognised, take a third each: a small split, not a hub
    assert not scoring.hubness(_scores(np.repeat(np.arange(3), 4), np.repeat(np.arange(3), 4)), 24)["hub_dominated"]
    # ... and report.md says it in words
    thr = {"1e-02": 0.5, "1e-03": 0.7}
    rows = {"generated": {"test": scoring.summarise(_scores(LABELS, np.full(32, 3)), thr, 24)},
            "original_mask": {"test": scoring.summarise(_scores(LABELS, LABELS, np.ones(32)), thr, 24)}}
    rep = {"experiment": "exp1", "generator": "fc3", "epoch": 0, "illustrative_only": False, "gallery_size": 24,
           "chance": 1 / 24, "accuracy": {}, "rows": rows, "impostors": {"test": {"pairs": 736, "thresholds": thr}}}
    md = report.report_markdown(rep)
    assert "`generated` is hub-dominated: 32 of 32 probes (100%) are identified as identity 3" in md
    assert "`original_mask` is hub" not in md


def test_a_rate_of_zero_in_32_gets_an_upper_bound_above_5_percent():
    lo, hi = scoring.wilson(0, 32)
    assert lo == 0.0 and 0.05 < hi < 0.15
    lo, hi = scoring.wilson(32, 32)
    assert hi == 1.0 and lo < 0.95
    summary = scoring.summarise(_scores(LABELS, (LABELS + 1) % 8), {"1e-02": 0.5}, 24)
    assert summary["verification"]["rank1"] == 0.0
    assert summary["intervals"]["rank1"]["wilson95"][1] > 0.05
    assert summary["intervals"]["rank1"]["probe95"] == [0.0, 0.0]  # what the old interval claimed


def test_duplicated_probes_shrink_the_probe_bootstrap_but_not_the_identity_bootstrap():
    rng = np.random.default_rng(0)
    ident = np.repeat(np.arange(16), 4)
    p = rng.uniform(0, 1, 16)[ident]  # each person is fooled at their own rate: probes of one person correlate
    values = (rng.uniform(size=ident.size) < p).astype(float)
    width = lambda iv: iv[1] - iv[0]  # noqa: E731
    probe1, ident1 = width(scoring.probe_bootstrap(values)), width(scoring.identity_bootstrap(values, ident))
    dup_v, dup_i = np.tile(values, 4), np.tile(ident, 4)
    probe4, ident4 = width(scoring.probe_bootstrap(dup_v)), width(scoring.identity_bootstrap(dup_v, dup_i))
    assert ident4 == pytest.approx(ident1, rel=0.15)  # the same people: the same uncertainty
    assert probe4 < 0.65 * probe1  # the probe bootstrap believes 4x the evidence (width ~ 1/2)
    assert ident4 > 1.5 * probe4  # so on duplicated probes the honest interval is the wider one


def test_off_by_one_labels_drop_rank1_to_chance():
    rng = np.random.default_rng(1)
    g = 24
    gallery = rng.normal(size=(g, 64))
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    label = np.repeat(np.arange(g), 4)
    probes = gallery[label] + 0.1 * rng.normal(size=(label.size, 64))
    probes /= np.linalg.norm(probes, axis=1, keepdims=True)
    sims = probes @ gallery.T
    right = scoring.probe_scores(sims, label)
    shifted = scoring.probe_scores(sims, (label + 1) % g)
    assert right.correct.mean() > 0.9 and (right.rank < 5).mean() > 0.95
    assert shifted.correct.mean() <= 2 / g
    assert (shifted.rank < 5).mean() <= 2 * 5 / g
    assert right.own_sim.mean() > shifted.own_sim.mean() + 0.5


def test_threshold_at_far_lands_at_the_impostor_quantile():
    imp = np.random.default_rng(2).normal(size=200_000)
    t = scoring.far_threshold(imp, 1e-2)
    assert t == pytest.approx(2.326, abs=0.03)
    assert (imp >= t).mean() == pytest.approx(1e-2, rel=0.05)
    assert scoring.far_threshold(imp, 1e-3) == pytest.approx(3.090, abs=0.06)
    # impostor pairs never include a probe's own gallery photo
    sims = np.full((4, 6), 0.1)
    sims[np.arange(4), [0, 1, 2, 3]] = 0.9
    pairs = scoring.impostor_similarities(sims, np.arange(4), np.random.default_rng(0))
    assert pairs.size == 4 * 5 and pairs.max() == pytest.approx(0.1)
    few = scoring.impostor_similarities(sims, np.arange(4), np.random.default_rng(0), per_probe=2)
    assert few.size == 8 and few.max() == pytest.approx(0.1)
    # dodging: share of probes below the threshold
    s = _scores(np.arange(4), np.arange(4), own_sim=[0.1, 0.4, 0.6, 0.9])
    assert scoring.dodged(s, 0.5).mean() == 0.5


def test_paired_difference_and_worst_best_over_designs():
    ident = np.repeat(np.arange(8), 4)
    base = np.zeros(32)
    row = (ident < 4).astype(float)  # half the people now dodge
    d = scoring.paired_difference(row, base, ident)
    assert d["diff"] == 0.5 and d["identity95"][0] < 0.5 < d["identity95"][1]
    agg = scoring.over_designs([{"dodging@1e-02": 0.2, "rank1": 0.1}, {"dodging@1e-02": 0.8, "rank1": 0.4}])
    assert agg["worst"] == {"dodging@1e-02": 0.2, "rank1": 0.4}  # worst = least protective
    assert agg["best"] == {"dodging@1e-02": 0.8, "rank1": 0.1}
    assert agg["mean"]["dodging@1e-02"] == pytest.approx(0.5)


def test_a_design_scored_from_its_png_scores_as_the_in_memory_design(assets, tmp_path):
    import torch

    from data_loader import storage
    from maskgan.config import recipes
    from maskgan.evaluation.scorer import Scorer
    from maskgan.run import build, checkpoints

    cfg = recipes.debug_cpu(str(assets))
    parts = build.build(cfg, "cpu")
    rec, proj = parts.recognizer, parts.projector
    with torch.no_grad():
        gallery_emb = rec.head(parts.gallery_feats)
    gen = checkpoints.generator_from_arch(checkpoints.arch(cfg, 128)).eval()
    scorer = Scorer(rec.trunk, rec.head, proj, gallery_emb, "cpu", gen, cfg.model.latent_dim)
    design = wearing.universal_designs(gen, cfg.model.latent_dim, k=1, seed=0)[:1]
    path = tmp_path / "design.png"
    path.write_bytes(wearing.design_png(design))
    from_disk = wearing.design_from_png(path.read_bytes())
    assert torch.equal(from_disk, design)
    root = storage.resolve(cfg.data.uri)
    in_memory = evaluate.score_design(root, "test", design, scorer)
    scored = evaluate.score_design(root, "test", from_disk, scorer)
    assert json.dumps(scored, sort_keys=True) == json.dumps(in_memory, sort_keys=True)
    assert in_memory["probes"] > 0 and set(in_memory["verification"]["dodging"]) == {"1e-02", "1e-03"}
    assert "dodging@1e-02" in in_memory["paired_vs_original_mask"]


@pytest.mark.slow
def test_evaluate_writes_the_wearers_figures_beside_todays_keys(trained_run_copy):
    import os

    # the session's trained run; a short defender (test_train_e2e keeps the real length)
    rep = runner.evaluate_run(trained_run_copy, log=lambda *_: None, universal_k=3, defender_steps=5)
    on_disk = json.load(open(os.path.join(trained_run_copy, "report.json")))
    assert {"accuracy", "chance", "gallery_size", "rows", "impostors"} <= set(on_disk)
    for split in ("train", "val", "test"):
        thr = on_disk["impostors"][split]["thresholds"]
        assert set(thr) == {"1e-02", "1e-03"} and thr["1e-03"] >= thr["1e-02"]
        for row in wearing.ROWS:
            s = on_disk["rows"][row][split]
            assert s["verification"]["rank1"] == pytest.approx(on_disk["accuracy"][row][split])  # one ruler
            assert s["verification"]["rank5"] >= s["verification"]["rank1"]
            assert set(s["verification"]["dodging"]) == set(thr)
            assert {"wilson95", "identity95", "probe95"} <= set(s["intervals"]["dodging@1e-02"])
            assert {"top_share", "entropy", "per_identity_accuracy", "hub_dominated"} <= set(s["hubness"])
            assert (row == "original_mask") != ("paired_vs_original_mask" in s)
        uni = on_disk["rows"]["universal"][split]
        assert uni["designs"] == 3 and len(uni["per_design"]) == 3
        assert uni["worst"]["rank1"] >= uni["mean"]["rank1"] >= uni["best"]["rank1"]
        assert uni["worst"]["dodging@1e-02"] <= uni["mean"]["dodging@1e-02"] <= uni["best"]["dodging@1e-02"]
        assert "dodging@1e-02" in uni["paired_vs_original_mask"]
        div = on_disk["diversity"][split]  # how the 3 universal designs differ
        assert div["designs"] == 3 and div["probes"] > 0 and div["pixel"] >= 0 and div["feature"] >= 0
        assert 1 <= div["distinct_identities"]["mean"] <= div["distinct_identities"]["max"] <= 3
        assert div["protection_spread"]["dodging@1e-02"] == pytest.approx(
            uni["best"]["dodging@1e-02"] - uni["worst"]["dodging@1e-02"])
    md = open(os.path.join(trained_run_copy, "report.md")).read()
    assert "## Diversity of the universal designs" in md and "| test | 3 × " in md
    assert "## test (the figure to quote)" in md and "| universal ×3 mean (worst..best) |" in md
    assert rep["rows"]["universal"]["test"]["designs"] == 3
    after = on_disk["after_defender"]
    assert set(after["impostors"]) == {"val", "test"} and after["rows"]["universal"]["test"]["designs"] == 3
    assert "## After an adaptive defender" in md
