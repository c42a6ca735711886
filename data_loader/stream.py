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

# landmarks: where a real recogniser's alignment reads the face (empty where unknown, and in shards older than
# the column: shards.with_landmarks)
TRAIN_COLUMNS = ["label", "size", "masked", "unmasked", "alpha", "landmarks"]
# Ray Data's default target block is 128 MiB: a prepared shard (1024 rows of 128² is 112 MiB) would reach a
# worker as one block. Small blocks keep each worker's own memory at a few blocks + shuffle buffer + prefetched
# batches, whatever the shard and dataset sizes.
BLOCK_BYTES = 8 * 2**20


def training_dataset(data_uri: str, endpoint: str | None = None, seed: int = 0, set_name: str = "train"):
    import ray.data
    from ray.data import FileShuffleConfig

    # Per-operator progress bars from every worker drown the one progress line per epoch that matters.
    ray.data.DataContext.get_current().enable_progress_bars = False
    root = storage.resolve(data_uri, endpoint)
    manifest = shards.read_manifest(root)
    expected = {root.join(s["path"]).path: (s["sha256"], s["rows"]) for s in shards.set_shards(root, manifest, set_name)}
    # The Dataset keeps a copy of the context it was made under: set the block size for this one only.
    ctx = ray.data.DataContext.get_current()
    default_block = ctx.target_max_block_size
    ctx.target_max_block_size = BLOCK_BYTES
    try:
        # Whole shard files, verified against the manifest's sha256 before a single row is used: a flipped
        # byte must not become a silently wrong image. (read_parquet would decode it, or fail the whole read.)
        files = ray.data.read_binary_files(
            list(expected), filesystem=root.fs, include_paths=True,
            shuffle=FileShuffleConfig(seed=seed, reseed_after_execution=True))
        return files.map_batches(_VerifiedRows(expected), batch_size=1, batch_format="pyarrow")
    finally:
        ctx.target_max_block_size = default_block


class _VerifiedRows:
    """One shard file -> its rows, or, when its checksum fails, one marker row carrying how many were skipped."""

    def __init__(self, expected: dict):
        self.expected = expected

    def __call__(self, files):
        import hashlib

        import pyarrow as pa

        path, data = files.column("path")[0].as_py(), files.column("bytes")[0].as_py()
        sha, rows = self.expected.get(path, (None, 0))
        if hashlib.sha256(data).hexdigest() == sha:
            table = shards.with_landmarks(shards.parse_parquet(data, TRAIN_COLUMNS)).select(TRAIN_COLUMNS)
            table = table.append_column("skipped", pa.array([0] * table.num_rows, pa.int32()))
            return table.append_column("skipped_shard", pa.array([""] * table.num_rows, pa.string()))
        print(f"warning: {path}: checksum mismatch (corrupt shard); its {rows} rows are skipped", flush=True)
        marker = {c: [None] for c in TRAIN_COLUMNS}
        marker.update(label=[-1], size=[0], skipped=[rows], skipped_shard=[path])
        schema = pa.schema([shards.SCHEMA.field(c) for c in TRAIN_COLUMNS]
                           + [pa.field("skipped", pa.int32()), pa.field("skipped_shard", pa.string())])
        return pa.Table.from_pydict(marker, schema=schema)


def timed_batches(iterable, batch_size: int, shuffle_buffer: int, prefetch: int, seed: int | None = None,
                  stats: dict | None = None) -> Iterator[tuple[dict, float]]:
    """(decoded numpy batch, seconds waited for it) from a Ray DataIterator / Dataset shard.

    Rows of shards that failed their checksum never arrive; `stats["skipped_rows"]` counts them and
    `stats["skipped_shards"]` lists those shards' paths.
    """
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
        if "skipped" in raw:
            bad = raw["label"] < 0
            if bad.any():
                if stats is not None:
                    stats["skipped_rows"] = stats.get("skipped_rows", 0) + int(raw["skipped"][bad].sum())
                    stats.setdefault("skipped_shards", []).extend(str(p) for p in raw["skipped_shard"][bad])
                raw = {k: v[~bad] for k, v in raw.items()}
                if len(raw["label"]) == 0:
                    continue
            raw.pop("skipped")
            raw.pop("skipped_shard")
        yield shards.decode(raw), waited
