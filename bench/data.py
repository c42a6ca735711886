"""Data throughput: `maskgan data prepare` (images/s per core) and the training stream into one worker (images/s).

    python -m bench.data [--n 200] [--source-size 1024] [--size 128] [--stream-rows 10000]

1. writes --n synthetic FFHQ-style pairs (PNG photo + CMFD-style JPEG, --source-size², like the 1024²
   originals) into a temp dir, then times `prepare.run` on a local Ray with every core: images/s per core.
   The figure includes Ray Data's start-up, so small --n understates it.
2. writes a --stream-rows probe set at --size (a few rendered faces repeated: the stream does not look at
   pixels) and times one consumer iterating it the way a training worker does (stream.training_dataset +
   timed_batches: file shuffle, local shuffle buffer, prefetch): images/s and the time spent waiting.
`write_stream_set` and `stream_rows` are also used by tests/data (memory stays flat in dataset size).
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
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

    Run it in a fresh process (tests/data run it as a Ray task with a runtime env of its own). With
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


def write_fake_sources(base: str, n: int, source_size: int, seed: int = 0) -> None:
    """n pairs: ffhq/NNNNN.png in thousand-folders and mfn/NNNNN_Mask.jpg, source_size² each."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for i in range(n):
        un, ma, _ = synth.render(synth.identity_params(rng), rng, 128)
        big_un = Image.fromarray(un).resize((source_size, source_size), Image.Resampling.BICUBIC)
        big_ma = Image.fromarray(ma).resize((source_size, source_size), Image.Resampling.BICUBIC)
        folder = os.path.join(base, "ffhq", f"{i // 1000 * 1000:05d}")
        os.makedirs(folder, exist_ok=True)
        os.makedirs(os.path.join(base, "mfn"), exist_ok=True)
        big_un.save(os.path.join(folder, f"{i:05d}.png"), compress_level=1)
        buf = io.BytesIO()
        big_ma.save(buf, "JPEG", quality=95)
        with open(os.path.join(base, "mfn", f"{i:05d}_Mask.jpg"), "wb") as f:
            f.write(buf.getvalue())


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="pairs to prepare (default: 200)")
    ap.add_argument("--source-size", type=int, default=1024, help="source image size (default: 1024, FFHQ's)")
    ap.add_argument("--size", type=int, default=128, help="prepared image size (default: 128)")
    ap.add_argument("--stream-rows", type=int, default=10000, help="rows streamed into one worker (default: 10000)")
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args(argv)

    import ray

    from data_loader import prepare

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        write_fake_sources(tmp, args.n, args.source_size)
        print(f"wrote {args.n} pairs at {args.source_size}² in {time.perf_counter() - t0:.1f}s")
        ray.init(num_cpus=cores, include_dashboard=False, configure_logging=False, log_to_driver=False)
        t0 = time.perf_counter()
        prepare.run(os.path.join(tmp, "ffhq"), os.path.join(tmp, "mfn"), os.path.join(tmp, "out"),
                    size=args.size, shard_size=max(16, args.n // (2 * cores)), log=lambda *_: None)
        wall = time.perf_counter() - t0
        images = 2 * args.n
        print(f"prepare: {images} images ({args.source_size}² -> {args.size}²) in {wall:.1f}s on {cores} cores: "
              f"{images / wall:.1f} images/s, {images / wall / cores:.1f} images/s per core")

        uri = os.path.join(tmp, "stream")
        write_stream_set(uri, args.stream_rows, size=args.size)
        stream_rows(uri, batch_size=args.batch_size)  # warm-up: Ray Data start-up, worker pool
        r = stream_rows(uri, batch_size=args.batch_size, seed=1)
        steady = (r["rows"] - args.batch_size) / max(r["seconds"] - r["first_batch_s"], 1e-9)
        print(f"stream: {r['rows']} rows ({args.size}²) into one worker in {r['seconds']:.1f}s: "
              f"{r['rows'] / r['seconds']:.0f} images/s; first batch after {r['first_batch_s']:.1f}s "
              f"(epoch start-up), then {steady:.0f} images/s")
        ray.shutdown()


if __name__ == "__main__":
    main()
