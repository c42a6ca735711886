import os
import signal
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLI = [sys.executable, "-m", "cli"]  # the one place that names the CLI's module


def pytest_collection_modifyitems(items):
    for item in items:
        if "/faults/" in str(item.fspath):
            item.add_marker(pytest.mark.faults)


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": ROOT, "RAY_USAGE_STATS_ENABLED": "0"}


def _run_cli(*args, cwd=None, timeout=180) -> subprocess.CompletedProcess:
    """`maskgan ARGS...` in a subprocess, as a user runs it (this checkout's code, its exit code and stderr)."""
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, env=_env(), cwd=cwd,
                          timeout=timeout)


def _interruptible() -> None:
    # A suite started as a background job of a non-interactive shell (`make test &`) inherits SIGINT ignored, and
    # so would this command, which then never sees the Ctrl-C the test sends; a user at a terminal has the default.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start_cli(*args) -> subprocess.Popen:
    """`maskgan ARGS...` started in the background (for tests that signal it mid-way), with SIGINT as at a terminal."""
    return subprocess.Popen([*CLI, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(), preexec_fn=_interruptible)


def _one_error_line(r) -> str:
    """The one line a refused command prints: exit code 2, a single stderr line, no traceback. Returns it."""
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert lines[0].startswith("maskgan: error: ")
    return lines[0]


@pytest.fixture
def run_cli():
    return _run_cli


@pytest.fixture
def cli_error(maskgan_cli):
    """Refusals run in this process (tests/conftest.py maskgan_cli): the subprocess path is run_cli's."""
    return lambda *args, cwd=None: _one_error_line(maskgan_cli(*args, cwd=cwd))


@pytest.fixture
def start_cli():
    return _start_cli
