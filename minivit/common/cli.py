"""What every minivit command shares: option checking up front, and one-line errors with exit code 2.

Every numeric option states its valid range once, as the ``type=`` of its argparse argument, so
a bad value stops the command before any file is read or any model is built:

    >>> p = ArgumentParser(prog="demo")
    >>> _ = p.add_argument("--lr", type=number(above=0), default=1e-3)
    >>> p.parse_args(["--lr", "3e-4"]).lr
    0.0003

Bad values exit with status 2 and one line naming the option, never a traceback:

    error: argument --lr: must be a finite number > 0, not '-1'

and ``run(main)`` turns any ``MinivitError`` raised later (a missing file, a corrupt
checkpoint) into the same kind of line. Ctrl-C (SIGINT) and SIGTERM end a command the same way: one line
on a line of its own (progress bars closed first), exit 130 or 143, never a traceback; what it was
writing is left as it was (every file is written atomically: minivit.common.files).
"""

from __future__ import annotations

import argparse
import math
import numbers
import signal
import sys
import threading
from contextlib import contextmanager
from typing import Callable

from .errors import Interrupted, MinivitError
from .console import close_bars, write

EXIT_BAD_INPUT = 2


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a one-line error: ``error: argument --x: ...`` (no usage block), exit 2."""

    def error(self, message: str):  # noqa: D401 - argparse's hook
        self.exit(EXIT_BAD_INPUT, f"error: {message} (see --help)\n")

    def _get_values(self, action, arg_strings):
        # argparse (Python 3.11's at least) drops a "--" given as an option's value: "--lr=--" parsed
        # as lr=[], never seen by the option's type. Hand "--" to the type, which refuses it in one line.
        if action.option_strings and action.nargs is None and arg_strings == ["--"]:
            value = self._get_value(action, "--")
            self._check_value(action, value)
            return value
        return super()._get_values(action, arg_strings)


def command_prog(name: str, prog: str | None = None) -> str:
    """The program name a command's usage line shows: ``prog`` when given (the ``minivit`` command passes
    ``minivit <name>``), else ``python -m minivit.<name>``.

    >>> command_prog("train"), command_prog("train", "minivit train")
    ('python -m minivit.train', 'minivit train')
    """
    return prog or f"python -m minivit.{name}"


def is_number(v) -> bool:
    """A finite real number (numpy's included), not a bool: what every numeric setting must be, whether
    it comes from the command line, a config.json or Python (ViTConfig, AugmentConfig).

    >>> is_number(0.5), is_number(True), is_number(float("nan")), is_number("1")
    (True, False, False, False)
    """
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def _fmt(x: float) -> str:
    return f"{x:g}"


def number(*, above: float | None = None, at_least: float | None = None, below: float | None = None,
           at_most: float | None = None) -> Callable[[str], float]:
    """An argparse ``type`` for a finite float in a range, e.g. ``number(at_least=0, below=1)`` is [0, 1).

    >>> number(at_least=0, below=1)("0.5")
    0.5
    >>> number(at_least=0, below=1)("1")
    Traceback (most recent call last):
    argparse.ArgumentTypeError: must be a finite number in [0, 1), not '1'
    """
    lo = f"[{_fmt(at_least)}" if at_least is not None else f"({_fmt(above)}" if above is not None else None
    hi = f"{_fmt(at_most)}]" if at_most is not None else f"{_fmt(below)})" if below is not None else None
    if lo and hi:
        wanted = f"in {lo}, {hi}"
    elif lo:
        wanted = f">= {_fmt(at_least)}" if at_least is not None else f"> {_fmt(above)}"
    elif hi:
        wanted = f"<= {_fmt(at_most)}" if at_most is not None else f"< {_fmt(below)}"
    else:
        wanted = ""

    def parse(text: str) -> float:
        try:
            x = float(text)
        except ValueError:
            x = math.nan
        ok = math.isfinite(x) and not (
            (above is not None and x <= above) or (at_least is not None and x < at_least)
            or (below is not None and x >= below) or (at_most is not None and x > at_most))
        if not ok:
            raise argparse.ArgumentTypeError(f"must be a finite number{' ' + wanted if wanted else ''}, not {text!r}")
        return x

    parse.__name__ = "number"
    return parse


def integer(*, at_least: int | None = None, at_most: int | None = None) -> Callable[[str], int]:
    """An argparse ``type`` for an int in [at_least, at_most], e.g. ``integer(at_least=1)``.

    >>> integer(at_least=1)("8")
    8
    >>> integer(at_least=1)("0")
    Traceback (most recent call last):
    argparse.ArgumentTypeError: must be an integer >= 1, not '0'
    """
    if at_least is not None and at_most is not None:
        wanted = f" in [{at_least}, {at_most}]"
    elif at_least is not None:
        wanted = f" >= {at_least}"
    elif at_most is not None:
        wanted = f" <= {at_most}"
    else:
        wanted = ""

    def parse(text: str) -> int:
        try:
            x = int(text)
        except ValueError:
            x = None
        if x is None or (at_least is not None and x < at_least) or (at_most is not None and x > at_most):
            raise argparse.ArgumentTypeError(f"must be an integer{wanted}, not {text!r}")
        return x

    parse.__name__ = "integer"
    return parse


def output_file_problem(option: str, path, *, suffix: str | None = None, overwrite: bool = False) -> str | None:
    """What is wrong with an output file an option names, or None: the wrong suffix, or a file that
    exists already (unless ``overwrite``). Commands check it before any work: nothing is lost
    without an explicit --overwrite.

    >>> output_file_problem("--onnx", "model.txt", suffix=".onnx")
    '--onnx model.txt: must end in .onnx'
    """
    from pathlib import Path

    if suffix and Path(path).suffix.lower() != suffix:
        return f"{option} {path}: must end in {suffix}"
    if Path(path).exists() and not overwrite:
        return f"{option} {path}: file exists (pass --overwrite to replace it)"
    return None


def fail(message: str) -> int:
    """Print ``error: <message>`` (first line only) to stderr, on a line of its own; return the bad-input exit code."""
    close_bars()
    write(f"error: {str(message).strip().splitlines()[0] if str(message).strip() else 'failed'}", file=sys.stderr)
    return EXIT_BAD_INPUT


def run(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Call ``main(argv)``; a MinivitError becomes one line on stderr and exit code 2.

    Ctrl-C and SIGTERM: one line (``Interrupted``'s message, or "interrupted"), exit 130 or 143, never a
    traceback.
    """
    try:
        with sigterm_interrupts():
            return main(argv)
    except MinivitError as e:
        return fail(str(e))
    except KeyboardInterrupt as e:
        close_bars()
        write(str(e) if isinstance(e, Interrupted) else "interrupted", file=sys.stderr)
        return e.exit_code if isinstance(e, Interrupted) else 128 + signal.SIGINT


@contextmanager
def sigterm_interrupts():
    """Inside the block SIGTERM raises Interrupted, as Ctrl-C raises KeyboardInterrupt, instead of ending the
    process where it stands: the ``finally`` blocks run (an atomic write removes its temp file) and the
    command ends with one line. Only the main thread can install a handler; elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminated(signum, frame):
        raise Interrupted("terminated (SIGTERM)", signum)

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
