import numpy as np
import pytest

from data_loader import shards, storage, synth


def test_synthetic_dataset_layout(tmp_path):
    m = synth.generate(str(tmp_path / "d"), identities=10, images_per_identity=3, adapt_per_identity=2, seed=1)
    root = storage.resolve(str(tmp_path / "d"))
    assert shards.read_manifest(root)["sets"]["gallery"]["rows"] == 10
    assert {k: v["rows"] for k, v in m["sets"].items()} == {"gallery": 10, "train": 18, "val": 6, "test": 6, "adapt": 30}
    gallery = shards.load_set(root, "gallery")
    assert list(gallery["label"]) == list(range(10)) and "masked" not in gallery
    ids = {s: set(shards.load_set(root, s)["identity"]) for s in shards.SPLITS}
    assert not (ids["train"] & ids["val"]) and not (ids["train"] & ids["test"]) and not (ids["val"] & ids["test"])
    train = shards.load_set(root, "train")
    assert train["masked"].shape == (18, 128, 128, 3) and train["alpha"].shape == (18, 128, 128)
    # two photos of one identity differ (jitter), the mask covers part of the face, alpha marks it exactly
    a, b = np.flatnonzero(train["label"] == train["label"][0])[:2]
    assert np.abs(train["unmasked"][a].astype(int) - train["unmasked"][b]).mean() > 5
    cover = train["alpha"][a] > 127
    assert 0.05 < cover.mean() < 0.4
    changed = np.abs(train["masked"][a].astype(int) - train["unmasked"][a]).sum(-1) > 30
    assert (changed & ~cover).mean() < 0.01 and (changed & cover).sum() > 0.8 * cover.sum()


def test_same_seed_same_data(tmp_path):
    synth.generate(str(tmp_path / "a"), 4, 1, 0, seed=3)
    synth.generate(str(tmp_path / "b"), 4, 1, 0, seed=3)
    a = shards.load_set(storage.resolve(str(tmp_path / "a")), "train")
    b = shards.load_set(storage.resolve(str(tmp_path / "b")), "train")
    assert np.array_equal(a["masked"], b["masked"])


def test_corrupt_shard_is_named(tmp_path):
    synth.generate(str(tmp_path / "d"), 4, 1, 0)
    root = storage.resolve(str(tmp_path / "d"))
    path = tmp_path / "d" / "train" / "part-00000.parquet"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(shards.ShardError, match=r"train/part-00000\.parquet: checksum mismatch"):
        shards.load_set(root, "train")


def test_missing_dataset_is_clear(tmp_path):
    with pytest.raises(shards.ShardError, match=r"nothing: no manifest.json \(not a dataset, or an incomplete or interrupted write\?\)"):
        shards.read_manifest(storage.resolve(str(tmp_path / "nothing")))


def test_stable_split_by_identity_hash():
    splits = [shards.split_of(f"{i:05d}") for i in range(2000)]
    assert splits == [shards.split_of(f"{i:05d}") for i in range(2000)]
    assert 0.75 < splits.count("train") / 2000 < 0.85


def test_synth_on_s3(bucket):
    synth.generate(f"s3://{bucket}/synth", identities=4, images_per_identity=1, adapt_per_identity=0)
    root = storage.resolve(f"s3://{bucket}/synth")
    assert shards.read_manifest(root)["identities"] == 4
    assert shards.load_set(root, "gallery")["unmasked"].shape == (4, 128, 128, 3)
