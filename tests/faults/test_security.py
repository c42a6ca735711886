"""No one gets in through a checkpoint, a manifest path or a leaked credential."""

import json
import os
import subprocess
import sys

import pytest

from data_loader import shards, storage, synth

CANARIES = {
    "AWS_SECRET_ACCESS_KEY": "canary-aws-secret-7f3a9c",
    "AWS_ACCESS_KEY_ID": "CANARYKEYID7F3A9C",
    "RAY_AUTH_TOKEN": "canary-ray-token-7f3a9c",
    "GRAFANA_TOKEN": "canary-grafana-token-7f3a9c",
}


@pytest.mark.slow  # the whole demo, with its own Ray, in a subprocess
def test_demo_never_writes_or_prints_credentials(tmp_path):
    out = tmp_path / "demo"
    env = {**os.environ, **CANARIES, "RAY_ADDRESS": ""}
    env.pop("AWS_ENDPOINT_URL", None)
    r = subprocess.run([sys.executable, "-m", "cli", "demo", "--out", str(out), "--identities", "10",
                        "--epochs", "1"], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    texts = {"stdout": r.stdout, "stderr": r.stderr}
    for root, _, files in os.walk(out):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                texts[os.path.join(root, name)] = f.read().decode("latin-1")
    assert any(p.endswith("report.json") for p in texts)
    for where, text in texts.items():
        for secret in CANARIES.values():
            assert secret not in text, f"{secret} leaked into {where}"


@pytest.mark.parametrize("bad", ["../../outside.parquet", "/etc/passwd", "train/../../x.parquet"])
def test_manifest_paths_cannot_escape_the_dataset(tmp_path, bad):
    synth.generate(str(tmp_path / "d"), 4, 1, 0)
    mpath = tmp_path / "d" / "manifest.json"
    manifest = json.loads(mpath.read_text())
    manifest["sets"]["train"]["shards"][0]["path"] = bad
    mpath.write_text(json.dumps(manifest))
    with pytest.raises(storage.StorageError, match="escape"):
        shards.load_set(storage.resolve(str(tmp_path / "d")), "train")


def test_config_names_cannot_escape_the_storage_root():
    from maskgan import config

    for name in ("../elsewhere", "a/b", ".hidden"):
        with pytest.raises(config.ConfigError, match="train.name"):
            config.from_dict({"train": {"name": name}})


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch /tmp/maskgan-ckpt-pwned",))


def test_checkpoint_that_would_run_code_is_refused(tmp_path):
    """Even with a matching checksum (an attacker can write meta.json too), loading never unpickles code."""
    import hashlib
    import io
    import pickle

    import torch

    from maskgan.run import checkpoints

    marker = "/tmp/maskgan-ckpt-pwned"
    if os.path.exists(marker):
        os.remove(marker)
    ckpt = tmp_path / "checkpoint_evil"
    ckpt.mkdir()
    buf = io.BytesIO()
    torch.save({"format": checkpoints.CKPT_FORMAT, "generator": _Payload()}, buf, pickle_module=pickle)
    (ckpt / "state.pt").write_bytes(buf.getvalue())
    (ckpt / "meta.json").write_text(json.dumps({"epoch": 0, "sha256": hashlib.sha256(buf.getvalue()).hexdigest()}))
    with pytest.raises(checkpoints.CheckpointError, match="state.pt: refused"):
        checkpoints.read_checkpoint(storage.resolve(str(ckpt)))
    assert not os.path.exists(marker)


def test_symlinks_out_of_the_input_tree_are_refused_and_listed(tmp_path):
    from data_loader import sources

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("not yours")
    ffhq, mfn = tmp_path / "ffhq", tmp_path / "mfn"
    ffhq.mkdir()
    mfn.mkdir()
    (ffhq / "00001.png").write_bytes(b"x" * 10)
    os.symlink(outside / "secret.txt", ffhq / "00002.png")  # a file link escaping the tree
    os.symlink(ffhq / "00001.png", ffhq / "00003.png")  # a link inside the tree is fine
    os.symlink(outside, mfn / "more")  # a folder link escaping the tree
    found = sources.discover(storage.resolve(str(ffhq)), storage.resolve(str(mfn)))
    refused = sorted(s["path"] for s in found.skipped if "symbolic link" in s["reason"])
    assert refused == [str(ffhq / "00002.png"), str(mfn / "more")]
    assert not any("secret" in s["path"] for s in found.skipped)
