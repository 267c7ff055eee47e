"""The annotated video: kept frames with each face's box, id and expression drawn, encoded as an .mp4."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ...common.errors import OutputError
from ...common.files import atomic_file
from ..drawing import draw_labels, face_color
from .reader import opencv, quiet

FOURCC = "mp4v"  # MPEG-4 Part 2: an encoder every OpenCV wheel has (H.264 is not licensed into them)


def frame_labels(rows) -> list:
    """What drawing.draw_labels draws on a frame for its TimelineRows: each face's box in its id's colour,
    "<id> <label> <probability>"; a whole-frame row's label in the top left corner."""
    labels = []
    for r in rows:
        text = f"{r.label} {r.probabilities[r.label]:.2f}"
        labels.append((r.box, f"{r.face} {text}" if r.face else text, face_color(r.face)))
    return labels


class _Frames:
    """What annotated_video yields: ``write(image, rows)`` appends one frame with its rows drawn."""

    def __init__(self, writer, cv2):
        self._writer, self._cv2, self.frames = writer, cv2, 0

    def write(self, image: np.ndarray, rows) -> None:
        """Draw ``rows`` on a uint8 (H, W, 3) RGB frame and append it."""
        self._writer.write(self._cv2.cvtColor(draw_labels(image, frame_labels(rows)), self._cv2.COLOR_RGB2BGR))
        self.frames += 1


@contextmanager
def annotated_video(path, fps: float, size: tuple[int, int]):
    """Yield a writer of annotated frames (``.write(image, rows)``) encoding an .mp4 (mp4v) at ``fps`` and
    ``size`` (w, h). The file is common.files.atomic_file's: ``path`` appears, whole, when the block ends;
    an error inside it leaves no file."""
    cv2 = opencv()
    with atomic_file(path, keep_suffix=True) as tmp:  # the suffix stays .mp4: FFmpeg picks the container from it
        with quiet(cv2):
            writer = cv2.VideoWriter(tmp, cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*FOURCC), float(fps),
                                     tuple(int(s) for s in size))
        if not writer.isOpened():
            raise OutputError(f"{Path(path)}: OpenCV cannot write an {FOURCC} video here")
        try:
            yield _Frames(writer, cv2)
        finally:
            writer.release()


__all__ = ["FOURCC", "frame_labels", "annotated_video"]
