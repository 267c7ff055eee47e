"""What a command prints: progress bars under one rule, and lines that never tear them.

The rule: a bar is drawn only where someone watches it. It shows when its stream is a terminal, unless the
command was told not to (``--no-progress``). A log redirected to a file or a pipe gets the commands' lines,
never bars (a bar there is hundreds of carriage-return redraws glued into one line). Asked for with
``MINIVIT_PROGRESS=always`` (a log followed with ``tail -f``), bars are drawn into any stream;
``MINIVIT_PROGRESS=never`` draws none.

    bar(iterable, show=..., **tqdm_options)   a tqdm bar under this rule (tqdm's options otherwise)
    write(line, file=None)                    a line printed above the bars, never torn by one (tqdm.write),
                                              in one write, flushed
    close_bars()                              every bar still open closed and cleared: a last line (an
                                              error, "interrupted") then starts a line of its own
    forwarded("minivit.data")                 while a block runs, a library's log records printed as the
                                              command's own lines ("warning: ..." on stderr), once

Example:
    >>> import io
    >>> with bar(range(3), file=io.StringIO()) as b:  # not a terminal: no bar, the iteration is the same
    ...     b.disable, list(b)
    (True, [0, 1, 2])
"""

from __future__ import annotations

import logging
import os
import sys
import weakref
from contextlib import contextmanager

from tqdm.auto import tqdm

PROGRESS_ENV = "MINIVIT_PROGRESS"  # "always" or "never"; anything else: the rule above

_open = weakref.WeakSet()  # the bars bar() made that are not closed yet


def watched(file) -> bool:
    """Whether a bar drawn into ``file`` has someone watching it: a terminal, or MINIVIT_PROGRESS=always."""
    asked = os.environ.get(PROGRESS_ENV, "").strip().lower()
    if asked in ("always", "never"):
        return asked == "always"
    isatty = getattr(file, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


def bar(iterable=None, *, show: bool = True, file=None, **options) -> tqdm:
    """A tqdm bar (``options`` are tqdm's) that draws only when ``show`` and its stream (default stderr) is
    watched; otherwise it still counts and iterates, silently."""
    stream = file if file is not None else sys.stderr
    made = tqdm(iterable, file=stream, disable=not (show and watched(stream)), **options)
    if not made.disable:
        _open.add(made)
    return made


def write(line: str, file=None) -> None:
    """Print ``line`` (to stdout, or ``file``) above any bar: the bar is cleared, the line printed, the bar redrawn.
    The line and its newline go out in one write: under torchrun, where the ranks share one pipe and Python may
    be unbuffered (PYTHONUNBUFFERED), another process's line can come between two writes, never inside one."""
    stream = file if file is not None else sys.stdout
    if stream is None:  # no console at all (pythonw)
        return
    tqdm.write(line + "\n", file=stream, end="")
    stream.flush()  # a log redirected to a file shows the line now (tail -f), not when a buffer fills


def close_bars() -> None:
    """Close every bar still open (they clear their line): what is printed next starts on a line of its own."""
    for made in list(_open):
        made.close()
    _open.clear()


@contextmanager
def forwarded(logger_name: str, *, prefix: str | None = "", info: bool = True):
    """Inside the block, the records of logger ``logger_name`` (and its children) are printed as the
    command's own lines after ``prefix``: warnings as "warning: ..." on stderr, the rest on stdout when
    ``info``. ``prefix=None`` drops them all: another process says them."""
    handler = _Lines(prefix, info)
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


class _Lines(logging.Handler):
    def __init__(self, prefix: str | None, info: bool):
        super().__init__(logging.INFO)
        self.prefix, self.info = prefix, info

    def emit(self, record: logging.LogRecord) -> None:
        if self.prefix is None:
            return
        if record.levelno >= logging.WARNING:
            write(f"{self.prefix}warning: {record.getMessage()}", file=sys.stderr)
        elif self.info:
            write(f"{self.prefix}{record.getMessage()}")


__all__ = ["bar", "write", "close_bars", "forwarded", "watched", "PROGRESS_ENV"]
