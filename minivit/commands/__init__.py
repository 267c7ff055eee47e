"""The commands people type: one file each, its parser and a thin ``main``, nothing else.

The rule: the ``minivit <name>`` command is ``minivit/commands/<name>.py``, which holds
``build_parser(prog)`` and ``main(argv, prog)`` -- the options, and the calls into the chapters that do
the work. ``python -m minivit.<name>`` is the same command: ``minivit/<name>.py`` (or, for the two
commands named after their chapter, ``minivit/train/__main__.py`` and ``minivit/evaluate/__main__.py``)
is an entry of two lines that runs it. ``minivit/__main__.py`` is the ``minivit`` command itself, which
dispatches through COMMANDS below.

    train      train or fine-tune (minivit.train)             predict    expressions of faces (minivit.inference)
    evaluate   score a saved model (minivit.evaluate)         attention  attention maps on one image
    export     ONNX, verified with ONNX Runtime               serve      the web demo
    convert    checkpoints between layouts, verified          hub        list or download checkpoints

Every main's errors are MinivitErrors, which ``run_command`` (minivit.common.cli.run) prints as one line,
exit code 2.

Example:
    >>> from pathlib import Path
    >>> sorted(COMMANDS) == sorted(p.stem for p in Path(__file__).parent.glob("*.py") if p.stem != "__init__")
    True
"""

from __future__ import annotations

import importlib
import sys
from functools import partial

from ..common.cli import run

# command -> what it does, in one line (``minivit --help``)
COMMANDS = {
    "train": "train or fine-tune a ViT on a facial-expression dataset; writes a run folder with its report",
    "evaluate": "score a saved model on a dataset split: metrics.json, confusion matrix, attention maps",
    "predict": "the expression of every face in photos, folders or a video",
    "attention": "draw a model's attention (rollout and last layer) on one image",
    "serve": "a web demo: upload a photo or turn on the webcam; a JSON API",
    "export": "export a model to ONNX, verified with ONNX Runtime",
    "convert": "convert ViT checkpoints between Google, transformers, timm and minivit layouts, verified",
    "hub": "list or download pretrained ViT checkpoints",
}


def command(name: str):
    """The module of command ``name``, imported on use: a command loads only itself."""
    return importlib.import_module(f"{__name__}.{name}")


def run_command(name: str, argv: list[str] | None = None, prog: str | None = None) -> int:
    """Run command ``name`` on ``argv`` (default: sys.argv[1:]); ``prog`` is the name its usage line shows
    (default ``python -m minivit.<name>``). Returns the exit code: MinivitErrors are one line and 2."""
    main = command(name).main
    return run(partial(main, prog=prog) if prog else main, sys.argv[1:] if argv is None else argv)


__all__ = ["COMMANDS", "command", "run_command"]
