"""End-to-end images/s of training from prepared shards on one Ray Train worker, next to the in-memory step.

    python -m bench.pipeline [--data URI] [--device cuda|cpu] [--batch N] [--epochs E] [--rows R]
                             [--resident-gib auto|0|X] [--experiment exp1]

The end-to-end figure is the product itself: `maskgan.training.train.fit` with one worker (shards -> Ray Data stream ->
Ray Train worker -> per-image constants -> maskgan.training.objective.train_step), each epoch's `train/images_per_s`
read back from the run's checkpoints. The in-memory figure is the same step, same batch size, same
precision/compile settings, same CPU threads, looping over one batch already on the device, in this process
after the run: the ceiling the pipeline is measured against.

`--resident-gib 0` streams every epoch from Ray Data (what a run whose shard does not fit does); the default
lets the worker keep its rows on its device after the first epoch (train.resident_gib auto: on CUDA only),
so epochs 2+ show the resident path. Without --data, synthetic shards of --rows training rows are written to
a temporary folder first: a small synthetic dataset with its train rows repeated (content does not change
the speed). With --data (local folder or s3://, AWS_* settings as usual) the data and its gallery are used
as they are. The last line is JSON for scripts.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import tempfile
import time

import numpy as np
import torch

from bench.step import Meter, device_name, sync
from data_loader import shards, storage, synth
from data_loader.ray_session import ensure_ray
from maskgan import config
from maskgan.config import recipes
from maskgan.models import weights
from maskgan.models.projector import Projector
from maskgan.run import build, checkpoints
from maskgan.training import feed, objective, train


def synthetic_shards(uri: str, rows: int, size: int, identities: int = 64, shard_size: int = 1024,
                     log=print) -> dict:
    """A synthetic dataset at `uri` whose train set is `rows` rows (its own train rows, repeated)."""
    t0 = time.perf_counter()
    manifest = synth.generate(uri, identities=identities, images_per_identity=2, adapt_per_identity=0, seed=0,
                              size=size)
    root = storage.resolve(uri)
    base = shards.load_set(root, "train")
    writer = shards.ShardWriter(root, "train", shard_size, start_index=len(manifest["sets"]["train"]["shards"]))
    for i in range(rows):
        j = i % len(base["label"])
        writer.add(**shards.image_row(label=int(base["label"][j]), identity=str(base["identity"][j]), split="train",
                                      variant="synthetic", unmasked=base["unmasked"][j], masked=base["masked"][j],
                                      alpha=base["alpha"][j]))
    manifest["sets"]["train"] = {"rows": rows, "shards": writer.close()}
    shards.write_manifest(root, manifest)
    log(f"  wrote {rows} synthetic training rows ({size}x{size}) to {uri} in {time.perf_counter() - t0:.1f} s")
    return manifest


def run_config(args, data_uri: str, projector_uri: str, runs_uri: str) -> config.RunConfig:
    recipe = recipes.h200_x8(data_uri, runs_uri) if args.device == "cuda" else recipes.debug_cpu()
    return config.from_dict({
        "data": {"uri": data_uri, "batch_size": args.batch,
                 "shuffle_buffer": args.shuffle_buffer if args.shuffle_buffer is not None else recipe.data.shuffle_buffer,
                 "prefetch_batches": args.prefetch if args.prefetch is not None else recipe.data.prefetch_batches},
        "model": {"recognizer_weights": "random", "projector": projector_uri},
        "objective": {"experiment": args.experiment},
        "train": {"epochs": args.epochs, "num_workers": 1, "use_gpu": args.device == "cuda",
                  "cpus_per_worker": float(args.cpus_per_worker), "storage": runs_uri,
                  "name": f"bench-pipeline-{int(time.time())}", "val_probes": 0, "num_to_keep": args.epochs,
                  "precision": args.precision, "compile": args.compile, "resident_gib": args.resident_gib},
    })


def epoch_metrics(run_uri: str) -> list[dict]:
    run = storage.resolve(run_uri)
    return [checkpoints.read_meta(loc)["metrics"] for _, loc in checkpoints.list_checkpoints(run)]


def in_memory(cfg: config.RunConfig, device: torch.device, steps: int, warmup: int) -> dict:
    """The worker's step on one device-resident batch of the same data: the pipeline's ceiling."""
    torch.set_num_threads(max(1, int(cfg.train.cpus_per_worker)))  # what the worker gave torch
    torch.manual_seed(0)
    root = build.data_root(cfg)
    parts = build.build(cfg, device, root)
    rec, projector, gallery_feats = parts.recognizer, parts.projector, parts.gallery_feats
    generator = checkpoints.generator_from_arch(checkpoints.arch(cfg, build.image_size(root))).to(device)
    models = objective.accelerate(objective.Models(generator, rec.trunk, rec.head, cfg.model.latent_dim), device,
                                  cfg.train.precision, cfg.train.compile)
    opts = objective.make_optimizers(generator, rec.head, cfg.objective)
    raw: dict = {}
    for part in shards.iter_set(root, "train", columns=["label", "size", "masked", "unmasked"]):
        raw = {k: np.concatenate([raw[k], v]) if k in raw else v for k, v in part.items()}
        if len(raw["label"]) >= cfg.data.batch_size:
            break
    raw = {k: v[: cfg.data.batch_size] for k, v in raw.items()}
    batch = feed.step_batch(raw, projector, rec.trunk, cfg.objective.experiment, device, models.autocast)
    step = lambda: objective.train_step(models, opts, batch, gallery_feats, cfg.objective)  # noqa: E731
    for _ in range(warmup):
        step()
    sync(device)
    meter = Meter(len(raw["label"]))
    for _ in range(steps):
        meter.run(step, device)
    return meter.result()


def parse_args(argv=None) -> argparse.Namespace:
    """The flags, with the device's defaults filled in (a GPU gets more rows, a larger batch, more CPUs)."""
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(prog="python -m bench.pipeline", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=None, help="prepared shards (local dir or s3://); default: synthetic")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda" if cuda else "cpu")
    p.add_argument("--rows", type=int, default=None, help="synthetic training rows (default: 32768 cuda / 256 cpu)")
    p.add_argument("--size", type=int, default=128, help="synthetic image size")
    p.add_argument("--batch", type=int, default=None, help="batch per step (default: 1024 cuda / 32 cpu)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--experiment", choices=["exp0", "exp1", "exp2", "exp3"], default="exp1")
    p.add_argument("--resident-gib", default="auto", help="train.resident_gib: auto, 0 (stream every epoch) or GiB")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--cpus-per-worker", type=float, default=None, help="default: 8 cuda / 1 cpu")
    p.add_argument("--shuffle-buffer", type=int, default=None, help="default: the device's recipe")
    p.add_argument("--prefetch", type=int, default=None, help="default: the device's recipe")
    p.add_argument("--steps", type=int, default=None, help="in-memory timed steps (default: 30 cuda / 3 cpu)")
    p.add_argument("--workdir", default=None, help="where synthetic data and runs go (default: a temp dir)")
    args = p.parse_args(argv)
    on_gpu = args.device == "cuda"
    args.rows = args.rows or (32768 if on_gpu else 256)
    args.batch = args.batch or (1024 if on_gpu else 32)
    args.cpus_per_worker = args.cpus_per_worker or (8 if on_gpu else 1)
    args.steps = args.steps or (30 if on_gpu else 3)
    if args.resident_gib != "auto":
        args.resident_gib = float(args.resident_gib)
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    on_gpu = args.device == "cuda"
    device = torch.device(args.device)
    if on_gpu:
        torch.backends.cudnn.benchmark = True
    where = device_name(device)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

    work = args.workdir or tempfile.mkdtemp(prefix="maskgan-bench-")
    data_uri = args.data or os.path.join(work, "data")
    print(f"bench.pipeline | {where} | torch {torch.__version__} | {args.experiment} | "
          f"batch {args.batch} | resident_gib {args.resident_gib} | {datetime.date.today().isoformat()}", flush=True)
    if args.data is None:
        synthetic_shards(data_uri, args.rows, args.size)
    projector_uri = os.path.join(work, "projector.pt")
    torch.manual_seed(0)
    weights.save_torch({"state_dict": Projector().state_dict()}, projector_uri)
    cfg = run_config(args, data_uri, projector_uri, os.path.join(work, "runs"))

    import ray

    ensure_ray()
    t0 = time.perf_counter()
    result = train.fit(cfg, log=lambda m: print(f"  {m}", flush=True))
    fit_s = time.perf_counter() - t0
    ray.shutdown()  # the worker's device memory is free again for the in-memory run
    epochs = epoch_metrics(result.run_uri)
    mem = in_memory(cfg, device, args.steps, warmup=5 if on_gpu else 1)

    out = {"device": where, "torch": torch.__version__, "date": datetime.date.today().isoformat(),
           "data": data_uri if args.data else f"synthetic {args.rows} rows", "batch": args.batch,
           "experiment": args.experiment, "resident_gib": args.resident_gib, "fit_s": fit_s,
           "epochs": [{k: e.get(k) for k in ("epoch", "train/images", "train/images_per_s", "train/data_wait_s",
                                              "train/epoch_s", "train/resident")} for e in epochs],
           "in_memory": mem}
    compare_with_in_memory(out)
    print(json.dumps(out), flush=True)
    return out


def compare_with_in_memory(out: dict) -> None:
    """Print each epoch's images/s and the in-memory step's, and add the end-to-end / in-memory ratios to `out`."""
    mem = out["in_memory"]
    for e in out["epochs"]:
        mode = "resident" if e.get("train/resident") else "streamed"
        print(f"  epoch {e['epoch'] + 1}  {mode:<8}  {e['train/images_per_s']:>10.1f} images/s   "
              f"{e['train/images']} images, data wait {e['train/data_wait_s']:.2f} s of {e['train/epoch_s']:.2f} s",
              flush=True)
    print(f"  in-memory step     {mem['images_per_s']:>10.1f} images/s   ({mem['steps']} steps of {mem['batch']})",
          flush=True)
    last = out["epochs"][-1]["train/images_per_s"]
    streamed = [e["train/images_per_s"] for e in out["epochs"][1:] if not e.get("train/resident")]
    out["ratio_last_epoch"] = last / mem["images_per_s"]
    msg = f"  end-to-end / in-memory: last epoch {out['ratio_last_epoch']:.0%}"
    if streamed:  # epochs after the first that streamed from Ray Data (the first also pays warm-up)
        out["ratio_streamed"] = max(streamed) / mem["images_per_s"]
        msg += f", best streamed epoch after the first {out['ratio_streamed']:.0%}"
    print(msg + f"  (whole fit {out['fit_s']:.0f} s incl. Ray start, gallery, checkpoints)", flush=True)


if __name__ == "__main__":
    main()
