"""The ``minivit`` command: one entry point for every command, ``minivit <command> [options]``.

    minivit train --data path/to/fer2013          # the same as python -m minivit.train --data ...
    minivit predict face.jpg --checkpoint runs/<run>
    minivit --help                                # the commands, one line each
    minivit --version

``pip install minivit`` installs it (pyproject.toml's console script); ``python -m minivit`` is the
same. Each command is its module's ``main(argv, prog)``, looked up in COMMANDS: its options, its
--help and its one-line errors (exit code 2) are exactly those of ``python -m minivit.<command>``,
only its usage line says ``minivit <command>``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from functools import partial

from .common.cli import ArgumentParser, run
from .common.version import __version__

# command -> (the module whose main(argv, prog) and build_parser(prog) it is, what it does in one line)
COMMANDS = {
    "train": ("minivit.train.cli", "train or fine-tune a ViT on a facial-expression dataset; writes a run folder "
                                   "with its report"),
    "evaluate": ("minivit.evaluate.cli", "score a saved model on a dataset split: metrics.json, confusion matrix, "
                                         "attention maps"),
    "predict": ("minivit.predict", "the expression of every face in photos, folders or a video"),
    "attention": ("minivit.attention", "draw a model's attention (rollout and last layer) on one image"),
    "serve": ("minivit.serve", "a web demo: upload a photo or turn on the webcam; a JSON API"),
    "export": ("minivit.export", "export a model to ONNX, verified with ONNX Runtime"),
    "convert": ("minivit.convert", "convert ViT checkpoints between Google, transformers, timm and minivit "
                                   "layouts, verified"),
    "hub": ("minivit.hub", "list or download pretrained ViT checkpoints"),
}


def build_parser() -> ArgumentParser:
    """The parser of ``minivit`` itself: --help (the commands, one line each), --version and the
    one-line error for a command that does not exist. A known command is dispatched before it runs."""
    width = max(map(len, COMMANDS)) + 2
    listing = "\n".join(f"  {name:<{width}}{about}" for name, (_, about) in COMMANDS.items())
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
    if argv and argv[0] in COMMANDS:
        name = argv[0]
        # imported by name, on use: `minivit --help` loads no command, and a command loads only itself
        module = importlib.import_module(COMMANDS[name][0])
        return run(partial(module.main, prog=f"minivit {name}"), argv[1:])
    build_parser().parse_args(argv)  # --help, --version, or an unknown / missing command: exit there
    return 2  # not reached: a known command was dispatched above


if __name__ == "__main__":
    sys.exit(main())
