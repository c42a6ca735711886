"""Speed of the zoo's real recognisers in torch: aligned faces/s, forward alone and forward + input gradient.

    python -m bench.zoo [--models faceplugin expo hse] [--batch 32] [--threads 1] [--repeats 5] [--dir CACHE]

Each model is built from the converted cache (`maskgan recognizers fetch` first) and fed random aligned faces at
its own size; the figure is the best of --repeats timed batches after one warm-up batch (best, not mean: on a
shared machine the others' load only ever slows a batch down). The input-gradient figure is what an attack pays
per image: the trunk stays frozen, the backward goes to the image alone.
"""
from __future__ import annotations

import argparse
import time

import torch


def _best_rate(fn, batch: int, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return batch / best


def measure(name: str, batch: int, repeats: int, cache_dir: str | None) -> tuple[float, float]:
    from maskgan.models.zoo import registry

    model = registry.build(name, cache_dir)
    size = model.alignment.size
    x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0))

    def forward():
        with torch.no_grad():
            model(x)

    def with_gradient():
        xg = x.clone().requires_grad_(True)
        model(xg).sum().backward()

    return _best_rate(forward, batch, repeats), _best_rate(with_gradient, batch, repeats)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description="aligned faces/s of the zoo's recognisers in torch")
    p.add_argument("--models", nargs="+", default=["faceplugin", "expo", "hse"], help="zoo model names")
    p.add_argument("--batch", type=int, default=32, help="faces per batch (default: 32)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default: 1)")
    p.add_argument("--repeats", type=int, default=5, help="timed batches per figure; the best is kept (default: 5)")
    p.add_argument("--dir", default=None, help="zoo cache folder (default: $MASKGAN_ZOO_DIR or ~/.cache/maskgan/zoo)")
    a = p.parse_args(argv)
    if not (1 <= a.batch <= 4096 and 1 <= a.threads <= 256 and 1 <= a.repeats <= 1000):
        p.error("--batch must be in [1, 4096], --threads in [1, 256], --repeats in [1, 1000]")
    torch.set_num_threads(a.threads)
    print(f"batch {a.batch}, {a.threads} thread(s), torch {torch.__version__}, best of {a.repeats}")
    for name in a.models:
        fwd, grad = measure(name, a.batch, a.repeats, a.dir)
        print(f"{name:>11}: {fwd:7.1f} faces/s forward, {grad:7.1f} faces/s forward + input gradient")


if __name__ == "__main__":
    main()
