"""How numbers read in messages: a count with its noun in the right form, and a duration.

    >>> counted(1, "frame"), counted(28709, "image"), counted(2, "unreadable image")
    ('1 frame', '28,709 images', '2 unreadable images')
    >>> counted(1, "process", "processes"), counted(3, "process", "processes")
    ('1 process', '3 processes')
    >>> duration(0.3), duration(42), duration(274), duration(754), duration(5520), duration(259200)
    ('under 1 s', '42 s', '4 min 34 s', '13 min', '1 h 32 min', '72 h')
"""

from __future__ import annotations


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` and ``noun``, singular for exactly one and ``plural`` (default noun + "s") otherwise."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"


def duration(seconds: float) -> str:
    """A duration as people say it, to the precision that matters at its size: 42 s, 4 min 34 s, 13 min, 1 h 32 min, 72 h."""
    if seconds < 1:
        return "under 1 s"
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s" if s < 600 and s % 60 else f"{round(s / 60)} min"
    h, m = divmod(round(s / 60), 60)
    return f"{h} h {m} min" if h < 10 and m else f"{round(s / 3600)} h"


__all__ = ["counted", "duration"]
