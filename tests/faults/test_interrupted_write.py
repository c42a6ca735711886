"""An interrupted rewrite of a dataset never leaves a folder that claims to be complete.

Before: SIGINT during `data synth` into an existing dataset kept the old manifest over already-overwritten
shards, and the next command reported a checksum mismatch that hid the cause. Now the writers remove the old
manifest before their first shard and publish the new one last (on a local folder and on S3 alike), so the
next command says the folder has no manifest and why that may be.
"""

import signal
import time

import pytest

from data_loader import prepare, shards, storage, synth

NO_MANIFEST = "no manifest.json (not a dataset, or an incomplete or interrupted write?)"


def test_sigint_during_synth_rewrite_leaves_no_manifest(start_cli, cli_error, tmp_path):
    data = tmp_path / "d"
    synth.generate(str(data), identities=4, images_per_identity=1, adapt_per_identity=0, size=32)
    old_gallery = (data / "gallery" / "part-00000.parquet").read_bytes()
    # big enough that it is still writing long after its first shard (a few seconds per 1000 identities)
    proc = start_cli("data", "synth", "--identities", "20000", "--images-per-identity", "1",
                     "--adapt-per-identity", "0", "--size", "32", "--out", data)
    try:
        deadline = time.monotonic() + 120
        while (data / "gallery" / "part-00000.parquet").read_bytes() == old_gallery:  # its first shard is written
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "maskgan: interrupted" in err
    assert not (data / "manifest.json").exists()
    line = cli_error("projector", "train", "--data", data, "--out", tmp_path / "p.pt")
    assert f"{data}: {NO_MANIFEST}" in line and "checksum" not in line


def test_synth_rewrite_on_s3_that_fails_mid_write_leaves_no_manifest(bucket, monkeypatch):
    uri = f"s3://{bucket}/d"
    synth.generate(uri, identities=4, images_per_identity=1, adapt_per_identity=0, size=32, shard_size=2)
    root = storage.resolve(uri)
    assert storage.exists(root.join(shards.MANIFEST))
    written = []
    real = shards.write_shard

    def fail_after_first(root_, rel, rows):
        if written:
            raise OSError("disk pulled")
        written.append(rel)
        return real(root_, rel, rows)

    monkeypatch.setattr(shards, "write_shard", fail_after_first)
    with pytest.raises(OSError, match="disk pulled"):
        synth.generate(uri, identities=6, images_per_identity=1, adapt_per_identity=0, size=32, shard_size=2)
    assert written  # it did overwrite a shard of the old dataset before failing
    with pytest.raises(shards.ShardError, match=r"^s3://.*/d: no manifest\.json \(not a dataset, or an incomplete"):
        shards.read_manifest(root)


def _sources(tmp_path):
    ffhq, mfn = tmp_path / "ffhq", tmp_path / "mfn"
    ffhq.mkdir()
    mfn.mkdir()
    (ffhq / "00001.png").write_bytes(b"not decoded before the interruption")
    (mfn / "00001_Mask.jpg").write_bytes(b"not decoded either")
    return str(ffhq), str(mfn)


def test_prepare_rewrite_removes_the_old_manifest_before_writing(tmp_path, monkeypatch):
    out = tmp_path / "d"
    synth.generate(str(out), identities=4, images_per_identity=1, adapt_per_identity=0, size=32)
    ffhq, mfn = _sources(tmp_path)
    # refused on its inputs: the existing dataset is untouched (a typo must not unpublish it)
    with pytest.raises(prepare.PrepareError, match="--maskedfacenet .*nowhere: not found"):
        prepare.run(ffhq, str(tmp_path / "nowhere"), str(out), log=lambda *_: None)
    assert (out / "manifest.json").exists()

    def interrupted(*_args, **_kwargs):  # Ray starts just before the first shard is written: interrupt there
        raise KeyboardInterrupt

    monkeypatch.setattr(prepare, "ensure_ray", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare.run(ffhq, mfn, str(out), log=lambda *_: None)
    assert not (out / "manifest.json").exists()
    with pytest.raises(shards.ShardError, match=r"d: no manifest\.json \(not a dataset, or an incomplete"):
        shards.read_manifest(storage.resolve(str(out)))
