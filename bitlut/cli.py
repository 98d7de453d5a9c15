"""The `bitlut` command.

Each package contributes its subcommands through a `<package>/cli.py` module with a
`register(subparsers)` function. Those modules must stay cheap to import (no torch, no amaranth at
module level): heavy imports go inside the command functions, so `bitlut --help` is instant.
A command function takes the parsed `args` and returns an exit code (None means 0).
"""

import argparse
import importlib
import sys

from bitlut.errors import UserError

# Packages that add subcommands, in the order `bitlut --help` lists them. Each must import: a
# missing one is a bug in this list, not a command to skip.
COMMAND_MODULES = ["arch.cli", "quant.cli", "compiler.cli", "sim.cli", "rtl.cli", "dse.cli"]

# Commands the README and Makefile name before the issue that builds them has landed:
# {name: (what it will do, the issue that builds it)}. Running one exits 2, so that `make dse`
# and scripts fail rather than pass on a command that did nothing.
PLANNED = {}


def _not_built(name, what, issue):
    def run(args):
        print(f"bitlut: error: `bitlut {name}` ({what}) is not built yet; issue {issue} builds it",
              file=sys.stderr)
        return 2
    return run


class _Parser(argparse.ArgumentParser):
    """argparse with the README's one-line errors: `bitlut CMD: error: ...`, exit 2 (the usage is
    one `--help` away)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def one_line(text):
    """`text` with control characters (a newline in a file name, say) escaped, so that an error
    stays one line on the terminal."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


def build_parser():
    parser = _Parser(
        prog="bitlut",
        description="Co-design toolkit for low-bit LLM inference accelerators.")
    parser.add_argument("--debug", action="store_true",
                        help="show tracebacks for errors instead of one-line messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    for name, (what, issue) in PLANNED.items():
        if name in sub.choices:
            raise ValueError(f"PLANNED must name only commands not built yet, not {name!r}")
        p = sub.add_parser(name, help=f"{what} (not built yet: issue {issue})")
        p.set_defaults(func=_not_built(name, what, issue), accepts_extra=True)
    return parser


def main(argv=None):
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "accepts_extra", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        code = args.func(args)
    except UserError as e:
        if args.debug:
            raise
        print(f"bitlut: error: {one_line(e)}", file=sys.stderr)
        return 2
    except OSError as e:
        # a path the user gave cannot be read or written: name it, no traceback
        if args.debug:
            raise
        where = e.filename if e.filename is not None else "path"
        print(f"bitlut: error: {one_line(where)}: {one_line(e.strerror or e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bitlut: interrupted", file=sys.stderr)
        return 130
    return 0 if code is None else code


if __name__ == "__main__":
    sys.exit(main())
