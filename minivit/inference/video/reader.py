"""Reading a video: OpenCV's FFmpeg decodes the file, frames kept by ``every`` or ``fps`` (the rule: __init__.py)."""

from __future__ import annotations

import math
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...common.errors import ConfigError, DataError

# Suffixes that make the predict command read a path as a video (OpenCV's FFmpeg reads them all).
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv")
INSTALL_HINT = "pip install 'minivit[faces]' (opencv-python-headless>=4.8,<5)"


class UnreadableVideo(DataError):
    """A video file OpenCV cannot read: missing, not a video, or a container or codec its FFmpeg lacks."""


def is_video(path) -> bool:
    """Whether a path names a video by its suffix (VIDEO_SUFFIXES), e.g. ``clip.MP4``."""
    return Path(str(path)).suffix.lower() in VIDEO_SUFFIXES


def opencv():
    try:
        import cv2
    except ImportError:
        raise ConfigError(f"reading and writing videos needs OpenCV: {INSTALL_HINT}") from None
    # FFmpeg prints its own complaints about a bad file ("moov atom not found") straight to stderr,
    # beside minivit's one-line error. OpenCV reads this once, when its FFmpeg backend starts; a
    # value the user set (to debug a codec) wins.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
    return cv2


@contextmanager
def quiet(cv2):
    """OpenCV's own log lines ("[ WARN:0] ... can't be used to capture by name") off, for one call."""
    logging = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging is None:
        yield
        return
    level = logging.getLogLevel()
    logging.setLogLevel(logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        logging.setLogLevel(level)


@dataclass(frozen=True)
class Frame:
    """One kept frame: its index in the video, its time in seconds, its pixels (uint8 (H, W, 3) RGB)."""

    index: int
    time: float
    image: np.ndarray


class VideoReader:
    """The frames of a video file, sampled by ``every`` (keep frames 0, N, 2N, ...) or ``fps`` (the
    first frame at or after each multiple of 1/fps seconds); neither: every frame.

    Opening checks the file (UnreadableVideo, one line naming it); iterating yields Frame objects.
    ``fps`` is the video's own rate (0.0 when the file does not say), ``frame_count`` the number of
    frames its header announces (0 when unknown), ``sample_rate`` the kept frames per second.
    """

    def __init__(self, path, *, every: int | None = None, fps: float | None = None):
        if every is not None and fps is not None:
            raise ConfigError("sample a video by every or by fps, not both")
        if every is not None and not (isinstance(every, int) and every >= 1):
            raise ConfigError(f"every must be an integer >= 1, not {every!r}")
        if fps is not None and not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
            raise ConfigError(f"fps must be a number > 0, not {fps!r}")
        self.path, self.name = Path(path), str(path)
        if not self.path.exists():
            raise UnreadableVideo(f"{self.name}: no such file")
        if self.path.is_dir():
            raise UnreadableVideo(f"{self.name}: is a folder, not a video")
        self._cv2 = cv2 = opencv()
        with quiet(cv2):
            # CAP_FFMPEG, not any backend: OpenCV's image-sequence reader would take "frame%03d.mp4" as a pattern
            self._cap = cv2.VideoCapture(self.name, cv2.CAP_FFMPEG)
        if not self._cap.isOpened():
            raise UnreadableVideo(f"{self.name}: not a video OpenCV can read (not a video file, or a container or "
                                  f"codec its FFmpeg cannot decode)")
        rate = self._cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(rate) if math.isfinite(rate) and rate > 0 else 0.0
        self.frame_count = max(0, int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0))
        self.width = int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self.every, self.sample_fps = every, fps
        self.frames_read = 0

    @property
    def sample_rate(self) -> float:
        """Kept frames per second (0.0 when the video's rate is unknown and sampling is by frame count)."""
        if self.sample_fps is not None:
            return min(self.sample_fps, self.fps) if self.fps else self.sample_fps
        return self.fps / (self.every or 1)

    def __iter__(self):
        cv2, index, next_time = self._cv2, 0, 0.0
        while True:
            with quiet(cv2):
                if not self._cap.grab():  # the end, or a frame FFmpeg cannot decode: the video stops there
                    break
            time = index / self.fps if self.fps else self._cap.get(cv2.CAP_PROP_POS_MSEC) / 1000
            if self.sample_fps is not None:
                keep = time >= next_time - 1e-9
                if keep:  # the next multiple of 1/fps after this frame's time
                    next_time = (math.floor(time * self.sample_fps + 1e-9) + 1) / self.sample_fps
            else:
                keep = index % (self.every or 1) == 0
            if keep:
                ok, bgr = self._cap.retrieve()
                if ok:
                    yield Frame(index, round(time, 6), cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))  # (H, W, 3)
            index += 1
            self.frames_read = index
        if index == 0:
            raise UnreadableVideo(f"{self.name}: OpenCV opens it but decodes no frame from it (an empty video, or "
                                  f"a codec its FFmpeg cannot decode)")

    def close(self) -> None:
        self._cap.release()

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = ["VIDEO_SUFFIXES", "INSTALL_HINT", "UnreadableVideo", "is_video", "opencv", "quiet", "Frame", "VideoReader"]
