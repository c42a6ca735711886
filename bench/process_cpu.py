"""Where a command's CPU goes, by process: every process it starts (Ray's workers by their titles,
`ray::RayTrainWorker`, `ray::TrainController`, ...), its CPU seconds summed by kind, against the cores the wall
time offered.

    python -m bench.process_cpu [--interval 0.3] [--top 30] -- COMMAND [ARGS...]

Linux only (it reads /proc). Samples every process every --interval seconds and keeps, per process, its last CPU
time (user + system) and title. It counts every process started while COMMAND runs: a Ray instance already
running is left out, but anything else started meanwhile is counted too (Ray's daemons leave the command's
process tree, so what the command started cannot be told apart from the rest): measure on an otherwise quiet
machine. A process that lives less than one interval can be missed, so the total is a floor. Prints the command's
exit code, its wall time, the CPU seconds counted, the share of the cores they kept busy, and the kinds of process
by CPU; exits with COMMAND's exit code.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import os
import subprocess
import sys
import threading
import time

from bench.dlib import cpu_name
from cli.args import ranged

TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def kind(title: str) -> str:
    """A process's kind: Ray's worker title without the method running in it (`ray::_QueueActor.get` is a
    `ray::_QueueActor`), else the program and its first argument."""
    if title.startswith("ray::"):
        return title.split()[0].split(".")[0]
    words = title.split()
    if not words:
        return "?"
    program = os.path.basename(words[0])
    if not program.startswith("python") or len(words) < 2:
        return program
    args = [w for w in words[1:] if w not in ("-B", "-u", "-E", "-s", "-I")]
    if args[:1] == ["-m"] and len(args) > 1:
        return f"python -m {args[1]}"
    if args[:1] == ["-c"]:
        return "python -c"
    return f"python {os.path.basename(args[0])}" if args else program


def _read(pid: str) -> tuple[float, float, str] | None:
    """(start time in s since boot, CPU s, title) of a live process; None when it went or cannot be read."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            title = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()  # after "pid (comm) ": field 3 onward
    return int(fields[19]) / TICK, (int(fields[11]) + int(fields[12])) / TICK, title


def _uptime() -> float:
    with open("/proc/uptime") as f:
        return float(f.read().split()[0])


class Sampler:
    def __init__(self, interval_s: float):
        self.interval_s = interval_s
        self.since = _uptime()
        self.seen: dict[tuple[str, float], list] = {}  # (pid, start) -> [title, cpu s]
        self.stop = threading.Event()

    def sample(self) -> None:
        me = str(os.getpid())
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or pid == me:
                continue
            got = _read(pid)
            if got is None or got[0] < self.since:
                continue
            start, cpu, title = got
            entry = self.seen.setdefault((pid, start), [title, cpu])
            entry[1] = cpu
            if title:  # a process that has exited but not been reaped reads an empty title: keep its last one
                entry[0] = title

    def run(self) -> None:
        while not self.stop.is_set():
            self.sample()
            self.stop.wait(self.interval_s)

    def by_kind(self) -> dict[str, list]:
        kinds = collections.defaultdict(lambda: [0.0, 0])
        for title, cpu in self.seen.values():
            entry = kinds[kind(title)]
            entry[0] += cpu
            entry[1] += 1
        return dict(kinds)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--interval", type=ranged(float, "[0.05, 10]"), default=0.3, metavar="S",
                   help="seconds between two samples of every process, in [0.05, 10] (default 0.3)")
    p.add_argument("--top", type=ranged(int, "[1, 1000]"), default=30, metavar="N",
                   help="how many kinds of process to list, most CPU first, in [1, 1000] (default 30)")
    p.add_argument("command", nargs=argparse.REMAINDER, help="the command to run, after `--`")
    args = p.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        p.error("give the command to measure after `--`")
    if not os.path.isdir("/proc/self"):
        p.error("this needs Linux's /proc")
    sampler = Sampler(args.interval)
    thread = threading.Thread(target=sampler.run, daemon=True)
    thread.start()
    t0 = time.monotonic()
    code = subprocess.call(command)
    wall = time.monotonic() - t0
    sampler.stop.set()
    thread.join()
    sampler.sample()
    kinds = sampler.by_kind()
    total = sum(cpu for cpu, _ in kinds.values())
    cores = os.cpu_count() or 1
    print(f"\n{' '.join(command)}: exit {code}, {wall:.0f} s wall, {datetime.date.today()}, {cpu_name()}, "
          f"{cores} cores")
    print(f"CPU of the processes started while it ran: {total:.0f} s, {total / (wall * cores):.0%} of the cores' time "
          f"(a floor: a process shorter than {args.interval} s can be missed)")
    print("| CPU s | processes | kind |\n|---:|---:|---|")
    for name, (cpu, n) in sorted(kinds.items(), key=lambda kv: -kv[1][0])[:args.top]:
        print(f"| {cpu:.1f} | {n} | `{name}` |")
    return code


if __name__ == "__main__":
    sys.exit(main())
