"""`maskgan demo` shows the project's own progress and the headline; Ray's own logs stay in Ray's log directory
(named in the one `Ray:` line) unless --verbose asks for them."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# A line Ray forwards from a worker or actor: "(RayTrainWorker pid=123) ...", colour codes or not.
RAY_ACTOR_LINE = re.compile(r"^(\x1b\[[0-9;]*m)?\(\w+ pid=\d+")
RAY_INTERNALS = ("Reporting training result", "Execution plan of Dataset", "RayDeprecationWarning",
                 "core_worker", "Starting execution of Dataset")


@pytest.mark.slow  # the whole demo, small, with its own Ray, in a subprocess
def test_demo_terminal_is_progress_and_headline_not_ray_internals(tmp_path):
    env = {**os.environ, "RAY_ADDRESS": "", "MASKGAN_VERBOSE": ""}
    r = subprocess.run([sys.executable, "-m", "cli", "demo", "--out", str(tmp_path / "demo"), "--identities", "10",
                        "--epochs", "2"], env=env, capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = (r.stdout + r.stderr).splitlines()
    assert not [line for line in lines if RAY_ACTOR_LINE.match(line)], "Ray forwarded worker output"
    assert not [line for line in lines if any(word in line for word in RAY_INTERNALS)]
    for epoch in (1, 2):  # each epoch's progress line, once
        assert sum(f"[demo] epoch {epoch}/2 " in line for line in lines) == 1, "\n".join(lines)
    ray_line = next(line for line in lines if line.startswith("Ray: started a local instance"))
    logs = re.search(r"Ray's own logs: (\S+)", ray_line).group(1)
    assert os.path.isdir(logs), ray_line  # the folder the user is sent to exists, with the workers' logs in it
    assert any(name.startswith("worker-") for name in os.listdir(logs))
    assert any(line.startswith("test (") and "dodging" in line for line in lines)  # the headline
    assert len(lines) < 120, f"{len(lines)} lines"
