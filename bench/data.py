"""Data throughput: `maskgan data prepare` (images/s per core) and the training stream into one worker (images/s).

    python -m bench.data [--n 200] [--source-size 1024] [--size 128] [--stream-rows 10000]

1. writes --n synthetic FFHQ-style pairs (PNG photo + CMFD-style JPEG, --source-size², like the 1024²
   originals) into a temp dir, then times `prepare.run` on a local Ray with every core: images/s per core.
   The figure includes Ray Data's start-up, so small --n understates it.
2. writes a --stream-rows probe set at --size (a few rendered faces repeated: the stream does not look at
   pixels) and times one consumer iterating it the way a training worker does (stream.training_dataset +
   timed_batches: file shuffle, local shuffle buffer, prefetch): images/s and the time spent waiting.
`write_stream_set` and `stream_rows` live in data_loader/stream_probe.py, shared with tests/data_loader.
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time

import numpy as np

from data_loader import synth
from data_loader.stream_probe import stream_rows, write_stream_set


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
