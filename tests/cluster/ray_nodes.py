"""Real Ray nodes as `ray start` processes on 127.0.0.1, beside the session's in-process Ray and never touching it.

Every node gets its own ports and its own --temp-dir (so no address file is the default one `ray.init()` looks at);
RAY_* settings go to the node's processes only, never into this process's environment. A node is stopped by
killing every process of its session (what `ray start --block` started: raylet, agents, workers), which is also
how a node is lost: the machine under it goes away without a goodbye.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

BIN = Path(sys.executable).parent  # the venv's bin: ray, maskgan (not resolved: that would leave the venv)
# Variables of this process that must not leak into the nodes or the clients (ray_session may have set some).
_RAY_CLIENT_VARS = ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN",
                    "RAY_AUTH_TOKEN_PATH",
                    # tests/conftest.py turns Ray Train's preemption watcher off for the session's Ray; the
                    # clusters started here stand in for KubeRay's and run it as Ray's default does
                    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER")


def free_ports(n: int) -> list[int]:
    """n distinct free ports on 127.0.0.1 (held open together, so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _RAY_CLIENT_VARS}
    env.update(extra)
    return env


def kill_session(leader: subprocess.Popen, grace_s: float) -> None:
    """SIGTERM the leader, then SIGKILL whatever is left in its session (every process it started)."""
    if leader.poll() is None and grace_s > 0:
        leader.send_signal(signal.SIGTERM)
        try:
            leader.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
    for pid in session_pids(leader.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if leader.poll() is None:
        leader.wait(timeout=10)


def session_pids(sid: int) -> list[int]:
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # pid (comm) state ppid pgrp session ...; comm may hold spaces, so split after the last ')'.
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:
            pids.append(int(stat.parent.name))
    return pids


def tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def _node_ports() -> list[str]:
    metrics, agent_http, agent_grpc, runtime_env_agent, node_manager, object_manager = free_ports(6)
    return [f"--metrics-export-port={metrics}", f"--dashboard-agent-listen-port={agent_http}",
            f"--dashboard-agent-grpc-port={agent_grpc}", f"--runtime-env-agent-port={runtime_env_agent}",
            f"--node-manager-port={node_manager}", f"--object-manager-port={object_manager}"]


@dataclass
class Node:
    proc: subprocess.Popen
    temp_dir: str
    log: Path

    def stop(self, grace_s: float = 15) -> None:
        kill_session(self.proc, grace_s)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@dataclass
class RayCluster:
    """A head (dashboard, job server) and worker nodes, token auth on; `env` is what every node runs with."""

    gcs: str  # 127.0.0.1:PORT
    address: str  # the dashboard (job server) URL
    token: str
    env: dict[str, str]
    nodes: list[Node] = field(default_factory=list)

    def client_env(self, **extra: str) -> dict[str, str]:
        return clean_env(RAY_AUTH_TOKEN=self.token, RAY_AUTH_MODE="token", **extra)

    def add_node(self, log: Path, num_cpus: int, resources: dict[str, float] | None = None) -> Node:
        """The first node added is the head (GCS, dashboard, job server); later ones join it."""
        temp_dir = tempfile.mkdtemp(prefix="mgn", dir="/tmp")  # short: unix socket paths stay < 107 characters
        if self.nodes:
            role = [f"--address={self.gcs}"]
        else:
            role = ["--head", f"--port={self.gcs.rsplit(':', 1)[1]}", "--dashboard-host=127.0.0.1",
                    f"--dashboard-port={self.address.rsplit(':', 1)[1]}",
                    f"--ray-client-server-port={free_ports(1)[0]}"]
        cmd = [str(BIN / "ray"), "start", "--block", *role, *_node_ports(), f"--num-cpus={num_cpus}",
               "--object-store-memory=200000000", f"--temp-dir={temp_dir}", "--disable-usage-stats",
               *([f"--resources={json.dumps(resources)}"] if resources else [])]
        with open(log, "wb") as out:
            proc = subprocess.Popen(cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        node = Node(proc, temp_dir, log)
        self.nodes.append(node)
        return node

    def state(self, kind: str, *filters: str) -> list[dict]:
        """`ray list KIND` of this cluster (Ray's state API, dead entries included), as the CLI prints it."""
        proc = subprocess.run([str(BIN / "ray"), "list", kind, "--address", self.address, "--format", "json",
                               "--detail", "--limit", "1000", *[a for f in filters for a in ("--filter", f)]],
                              env=self.client_env(), capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise RuntimeError(f"ray list {kind} failed: {proc.stderr[-2000:]}")
        if not proc.stdout.strip() or proc.stdout.startswith("No resource"):  # nothing of that kind (yet)
            return []
        try:
            return json.loads(proc.stdout)
        except ValueError:
            raise RuntimeError(f"ray list {kind} printed no JSON: {proc.stdout[-2000:]}") from None

    def alive_nodes(self) -> list[dict]:
        return self.state("nodes", "state=ALIVE")

    def wait_for_nodes(self, n: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while True:
            for node in self.nodes:
                if node.proc.poll() is not None:
                    raise RuntimeError(f"ray start exited with {node.proc.returncode}:\n{tail(node.log)}")
            try:
                if len(self.alive_nodes()) >= n:
                    return
            except (RuntimeError, ValueError):  # the dashboard is not up yet
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{n} Ray nodes were not up within {timeout:.0f} s:\n{tail(self.nodes[0].log)}")
            time.sleep(0.5)

    def stop(self) -> None:
        for node in reversed(self.nodes):  # workers first, the head last
            node.stop(grace_s=5)


def new_cluster(**node_env: str) -> RayCluster:
    """A cluster's addresses and settings; nodes join with add_node (the first is the head)."""
    gcs, dash = free_ports(2)
    token = secrets.token_urlsafe(24)
    env = clean_env(
        RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token,  # token auth on, with this cluster's own token
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # jobs run `maskgan` from the venv, as in an image
        RAY_USAGE_STATS_ENABLED="0",
        # Cluster processes (e.g. Ray Train's placement-group cleaner) find their cluster by RAY_ADDRESS, as
        # KubeRay sets it in every pod; without it they pick among all Ray instances on this machine.
        RAY_ADDRESS=f"127.0.0.1:{gcs}",
        RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0",  # SIGTERM stops the node now instead of draining 30 s
        **node_env)
    return RayCluster(f"127.0.0.1:{gcs}", f"http://127.0.0.1:{dash}", token, env)
