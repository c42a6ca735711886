"""Ray Data streams of prepared shards into training workers.

The driver builds the Dataset (`training_dataset`); Ray Train splits it across workers (streaming split), so
no worker ever holds the whole dataset. Each epoch re-reads the shards in a new file order and mixes rows in
a local shuffle buffer; Ray Data prefetches batches so the step does not wait on I/O when loading is not the
bottleneck. `timed_batches` reports how long the consumer waited, per batch.
"""

from __future__ import annotations

import time
from typing import Iterator

from data_loader import shards, storage

TRAIN_COLUMNS = ["label", "size", "masked", "unmasked", "alpha"]
# Ray Data's default target block is 128 MiB, and its parquet reader packs whole files into a read task up to
# that size, so a worker would hold ~128 MiB blocks (a whole small dataset) at once. Small blocks keep each
# worker's own memory at a few blocks + shuffle buffer + prefetched batches, whatever the dataset's size.
BLOCK_BYTES = 8 * 2**20


def training_dataset(data_uri: str, endpoint: str | None = None, seed: int = 0, set_name: str = "train"):
    import ray.data
    from ray.data import FileShuffleConfig

    # Per-operator progress bars from every worker drown the one progress line per epoch that matters.
    ray.data.DataContext.get_current().enable_progress_bars = False
    root = storage.resolve(data_uri, endpoint)
    manifest = shards.read_manifest(root)
    paths = shards.shard_paths(root, manifest, set_name)
    # The Dataset keeps a copy of the context it was made under: set the block size for this one only.
    ctx = ray.data.DataContext.get_current()
    default_block = ctx.target_max_block_size
    ctx.target_max_block_size = BLOCK_BYTES
    try:
        return ray.data.read_parquet(
            paths, filesystem=root.fs, columns=TRAIN_COLUMNS,
            shuffle=FileShuffleConfig(seed=seed, reseed_after_execution=True),
        )
    finally:
        ctx.target_max_block_size = default_block


def timed_batches(iterable, batch_size: int, shuffle_buffer: int, prefetch: int, seed: int | None = None
                  ) -> Iterator[tuple[dict, float]]:
    """(decoded numpy batch, seconds waited for it) from a Ray DataIterator / Dataset shard."""
    it = iter(iterable.iter_batches(
        batch_size=batch_size, batch_format="numpy", prefetch_batches=prefetch,
        local_shuffle_buffer_size=shuffle_buffer or None, local_shuffle_seed=seed,
    ))
    while True:
        t0 = time.perf_counter()
        try:
            raw = next(it)
        except StopIteration:
            return
        waited = time.perf_counter() - t0
        yield shards.decode(raw), waited
