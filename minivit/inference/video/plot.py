"""Each face's class probabilities over time: the plot of a video's prediction (``predict --plot``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..drawing import FACE_COLORS

MAX_PANELS = 8  # the plot shows at most this many faces: the ones seen in the most frames


def timeline_figure(timeline):
    """A matplotlib Figure: one panel per face (the MAX_PANELS seen most), each class's probability
    over time; a line breaks where the face was not seen for longer than two kept frames."""
    from matplotlib.figure import Figure

    faces = sorted(timeline.faces(), key=lambda f: -f["frames"])[:MAX_PANELS]
    faces.sort(key=lambda f: (f["face"] is None, f["face"] or 0))
    fig = Figure(figsize=(10, 1.2 + 2.2 * max(1, len(faces))), layout="constrained")
    axes = fig.subplots(max(1, len(faces)), 1, sharex=True, squeeze=False)[:, 0]
    step = 1 / timeline.sample_rate if timeline.sample_rate else 0.0
    for ax, face in zip(axes, faces):
        rows = [r for r in timeline.rows if r.face == face["face"]]
        t = np.array([r.time for r in rows])
        gap = np.r_[False, np.diff(t) > 2 * step + 1e-9] if step else np.zeros(len(t), bool)
        for c, color in zip(timeline.classes, _class_colors(len(timeline.classes))):
            p = np.array([r.probabilities[c] for r in rows])
            ax.plot(np.insert(t, np.flatnonzero(gap), np.nan), np.insert(p, np.flatnonzero(gap), np.nan),
                    color=color, marker="o" if len(rows) <= 60 else None, markersize=2.5, label=c)
        who = "whole frame (no face found / detection off)" if face["face"] is None else f"face {face['face']}"
        ax.set_title(f"{who}: {face['frames']} frames, {face['first']:.2f}-{face['last']:.2f} s, "
                     f"mostly {face['label']}", fontsize=10, loc="left")
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel("probability")
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("time (s)")
    if faces:
        axes[0].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9)
    else:
        axes[0].text(0.5, 0.5, "no frame was predicted", ha="center", va="center", transform=axes[0].transAxes)
    seen = len(timeline.faces())
    shown = "" if seen <= MAX_PANELS else f" ({MAX_PANELS} of {seen} faces: the longest)"
    fig.suptitle(f"{Path(timeline.source).name}: expression probabilities over time{shown}", fontsize=11)
    return fig


def plot_png(timeline, path) -> str:
    """Write timeline_figure as a PNG (atomically); returns the path."""
    from ...evaluate.plots import save_png

    return save_png(timeline_figure(timeline), path)


def _class_colors(n: int) -> list:
    return [tuple(v / 255 for v in FACE_COLORS[i % len(FACE_COLORS)]) for i in range(n)]


__all__ = ["MAX_PANELS", "timeline_figure", "plot_png"]
