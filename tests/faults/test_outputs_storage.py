"""An unreachable object store is announced within seconds, and the final error says how long it tried.

Before: 80-104 s of silence (pyarrow's own 10 retries per request), then the (correct) error. Now the SDK
retries ~2 s, storage's one retry helper says "retrying for up to N s" on its first retry, and gives up after
MASKGAN_STORAGE_RETRY_S seconds (60 by default; 3 here so the test is fast).
"""

import socket
import threading
import time

import pytest

from data_loader import ranges, storage


def _unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def dead_endpoint(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{_unused_port()}")  # nothing listens there
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("MASKGAN_STORAGE_RETRY_S", "3")


def test_unreachable_s3_says_it_is_retrying_within_seconds(start_cli, dead_endpoint):
    t0 = time.monotonic()
    p = start_cli("data", "synth", "--identities", "4", "--images-per-identity", "1", "--out", "s3://b/data")
    seen = {}

    def read():
        for line in p.stdout:
            if "retrying for up to 3 s" in line and "line" not in seen:
                seen.update(line=line, at=time.monotonic() - t0)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        p.wait(timeout=120)
    finally:
        p.kill()
    reader.join(5)
    err = p.stderr.read().strip().splitlines()
    assert "line" in seen, err
    assert seen["line"].startswith("s3://b/data") and "cannot reach storage" in seen["line"]
    assert seen["at"] < 15, seen  # the CLI's own start included; 80+ s before
    assert p.returncode == 2 and len(err) == 1, err
    assert err[0].startswith("maskgan: error: s3://b/data") and "gave up after retrying for" in err[0], err
    assert "MASKGAN_STORAGE_RETRY_S=3" in err[0]


def test_permanent_errors_are_not_retried_and_nested_calls_retry_once(tmp_path):
    calls, lines = [], []

    def missing():
        calls.append(1)
        raise FileNotFoundError("gone")

    with pytest.raises(FileNotFoundError):
        storage.with_retries(missing, "read x", budget_s=5, log=lines.append)
    assert len(calls) == 1 and lines == []

    def flaky_twice():
        calls.append(2)
        if calls.count(2) < 3:
            raise storage.StorageError("s3://b/k: cannot reach storage (refused)", transient=True)
        return storage.with_retries(lambda: "inner", budget_s=5, log=lines.append)  # runs once, inside

    assert storage.with_retries(flaky_twice, budget_s=5, base=0.01, log=lines.append) == "inner"
    assert calls.count(2) == 3
    assert lines == ["s3://b/k: cannot reach storage (refused); retrying for up to 5 s (attempt 2)"]


def test_the_retry_budget_variable_is_checked(monkeypatch):
    monkeypatch.setenv("MASKGAN_STORAGE_RETRY_S", "soon")
    with pytest.raises(ranges.RangeError,
                       match=r"MASKGAN_STORAGE_RETRY_S: must be a finite number in \[0, 86400\], got 'soon'"):
        storage.retry_budget_s()
