"""Data throughput: `maskgan data prepare` (images/s per core) and the training stream into one worker (images/s).

    python -m bench.data [--n 200] [--source-size 1024] [--size 128] [--stream-rows 10000]
    python -m bench.data --etl identities [--n 200] [--source-size 250] [--cores 2] [--stream-rows 0]

1. writes --n synthetic FFHQ-style pairs (PNG photo + CMFD-style JPEG, --source-size², like the 1024²
   originals) into a temp dir, then times `prepare.run` on a local Ray with every core: images/s per core.
   The figure includes Ray Data's start-up, so small --n understates it.
2. writes a --stream-rows probe set at --size (a few rendered faces repeated: the stream does not look at
   pixels) and times one consumer iterating it the way a training worker does (stream.training_dataset +
   timed_batches: file shuffle, local shuffle buffer, prefetch): images/s and the time spent waiting.
With `--etl identities`, step 1 is `data prepare --identities` instead: --n synthetic photos (5 per identity,
upscaled to --source-size², 250² like LFW) without their landmark sidecars, so every photo goes through dlib
HOG detection + 68 landmarks + crop + mask drawing: photos/s on --cores, and the share of faces HOG found.
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


def write_identity_tree(base: str, n: int, source_size: int, per_identity: int = 5, seed: int = 0) -> None:
    """n photos in folders of per_identity, source_size² PNGs, no sidecars (prepare must detect every face)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for i in range(n):
        if i % per_identity == 0:
            p = synth.identity_params(rng)
        un = synth.render(p, rng, 128)[0]
        folder = os.path.join(base, f"person-{i // per_identity:05d}")
        os.makedirs(folder, exist_ok=True)
        Image.fromarray(un).resize((source_size, source_size), Image.Resampling.BICUBIC).save(
            os.path.join(folder, f"{i % per_identity:02d}.png"), compress_level=1)


def identity_etl(args, tmp: str, cores: int) -> None:
    from data_loader import identities

    write_identity_tree(os.path.join(tmp, "ids"), args.n, args.source_size)
    t0 = time.perf_counter()
    m = identities.run(os.path.join(tmp, "ids"), os.path.join(tmp, "out"), size=args.size,
                       shard_size=max(16, args.n // (2 * cores)), max_bad_fraction=1.0, log=lambda *_: None)
    wall = time.perf_counter() - t0
    found = m["source"]["landmarks"]["dlib"]
    print(f"prepare --identities: {args.n} photos ({args.source_size}² -> {args.size}², dlib HOG + 68 landmarks on "
          f"each) in {wall:.1f}s on {cores} cores: {args.n / wall:.1f} photos/s, {args.n / wall / cores:.1f} per "
          f"core; faces found {found}/{args.n} ({found / args.n:.0%}); {m['identities']} identities kept")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="pairs to prepare (default: 200)")
    ap.add_argument("--source-size", type=int, default=1024, help="source image size (default: 1024, FFHQ's)")
    ap.add_argument("--size", type=int, default=128, help="prepared image size (default: 128)")
    ap.add_argument("--stream-rows", type=int, default=10000, help="rows streamed into one worker (default: 10000)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--etl", choices=["ffhq", "identities"], default="ffhq",
                    help="step 1: FFHQ + MaskedFace-Net pairs (default) or identity folders with face detection")
    ap.add_argument("--cores", type=int, default=None, help="Ray CPUs (default: every core)")
    args = ap.parse_args(argv)

    import ray

    from data_loader import prepare

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    cores = args.cores or os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        if args.etl == "identities":
            ray.init(num_cpus=cores, include_dashboard=False, configure_logging=False, log_to_driver=False)
            identity_etl(args, tmp, cores)
            if args.stream_rows:
                print("(stream: run without --etl identities)")
            ray.shutdown()
            return
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
