"""The training stream (data_loader.stream) as a Ray Train worker sees it: reshuffled every epoch, memory flat."""

import numpy as np
import pytest

from data_loader import shards, storage, stream
from data_loader.stream_probe import stream_memory, write_stream_set


def _numbered_set(uri: str, rows: int, shard_size: int) -> None:
    """A train set whose label column numbers the rows (0..rows-1), in many small shards."""
    root = storage.resolve(uri)
    img = np.zeros((32, 32, 3), np.uint8)
    writer = shards.ShardWriter(root, "train", shard_size)
    for i in range(rows):
        writer.add(**shards.image_row(label=i, identity=f"r{i:04d}", split="train", variant="synthetic",
                                      unmasked=img, masked=img, alpha=img[..., 0]))
    shards.write_manifest(root, {"size": 32, "identities": rows, "skipped": [],
                                 "sets": {"train": {"rows": rows, "shards": writer.close()}}})


def _in_sequence(order: list[int]) -> float:
    """Fraction of neighbouring rows that were neighbours in their file: ~1 unshuffled, ~0 shuffled."""
    return float(np.mean(np.diff(order) == 1))


def test_every_epoch_reads_files_and_rows_in_a_new_order(ray_session, tmp_path):
    uri = str(tmp_path / "d")
    _numbered_set(uri, rows=320, shard_size=40)  # 8 shards of 40 rows
    # what Ray Train hands each worker: a streaming split of the one Dataset, iterated once per epoch
    it = stream.training_dataset(uri, seed=0).streaming_split(1)[0]

    file_orders = []
    for _epoch in range(3):  # no local shuffle: the file order alone
        order = [int(x) for b in it.iter_batches(batch_size=40, batch_format="numpy") for x in b["label"]]
        assert sorted(order) == list(range(320))  # every row once per epoch
        assert _in_sequence(order) > 0.9
        file_orders.append(tuple(dict.fromkeys(x // 40 for x in order)))
    assert len(set(file_orders)) == 3, file_orders  # a new file order every epoch

    row_orders = []
    for epoch in range(2):  # the worker loop: timed_batches with a local shuffle buffer seeded by epoch
        order = []
        for batch, waited in stream.timed_batches(it, 16, 64, 2, seed=epoch):
            assert waited >= 0 and batch["masked"].shape[1:] == (32, 32, 3)
            order += [int(x) for x in batch["label"]]
        assert sorted(order) == list(range(320))
        assert _in_sequence(order) < 0.2  # rows mixed across the buffer, not read off file by file
        row_orders.append(order)
    assert row_orders[0] != row_orders[1]


@pytest.mark.slow
def test_worker_memory_stays_flat_from_1k_to_10k_pairs(ray_session, tmp_path):
    """Peak memory of a worker streaming 1k vs 10k pairs (64², 7 MiB vs 273 MiB of pixels) differs < 20 %.

    Each measurement runs in a fresh worker process that first streams the same 4k-row warm-up set (see
    data_loader.stream_probe.stream_memory: without it the 1k run ends inside the worker's start-up growth). A
    worker that kept what it streamed would grow by ~270 MiB.
    """
    import ray

    measure = ray.remote(num_cpus=0)(stream_memory)
    warmup = str(tmp_path / "warmup")
    write_stream_set(warmup, 4000, size=64, shard_size=250, seed=1)
    peaks = {}
    for rows in (1000, 10000):
        uri = str(tmp_path / f"r{rows}")
        write_stream_set(uri, rows, size=64, shard_size=250)
        # a runtime env of its own: a fresh worker process, not one that ran earlier tasks
        fresh = {"env_vars": {"MASKGAN_MEASURE": str(rows)}}
        peaks[rows] = ray.get(measure.options(runtime_env=fresh).remote(uri, warmup))
        assert peaks[rows]["rows"] == rows
    print(f"worker memory streaming 1k / 10k pairs of 64²: private peak {peaks[1000]['private_mib']:.0f} / "
          f"{peaks[10000]['private_mib']:.0f} MiB; max RSS incl. mapped object store "
          f"{peaks[1000]['maxrss_mib']:.0f} / {peaks[10000]['maxrss_mib']:.0f} MiB")
    assert peaks[10000]["private_mib"] < 1.2 * peaks[1000]["private_mib"]
