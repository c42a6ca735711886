"""The ruler's honesty checks: no identity leaks into adaptation or training, the printed design is the scored one,
and an adaptive defender can take protection away."""

import json
import re

import numpy as np
import torch

from cli.main import main as cli_main
from data_loader import shards, storage, synth
from maskgan.design import wearing
from maskgan.evaluation import evaluate, scoring
from maskgan.run import build


def _identities(root, set_name):
    ids = set()
    for batch in shards.iter_set(root, set_name, columns=["identity"]):
        ids.update(batch["identity"].tolist())
    return ids


def test_synth_adapt_identities_never_appear_in_the_gallery_or_among_probes(tmp_path):
    m = synth.generate(str(tmp_path / "d"), identities=10, images_per_identity=1, adapt_per_identity=2,
                       adapt_identities=5, size=32)
    root = storage.resolve(str(tmp_path / "d"))
    adapt, gallery = _identities(root, "adapt"), _identities(root, "gallery")
    assert len(adapt) == 5 and len(gallery) == 10 and not adapt & gallery
    for split in shards.SPLITS:
        assert not adapt & _identities(root, split)
    assert m["sets"]["adapt"]["rows"] == 5 * (1 + 2)  # one own gallery photo + 2 masked photos each
    # probe masks vary in colour, and none is exactly the `blue` control
    batch = next(shards.iter_set(root, "train", columns=["size", "masked", "alpha"]))
    blue = np.array(wearing.CONTROLS["blue"]) * 255
    centres = [batch["masked"][i][batch["alpha"][i] > 0].reshape(-1, 3).astype(float).mean(0)
               for i in range(len(batch["masked"]))]
    assert np.ptp(np.array(centres), axis=0).max() > 5
    assert all(np.abs(c - blue).max() > 3 for c in centres)


def _plant_overlap(root):
    """An adapt set holding a photo of a gallery identity (the leak the issue found)."""
    manifest = shards.read_manifest(root)
    gallery = shards.load_set(root, "gallery")
    rows = [shards.image_row(label=0, identity=str(gallery["identity"][0]), split="adapt", variant="gallery",
                             unmasked=gallery["unmasked"][0])]
    manifest["sets"]["adapt"]["shards"].append(shards.write_shard(root, "adapt/part-09999.parquet", rows))
    manifest["sets"]["adapt"]["rows"] += 1
    shards.write_manifest(root, manifest)
    return str(gallery["identity"][0])


def test_recognizer_adapt_refuses_adapt_identities_that_are_gallery_identities(tmp_path, capsys):
    data = tmp_path / "d"
    synth.generate(str(data), identities=4, images_per_identity=1, adapt_per_identity=1, size=32)
    leaked = _plant_overlap(storage.resolve(str(data)))
    code = cli_main(["recognizer", "adapt", "--data", str(data), "--out", str(tmp_path / "r.pt"), "--steps", "1"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "also gallery identities" in err and leaked in err and not (tmp_path / "r.pt").exists()


def test_the_training_gallery_holds_exactly_the_train_identities(tmp_path):
    synth.generate(str(tmp_path / "d"), identities=10, images_per_identity=1, adapt_per_identity=0, size=32)
    root = storage.resolve(str(tmp_path / "d"))
    feats = torch.arange(10, dtype=torch.float32).view(10, 1).repeat(1, 3)  # row i is "identity i"
    tg = build.TrainGallery.of(root, feats)
    train_labels = [i for i in range(10) if synth.synth_split(i) == "train"]
    assert tg.labels.tolist() == train_labels and tg.feats[:, 0].tolist() == train_labels
    probe_labels = torch.tensor(train_labels[::-1])
    remapped = tg.batch({"label": probe_labels})["label"]
    assert torch.equal(tg.feats[remapped, 0].long(), probe_labels)  # each label still points at its own photo
    assert (tg.remap[[i for i in range(10) if i not in train_labels]] == -1).all()


def test_the_defender_learns_to_see_through_a_design_on_identities_it_never_trained_on():
    from maskgan.config import ObjectiveConfig
    from maskgan.evaluation.defender import adapt_head
    from maskgan.models.recognizer import build_recognizer

    torch.manual_seed(0)
    _, head = build_recognizer(None)
    n_ids, dim = 16, 1792
    gallery = torch.randn(n_ids, dim)
    design = 20 * torch.randn(dim)  # the design's features swamp the face's
    labels = torch.arange(n_ids).repeat_interleave(4)
    wearing = gallery[labels] + 0.3 * torch.randn(len(labels), dim) + design
    splits = np.array(["train"] * 10 + ["test"] * 6)
    tg = build.TrainGallery(gallery, splits)
    held_out = labels >= 10

    def rank1(h):
        with torch.no_grad():
            pred = (h(wearing[held_out]) @ h(gallery).T).argmax(1)
        return (pred == labels[held_out]).float().mean().item()

    head.eval()
    before = rank1(head)
    assert before < 0.2  # the attacked head is fooled on everyone
    adapted = adapt_head(head, torch.nn.Linear(1, 1), wearing, labels, tg, ObjectiveConfig(), steps=150)
    after = rank1(adapted)
    assert after >= before + 0.3, (before, after)
    assert rank1(head) == before  # the attacked head itself is untouched


def _saved_run(assets, tmp_path):
    """A run folder holding one checkpoint (an untrained generator), written without Ray."""
    from maskgan.config import recipes
    from maskgan.run import build, checkpoints
    from maskgan.training.objective import make_optimizers

    # A short defender and three designs (the export evaluates): what is tested is that the file scores as the
    # report says, not the defender (its real length: test_train_e2e.py).
    cfg = recipes.debug_cpu(str(assets)).replace(train={"storage": str(tmp_path / "runs"), "name": "r"},
                                                 eval={"defender_steps": 5, "universal_k": 3})
    torch.manual_seed(0)
    gen = checkpoints.generator_from_arch(checkpoints.arch(cfg, 128))
    head = build.load_recognizer(cfg.model.recognizer_weights, "cpu").head
    opts = make_optimizers(gen, head, cfg.objective)
    ckpt = tmp_path / "runs" / "r" / "checkpoint_000000"
    ckpt.mkdir(parents=True)
    checkpoints.save_checkpoint(str(ckpt), cfg=cfg, size=128, epoch=0,
                                trained=checkpoints.Trained(gen, head, opts.generator, opts.head),
                                metrics={"acc/val/generated": 0.5, "acc/val/unmasked": 0.9})
    return tmp_path / "runs" / "r"


RAY_ACTOR_LINE = re.compile(r"^(\x1b\[[0-9;]*m)?\(\w+ pid=\d+")


def test_an_exported_design_png_scored_from_disk_scores_as_the_report_says(assets, tmp_path, capsys):
    from tune import export, sample

    run = _saved_run(assets, tmp_path)
    out = tmp_path / "export"
    export.export(str(run), str(out), log=lambda *_: None)
    card = json.loads((out / "model_card.json").read_text())
    report = json.loads((out / "report.json").read_text())
    assert card["evaluation"]["same_checkpoint"] and report["checkpoint"].endswith("checkpoint_000000")
    pngs = sorted(p.name for p in (out / "designs").iterdir())
    assert report["universal_k"] == 3  # eval.universal_k of the run's config
    assert pngs == [f"universal_{i}.png" for i in range(report["universal_k"])]
    assert "after_defender" in report and "test" in report["after_defender"]["rows"]["universal"]

    scored = evaluate.score_design_file(str(run), str(out / "designs" / "universal_1.png"), log=lambda *_: None)
    for split in ("train", "val", "test"):
        assert scoring.flat(scored[split]) == report["rows"]["universal"][split]["per_design"][1]

    # `maskgan sample` writes the same files, byte for byte
    sample.sample(str(out), n=2, out=str(tmp_path / "s" / "grid.png"), log=lambda *_: None)
    for name in pngs:
        assert (tmp_path / "s" / "designs" / name).read_bytes() == (out / "designs" / name).read_bytes()

    # a PNG of another size: one line naming the file, exit 2
    from PIL import Image

    small = tmp_path / "small.png"
    Image.new("RGB", (64, 64)).save(small)
    code = cli_main(["evaluate", "--run", str(run), "--design-file", str(small)])
    # Ray forwards the session's actor logs to this process's stderr ("(SplitCoordinator pid=…) …" from an
    # earlier test's stream); those lines are not this command's, so they are set aside before counting.
    err = [line for line in capsys.readouterr().err.strip().splitlines() if not RAY_ACTOR_LINE.match(line)]
    assert code == 2 and len(err) == 1 and str(small) in err[0] and "64x64" in err[0], err


BASE = {"data": {"uri": "/nonexistent/data"}, "model": {"projector": "/nonexistent/p.pt"}}


def test_the_results_table_gives_mean_and_spread_over_training_seeds():
    from tune import results
    from tune.space import parse_space

    space = parse_space({"name": "s", "base": BASE, "grid": {"train.seed": [0, 1, 2], "objective.experiment":
                                                            ["exp0", "exp1"]}})
    rows = [{"trial": f"t{e}{s}", "status": "completed", "epochs": 1, "train.seed": s, "objective.experiment": e,
             "generated/test": g, "universal/test/dodging": 0.5}
            for e, gs in (("exp0", (0.1, 0.2, 0.3)), ("exp1", (0.5, 0.5, 0.5))) for s, g in zip((0, 1, 2), gs)]
    md = results.results_markdown(rows, space)
    assert "## Over training seeds (`train.seed`)" in md
    assert "| exp0 | 3 | 20.0% ± 10.0% | – | 50.0% ± 0.0% |" in md and "| exp1 | 3 | 50.0% ± 0.0% |" in md
    no_seed = parse_space({"name": "s", "base": BASE, "grid": {"objective.experiment": ["exp0", "exp1"]}})
    assert "Over training seeds" not in results.results_markdown(rows, no_seed)
