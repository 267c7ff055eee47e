"""A video's prediction as data: one row per face per kept frame, and the faces they follow.

Printed by minivit/inference/tables.py (a table, CSV), drawn by plot.py; ``to_dict`` is the plain data
(JSON).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass

from .reader import Frame
from .tracking import FaceTracker


@dataclass
class TimelineRow:
    """One face (or the whole frame: face and box None) in one kept frame."""

    time: float                             # seconds from the start of the video
    frame: int                              # the frame's index in the video
    face: int | None                        # FaceTracker's id; None for a whole-frame prediction
    box: tuple[int, int, int, int] | None   # (x, y, w, h) in the frame's pixels
    label: str
    probabilities: dict[str, float]         # every class, in the model's class order
    note: str                               # what was classified ("1 face found", "no face found: ...")


class Timeline:
    """The rows of a video's prediction, in frame order, and the faces they follow."""

    def __init__(self, source: str, classes, *, video_fps: float, sample_rate: float, width: int, height: int,
                 tracker: FaceTracker | None = None):
        self.source, self.classes = source, tuple(classes)
        self.video_fps, self.sample_rate, self.width, self.height = video_fps, sample_rate, width, height
        self.tracker = tracker or FaceTracker()
        self.rows: list[TimelineRow] = []
        self.frames = 0  # kept frames predicted

    def add(self, frame: Frame | int, time: float, result) -> list[TimelineRow]:
        """Add a frame's minivit.inference.predictor.ImageResult; returns its rows (faces with their ids)."""
        index = frame.index if isinstance(frame, Frame) else int(frame)
        boxed = [tuple(p.box) for p in result.predictions if p.box]
        ids = iter(self.tracker.update(boxed, time))
        rows = [TimelineRow(round(time, 6), index, next(ids) if p.box else None, tuple(p.box) if p.box else None,
                            p.label, dict(p.probabilities), result.note) for p in result.predictions]
        self.rows += rows
        self.frames += 1
        return rows

    def faces(self) -> list[dict]:
        """Per face id (whole-frame rows under None, last): first and last time, frames, most frequent label."""
        by_face: dict = {}
        for r in self.rows:
            by_face.setdefault(r.face, []).append(r)
        out = []
        for face in sorted(by_face, key=lambda f: (f is None, f or 0)):
            rows = by_face[face]
            out.append({"face": face, "first": rows[0].time, "last": rows[-1].time, "frames": len(rows),
                        "label": Counter(r.label for r in rows).most_common(1)[0][0]})
        return out

    def to_dict(self) -> dict:
        """Plain data for JSON: the video, how it was sampled, the faces, and every row."""
        rows = [{**asdict(r), "box": list(r.box) if r.box else None} for r in self.rows]
        return {"source": self.source, "video_fps": self.video_fps, "sample_rate": self.sample_rate,
                "width": self.width, "height": self.height, "frames": self.frames, "classes": list(self.classes),
                "faces": self.faces(), "timeline": rows}


__all__ = ["TimelineRow", "Timeline"]
