"""Named recipes: whole run configurations for a machine and a purpose (they stand in for long flag lists).

`debug_cpu` is the laptop / CI recipe the demo and the tests start from; `h200_x8` the cloud one. Each goes
through `config.from_dict`, so a recipe is validated like any user's file."""

from __future__ import annotations

from maskgan.config import RunConfig, from_dict


def debug_cpu(root: str = "demo_out") -> RunConfig:
    """The laptop / CI recipe: tiny synthetic data, 2 CPU workers, a few epochs."""
    return from_dict({
        "data": {"uri": f"{root}/data", "batch_size": 8, "shuffle_buffer": 64},
        # 8x8-pixel colour cells (smooth blocks a printer reproduces) and a generator rate that moves them in the
        # demo's 16 steps; with TV 0.3 and NPS 5 the designs print and still protect (measured: bench/printability.py,
        # docs/printing.md)
        "model": {"generator": "fc3", "cell_px": 8, "recognizer_weights": f"{root}/recognizer.pt",
                  "projector": f"{root}/projector.pt"},
        "objective": {"experiment": "exp1", "g_lr": 0.1, "tv_weight": 0.3, "nps_weight": 5.0},
        "train": {"epochs": 8, "num_workers": 2, "use_gpu": False, "cpus_per_worker": 0.5,
                  "storage": f"{root}/runs", "name": "demo", "val_probes": 64},
        "projector": {"epochs": 10, "max_images": 200},
    })


def h200_x8(data_uri: str, storage_uri: str) -> RunConfig:
    """Eight H200s on FFHQ + MaskedFace-Net at 128²: big batches, vggface2 weights."""
    return from_dict({
        "data": {"uri": data_uri, "batch_size": 1024, "shuffle_buffer": 8192, "prefetch_batches": 16},
        "model": {"recognizer_weights": "vggface2", "projector": f"{storage_uri}/projector.pt"},
        "train": {"epochs": 30, "num_workers": 8, "use_gpu": True, "cpus_per_worker": 8,
                  "storage": storage_uri, "max_failures": 3, "val_probes": 4096},
    })

