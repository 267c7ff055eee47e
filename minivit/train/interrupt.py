"""Stopping a run without losing it: Ctrl-C, SIGTERM and the timed save, decided alike on every process.

While a run trains, the first SIGINT (Ctrl-C) or SIGTERM (what a cluster scheduler sends before it kills)
does not stop it where it stands: the step in progress finishes, the loop writes the resume point
(resume.safetensors, atomically, with the epoch's partial sums) and stops; the command then says where
it stopped and how to continue, and exits 130 (SIGINT) or 143 (SIGTERM). A second signal stops at once
and writes nothing: the last resume point stays as it was. Besides, when ``--save-every-minutes`` (10 by
default) have passed since the last resume point, the loop writes one after the step, so a SIGKILL or a
power cut loses at most that much.

Under torchrun each process gets its own signal (torchrun forwards it to every worker and waits 30 s
before killing them; a signal sent to one worker reaches that one only), yet all must stop after the same
step, and write the resume point in one collective. So after every step each process casts its vote --
go on (0), save (SAVE) or stop (the signal's number) -- into an all-reduce (max) started without waiting,
and acts on the previous step's result, which has long arrived (``LaggedMax``): every process acts on
the same vote at the same step, one step after it was cast, and no step waits for a collective.

    with Interrupt(run.main, run.world, cfg.save_every_minutes) as interrupt:
        ...  # each step, then:
        vote = interrupt.after_step()  # 0, SAVE, or the signal to stop for: the same on every process
"""

from __future__ import annotations

import signal
import sys
import threading
import time

from ..common.errors import Interrupted
from ..common.console import write
from .distributed import LaggedMax

SAVE = 1  # the vote for writing the resume point; a stop votes its signal's number (2, 15): the largest wins
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupt:
    """The loop's watch over the signals and the clock: a context inside which SIGINT and SIGTERM are its
    own (the process's handlers are put back when it ends). ``after_step()`` after every optimiser step."""

    def __init__(self, main: bool, world: int, save_every_minutes: float):
        self.main, self.every = main, save_every_minutes * 60
        self.signum = 0  # the signal received; 0 before one
        self.saved_at, self.save_asked = time.monotonic(), False
        self.votes = LaggedMax() if world > 1 else None
        self.previous = {}

    def __enter__(self) -> "Interrupt":
        if threading.current_thread() is threading.main_thread():  # only the main thread gets signals
            self.previous = {s: signal.signal(s, self.on_signal) for s in SIGNALS}
        return self

    def __exit__(self, kind, error, trace) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)
        if self.votes is not None and kind is None:  # after a failure a process may be gone: wait for none
            self.votes.close()

    def on_signal(self, signum: int, frame) -> None:
        name = signal.Signals(signum).name
        if self.signum:
            raise Interrupted(f"{name} again: stopped at once, without saving the step it was in", signum)
        self.signum = signum
        if self.main:
            write(f"{name}: finishing this step, then saving the resume point (a second Ctrl-C or SIGTERM stops "
                  f"at once, without saving)", file=sys.stderr)

    def after_step(self) -> int:
        """0 (go on), SAVE (write the resume point) or the signal to stop for (write it, then stop); with
        several processes the same on all, one step late. The timer is rank 0's."""
        vote = self.signum
        if not vote and self.main and self.every and not self.save_asked and \
                time.monotonic() - self.saved_at >= self.every:
            vote, self.save_asked = SAVE, True
        return vote if self.votes is None else self.votes(vote)

    def saved(self) -> None:
        """A resume point was written: the timer starts again."""
        self.saved_at, self.save_asked = time.monotonic(), False


def stop_signal(vote: int) -> str | None:
    """The name of the signal a vote stops for ("SIGINT", "SIGTERM"), or None for going on or saving."""
    return signal.Signals(vote).name if vote > SAVE else None


__all__ = ["Interrupt", "SAVE", "stop_signal"]
