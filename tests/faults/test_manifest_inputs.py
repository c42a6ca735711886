"""A manifest that is not one (random bytes, valid JSON of the wrong shape) is one line naming its URI.

Before: AttributeError / KeyError tracebacks from whichever reader touched it first.
"""

import json
import os
import random

import pytest

from data_loader import shards, storage, synth


@pytest.mark.parametrize("content, needle", [
    (random.Random(0).randbytes(512), "not a manifest (not UTF-8 text: byte "),
    (b"[]", "not a maskgan-shards/1 manifest (expected a JSON object, got list)"),
])
def test_cli_names_the_manifest(cli_error, tmp_path, content, needle):
    data = tmp_path / "d"
    data.mkdir()
    (data / "manifest.json").write_bytes(content)
    line = cli_error("projector", "train", "--data", data, "--out", tmp_path / "p.pt", "--epochs", "1")
    assert f"{data}/manifest.json: " in line and needle in line
    assert not (tmp_path / "p.pt").exists()


def _good(tmp_path) -> tuple[str, dict]:
    uri = str(tmp_path / "d")
    manifest = synth.generate(uri, 4, 1, 0, size=32)
    return uri, json.loads(json.dumps({"format": shards.FORMAT, **manifest}))


def _drop(d: dict, *path):
    for key in path[:-1]:
        d = d[key]
    del d[path[-1]]


@pytest.mark.parametrize("mutate, needle", [
    (lambda m: '"a string"', "expected a JSON object, got str"),
    (lambda m: "{}", "format None, expected 'maskgan-shards/1'"),
    (lambda m: "{bad json", "not valid JSON (line 1, column 2:"),
    (lambda m: _drop(m, "sets"), "sets: expected an object of sets, got NoneType"),
    (lambda m: _drop(m, "size"), "size: expected a positive integer, got None"),
    (lambda m: _drop(m, "sets", "train", "shards"), "sets.train: expected {rows: integer >= 0, shards: [...]}"),
    (lambda m: _drop(m, "sets", "train", "shards", 0, "sha256"),
     "sets.train.shards[0]: expected {path, rows, sha256, bytes}"),
    (lambda m: m["sets"].update(trian=m["sets"]["train"]), "sets.trian: unknown set"),
])
def test_wrong_shape_is_one_line_naming_the_manifest(tmp_path, mutate, needle):
    uri, manifest = _good(tmp_path)
    text = mutate(manifest)
    path = os.path.join(uri, "manifest.json")
    with open(path, "w") as f:
        f.write(text if isinstance(text, str) else json.dumps(manifest))
    with pytest.raises(shards.ShardError) as e:
        shards.load_set(storage.resolve(uri), "train")
    assert str(e.value).startswith(f"{path}: ") and needle in str(e.value) and "\n" not in str(e.value)


def test_the_good_manifest_still_reads(tmp_path):
    uri, _ = _good(tmp_path)
    assert len(shards.load_set(storage.resolve(uri), "train")["label"]) > 0
