"""Images/s of the paper-structured step and of ours, on the same device in the same run.

    python -m bench.step [--device cuda|cpu] [--batch N] [--steps K] [--experiment exp3] [--compile]
                         [--recognizer random|random-compact]

Ours is maskgan.training.objective.train_step, the one step the trainer runs, fed from memory with its per-image
constants precomputed (the mask space from the projector's alpha, the real photos' trunk features), set up by
maskgan.training.objective.accelerate exactly as the Ray Train worker sets it up (bf16 autocast on CUDA unless
--precision says otherwise). The baseline is bench/paper_step.py at batch 16 in fp32. Both use the same
seeded random recogniser, projector and generator (speed does not depend on the weights), random images and
a gallery of --identities identities. After warm-up steps (which pay any compile), timed steps of the two
alternate, each timed alone with the device synchronised around it, so a shared machine's changing load falls
on both alike; CPU seconds per image are printed too (steadier than wall time on a busy host). The last line
is JSON for scripts.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import time

import torch

from bench.paper_step import PAPER_BATCH, paper_models, paper_step
from maskgan.config import RANDOM_WEIGHTS, ObjectiveConfig
from maskgan.design.physical import design_hw, mask_warp
from maskgan.models.generators import build_generator, is_conditional
from maskgan.models.ops import trunk_features
from maskgan.models.projector import Projector
from maskgan.models.recognizer import build_recognizer
from maskgan.training.objective import HEAD_TERMS, Models, accelerate, amp, make_optimizers, train_step


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Meter:
    """Wall and process-CPU seconds of single steps (device synchronised around each), and images done."""

    def __init__(self, images_per_step: int):
        self.batch, self.steps, self.wall, self.cpu = images_per_step, 0, 0.0, 0.0

    def run(self, fn, device: torch.device) -> None:
        sync(device)
        w, c = time.perf_counter(), time.process_time()
        fn()
        sync(device)
        self.wall += time.perf_counter() - w
        self.cpu += time.process_time() - c
        self.steps += 1

    def result(self) -> dict:
        images = self.steps * self.batch
        return {"images_per_s": images / self.wall, "cpu_s_per_image": self.cpu / images, "steps": self.steps,
                "batch": self.batch, "seconds": self.wall}


def interleaved(runs: dict, device: torch.device) -> dict:
    """runs: name -> (fn, batch, warmup steps, timed steps). Steps alternate between the runs, so a shared
    machine's changing load falls on both alike."""
    for fn, _, warmup, _ in runs.values():
        for _ in range(warmup):
            fn()
    sync(device)
    meters = {name: Meter(batch) for name, (_, batch, _, _) in runs.items()}
    for k in range(max(steps for *_, steps in runs.values())):
        for name, (fn, _, _, steps) in runs.items():
            if k < steps:
                meters[name].run(fn, device)
    return {name: m.result() for name, m in meters.items()}


def random_images(n: int, size: int, device, gen: torch.Generator) -> torch.Tensor:
    """uint8-quantised random photos as float [n,3,S,S] in [0,1] (what the stream's images become)."""
    return torch.randint(0, 256, (n, 3, size, size), generator=gen).to(device).float().div_(255)


def build(args, device: torch.device):
    torch.manual_seed(0)
    trunk, head = build_recognizer(None, arch=RANDOM_WEIGHTS[args.recognizer])
    trunk, head = trunk.to(device), head.to(device).eval()
    projector = Projector().to(device).eval().requires_grad_(False)
    g = torch.Generator().manual_seed(0)
    gallery_feats = trunk_features(trunk, random_images(args.identities, args.size, device, g), batch_size=256)
    return trunk, head, projector, gallery_feats, g


def ours(args, device, trunk, head, projector, gallery_feats, g, cfg: ObjectiveConfig):
    """(step function, its batch, its description) of maskgan.training.objective.train_step, fed from memory."""
    generator = build_generator(args.generator, 100, 32, design_hw(args.size)).to(device)
    models = accelerate(Models(generator, trunk, head, 100), device, args.precision, args.compile)
    opts = make_optimizers(generator, head, cfg)
    n = args.batch
    masked = random_images(n, args.size, device, g)
    batch = {"masked": masked, "label": torch.randint(0, args.identities, (n,), generator=g).to(device)}
    with torch.no_grad(), amp(device, models.autocast):  # the per-image constants, as the worker keeps them
        alpha = projector(masked)
        if "unmasked" in HEAD_TERMS[cfg.experiment] or is_conditional(generator):  # the head's term, or the cond
            batch["feats_unmasked"] = trunk(random_images(n, args.size, device, g))
        if "original_mask" in HEAD_TERMS[cfg.experiment]:
            batch["feats_masked"] = trunk(masked)
    batch["grid"], batch["alpha"] = mask_warp(alpha.float())
    precision = str(models.autocast or torch.float32).replace("torch.", "")
    return (lambda: train_step(models, opts, batch, gallery_feats, cfg)), n, {"precision": precision,
                                                                                "compile": args.compile}


def paper(args, device, trunk, head, projector, gallery_feats, g, cfg: ObjectiveConfig):
    """(step function, its batch, its description) of the paper-structured step (bench/paper_step.py)."""
    generator = build_generator(args.generator, 100, 32, design_hw(args.size)).to(device)
    m = paper_models(generator, projector, trunk, head, 100, cfg)  # copies the recogniser before ours trains it
    n = PAPER_BATCH
    masked, unmasked = random_images(n, args.size, device, g), random_images(n, args.size, device, g)
    label = torch.randint(0, args.identities, (n,), generator=g).to(device)
    return (lambda: paper_step(m, masked, unmasked, label, gallery_feats, cfg)), n, {"precision": "float32"}


def parse_args(argv=None) -> argparse.Namespace:
    """The flags, with the device's defaults filled in (a GPU's batch and step counts are larger)."""
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(prog="python -m bench.step", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda" if cuda else "cpu")
    p.add_argument("--batch", type=int, default=None, help="our batch (default: 1024 on cuda, 32 on cpu)")
    p.add_argument("--steps", type=int, default=None, help="timed steps of ours (default: 30 on cuda, 3 on cpu)")
    p.add_argument("--paper-steps", type=int, default=None, help="timed paper-structured steps (default: 20 / 2)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps of ours first (default: 5 / 1; "
                                                            "with --compile these pay the compile)")
    p.add_argument("--experiment", choices=list(HEAD_TERMS), default="exp3",
                   help="exp3 (default) is the paper's heaviest: four recogniser passes per step")
    p.add_argument("--identities", type=int, default=1000, help="gallery size")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--generator", default="fc3")
    p.add_argument("--recognizer", choices=list(RANDOM_WEIGHTS), default="random",
                   help="the seeded trunk both steps attack: random (facenet's InceptionResnetV1) or random-compact "
                        "(the small trunk the test suite uses)")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto", help="ours (train.precision)")
    p.add_argument("--compile", action="store_true", help="ours with a compiled trunk (train.compile)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's)")
    p.add_argument("--skip-paper", action="store_true", help="measure ours only")
    args = p.parse_args(argv)
    on_gpu = args.device == "cuda"
    args.batch = args.batch or (1024 if on_gpu else 32)
    args.steps = args.steps or (30 if on_gpu else 3)
    args.paper_steps = args.paper_steps or (20 if on_gpu else 2)
    args.warmup = args.warmup if args.warmup is not None else (5 if on_gpu else 1)
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    cfg = ObjectiveConfig(experiment=args.experiment)
    trunk, head, projector, gallery_feats, g = build(args, device)
    print(f"bench.step | {device_name(device)} | torch {torch.__version__} | {args.size}x{args.size} | "
          f"{args.experiment} | {args.recognizer} | gallery {args.identities} | {datetime.date.today().isoformat()}",
          flush=True)
    result = {"device": device_name(device), "torch": torch.__version__, "experiment": args.experiment,
              "recognizer": args.recognizer,
              "size": args.size, "identities": args.identities, "date": datetime.date.today().isoformat()}
    runs, about = {}, {}
    if not args.skip_paper:
        fn, n, about["paper"] = paper(args, device, trunk, head, projector, gallery_feats, g, cfg)
        runs["paper"] = (fn, n, 1, args.paper_steps)
    fn, n, about["ours"] = ours(args, device, trunk, head, projector, gallery_feats, g, cfg)
    runs["ours"] = (fn, n, args.warmup, args.steps)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for name, r in interleaved(runs, device).items():
        result[name] = {**r, **about[name]}
    if device.type == "cuda":
        result["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    labels = {"paper": "paper-structured ", "ours": "ours (train_step)"}
    for name in runs:
        r = result[name]
        print(f"  {labels[name]} batch {r['batch']:>5}  {r['precision']:<8}{' compiled' if r.get('compile') else ''}"
              f"  {r['images_per_s']:>10.1f} images/s  {r['cpu_s_per_image'] * 1e3:>9.1f} ms CPU/image  "
              f"({r['steps']} steps, {r['seconds']:.1f} s)", flush=True)
    if "peak_gib" in result:
        print(f"  peak GPU memory {result['peak_gib']:.1f} GiB", flush=True)
    if "paper" in result:
        result["ratio"] = result["ours"]["images_per_s"] / result["paper"]["images_per_s"]
        print(f"  ours / paper-structured: {result['ratio']:.1f}x images/s", flush=True)
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
