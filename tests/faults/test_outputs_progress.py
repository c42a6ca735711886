"""Long steps say how far they are, and a refused weights file is described truthfully.

Before: `data synth` was silent for ~17 s and `recognizer adapt` until step 100 (minutes on a busy machine);
the refusal of an unsafe weights file was cut at "Re-running torch.load with weights_only set to False", which
reads as advice to turn the safety check off.
"""

import os
import re

import pytest

from data_loader import progress, synth


def test_data_synth_prints_progress_with_rate_and_time_left(maskgan_cli, tmp_path):
    r = maskgan_cli("data", "synth", "--identities", "20", "--images-per-identity", "1", "--adapt-per-identity", "0",
                    "--size", "32", "--out", tmp_path / "d")
    assert r.returncode == 0, r.stderr[-2000:]
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith(f"synth {tmp_path / 'd'}: ")]
    assert lines and lines[-1].startswith(f"synth {tmp_path / 'd'}: 20/20 identities (100 %)"), r.stdout
    assert all(re.search(r"[\d.]+ identities/s, (about \d+ s left|done in \d+ s)$", ln) for ln in lines), lines


def test_recognizer_adapt_reports_feature_extraction_and_steps(maskgan_cli, tmp_path):
    synth.generate(str(tmp_path / "d"), 4, 1, adapt_per_identity=1, log=None)
    r = maskgan_cli("recognizer", "adapt", "--data", tmp_path / "d", "--out", tmp_path / "r.pt", "--steps", "20")
    assert r.returncode == 0, r.stderr[-2000:]
    out = r.stdout
    first_step = out.index("adapt: trunk features: 4/4 photos (100 %)")  # before any optimiser step
    assert first_step < out.index("adapt: 20/20 steps (100 %)"), out
    assert re.search(r"adapt: 20/20 steps \(100 %\), [\d.]+ steps/s, done in \d+ s; loss [\d.]+", out), out


def test_progress_prints_about_every_tenth_and_never_floods(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: now[0])
    lines = []
    p = progress.Progress("job", 1000, "items", log=lines.append)
    for i in range(1, 1001):
        now[0] += 0.015  # 15 s in all: 1.5 s a tenth
        p.update(i)
    assert [ln.split(" ", 2)[1] for ln in lines] == [f"{k}/1000" for k in range(100, 1001, 100)], lines
    assert lines[-1] == "job: 1000/1000 items (100 %), 66.7 items/s, done in 15 s"
    fast = []
    q = progress.Progress("quick", 1000, "items", log=fast.append)
    for i in range(1, 1001):
        q.update(i)  # no time passes: only the final line
    assert len(fast) == 1 and "1000/1000" in fast[0]


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch /tmp/maskgan-outputs-pwned",))


def test_unsafe_weights_refusal_says_what_the_file_is_and_never_suggests_turning_safety_off(cli_error, tmp_path):
    import pickle

    import torch

    marker = "/tmp/maskgan-outputs-pwned"
    if os.path.exists(marker):
        os.remove(marker)
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": _Payload()}, evil, pickle_module=pickle)
    synth.generate(str(tmp_path / "d"), 4, 1, adapt_per_identity=1, log=None)
    line = cli_error("recognizer", "adapt", "--data", tmp_path / "d", "--out", tmp_path / "r.pt", "--base", evil)
    assert line == (f"maskgan: error: unreadable recogniser weights file {evil}: the file holds Python code or "
                    "objects (posix.system), not only tensors; it was not loaded (weights are only ever loaded as "
                    "plain tensors)")
    assert "weights_only" not in line and "Re-running" not in line
    assert not os.path.exists(marker)


@pytest.mark.parametrize("content, why", [(b"", "the file is empty"), (b"hello", "not a torch weights file")])
def test_empty_and_text_weights_are_named_as_such(tmp_path, content, why):
    from maskgan.models import weights

    f = tmp_path / "w.pt"
    f.write_bytes(content)
    with pytest.raises(weights.WeightsError, match=f"^unreadable weights file {f}: {why}"):
        weights.load_torch(str(f))
