"""Bad config files are refused before anything runs: one line naming the file, the field and what is allowed.

Through the CLI (`maskgan train --config`), as a user meets them: numbers that are not finite, a binary file,
YAML syntax errors (with line and column), a key given twice, an empty file, no data.uri. Every numeric
field's range, and more YAML cases, are checked in-process by tests/test_config.py.
"""

import pytest

GOOD = "data:\n  uri: {data}\ntrain:\n  storage: {runs}\n  epochs: 1\n"


@pytest.mark.parametrize("extra, needle", [
    ("objective:\n  g_lr: .inf\n", "objective.g_lr: must be a finite number in (0, 10], got inf"),
    ("objective:\n  l1_lambda: .nan\n", "objective.l1_lambda: must be a finite number in [0, 1000], got nan"),
    ("  epochs: 2\n", "is not valid YAML at line 6, column 3: duplicate key 'epochs' (first given at line 5)"),
    (" model: [\n", "is not valid YAML at line 6, column 2:"),
])
def test_bad_field_or_yaml_is_one_line_and_nothing_runs(cli_error, tmp_path, extra, needle):
    runs = tmp_path / "runs"
    p = tmp_path / "run.yaml"
    p.write_text(GOOD.format(data=tmp_path / "data", runs=runs) + extra)
    line = cli_error("train", "--config", p)
    assert f"{p}: " in line and needle in line
    assert not runs.exists()  # refused before a run folder (or Ray) was started


@pytest.mark.parametrize("content, needle", [
    (bytes(range(256)) * 8, "config is not UTF-8 text (byte 128 is 0x80; a binary file?)"),
    (b"", "config is empty (data.uri at least is required)"),
    (b"train:\n  epochs: 1\n", "data.uri: required"),  # no guessed default dataset (it was demo_out/data)
])
def test_binary_empty_or_dataless_config_is_refused(cli_error, tmp_path, content, needle):
    p = tmp_path / "run.yaml"
    p.write_bytes(content)
    line = cli_error("train", "--config", p, cwd=tmp_path)
    assert f"{p}: " in line and needle in line
    assert not (tmp_path / "demo_out").exists()
