"""End to end on Ray Train (2 CPU workers), small: what a user of `maskgan train` / `evaluate` would notice."""

import hashlib
import json
import os
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from data_loader import shards, storage
from maskgan.evaluation import validation
from maskgan.evaluation.scorer import Scorer
from maskgan.reporting import runner
from maskgan.run import build, checkpoints
from maskgan.run.checkpoints import CheckpointError
from maskgan.training import train


def test_train_then_evaluate_fools_the_recogniser(ray_session, small_cfg, assets):
    # The paper's generator and loss (per-pixel fc3, its rate, no printability terms): the laptop recipe's colour
    # cells and TV/NPS trade most of the white-box fooling for printable designs (measured in docs/printing.md);
    # this test is about the method itself, so against facenet's trunk (the demo's), not the suite's compact one.
    # 6 epochs at g_lr 0.03 fool it as 10 at 0.02 and 14 at 0.01 did: generated 0.0-0.02 on train against the
    # plain mask's 0.41-0.44 in three runs (0.0 against 0.48 with 10 at 0.02), so the 0.3 margin below holds by
    # 6 or more of the 64 probes; the test 54 s against 61 s alone on 2 cores, 2026-12-07.
    # Three universal designs, not eight: no assertion here reads them, and with eight, scoring through facenet's
    # trunk made the evaluation 64 s (three: 26 s). The defender keeps its real length.
    epochs = 6
    cfg = small_cfg.replace(train={"epochs": epochs, "val_probes": 0},
                            model={"cell_px": 1, "recognizer_weights": str(assets / "recognizer_facenet.pt")},
                            objective={"tv_weight": 0.0, "nps_weight": 0.0, "g_lr": 0.03}, eval={"universal_k": 3})
    said = []
    result = train.fit(cfg, log=said.append)
    # the workers' progress reaches the driver's log: one line per epoch, each once
    assert [sum(f"epoch {e}/{epochs} " in line for line in said) for e in range(1, epochs + 1)] == [1] * epochs, said
    report = runner.evaluate_run(result.run_uri, log=lambda *_: None)
    acc, chance = report["accuracy"], report["chance"]
    assert report["gallery_size"] == 24 and chance == pytest.approx(1 / 24)
    assert report["illustrative_only"] is True and report["recognizer"]["base"] == "random"
    # the recogniser recognises masked synthetic faces ...
    assert acc["original_mask"]["train"] > 8 * chance
    # ... and after training, the generated designs fool it far more than the plain mask or any control
    gen = acc["generated"]["train"]
    assert gen < acc["original_mask"]["train"] - 0.3
    for control in ("blue", "black", "white", "noise"):
        assert gen < acc[control]["train"], (control, acc)
    lo, hi = acc["generated"]["ci95"]["train"]
    assert lo <= gen <= hi
    run = result.run_uri
    assert json.load(open(os.path.join(run, "report.json")))["experiment"] == "exp1"
    assert "Illustrative only" in open(os.path.join(run, "report.md")).read()
    assert open(os.path.join(run, "designs.png"), "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def _shifted_copy(src: str, dst: str, offset: int) -> None:
    """The paper's bug, planted: probe labels that do not line up with the gallery's."""
    shutil.copytree(src, dst)
    root = storage.resolve(dst)
    manifest = shards.read_manifest(root)
    n = manifest["identities"]
    for split in shards.SPLITS:
        for shard in manifest["sets"][split]["shards"]:
            path = os.path.join(dst, shard["path"])
            table = pq.read_table(path)
            labels = (table.column("label").to_numpy() + offset) % n
            table = table.set_column(0, "label", pa.array(labels, pa.int32()))
            pq.write_table(table, path)
            shard["sha256"] = hashlib.sha256(open(path, "rb").read()).hexdigest()
    shards.write_manifest(root, {k: v for k, v in manifest.items() if k != "format"})


def test_off_by_one_identity_labels_fall_to_chance(assets, tmp_path):
    from maskgan.config import recipes

    cfg = recipes.debug_cpu(str(assets))
    rec = build.load_recognizer(cfg.model.recognizer_weights, "cpu")
    proj = build.load_projector(cfg.model.projector, "cpu")
    gallery, _ = build.gallery(build.data_root(cfg), rec.trunk, "cpu")
    with torch.no_grad():
        gallery_emb = rec.head(gallery)
    gen = checkpoints.generator_from_arch(checkpoints.arch(cfg, 128))
    scorer = Scorer(rec.trunk, rec.head, proj, gallery_emb, "cpu", gen, 100)
    good = validation.score_set(storage.resolve(cfg.data.uri), "train", ["unmasked"], scorer)["unmasked"].mean()
    _shifted_copy(cfg.data.uri, str(tmp_path / "shifted"), offset=1)
    bad = validation.score_set(storage.resolve(str(tmp_path / "shifted")), "train", ["unmasked"], scorer)["unmasked"].mean()
    assert good > 0.5
    assert bad <= 2 / 24  # chance is 1/24


def test_resume_continues_at_next_epoch_with_same_weights(trained_run_copy, small_cfg):
    run = storage.resolve(trained_run_copy)  # a 2-epoch run of small_cfg, trained once per session
    state_before, _ = checkpoints.latest_checkpoint(run)
    assert state_before["epoch"] == 1
    with pytest.raises(train.RunExistsError, match="--resume"):
        train.fit(small_cfg.replace(train={"epochs": 3}))
    with pytest.raises(CheckpointError, match="another architecture.*generator: checkpoint 'fc3' vs config 'conv'"):
        train.fit(small_cfg.replace(train={"epochs": 3}, model={"generator": "conv"}), resume=True)
    resumed = train.fit(small_cfg.replace(train={"epochs": 3}), resume=True)
    assert resumed.metrics["epoch"] == 2
    epochs = [e for e, _ in checkpoints.list_checkpoints(run)]
    assert epochs == [1, 2]  # num_to_keep=2: epoch 2 was added after epoch 1, no epoch re-run
    # the resumed run started from epoch 1's weights: its Adam state continued (step count grew)
    state_after, _ = checkpoints.latest_checkpoint(run)
    step = lambda s: int(next(iter(s["g_opt"]["state"].values()))["step"])  # noqa: E731
    assert step(state_after) == step(state_before) * 3 // 2
    # a new run may start from another run's checkpoint (what PBT does): refused clearly when it cannot
    ckpt = checkpoints.list_checkpoints(run)[0][1].uri
    other = small_cfg.replace(train={"name": "other", "init_from": ckpt + "-gone"})
    with pytest.raises(CheckpointError, match=r"train.init_from: .*-gone not found"):
        train.fit(other)
    with pytest.raises(CheckpointError, match="train.init_from .*another architecture.*'fc3' vs config 'conv'"):
        train.fit(other.replace(train={"init_from": ckpt}, model={"generator": "conv"}))


@pytest.mark.parametrize("content, needle", [
    ("model:\n  generator: vit\n", "model.generator: 'vit' is not allowed"),
    ("objective:\n  experiment: exp9\n", "objective.experiment: 'exp9' is not allowed"),
])
def test_cli_bad_config_is_one_line(tmp_path, content, needle, maskgan_cli):
    p = tmp_path / "c.yaml"
    p.write_text(content)
    r = maskgan_cli("train", "--config", str(p))
    assert r.returncode == 2 and needle in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_cli_missing_data_and_bad_weights_are_one_line(tmp_path, assets, maskgan_cli):
    r = maskgan_cli("projector", "train", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "p.pt"))
    assert r.returncode == 2 and "nowhere: no manifest.json" in r.stderr
    (tmp_path / "w.pt").write_bytes(b"\x00garbage")
    r = maskgan_cli("recognizer", "adapt", "--data", str(assets / "data"), "--out", str(tmp_path / "r.pt"),
             "--base", str(tmp_path / "w.pt"))
    assert r.returncode == 2 and "unreadable recogniser weights file" in r.stderr and "w.pt" in r.stderr
    r = maskgan_cli("evaluate", "--run", str(tmp_path / "norun"))
    assert r.returncode == 2 and "no checkpoints" in r.stderr


def test_projector_finds_the_mask_and_nothing_else(assets):
    """The design must land on the mask alone: a projector that leaks alpha into the face lets the generator
    'win' by repainting the eyes, which no printed mask can do."""
    from maskgan.training import pretrain

    proj = build.load_projector(str(assets / "projector.pt"), "cpu")
    masked, alpha = pretrain._pairs(storage.resolve(str(assets / "data")), "val", 64)
    assert pretrain.alpha_iou(proj, masked, alpha) >= 0.9
    with torch.no_grad():
        pred = proj(masked)
    assert float(pred[alpha < 0.5].mean()) < 0.05  # essentially no design outside the mask
