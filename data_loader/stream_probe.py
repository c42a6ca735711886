"""Probes of the training stream, shared by the data benchmark (bench/data.py) and tests/data_loader.

`write_stream_set` writes a prepared dataset of N train rows (a few rendered faces, repeated: the stream does not
look at pixels), `stream_rows` iterates it once the way a training worker does, and `stream_memory` measures the
peak memory of that pass (memory must stay flat in dataset size).
"""

from __future__ import annotations

import time

import numpy as np

from data_loader import shards, storage, stream, synth


def write_stream_set(uri: str, rows: int, size: int = 64, shard_size: int = 512, faces: int = 16,
                     seed: int = 0) -> dict:
    """A prepared dataset of `rows` train probes (a few rendered faces, repeated) plus their gallery."""
    rng = np.random.default_rng(seed)
    root = storage.resolve(uri)
    rendered = [synth.render(synth.identity_params(rng), rng, size) for _ in range(faces)]
    gallery = shards.ShardWriter(root, "gallery", shard_size)
    for label, (un, _ma, _al) in enumerate(rendered):
        gallery.add(**shards.image_row(label=label, identity=f"f{label:03d}", split="train", variant="gallery",
                                       unmasked=un))
    train = shards.ShardWriter(root, "train", shard_size)
    for i in range(rows):
        label = i % faces
        un, ma, al = rendered[label]
        train.add(**shards.image_row(label=label, identity=f"f{label:03d}", split="train", variant="synthetic",
                                     unmasked=un, masked=ma, alpha=al))
    manifest = {"source": {"kind": "bench"}, "size": size, "identities": faces,
                "split_identities": {"train": faces, "val": 0, "test": 0}, "skipped": [],
                "sets": {"gallery": {"rows": faces, "shards": gallery.close()},
                         "train": {"rows": rows, "shards": train.close()}}}
    shards.write_manifest(root, manifest)
    return manifest


def stream_rows(uri: str, batch_size: int = 32, shuffle_buffer: int = 256, prefetch: int = 2, seed: int = 0
                ) -> dict:
    """Iterate the train set once as a training worker does (a streaming split of the Dataset, whose executor
    runs in Ray Data's coordinator actor); rows seen, seconds, seconds waited."""
    shard = stream.training_dataset(uri, seed=seed).streaming_split(1)[0]
    t0, rows, wait, first = time.perf_counter(), 0, 0.0, None
    for batch, waited in stream.timed_batches(shard, batch_size, shuffle_buffer, prefetch, seed=seed):
        if first is None:
            first = time.perf_counter() - t0
        rows += len(batch["label"])
        wait += waited
    return {"rows": rows, "seconds": time.perf_counter() - t0, "wait_s": wait, "first_batch_s": first or 0.0}


def stream_memory(uri: str, warmup_uri: str | None = None) -> dict:
    """Peak memory of this process while it streams uri's train set once, as a training worker does.

    Run it in a fresh process (tests/data_loader run it as a Ray task with a runtime env of its own). With
    warmup_uri, that set is streamed first, unmeasured: a worker's buffers, thread pools and allocators grow
    over its first few thousand rows and then stay put, so a short run measures start-up, not the steady
    state every longer run reaches.

    "private_mib" is the peak of RSS minus shared memory, which is what Ray's memory monitor counts for a
    worker: the pages of Ray's shared-memory object store that a worker maps while reading blocks belong to
    the store (capped by the store's own size, shared by every process on the node, already counted there),
    and the store's allocator hands out fresh addresses while it has room, so that part of RSS follows the
    store's fill level, not what the worker holds. "maxrss_mib" (ru_maxrss, everything) is reported too.
    """
    import resource
    import threading

    def private_mib() -> float:
        fields = {}
        with open("/proc/self/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                fields[key] = value.split()[0] if value.split() else "0"
        return (int(fields["VmRSS"]) - int(fields.get("RssShmem", 0))) / 1024

    if warmup_uri:
        stream_rows(warmup_uri, batch_size=32, shuffle_buffer=256, prefetch=2, seed=1)
    peak, stop = [private_mib()], threading.Event()

    def sample():
        while not stop.wait(0.005):
            peak.append(max(peak[-1], private_mib()))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    seen = stream_rows(uri, batch_size=32, shuffle_buffer=256, prefetch=2)["rows"]
    stop.set()
    sampler.join()
    return {"rows": seen, "private_mib": max(peak),
            "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
