"""bench.process_cpu counts the CPU of the processes a command starts, by kind, and leaves out those already
running."""

import subprocess
import sys
import time

from bench import process_cpu

BURN = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.6: pass"


def test_a_child_that_burns_cpu_is_counted_by_its_kind_and_a_process_from_before_is_not(capsys):
    before = subprocess.Popen([sys.executable, "-c", BURN])  # started before the measured command: not counted
    try:
        time.sleep(0.1)
        code = process_cpu.main(["--interval", "0.05", "--", sys.executable, "-c", BURN])
    finally:
        before.wait()
    out = capsys.readouterr().out
    assert code == 0
    row = next(line for line in out.splitlines() if line.endswith("| `python -c` |"))
    cpu, processes = (float(cell) for cell in row.strip("|").split("|")[:2])
    assert processes == 1 and 0.45 <= cpu <= 1.0, row  # its 0.6 s, not the earlier process's as well


def test_the_exit_code_is_the_commands():
    assert process_cpu.main(["--", sys.executable, "-c", "raise SystemExit(3)"]) == 3


def test_ray_workers_are_grouped_by_class_whatever_method_runs():
    assert process_cpu.kind("ray::_QueueActor.get") == process_cpu.kind("ray::_QueueActor") == "ray::_QueueActor"
    assert process_cpu.kind("/venv/bin/python -m pytest -q -m slow") == "python -m pytest"
