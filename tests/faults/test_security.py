"""No one gets in through a checkpoint, a manifest path or a leaked credential."""

import json
import os
import shutil

import pytest

from data_loader import shards, storage, synth


def _files(*folders) -> dict[str, bytes]:
    found = {}
    for folder in folders:
        for root, _, files in os.walk(folder):
            for name in files:
                path = os.path.join(root, name)
                if os.path.isfile(path):  # a socket or a link to nowhere in Ray's session folder is not a file
                    with open(path, "rb") as f:
                        found[path] = f.read()
    return found


def test_runs_exports_logs_and_console_never_hold_credentials(ray_session, ray_logs, canaries, assets, trained_run,
                                                              trained_run_copy, bucket, tmp_path, capfd):
    """The session's credentials are canaries (the `canaries` fixture), set before its Ray started: the
    shared assets, the session's trained run, an evaluated copy, its exports (to a folder, and to the S3
    server over those very keys), every log Ray wrote and everything printed hold none of them."""
    from maskgan.reporting import runner
    from maskgan.run import checkpoints
    from tune import export

    @ray_session.remote(num_cpus=0)
    def worker_env():
        return {k: os.environ.get(k) for k in canaries}

    assert ray_session.get(worker_env.remote()) == canaries  # the workers that trained held the canaries
    # one checkpoint left, so the exports ship the report evaluated here (a short defender) instead of
    # evaluating their best checkpoint again with the full one
    (_, older), _ = checkpoints.list_checkpoints(storage.resolve(trained_run_copy))
    shutil.rmtree(older.path)
    report = runner.evaluate_run(trained_run_copy, log=print, universal_k=3, defender_steps=5)  # short defender
    assert report["epoch"] == 1
    folder = export.export(trained_run_copy, str(tmp_path / "export"), log=print)
    assert folder.checkpoint.startswith(trained_run_copy)
    export.export(trained_run_copy, f"s3://{bucket}/best", log=print)
    client = storage.boto3_client()
    texts = {f"s3://{bucket}/{o['Key']}": client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
             for o in client.list_objects_v2(Bucket=bucket)["Contents"]}
    out, err = capfd.readouterr()
    texts.update({"stdout": out.encode(), "stderr": err.encode()})
    texts.update(_files(assets, trained_run.run_uri, trained_run_copy, tmp_path / "export", ray_logs))
    assert any(p.endswith("report.json") for p in texts)
    for where, text in texts.items():
        for secret in canaries.values():
            assert secret.encode() not in text, f"{secret} leaked into {where}"


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
