"""`maskgan --help` explains every command and every flag, and every command reaches a function."""

import argparse
import subprocess
import sys
from pathlib import Path

from cli import args, main

ROOT = Path(__file__).resolve().parents[2]


def _leaves(parser: argparse.ArgumentParser, path=()):
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
    for action in subs:
        for name, child in action.choices.items():
            yield from _leaves(child, path + (name,))


def test_every_command_has_a_function_and_every_flag_a_help():
    leaves = dict(_leaves(args.parser()))
    assert {" ".join(path) for path in leaves} == set(main.TABLE)
    for path, parser in leaves.items():
        assert parser.get_default("command") == " ".join(path)
        for action in parser._actions:
            assert action.help, f"maskgan {' '.join(path)}: {action.option_strings or action.dest} has no help"


def test_help_prints_for_the_command_and_each_subcommand():
    for cmd in ([], ["data"], ["data", "synth"], ["tune"], ["grafana", "push"]):
        r = subprocess.run([sys.executable, "-m", "cli", *cmd, "--help"], capture_output=True, text=True, timeout=60,
                           cwd=ROOT)
        assert r.returncode == 0 and r.stdout.startswith("usage: maskgan"), r.stderr


def test_a_user_error_is_one_line_and_exit_code_2(tmp_path):
    r = subprocess.run([sys.executable, "-m", "cli", "sample", "--from", "gs://b/x", "--out", str(tmp_path / "x.png")],
                       capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 2
    assert r.stderr.strip() == "maskgan: error: gs://b/x: unsupported scheme 'gs' (use a local path or s3://bucket/prefix)"
