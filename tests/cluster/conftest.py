"""A real Ray head (`ray start --head`, token auth on) and a real Prometheus scraping it, both on 127.0.0.1.

The head lives beside the session's in-process Ray (`ray_session`) without touching it: its own ports, its own
--temp-dir (so its address file is not the default one `ray.init()` looks at), and RAY_* settings passed to its
subprocesses only, never put in this process's environment. It is stopped by killing the processes it started.

`submitted_run` runs `maskgan submit` of a tiny `maskgan train` once for the session; the submit tests check the job
and its checkpoint, the Prometheus tests check what was scraped while it ran.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import yaml
from ray_nodes import BIN, clean_env, free_ports
from ray_nodes import kill_session as _kill_session
from ray_nodes import tail as _tail

ROOT = Path(__file__).resolve().parents[2]
RUN_NAME = "submit-e2e"


@dataclass
class RayHead:
    address: str  # the dashboard (job server) URL
    token: str
    metrics_port: int
    temp_dir: str
    log: Path

    def client_env(self, token: str | None = "own", home: str | None = None) -> dict[str, str]:
        """Environment for a client process: this head's token (default), another token, or none (token=None)."""
        env = clean_env()
        if token is not None:
            env["RAY_AUTH_TOKEN"] = self.token if token == "own" else token
        if home is not None:  # a HOME without ~/.ray/auth_token, so no token is found anywhere
            env["HOME"] = home
        return env


@pytest.fixture(scope="session")
def ray_head(tmp_path_factory):
    gcs, dash, metrics, agent_http, agent_grpc, runtime_env_agent, client = free_ports(7)
    token = secrets.token_urlsafe(24)
    # Short: Ray's unix socket paths under the temp dir must stay under ~107 characters.
    temp_dir = tempfile.mkdtemp(prefix="mgh", dir="/tmp")
    log = tmp_path_factory.mktemp("ray_head") / "ray_start.log"
    env = clean_env(
        RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token,  # token auth on, with this head's own token
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # jobs run `maskgan` from the venv, as in an image
        RAY_USAGE_STATS_ENABLED="0",
        # Cluster processes (e.g. Ray Train's placement-group cleaner) find their cluster by RAY_ADDRESS, as
        # KubeRay sets it in every pod; without it they pick among all Ray instances on this machine.
        RAY_ADDRESS=f"127.0.0.1:{gcs}",
        # Export application metrics every second (default 10 s) so a tiny run's gauges reach Prometheus.
        RAY_metrics_report_interval_ms="1000",
        RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0",  # SIGTERM stops the node now instead of draining 30 s
    )
    cmd = [str(BIN / "ray"), "start", "--head", "--block", f"--port={gcs}", "--dashboard-host=127.0.0.1",
           f"--dashboard-port={dash}", f"--metrics-export-port={metrics}",
           f"--dashboard-agent-listen-port={agent_http}", f"--dashboard-agent-grpc-port={agent_grpc}",
           f"--runtime-env-agent-port={runtime_env_agent}", f"--ray-client-server-port={client}",
           "--num-cpus=2", f"--temp-dir={temp_dir}", "--disable-usage-stats"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    head = RayHead(f"http://127.0.0.1:{dash}", token, metrics, temp_dir, log)
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"ray start --head exited with {proc.returncode}:\n{_tail(log)}")
            try:
                r = requests.get(f"{head.address}/api/version", headers={"Authorization": f"Bearer {token}"},
                                 timeout=2)
                if r.status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the Ray head's dashboard did not answer within 120 s:\n{_tail(log)}")
            time.sleep(0.5)
        yield head
    finally:
        _kill_session(proc, grace_s=15)
        shutil.rmtree(temp_dir, ignore_errors=True)


@dataclass
class Prometheus:
    url: str

    def query(self, expr: str, **params) -> list[dict]:
        r = requests.get(f"{self.url}/api/v1/query", params={"query": expr, **params}, timeout=10)
        r.raise_for_status()
        return r.json()["data"]["result"]

    def query_range(self, expr: str, start: float, end: float, step: str = "1s") -> list[dict]:
        r = requests.get(f"{self.url}/api/v1/query_range",
                         params={"query": expr, "start": start, "end": end, "step": step}, timeout=10)
        r.raise_for_status()
        return r.json()["data"]["result"]


@pytest.fixture(scope="session")
def prometheus_server(ray_head, tmp_path_factory):
    """Prometheus (the Debian package's binary) scraping the head's metrics port every second; None when the
    binary is missing outside CI. In CI (CI=true) a missing binary fails: `make test` installs it."""
    binary = shutil.which("prometheus")
    if binary is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("prometheus is not on PATH; `make test` / .ci/run install the Debian package `prometheus`")
        yield None
        return
    root = tmp_path_factory.mktemp("prometheus")
    (port,) = free_ports(1)
    config = {"global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
              "scrape_configs": [{"job_name": "ray", "static_configs": [
                  {"targets": [f"127.0.0.1:{ray_head.metrics_port}"]}]}]}
    (root / "prometheus.yml").write_text(yaml.safe_dump(config))
    log = root / "prometheus.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([binary, f"--config.file={root / 'prometheus.yml'}",
                                 f"--storage.tsdb.path={root / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    prom = Prometheus(f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"prometheus exited with {proc.returncode}:\n{_tail(log)}")
            try:
                if any(s["value"][1] == "1" for s in prom.query('up{job="ray"}')):
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"prometheus did not scrape the Ray head within 60 s:\n{_tail(log)}")
            time.sleep(0.5)
        yield prom
    finally:
        _kill_session(proc, grace_s=10)


@pytest.fixture
def prometheus(prometheus_server):
    if prometheus_server is None:
        pytest.skip("no `prometheus` binary on PATH (apt-get install prometheus; in CI its absence fails)")
    return prometheus_server


@dataclass
class SubmittedRun:
    returncode: int
    output: str
    run_dir: Path
    name: str
    started: float  # epoch seconds around the submit, for Prometheus range queries
    ended: float


@pytest.fixture(scope="session")
def submitted_run(ray_head, prometheus_server, assets, tmp_path_factory) -> SubmittedRun:
    """`maskgan submit` of a tiny `maskgan train` (synthetic data, 2 workers x 0.5 CPU, batch 8) to the head.

    Two epochs, not one: a gauge reaches Prometheus only if the worker that set it lives on for an export interval,
    and the first epoch's values are exported while the second runs."""
    from maskgan.config import recipes

    tmp = tmp_path_factory.mktemp("submit")
    cfg = recipes.debug_cpu(str(assets)).replace(
        data={"batch_size": 8},
        train={"storage": str(tmp / "runs"), "name": RUN_NAME, "epochs": 2, "num_workers": 2,
               "cpus_per_worker": 0.5, "val_probes": 32})
    cfg_path = tmp / "train.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    started = time.time()
    proc = subprocess.run(
        [str(BIN / "maskgan"), "submit", "--address", ray_head.address, "--working-dir", str(ROOT), "--",
         "maskgan", "train", "--config", str(cfg_path)],
        env=ray_head.client_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=420)
    ended = time.time()
    return SubmittedRun(proc.returncode, proc.stdout, tmp / "runs" / RUN_NAME, RUN_NAME, started, ended)
