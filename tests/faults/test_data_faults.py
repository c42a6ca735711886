"""A shard with flipped bytes: its rows are skipped and counted, never silently trained on. (Skipping more
than train.min_rows_fraction allows fails the run: tests/faults/test_run_stops.py.)"""

import json

from data_loader import synth
from maskgan.training import train


def test_corrupt_shard_rows_are_skipped_and_counted(ray_session, small_cfg, tmp_path):
    data = tmp_path / "data"
    synth.generate(str(data), identities=10, images_per_identity=4, adapt_per_identity=0, shard_size=6)
    manifest = json.loads((data / "manifest.json").read_text())
    train_shards = manifest["sets"]["train"]["shards"]
    assert len(train_shards) >= 3
    bad = train_shards[1]
    path = data / bad["path"]
    blob = bytearray(path.read_bytes())
    for i in range(100, 110):
        blob[len(blob) // 2 + i] ^= 0x5A
    path.write_bytes(bytes(blob))

    # one shard of several skipped on purpose: more than the default min_rows_fraction (0.99) allows
    cfg = small_cfg.replace(data={"uri": str(data)},
                            train={"epochs": 1, "num_workers": 1, "cpus_per_worker": 1.0, "resident_gib": 0.0,
                                   "min_rows_fraction": 0.5})
    result = train.fit(cfg)
    total = manifest["sets"]["train"]["rows"]
    assert result.metrics["data/skipped_rows"] == bad["rows"]
    assert result.metrics["train/images"] == total - bad["rows"]
