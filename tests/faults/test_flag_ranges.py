"""Numeric flags out of range are refused by the library functions they feed, before anything is written.

Before: `data synth --size 0` wrote zero-byte images, `projector train --epochs 0` wrote an untrained
projector (exit 0), `--max-images 0` was a ZeroDivisionError, `recognizer adapt --steps -5` exited 0.
"""

import pytest


@pytest.mark.parametrize("args, needle", [
    (["--size", "0"], "--size: must be an integer in [32, 1024], got 0"),
    (["--identities", "1"], "--identities: must be an integer in [2, 1000000], got 1"),
    (["--images-per-identity", "0"], "--images-per-identity: must be an integer in [1, 10000], got 0"),
    (["--adapt-per-identity", "-1"], "--adapt-per-identity: must be an integer in [0, 10000], got -1"),
    (["--distinct", "0"], "--distinct: must be a finite number in (0, 1], got 0.0"),
    (["--distinct", "0.6", "--distinct-under", "expo,nosuch"],
     "--distinct-under expo,nosuch: unknown zoo model 'nosuch'"),
])
def test_synth_flags(cli_error, tmp_path, args, needle):
    out = tmp_path / "d"
    flags = {"--identities": "4", "--images-per-identity": "1", **dict(zip(args[::2], args[1::2]))}
    line = cli_error("data", "synth", "--out", out, *[x for kv in flags.items() for x in kv])
    assert needle in line
    assert not out.exists()  # nothing written, not even the folder


@pytest.mark.parametrize("args, needle", [
    (["projector", "train", "--epochs", "0"], "--epochs: must be an integer in [1, 100000], got 0"),
    (["projector", "train", "--max-images", "0"], "--max-images: must be an integer in [1, 10000000], got 0"),
    (["recognizer", "adapt", "--steps", "-5"], "--steps: must be an integer in [1, 1000000], got -5"),
])
def test_training_flags(cli_error, tmp_path, args, needle):
    out = tmp_path / "weights.pt"
    line = cli_error(*args[:2], "--data", tmp_path / "no-data", "--out", out, *args[2:])
    assert needle in line  # named before the (missing) data is even looked at
    assert not out.exists()


def test_library_callers_get_the_same_checks(tmp_path):
    from data_loader import ranges, synth
    from maskgan.training import pretrain

    with pytest.raises(ranges.RangeError, match=r"^--epochs: must be an integer in \[1, 100000\], got -1$"):
        pretrain.train_projector(str(tmp_path), str(tmp_path / "p.pt"), epochs=-1)
    with pytest.raises(ranges.RangeError, match=r"^lr: must be a finite number in \(0, 10\], got inf$"):
        pretrain.train_projector(str(tmp_path), str(tmp_path / "p.pt"), lr=float("inf"))
    with pytest.raises(ranges.RangeError, match=r"^--steps: must be an integer in \[1, 1000000\], got 0$"):
        pretrain.adapt_recognizer(str(tmp_path), str(tmp_path / "r.pt"), steps=0)
    with pytest.raises(ranges.RangeError, match=r"^--size: must be an integer in \[32, 1024\], got 2.5$"):
        synth.generate(str(tmp_path / "d"), 4, 1, size=2.5)
    with pytest.raises(ranges.RangeError, match=r"^--identities: must be an integer in \[2, 1000000\], got True$"):
        synth.generate(str(tmp_path / "d"), True, 1)
    assert not (tmp_path / "d").exists() and not (tmp_path / "p.pt").exists()
