"""The recogniser x row matrix: a column per recogniser with its own thresholds, held-out recognisers
never touched, the transfer line's sign on a planted case, and one-line errors for what cannot be built."""

import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from data_loader import storage
from maskgan.config import ConfigError
from maskgan.design import wearing
from maskgan.evaluation import embedders, evaluate, scoring, transfer, validation
from maskgan.evaluation.scorer import Scorer
from maskgan.reporting import headline, report, report_matrix
from maskgan.run import checkpoints, preflight

PROBES = 12


def mask_blind() -> embedders.Embedder:
    """A planted held-out recogniser that never looks at the mask region: it embeds the unmasked twin's pixels."""

    def embed(faces, twins):
        return F.normalize(F.avg_pool2d(twins, 8).flatten(1), dim=1), np.ones(len(faces), bool)

    return embedders.Embedder("mask-blind", embedders.HELD_OUT, embed, desc="planted: sees only the twin")


def test_each_recogniser_gets_its_own_column_and_thresholds_and_held_out_ones_are_never_touched(built):
    cfg, parts, gen, designs = built
    rec = parts.recognizer
    cols = [embedders.attacked(rec.trunk, rec.head), embedders.random_trunk(7, "cpu"), mask_blind()]
    held = cols[1]
    before = embedders.fingerprint(held)
    root = storage.resolve(cfg.data.uri)
    m = transfer.matrix(root, ["test"], designs, cols, PROBES, 0, parts.projector, "cpu", log=lambda *_: None)

    assert m["order"] == ["attacked", "random:7", "mask-blind"]
    assert [m["columns"][n]["role"] for n in m["order"]] == ["attacked", "held-out", "held-out"]
    thr = {n: m["columns"][n]["splits"]["test"]["impostors"]["thresholds"] for n in m["order"]}
    assert thr["attacked"] != thr["random:7"] != thr["mask-blind"]  # each calibrated on its own impostor pairs
    for n in m["order"]:
        rows = m["columns"][n]["splits"]["test"]["rows"]
        assert set(rows) == {"unmasked", "original_mask", "universal"} and rows["universal"]["designs"] == 2
        assert rows["original_mask"]["probes"] == PROBES
    # the attacked column is evaluate's ruler on the same probes
    with torch.no_grad():
        gallery_emb = rec.head(parts.gallery_feats)
    scorer = Scorer(rec.trunk, rec.head, parts.projector, gallery_emb, "cpu", gen, cfg.model.latent_dim)
    scored, imp = validation.score_probes(root, "test", ["unmasked", "original_mask", *designs], scorer,
                                          designs=designs, max_probes=PROBES)
    ref = scoring.summarise_rows(scored, imp, len(gallery_emb), list(designs), (wearing.UNIVERSAL,))
    assert ref["impostors"]["thresholds"] == pytest.approx(thr["attacked"], abs=1e-6)
    assert ref["rows"]["original_mask"]["verification"] == m["columns"]["attacked"]["splits"]["test"]["rows"][
        "original_mask"]["verification"]
    # a recogniser that never sees the mask region: the designs cannot transfer to it, exactly 0
    blind = m["columns"]["mask-blind"]
    assert blind["transfer"]["test"]["dodging@1e-02"]["diff"] == 0.0
    assert blind["splits"]["test"]["rows"]["universal"]["mean"]["rank1"] == \
        blind["splits"]["test"]["rows"]["original_mask"]["verification"]["rank1"]
    # the held-out trunk: no gradient can reach it, and its weights are bit for bit what they were
    assert not any(p.requires_grad for mod in held.modules for p in mod.parameters())
    assert embedders.fingerprint(held) == before
    md = "\n".join(report_matrix.recognizers_section(m, ["1e-02", "1e-03"]))
    assert "| row | test: attacked (attacked) | test: random:7 (held-out) | test: mask-blind (held-out) |" in md
    assert "transfer to `mask-blind` (held-out, test): universal dodging@1e-02 minus original_mask +0.0 points" in md
    print("\n" + md)


def test_evaluate_checkpoint_adds_the_matrix_and_leaves_the_held_out_trunk_alone(built, monkeypatch):
    cfg, parts, gen, _ = built
    cfg = cfg.replace(eval={"held_out": ["random:7"], "max_probes": 8})
    state = {"arch": checkpoints.arch(cfg, 128), "epoch": 0, "config": cfg.to_dict(), "generator": gen.state_dict(),
             "head": parts.recognizer.head.state_dict()}
    made = []
    real = embedders.from_spec
    monkeypatch.setattr(embedders, "from_spec", lambda *a, **k: made.append(real(*a, **k)) or made[-1])
    rep = evaluate.evaluate_checkpoint(state, storage.resolve(str(cfg.data.uri)), log=lambda *_: None,
                                       splits=("test",), universal_k=1, defender_steps=0).json
    m = rep["recognizers"]
    assert m["order"] == ["attacked", "random:7"] and set(m["columns"]["random:7"]["splits"]) == {"test"}
    (held,) = made
    assert embedders.fingerprint(held) == embedders.fingerprint(embedders.random_trunk(7, "cpu"))
    assert not any(p.requires_grad for p in held.modules[0].parameters())
    rep["fars"] = [scoring.far_key(f) for f in scoring.FARS]
    assert "## Recognisers (first 8 probes per split)" in report.report_markdown(rep)
    assert "transfer to `random:7` (held-out, test)" in headline.headline(rep)
    assert "transfer to `attacked`" not in headline.headline(rep)


def test_a_missing_dlib_extra_or_a_bad_spec_is_one_line_before_ray_starts(built, monkeypatch, tmp_path):
    from maskgan.models import dlib_recognizer

    cfg = built[0]
    monkeypatch.setitem(sys.modules, "dlib", None)  # `import dlib` raises ImportError
    with pytest.raises(dlib_recognizer.DlibMissing) as e:
        preflight.check_held_out(cfg.replace(eval={"held_out": ["random:3", "dlib"]}))
    assert "\n" not in str(e.value) and "pip install" in str(e.value)
    bad = tmp_path / "not-weights.pt"
    bad.write_bytes(b"nope")
    with pytest.raises(ConfigError, match=r"^eval\.held_out\[1\]: unreadable recogniser weights file") as e:
        preflight.check_held_out(cfg.replace(eval={"held_out": ["random:3", str(bad)]}))
    assert "\n" not in str(e.value)
    for held, msg in ((["dlib", "random:x"], r"^eval\.held_out\[1\]: 'random:x': the seed"),
                      (["dlib", 3], r"^eval\.held_out\[1\]: expected a string"),
                      (["dlib", "dlib"], r"^eval\.held_out\[1\]: 'dlib' is listed twice")):
        with pytest.raises(ConfigError, match=msg):
            cfg.replace(eval={"held_out": held})
    with pytest.raises(ConfigError, match=r"^eval\.max_probes: "):
        cfg.replace(eval={"max_probes": 0})
