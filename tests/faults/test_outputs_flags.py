"""Every numeric flag is checked while the command line is parsed: one line naming the flag and its range, exit 2,
before torch, Ray or the data are touched (the same text the library's own check gives its Python callers)."""

import os

import pytest

from data_loader import ranges

SYNTH = ["data", "synth", "--identities", "4", "--images-per-identity", "1"]
PREPARE = ["data", "prepare", "--ffhq", "f", "--maskedfacenet", "m"]
IDENTITIES = ["data", "prepare", "--identities", "i"]

# (command line before the flag, flag, a bad value, the range the message names)
CASES = [
    (["demo"], "--identities", "1", "[2, 1000000]"),
    (["demo"], "--epochs", "0", "[1, 100000]"),
    (SYNTH, "--identities", "0", "[2, 1000000]"),
    (SYNTH, "--images-per-identity", "0", "[1, 10000]"),
    (SYNTH, "--adapt-per-identity", "-1", "[0, 10000]"),
    (SYNTH, "--seed", "-1", "[0, 4294967295]"),
    (SYNTH, "--size", "0", "[32, 1024]"),
    (PREPARE, "--size", "16", "[32, 1024]"),
    (PREPARE, "--shard-size", "0", "[1, 1000000]"),
    (PREPARE, "--max-bad-fraction", "1.5", "[0, 1]"),
    (IDENTITIES, "--max-photos-per-identity", "1", "[2, 100000]"),
    (IDENTITIES, "--min-photos-per-identity", "1", "[2, 10000]"),
    (["projector", "train", "--data", "d"], "--epochs", "-1", "[1, 100000]"),
    (["projector", "train", "--data", "d"], "--max-images", "0", "[1, 10000000]"),
    (["recognizer", "adapt", "--data", "d"], "--steps", "-5", "[1, 1000000]"),
    (["tune", "--space", "s.yaml"], "--num-samples", "0", "[1, 100000]"),
    (["sample", "--run", "x"], "--n", "0", "[1, 1024]"),
]


@pytest.mark.parametrize("before, flag, bad, interval", CASES, ids=[f"{c[0][0]}{c[1]}" for c in CASES])
def test_out_of_range_flag_is_one_line_naming_flag_and_range(cli_error, tmp_path, before, flag, bad, interval):
    out = tmp_path / "out"
    args = [*before, flag, bad] + ([] if before[0] in ("tune", "demo") else ["--out", out])
    if before[0] == "demo":
        args += ["--out", out]
    line = cli_error(*args)
    integer = flag != "--max-bad-fraction"
    kind = "an integer" if integer else "a finite number"
    value = int(bad) if integer else float(bad)
    assert f"argument {flag}: must be {kind} in {interval}, got {value!r}" in line, line
    assert not out.exists()


@pytest.mark.parametrize("bad", ["nan", "inf", "ten", "2.5"])
def test_non_numbers_and_non_finite_values_are_refused_too(cli_error, tmp_path, bad):
    line = cli_error("projector", "train", "--data", tmp_path, "--out", tmp_path / "p.pt", "--epochs", bad)
    assert f"argument --epochs: must be an integer in [1, 100000], got {bad!r}" in line, line
    line = cli_error(*PREPARE, "--out", tmp_path / "o", "--max-bad-fraction", bad if bad != "2.5" else "-0.1")
    assert "argument --max-bad-fraction: must be a finite number in [0, 1]" in line, line


def test_the_cli_and_the_library_say_the_same(cli_error, tmp_path):
    from data_loader import synth

    line = cli_error(*SYNTH, "--out", tmp_path / "d", "--size", "0")
    with pytest.raises(ranges.RangeError) as lib:
        synth.generate(str(tmp_path / "d"), 4, 1, size=0)
    assert line.startswith(f"maskgan: error: argument {lib.value}")


def test_parse_errors_of_any_kind_are_one_line(cli_error):
    line = cli_error("train")
    assert line == "maskgan: error: the following arguments are required: --config (see `maskgan train --help`)"
    assert "invalid choice" in cli_error("nonsense")


def test_demo_announces_the_time_the_readme_gives(run_cli):
    import re

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    readme = open(os.path.join(root, "README.md")).read()
    said = re.search(r"`make demo` takes (about \d+ minutes)", readme)
    assert said, "the README no longer says how long `make demo` takes"
    r = run_cli("demo", "--help")
    assert r.returncode == 0 and said.group(1) in " ".join(r.stdout.split())
