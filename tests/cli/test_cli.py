"""`maskgan --help` explains every command and every flag, and every command reaches a function."""

import argparse
import re
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


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {s: a for a in parser._actions for s in a.option_strings}


def test_one_vocabulary_run_design_and_design_file():
    """--run (alias --from) names a run or export folder, --design N a number, --design-file PNG a file, in
    every command that takes them."""
    leaves = {" ".join(path): parser for path, parser in _leaves(args.parser())}
    for name in ("evaluate", "export", "sample", "print", "check"):
        opts = _options(leaves[name])
        assert opts["--run"] is opts["--from"] and opts["--run"].metavar == "URI", name
    for name, parser in leaves.items():
        opts = _options(parser)
        if "--from" in opts:
            assert opts["--from"] is opts.get("--run"), f"{name}: --from without --run"
        if "--design" in opts:
            assert opts["--design"].metavar == "N" and opts["--design"].type("3") == 3, name
        if "--design-file" in opts:
            assert opts["--design-file"].metavar == "PNG", name
    # the old `evaluate --design PNG` is --design-file now: a PNG parses as a file, and the number is print's
    parsed = args.parser().parse_args(["evaluate", "--run", "r", "--design-file", "d.png"])
    assert parsed.design_file == "d.png" and parsed.run == "r"
    assert args.parser().parse_args(["sample", "--run", "e", "--out", "x.png"]).source == "e"
    assert args.parser().parse_args(["sample", "--from", "e", "--out", "x.png"]).source == "e"


def test_every_metavariable_is_explained():
    """A value's placeholder is the flag's own name, spelled out in the flag's help, or one the epilog explains."""
    for path, parser in _leaves(args.parser()):
        for action in parser._actions:
            if not action.option_strings or action.nargs == 0 or action.choices:
                continue
            shown = action.metavar or action.dest.upper()
            own = {s.lstrip("-").replace("-", "_").upper() for s in action.option_strings}
            assert (shown in own or shown in args.METAVARS
                    or re.search(rf"\b{re.escape(shown)}\b", action.help, re.I)), \
                f"maskgan {' '.join(path)} {action.option_strings[0]} {shown}: the help does not say what {shown} is"
    for word in args.METAVARS:
        assert re.search(rf"\b{word}\b", args.EPILOG), word


def test_verbose_is_offered_wherever_ray_starts():
    leaves = {" ".join(path): parser for path, parser in _leaves(args.parser())}
    for name in ("demo", "train", "tune", "data prepare"):
        assert "--verbose" in _options(leaves[name]), name
