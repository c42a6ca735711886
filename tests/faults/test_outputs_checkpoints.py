"""A diverged run is never exported or sampled, a model card is strict JSON, and `sample` writes what it says.

Before: `objective.g_lr: .inf` trained to `gen_ce nan` with 0 % val accuracy; `export` ranked that checkpoint best
(0 % generated looks like perfect protection) and wrote bare `NaN` into the model card; `sample` wrote an
all-black PNG with exit 0, and `--out x.jpg` got PNG bytes.

The damaged checkpoints are real ones (checkpoints.save_checkpoint) with NaN written into their state afterwards,
as a diverged optimiser leaves them: no training needed.
"""

import hashlib
import io
import json

import pytest
import torch

from maskgan.config import recipes
from maskgan.models.recognizer import Head
from maskgan.run import checkpoints

GOOD = {"acc/val/generated": 0.40, "acc/val/unmasked": 0.80, "train/gen_ce": 2.3}
DIVERGED = {"acc/val/generated": 0.0, "acc/val/unmasked": 0.0, "train/gen_ce": float("nan")}


def _checkpoint(run, epoch: int, metrics: dict, damage=None):
    """A checkpoint folder `run/checkpoint_{epoch:06d}` as training writes it; `damage(state)` edits its state
    afterwards (meta.json's checksum is recomputed, as an honest but diverged run would have written it)."""
    cfg = recipes.debug_cpu(str(run.parent))
    a = checkpoints.arch(cfg, 32)
    torch.manual_seed(epoch)
    gen = checkpoints.generator_from_arch(a)
    head = Head(torch.nn.Linear(1792, 512, bias=False), torch.nn.BatchNorm1d(512))
    g_opt = torch.optim.Adam(gen.parameters(), lr=1e-3)
    folder = run / f"checkpoint_{epoch:06d}"
    folder.mkdir(parents=True)
    checkpoints.save_checkpoint(str(folder), cfg=cfg, size=32, epoch=epoch,
                                trained=checkpoints.Trained(gen, head, g_opt, None), metrics=metrics)
    if damage is not None:
        state = torch.load(folder / "state.pt", weights_only=True)
        damage(state)
        buf = io.BytesIO()
        torch.save(state, buf)
        (folder / "state.pt").write_bytes(buf.getvalue())
        meta = json.loads((folder / "meta.json").read_text())
        meta.update(sha256=hashlib.sha256(buf.getvalue()).hexdigest(), bytes=len(buf.getvalue()))
        (folder / "meta.json").write_text(json.dumps(meta))
    return folder


def _last_linear(state) -> str:
    return [k for k in state["generator"] if k.endswith(".weight")][-1]


def nan_weights(state):
    state["generator"][_last_linear(state)][0, 0] = float("nan")


def black_generator(state):  # finite, but sigmoid(-50) everywhere: every design is black
    key = _last_linear(state)
    state["generator"][key].zero_()
    state["generator"][key[:-len("weight")] + "bias"].fill_(-50.0)


def _strict(text: str):
    def refuse(name):
        raise AssertionError(f"not strict JSON: bare {name}")
    return json.loads(text, parse_constant=refuse)


def test_export_skips_a_diverged_checkpoint_says_so_and_writes_strict_json(maskgan_cli, tmp_path):
    run = tmp_path / "runs" / "r"
    _checkpoint(run, 0, GOOD)
    diverged = _checkpoint(run, 1, DIVERGED)  # 0 % generated: the "best" by the metric, but NaN losses
    report = {"checkpoint": str(run / "checkpoint_000000"), "epoch": 0,
              "accuracy": {"generated": {"test": 0.1, "ci95": {"test": [float("nan"), float("nan")]}}}}
    (run / "report.json").write_text(json.dumps(report))  # Python writes NaN here; the card must not
    r = maskgan_cli("export", "--run", run, "--to", tmp_path / "out")
    assert r.returncode == 0, r.stderr[-2000:]
    skipped = [line for line in r.stdout.splitlines() if line.startswith(f"skipping {diverged}")]
    assert len(skipped) == 1 and "metric train/gen_ce = nan" in skipped[0], r.stdout
    assert "checkpoint_000000 (epoch 1," in r.stdout  # the finite one, counted from 1
    card = _strict((tmp_path / "out" / "model_card.json").read_text())
    assert card["source"]["checkpoint"].endswith("checkpoint_000000")
    assert card["evaluation"]["accuracy"]["generated"]["ci95"]["test"] == [None, None]
    ci = "evaluation.accuracy.generated.ci95.test"
    assert set(card["nulls"]) == {f"{ci}.0", f"{ci}.1"}


def test_export_of_a_run_that_only_diverged_is_refused(cli_error, tmp_path):
    run = tmp_path / "runs" / "r"
    _checkpoint(run, 0, DIVERGED)
    line = cli_error("export", "--run", run, "--to", tmp_path / "out")
    assert "non-finite metrics" in line and str(run) in line
    assert not (tmp_path / "out").exists()


def test_export_of_a_failed_run_is_refused_and_a_sweep_skips_it(cli_error, tmp_path):
    """A run with the driver's failure marker is not finished: its good checkpoints are not exported as if it were."""
    run = tmp_path / "runs" / "r"
    _checkpoint(run, 0, GOOD)
    (run / "FAILED.json").write_text(json.dumps({"reason": "train/gen_ce is nan in epoch 2"}))
    line = cli_error("export", "--run", run, "--to", tmp_path / "out")
    assert "the run failed (train/gen_ce is nan in epoch 2)" in line and str(run) in line
    assert not (tmp_path / "out").exists()
    # In a sweep, the failed trial is passed over; with no other trial there is nothing to export.
    line = cli_error("export", "--run", tmp_path, "--to", tmp_path / "out")
    assert "neither a train run" in line


def test_export_and_sample_refuse_nan_weights_naming_the_tensor(cli_error, maskgan_cli, tmp_path):
    run = tmp_path / "runs" / "r"
    ckpt = _checkpoint(run, 0, GOOD, damage=nan_weights)
    line = cli_error("sample", "--run", run, "--out", tmp_path / "d.png")
    assert line.startswith(f"maskgan: error: {ckpt}: refused: tensor generator.") and "holds nan" in line, line
    r = maskgan_cli("export", "--run", run, "--to", tmp_path / "out")
    assert r.returncode == 2 and "holds nan" in r.stdout and "non-finite weights" in r.stderr, r.stdout + r.stderr
    assert not (tmp_path / "d.png").exists() and not (tmp_path / "out" / "model_card.json").exists()


def test_sample_refuses_an_all_black_grid(cli_error, tmp_path):
    run = tmp_path / "runs" / "r"
    _checkpoint(run, 0, GOOD, damage=black_generator)
    line = cli_error("sample", "--run", run, "--out", tmp_path / "d.png")
    assert "all black" in line and "checkpoint_000000" in line
    assert not (tmp_path / "d.png").exists()


@pytest.mark.parametrize("name, magic", [("d.png", b"\x89PNG"), ("d.jpg", b"\xff\xd8\xff"), ("d.JPEG", b"\xff\xd8\xff"),
                                         ("d.webp", b"RIFF")])
def test_sample_writes_the_format_its_extension_names(maskgan_cli, tmp_path, name, magic):
    run = tmp_path / "runs" / "r"
    _checkpoint(run, 0, GOOD)
    r = maskgan_cli("sample", "--run", run, "--n", "4", "--out", tmp_path / name)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / name).read_bytes()[:len(magic)] == magic
    assert "epoch 1)" in r.stdout  # the same checkpoint is epoch 1 everywhere a user reads it


def test_sample_refuses_an_unknown_extension_before_reading_anything(cli_error, tmp_path):
    line = cli_error("sample", "--run", tmp_path / "nowhere", "--out", tmp_path / "d.gif")
    assert line == (f"maskgan: error: {tmp_path / 'd.gif'}: unknown image extension '.gif' "
                    "(use .jpeg, .jpg, .png, .webp)")


def test_evaluate_counts_epochs_from_one_like_sample(tmp_path):
    """Before: the checkpoint saved after the first epoch was "epoch 0" in `evaluate` and "epoch 1" in `sample`."""
    from maskgan.reporting import report

    md = report.report_markdown({"experiment": "exp1", "generator": "fc3", "epoch": 0, "illustrative_only": False,
                                 "gallery_size": 4, "chance": 0.25, "accuracy": {}})
    assert md.splitlines()[0] == "# maskgan report: exp1 / fc3 (epoch 1)"
