"""dlib recogniser throughput: descriptors/s in one process and over Ray CPU tasks, on synthetic faces.

    python -m bench.dlib [--identities 16] [--photos 4] [--size 128]

Renders --identities x --photos synthetic photos (data_loader.synth.render, as the demo's data) and describes
each masked photo aligned from its unmasked twin, as the report does (maskgan/models/dlib_recognizer.py), with
no cache: first in this process (dlib is single-threaded), then as Ray tasks on a local Ray with every core
(unless RAY_ADDRESS names a cluster), after one warm-up round that starts the workers and loads their models.
Also prints the share of twins HOG found a face on (the rest used the fixed fallback crop). Run it as a module
(`python -m bench.dlib`): run as a file, this file would shadow the `dlib` package. The last line is JSON.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time

import numpy as np

from cli.args import ranged


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        if names:
            return names[0]
    except OSError:
        pass
    return platform.processor() or platform.machine()


def faces(identities: int, photos: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(masked, unmasked) uint8 [identities*photos, size, size, 3]: pixel-aligned pairs."""
    from data_loader import synth

    rng = np.random.default_rng(seed)
    rows = [synth.render(p, rng, size) for p in [synth.identity_params(rng) for _ in range(identities)]
            for _ in range(photos)]
    return np.stack([r[1] for r in rows]), np.stack([r[0] for r in rows])


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="python -m bench.dlib")
    p.add_argument("--identities", type=ranged(int, "[1, 10000]"), default=16,
                   help="synthetic identities, integer in [1, 10000] (default 16)")
    p.add_argument("--photos", type=ranged(int, "[1, 1000]"), default=4,
                   help="photos per identity, integer in [1, 1000] (default 4: 64 photos, ~10 s per core)")
    p.add_argument("--size", type=ranged(int, "[32, 1024]"), default=128, help="photo side in pixels, integer "
                   "in [32, 1024] (default 128, the prepared data's)")
    a = p.parse_args(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import dlib
    import ray

    from data_loader.ray_session import ensure_ray
    from maskgan.models import dlib_recognizer

    masked, unmasked = faces(a.identities, a.photos, a.size)
    n = len(masked)
    rec = dlib_recognizer.load()
    today = datetime.date.today().isoformat()
    print(f"bench.dlib | CPU ({cpu_name()}, {os.cpu_count()} cores) | dlib {dlib.__version__} | {a.size}x{a.size} "
          f"| {n} photos | {today}", flush=True)
    result = {"date": today, "machine": f"{cpu_name()}, {os.cpu_count()} cores", "dlib": dlib.__version__,
              "size": a.size, "photos": n}

    t0, c0 = time.perf_counter(), time.process_time()
    _, found = rec.describe(masked, unmasked, parallel=False)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    result["single"] = {"descriptors_per_s": n / wall, "cpu_ms_per_descriptor": cpu / n * 1e3, "seconds": wall}
    result["twins_found"] = float(found.mean())
    print(f"  one process   {n / wall:6.1f} descriptors/s  {cpu / n * 1e3:6.1f} ms CPU/descriptor  ({wall:.1f} s); "
          f"HOG found a face on {found.mean():.0%} of twins, the rest used the fallback crop", flush=True)

    ensure_ray(None, lambda *_: None)
    cpus = int(ray.cluster_resources().get("CPU", 1))
    warm = min(n, cpus * dlib_recognizer.CHUNK)
    rec.describe(masked[:warm], unmasked[:warm], parallel=True)  # workers start and load their models
    t0 = time.perf_counter()
    rec.describe(masked, unmasked, parallel=True)
    wall = time.perf_counter() - t0
    result["ray"] = {"cpus": cpus, "descriptors_per_s": n / wall, "per_cpu": n / wall / cpus, "seconds": wall,
                     "chunk": dlib_recognizer.CHUNK}
    print(f"  Ray tasks     {n / wall:6.1f} descriptors/s on {cpus} CPUs ({n / wall / cpus:.1f} per CPU; "
          f"chunks of {dlib_recognizer.CHUNK}, {wall:.1f} s)", flush=True)
    result["ray_over_single"] = result["ray"]["descriptors_per_s"] / result["single"]["descriptors_per_s"]
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
