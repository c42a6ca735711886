"""The one way this project joins Ray from a driver (training, data preparation, sweeps)."""

from __future__ import annotations

import os


def ensure_ray(address: str | None = None, log=print) -> None:
    """Join Ray once per process (a no-op when this process is already connected) and say which Ray, in one line.

    `address` (the CLI's --address), else RAY_ADDRESS (set by `ray job submit` and on cluster nodes), else a
    new local instance: never Ray's own default, which joins whatever cluster happens to run on the machine."""
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    ray.init(address=address, log_to_driver=True, configure_logging=False)
    if address == "local":
        log(f"Ray: started a local instance ({ray.cluster_resources().get('CPU', 0):g} CPUs)")
    else:
        log(f"Ray: joined {address}")
