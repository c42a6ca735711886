"""`maskgan submit` and plain `ray job submit` against a real Ray head on 127.0.0.1 with token auth on."""

from __future__ import annotations

import json
import secrets
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import yaml

from cluster.submit import EXCLUDES, SubmitError, cluster_token, resolve_address, submit

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # the venv's bin (ray, maskgan)


def _maskgan_submit(env, address, *entry, working_dir=ROOT, timeout=120):
    return subprocess.run([str(BIN / "maskgan"), "submit", "--address", address, "--working-dir", str(working_dir),
                           "--", *entry], env=env, capture_output=True, text=True, timeout=timeout)


def _job_entrypoints(head) -> list[str]:
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(head.address, headers={"Authorization": f"Bearer {head.token}"})
    return [job.entrypoint for job in client.list_jobs()]


def _checkpoint_epochs(run_dir: Path) -> list[int]:
    return sorted(json.loads(m.read_text())["epoch"] for m in run_dir.glob("checkpoint_*/meta.json"))


def test_submit_trains_to_succeeded_with_checkpoint_in_storage(submitted_run, ray_head):
    out = submitted_run.output
    assert submitted_run.returncode == 0, out[-4000:]
    assert "SUCCEEDED" in out.splitlines()[-1]
    # The job's own output was followed: the trainer's progress line for the last epoch came through.
    assert f"[{submitted_run.name}] epoch 2/2" in out
    assert _checkpoint_epochs(submitted_run.run_dir)[-1] == 1, list(submitted_run.run_dir.iterdir())
    assert ray_head.token not in out


def test_shipped_working_dir_leaves_out_venv_git_and_outputs(submitted_run, ray_head):
    # What the head unpacked for the job: the repo's code without .venv, .git, caches or run outputs.
    unpacked = [p.parent for p in Path(ray_head.temp_dir).glob("session_*/runtime_resources/working_dir_files/*/"
                                                                  "pyproject.toml")]
    assert unpacked, "the job's working_dir was not unpacked on the head"
    files = [p for p in unpacked[0].rglob("*") if p.is_file()]
    names = {part for p in files for part in p.relative_to(unpacked[0]).parts}
    assert {"maskgan", "cluster", "data_loader", "pyproject.toml"} <= names
    assert not names & {".venv", ".git", "demo_out", "__pycache__", ".pytest_cache"}
    assert sum(p.stat().st_size for p in files) < 5 * 2**20


def test_plain_ray_job_submit_runs_maskgan_train(ray_head, assets, tmp_path):
    # The README's command, from the repo root: `ray job submit --working-dir . -- maskgan train --config ...`,
    # with the token (and token mode) from the environment.
    from maskgan.config import recipes

    cfg = recipes.debug_cpu(str(assets)).replace(
        data={"batch_size": 8},
        train={"storage": str(tmp_path / "runs"), "name": "plain", "epochs": 1, "num_workers": 1,
               "cpus_per_worker": 0.5, "val_probes": 0})
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    env = ray_head.client_env()
    env["RAY_AUTH_MODE"] = "token"
    proc = subprocess.run([str(BIN / "ray"), "job", "submit", "--address", ray_head.address, "--working-dir", ".",
                           "--", "maskgan", "train", "--config", str(tmp_path / "train.yaml")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert "succeeded" in proc.stdout + proc.stderr
    assert _checkpoint_epochs(tmp_path / "runs" / "plain") == [0]


def test_job_without_token_is_refused(ray_head, tmp_path):
    marker = f"echo refused-{uuid.uuid4().hex}"
    # No RAY_AUTH_TOKEN and a HOME without ~/.ray/auth_token: nothing to send.
    env = ray_head.client_env(token=None, home=str(tmp_path))
    proc = _maskgan_submit(env, ray_head.address, *marker.split())
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert ray_head.address in err[0] and "requires an auth token" in err[0]

    # Plain `ray job submit` sends the request without a token; the head answers 401.
    plain = subprocess.run([str(BIN / "ray"), "job", "submit", "--address", ray_head.address, "--no-wait", "--",
                            *marker.split()], env=env, capture_output=True, text=True, timeout=120)
    assert plain.returncode != 0
    assert "Unauthorized: Missing authentication token" in plain.stdout + plain.stderr
    assert marker not in _job_entrypoints(ray_head)


def test_wrong_token_is_refused_and_never_printed(ray_head, tmp_path):
    wrong = secrets.token_urlsafe(24)
    marker = f"echo wrong-token-{uuid.uuid4().hex}"
    proc = _maskgan_submit(ray_head.client_env(token=wrong), ray_head.address, *marker.split())
    assert proc.returncode == 2
    assert "refused the auth token" in proc.stderr and ray_head.address in proc.stderr
    assert wrong not in proc.stdout + proc.stderr and ray_head.token not in proc.stdout + proc.stderr
    assert marker not in _job_entrypoints(ray_head)


def test_failed_job_exits_nonzero(ray_head, tmp_path):
    # The job's status is the exit code: a maskgan command that fails on the cluster fails here too.
    (tmp_path / "bad.yaml").write_text("train:\n  epochs: 0\n")
    proc = _maskgan_submit(ray_head.client_env(), ray_head.address, "maskgan", "train", "--config",
                           str(tmp_path / "bad.yaml"))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAILED" in proc.stdout.strip().splitlines()[-1]
    assert "train.epochs" in proc.stdout  # the job's own one-line config error, followed from its logs


def test_unreachable_cluster_is_one_line_naming_the_address(tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"http://127.0.0.1:{port}"
    proc = _maskgan_submit({"PATH": str(BIN), "HOME": str(tmp_path), "RAY_AUTH_TOKEN": "secret-token-value"},
                           address, "maskgan", "--help", timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert f"cannot reach the Ray dashboard at {address}" in proc.stderr
    assert "secret-token-value" not in proc.stderr


def test_token_comes_from_where_ray_reads_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    assert cluster_token() is None
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("from-home\n")
    assert cluster_token() == "from-home"
    (tmp_path / "t").write_text("from-path")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "t"))
    assert cluster_token() == "from-path"
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env")
    assert cluster_token() == "from-env"


def test_address_and_arguments(tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert resolve_address(None) == "http://127.0.0.1:8265"
    assert resolve_address("head:8265/") == "http://head:8265"
    monkeypatch.setenv("RAY_ADDRESS", "https://ray.example.com")
    assert resolve_address(None) == "https://ray.example.com"
    for args, kwargs in ([[]], {}), ([["maskgan", "train"]], {"working_dir": str(tmp_path / "missing")}):
        try:
            submit(*args, **kwargs)
        except SubmitError as e:
            assert e.user_error
        else:
            raise AssertionError(f"submit{args, kwargs} did not refuse")
    assert ".venv/" in EXCLUDES and ".git/" in EXCLUDES
