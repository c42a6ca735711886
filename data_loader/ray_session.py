"""The one way this project joins Ray from a driver (training, data preparation, sweeps)."""

from __future__ import annotations


def ensure_ray() -> None:
    """Join Ray once per process: a no-op when this process is already connected."""
    import ray

    if not ray.is_initialized():
        # RAY_ADDRESS (set by `ray job submit` and on cluster nodes) attaches to the cluster; else a local Ray.
        ray.init(log_to_driver=True, configure_logging=False)
