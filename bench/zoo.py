"""Zoo port throughput against dlib itself: images/s of the dlib port (torch) and of dlib-bin on the same chips.

    python -m bench.zoo [--batch 32] [--rounds 3] [--threads 1] [--dir DIR]

Cuts --batch 150 px chips from scikit-image's astronaut at seeded random places, then times, best of --rounds:
the port's forward on the batch (chips already aligned), the port's embed (alignment from 68 landmarks + forward,
at the photo's own 512 px), and dlib's batched compute_face_descriptor on the same chips, all with --threads
threads (torch.set_num_threads; dlib-bin runs on one). Needs the dlib extra and `maskgan recognizers fetch --only
dlib`. The last line is JSON.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import time

import numpy as np

from bench.dlib import cpu_name
from cli.args import ranged


def _best(fn, rounds: int) -> tuple[float, float]:
    """(best wall seconds, CPU seconds of that round): on a shared machine the CPU time is the steadier figure."""
    best = (float("inf"), 0.0)
    for _ in range(rounds):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        best = min(best, (time.perf_counter() - t0, time.process_time() - c0))
    return best


def timing_args(p: argparse.ArgumentParser, what: str) -> None:
    """The flags every zoo timing shares (bench.zoo and bench.zoo_ports)."""
    p.add_argument("--batch", type=ranged(int, "[1, 1024]"), default=32, help=f"{what} per batch, integer in "
                   "[1, 1024] (default 32)")
    p.add_argument("--rounds", type=ranged(int, "[1, 100]"), default=3, help="timed rounds, the best is kept, "
                   "integer in [1, 100] (default 3)")
    p.add_argument("--threads", type=ranged(int, "[1, 256]"), default=1, help="torch threads, integer in "
                   "[1, 256] (default 1)")
    p.add_argument("--dir", default=None, help="zoo cache folder (default: $MASKGAN_ZOO_DIR or "
                   "~/.cache/maskgan/zoo)")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="python -m bench.zoo")
    timing_args(p, "chips")
    a = p.parse_args(argv)
    import dlib
    import torch
    from skimage import data

    from maskgan.models import dlib_recognizer
    from maskgan.models.zoo import align, registry

    torch.set_num_threads(a.threads)
    model = registry.build("dlib", cache_dir=a.dir)
    rec = dlib.face_recognition_model_v1(os.path.join(dlib_recognizer.model_dir(), dlib_recognizer.RESNET_FILE))
    photo = data.astronaut()
    rng = np.random.default_rng(0)
    corners = rng.integers(0, 512 - 150, (a.batch, 2))
    chips = [np.ascontiguousarray(photo[y:y + 150, x:x + 150]) for y, x in corners]
    aligned = torch.from_numpy(np.stack(chips)).permute(0, 3, 1, 2).float() / 255
    images = torch.from_numpy(photo).permute(2, 0, 1)[None].float().expand(a.batch, -1, -1, -1) / 255
    mean = torch.tensor([align._DLIB_MEAN_X, align._DLIB_MEAN_Y]).T
    face = torch.cat([torch.stack([torch.linspace(0, 1, 17), torch.full((17,), 0.9)], 1), mean]) * 110 + 180
    landmarks = (face[None] + torch.randn(a.batch, 68, 2, generator=torch.Generator().manual_seed(0)))

    with torch.no_grad():
        model(aligned[:2])  # warm-up
        forward = _best(lambda: model(aligned), a.rounds)
        embed = _best(lambda: model.embed(images, landmarks), a.rounds)
    reference = _best(lambda: rec.compute_face_descriptor(chips), a.rounds)
    today = datetime.date.today().isoformat()
    result = {"date": today, "machine": f"{cpu_name()}, {os.cpu_count()} cores", "load": os.getloadavg()[0],
              "batch": a.batch, "threads": a.threads, "torch": torch.__version__, "dlib": dlib.__version__}
    print(f"bench.zoo | {result['machine']} (load {result['load']:.1f}) | torch {torch.__version__} ({a.threads} "
          f"thread(s)) | dlib {dlib.__version__} | batch {a.batch} | {today}")
    for key, label, (wall, cpu) in (("port_forward", "port forward (aligned 150 px chips) ", forward),
                                    ("port_embed", "port embed (align 512 px + forward) ", embed),
                                    ("dlib", "dlib compute_face_descriptor (chips)", reference)):
        result[key] = {"images_per_s": a.batch / wall, "cpu_ms_per_image": cpu / a.batch * 1e3}
        print(f"  {label}  {a.batch / wall:7.1f} images/s  {cpu / a.batch * 1e3:7.1f} ms CPU/image")
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
