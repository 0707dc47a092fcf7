"""The ``pypatch`` command line: one sub-command per module in ``pypatch.commands``.

Each command module defines ``add_parser(subparsers)`` (which registers its arguments and sets
``func``) and keeps its imports inside ``run`` so that ``pypatch --help`` stays fast.
Errors a user can cause are printed as one line and exit with status 2; never a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import os
import re
import sys

# sub-command name -> module under pypatch.commands (ordered as shown in --help)
COMMANDS = {
    "export": "export",
    "index": "index",
    "search": "search",
    "info": "info",
    "eval": "eval",
    "make-benchmark": "make_benchmark",
    "bench": "bench",
    "demo": "demo",
    "serve": "serve",
}


# an option value that starts with a negative number: "-10,-10,50,50", "-0.5"
_NEGATIVE_VALUE = re.compile(r"^-\d[\d.]*(,\s*-?\d[\d.]*)*$|^-\.\d+$")


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the README's promise: an argument error is ONE line on stderr
    (``pypatch <cmd>: error: <message>``) and a one-line hint, exit status 2; no usage block.

    Sub-command parsers are made by ``add_subparsers``, which uses this class too. Values that
    start with a negative number (``--box -10,-10,50,50``) are values, not unknown options."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n(see {self.prog} --help)\n")

    def _parse_optional(self, arg_string):
        if _NEGATIVE_VALUE.match(arg_string) and arg_string not in self._option_string_actions:
            return None  # a positional / option value
        return super()._parse_optional(arg_string)


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="pypatch", description="Patch-wise instance-level image retrieval (Patchify)."
    )
    from pypatch import __version__

    parser.add_argument("--version", action="version", version=f"pypatch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module_name in COMMANDS.values():
        try:
            module = importlib.import_module(f"pypatch.commands.{module_name}")
        except ModuleNotFoundError as exc:  # command not built yet
            if exc.name != f"pypatch.commands.{module_name}":
                raise
            continue
        module.add_parser(sub)
    return parser


def main(argv=None) -> int:
    from pypatch.errors import PypatchError

    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # reported by the sub-command's parser: "pypatch search: error: ..."
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        sub.choices[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("pypatch: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # stdout closed early (`pypatch info X | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit flush
        return 141  # 128 + SIGPIPE, as shell tools report it
    except (PypatchError, OSError, ValueError) as exc:
        print(f"pypatch {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
