"""The ``minivit`` command: one entry point for every command, ``minivit <command> [options]``.

    minivit train --data path/to/fer2013          # the same as python -m minivit.train --data ...
    minivit predict face.jpg --checkpoint runs/<run>
    minivit --help                                # the commands, one line each
    minivit --version

``pip install minivit`` installs it (pyproject.toml's console script); ``python -m minivit`` is the
same. Each command is minivit/commands/<command>.py (the rule: minivit/commands/__init__.py): its options,
its --help and its one-line errors (exit code 2) are exactly those of ``python -m minivit.<command>``,
only its usage line says ``minivit <command>``.
"""

from __future__ import annotations

import argparse
import sys

from .commands import COMMANDS, run_command
from .common.cli import ArgumentParser
from .common.version import __version__


def build_parser() -> ArgumentParser:
    """The parser of ``minivit`` itself: --help (the commands, one line each), --version and the
    one-line error for a command that does not exist. A known command is dispatched before it runs."""
    width = max(map(len, COMMANDS)) + 2
    listing = "\n".join(f"  {name:<{width}}{about}" for name, about in COMMANDS.items())
    p = ArgumentParser(prog="minivit", usage="minivit [-h] [--version] <command> [options]",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="minivit: a Vision Transformer in pure PyTorch that loads Google's ViT checkpoints "
                                   "and fine-tunes them\nfor facial expression recognition.\n\ncommands:\n" + listing,
                       epilog="Each command has its own --help (minivit train --help); python -m minivit.<command> "
                              "is the same command.\nExit status: 0 ok; 2 bad input (one line on stderr).")
    p.add_argument("--version", action="version", version=f"minivit {__version__}",
                   help="print minivit's version and exit")
    p.add_argument("command", metavar="<command>", choices=COMMANDS, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run ``minivit <command> ...``: the command's own main, with ``minivit <command>`` as its name."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in COMMANDS:  # imported on use: `minivit --help` loads no command
        return run_command(argv[0], argv[1:], prog=f"minivit {argv[0]}")
    build_parser().parse_args(argv)  # --help, --version, or an unknown / missing command: exit there
    return 2  # not reached: a known command was dispatched above


if __name__ == "__main__":
    sys.exit(main())
