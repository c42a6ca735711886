"""The one way this project joins Ray from a driver (training, data preparation, sweeps)."""

from __future__ import annotations

import os

# Set to 1 (the CLI's --verbose does) to have Ray's own worker logs on the terminal as well as in its log directory.
VERBOSE_ENV = "MASKGAN_VERBOSE"


def verbose_from_env() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def ensure_ray(address: str | None = None, log=print, verbose: bool | None = None) -> None:
    """Join Ray once per process (a no-op when this process is already connected) and say which Ray, in one line.

    `address` (the CLI's --address), else RAY_ADDRESS (set by `ray job submit` and on cluster nodes), else a
    new local instance: never Ray's own default, which joins whatever cluster happens to run on the machine.
    `verbose` (default: $MASKGAN_VERBOSE): forward every worker's and actor's output to this terminal, Ray's
    default. Without it they stay in Ray's log directory (logs/ under the session folder, named in the line);
    the project's own progress reaches the driver on its own channel (maskgan.training.train)."""
    import ray

    if ray.is_initialized():
        return
    verbose = verbose_from_env() if verbose is None else verbose
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    context = ray.init(address=address, log_to_driver=verbose, configure_logging=False)
    where = "started a local instance" if address == "local" else f"joined {address}"
    cpus = f" ({ray.cluster_resources().get('CPU', 0):g} CPUs)" if address == "local" else ""
    logs = os.path.join(context.address_info.get("session_dir") or "<session folder>", "logs")
    nodes = "" if address == "local" else " on each node"
    log(f"Ray: {where}{cpus}; Ray's own logs: {logs}{nodes}"
        + (", and here" if verbose else " (--verbose prints them here too)"))
