"""Run a maskgan command on a Ray cluster as a job: ship the working directory, follow the logs, return the status.

    RAY_AUTH_TOKEN=... maskgan submit --address http://HEAD:8265 -- maskgan train --config configs/debug_cpu.yaml

The job goes through Ray's Job Submission SDK (`JobSubmissionClient`), so it is the same job that
`RAY_AUTH_MODE=token RAY_AUTH_TOKEN=... ray job submit --working-dir . -- maskgan train ...` would create.

Ray 2.60 clusters check a bearer token on every dashboard request. The token is looked up where Ray's own
clients look (``RAY_AUTH_TOKEN``, else the file named by ``RAY_AUTH_TOKEN_PATH``, else ``~/.ray/auth_token``)
and sent as an ``Authorization`` header; it is never printed, put in an error, or added to the job's runtime env
(the nodes already hold it). Ray's SDK only sends a token by itself when ``RAY_AUTH_MODE=token`` is set in the
client's environment; passing the header explicitly makes ``maskgan submit`` work without that.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import sys
import time
from pathlib import Path

DEFAULT_ADDRESS = "http://127.0.0.1:8265"

# Never shipped with the job (gitignore patterns, relative to the working directory). Ray also honours the
# directory's .gitignore and .rayignore; these hold even where those files are missing.
EXCLUDES = [".venv/", "venv/", ".git/", "demo_out/", "/runs/", "__pycache__/", "*.pyc", "*.egg-info/",
            ".pytest_cache/", "/build/", "/.raybundle/"]

_TERMINAL = {"SUCCEEDED": 0, "FAILED": 1, "STOPPED": 1}


class SubmitError(RuntimeError):
    """One line naming the cluster address and what went wrong; never the token."""

    user_error = True


def cluster_token() -> str | None:
    """The cluster's auth token, from where Ray's clients read it; None when there is none."""
    token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    if token:
        return token
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or str(Path.home() / ".ray" / "auth_token")
    try:
        return Path(path).read_text().strip() or None
    except OSError:
        return None


def resolve_address(address: str | None) -> str:
    """--address, else RAY_API_SERVER_ADDRESS or RAY_ADDRESS (as `ray job submit` reads them), else the local
    dashboard; an address without a scheme is taken as http."""
    address = (address or os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("RAY_ADDRESS")
               or DEFAULT_ADDRESS).rstrip("/")
    return address if "://" in address else f"http://{address}"


def runtime_env(working_dir: str) -> dict:
    path = Path(working_dir).expanduser().resolve()
    if not path.is_dir():
        raise SubmitError(f"working directory {working_dir} does not exist or is not a directory")
    return {"working_dir": str(path), "excludes": list(EXCLUDES)}


def submit(entrypoint: list[str], address: str | None = None, working_dir: str = ".", wait: bool = True,
           log=print) -> int:
    """Submit ``entrypoint`` as a job; with ``wait``, stream its logs and return 0 if it SUCCEEDED, else 1."""
    if not entrypoint:
        raise SubmitError("nothing to run: maskgan submit [--address URL] -- maskgan train --config FILE")
    address = resolve_address(address)
    env = runtime_env(working_dir)
    token = cluster_token()
    command = shlex.join(entrypoint)
    client = _connect(address, token)
    try:
        job_id = client.submit_job(entrypoint=command, runtime_env=env,
                                   metadata={"submitted_by": "maskgan submit"})
    except Exception as e:  # upload refused, runtime env invalid, server error
        raise _as_submit_error(e, address, token, "submitting the job") from None
    log(f"submitted job {job_id} to {address}: {command}")
    if not wait:
        log(f"follow it with: ray job logs --address {address} --follow {job_id}")
        return 0
    try:
        _follow(client, job_id, address, token)
        status = _wait_terminal(client, job_id)
    except KeyboardInterrupt:
        log(f"\nstopped following; job {job_id} keeps running (ray job stop --address {address} {job_id})")
        return 130
    info = client.get_job_info(job_id)
    reason = f": {' '.join(str(info.message).split())}" if status != "SUCCEEDED" and info.message else ""
    log(f"job {job_id} {status}{reason}")
    return _TERMINAL[status]


def _connect(address: str, token: str | None):
    from ray.job_submission import JobSubmissionClient

    headers = {"Authorization": f"Bearer {token}"} if token else None
    try:
        # The constructor asks the cluster for its version, so an unreachable or refusing cluster fails here.
        return JobSubmissionClient(address, headers=headers)
    except Exception as e:
        raise _as_submit_error(e, address, token, "connecting") from None


def _as_submit_error(e: Exception, address: str, token: str | None, doing: str) -> SubmitError:
    import requests
    from ray.exceptions import AuthenticationError

    if isinstance(e, AuthenticationError):
        if token:
            return SubmitError(f"the Ray cluster at {address} refused the auth token (HTTP 403); "
                               "set RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH) to this cluster's token")
        return SubmitError(f"the Ray cluster at {address} requires an auth token and none was found; "
                           "set RAY_AUTH_TOKEN, or RAY_AUTH_TOKEN_PATH, or write it to ~/.ray/auth_token")
    if isinstance(e, (ConnectionError, requests.exceptions.RequestException, OSError)):
        return SubmitError(f"cannot reach the Ray dashboard at {address} ({type(e).__name__}); "
                           "is the cluster up, and is this its dashboard address (port 8265 by default)?")
    detail = " ".join(str(e).split())
    if token:
        detail = detail.replace(token, "***")
    return SubmitError(f"{doing} to the Ray cluster at {address} failed: {detail[:500]}")


def _follow(client, job_id: str, address: str, token: str | None) -> None:
    """Print the job's output as it comes (Ray's websocket tail); fall back to polling if the tail breaks."""

    shown = 0

    async def tail():
        nonlocal shown
        async for chunk in client.tail_job_logs(job_id):
            sys.stdout.write(chunk)
            sys.stdout.flush()
            shown += len(chunk)

    try:
        asyncio.run(tail())
        return
    except KeyboardInterrupt:
        raise
    except Exception as e:  # the tail can drop (proxy timeouts, head restart); the job goes on
        print(f"[maskgan submit] log stream from {address} broke ({type(e).__name__}); polling instead",
              file=sys.stderr)
    while True:
        status = _status(client, job_id)
        logs = client.get_job_logs(job_id)
        sys.stdout.write(logs[shown:])
        sys.stdout.flush()
        shown = len(logs)
        if status in _TERMINAL:
            return
        time.sleep(2.0)


def _status(client, job_id: str) -> str:
    return str(client.get_job_status(job_id))


def _wait_terminal(client, job_id: str, poll_s: float = 0.5) -> str:
    # The log stream closes when the driver exits; the job's status follows a moment later.
    while (status := _status(client, job_id)) not in _TERMINAL:
        time.sleep(poll_s)
    return status
