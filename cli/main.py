"""The `maskgan` command: the parser, the table from command to function, and the exit code. No logic of its own.

Each command's flags are declared in `cli/args.py` and done by the function of the same name in
`cli/commands.py`; the table below is the only place that pairs them.
"""

from __future__ import annotations

import os
import sys

from cli import args, check_cmd, commands, palette_cmd, print_cmd, zoo_cmd
from data_loader.ray_session import VERBOSE_ENV

TABLE = {
    "demo": commands.demo,
    "data synth": commands.data_synth,
    "data prepare": commands.data_prepare,
    "projector train": commands.projector_train,
    "recognizer adapt": commands.recognizer_adapt,
    "recognizers fetch": zoo_cmd.fetch,
    "train": commands.train,
    "evaluate": commands.evaluate,
    "tune": commands.tune,
    "export": commands.export,
    "sample": commands.sample,
    "submit": commands.submit,
    "grafana push": commands.grafana_push,
    "palette chart": palette_cmd.chart,
    "palette fit": palette_cmd.fit,
    "print": print_cmd.print_design,
    "check": check_cmd.check,
}


def main(argv: list[str] | None = None) -> int:
    parsed = args.parser().parse_args(argv)
    if getattr(parsed, "verbose", False):  # read where Ray starts (data_loader/ray_session.py), however deep
        os.environ[VERBOSE_ENV] = "1"
    try:
        code = TABLE[parsed.command](parsed)
    except KeyboardInterrupt:
        print("maskgan: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # one line for known user errors; a traceback for bugs
        if _is_user_error(e):
            print(f"maskgan: error: {e}", file=sys.stderr)
            return 2
        raise
    return 0 if code is None else code


def _is_user_error(e: Exception) -> bool:
    # Errors about the user's input (config, URIs, files, data) set `user_error = True`: one line, no traceback.
    return bool(getattr(e, "user_error", False))


if __name__ == "__main__":
    sys.exit(main())
