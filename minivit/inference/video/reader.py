"""Expressions through a video: frames read with OpenCV, each face followed from frame to frame, a timeline.

    python -m minivit.predict clip.mp4 --checkpoint runs/fer                 # a table, and clip_expressions.png
    python -m minivit.predict clip.mp4 --checkpoint runs/fer --fps 5 --csv   # 5 frames a second, as CSV
    python -m minivit.predict clip.mp4 --checkpoint runs/fer --annotate labelled.mp4

Frames. OpenCV (the ``faces`` extra) decodes the file with its FFmpeg backend. ``every=N`` keeps
frames 0, N, 2N, ...; ``fps=F`` keeps the first frame at or after each multiple of 1/F seconds
(every frame when F is at least the video's own rate). A frame's time is its index divided by the
video's frame rate, in seconds from the start.

Faces. Each kept frame goes through the Predictor as a photo does (face detection, crops, the
evaluation's preprocessing; a frame where no face is found is classified whole, as a photo is).
FaceTracker then gives each face an id, by this rule:

    the boxes found in a frame are matched to the faces seen before, greedily by the IoU
    (intersection over union) of each box with each face's last box, highest first; a pair matches
    when its IoU is at least MIN_IOU (0.3). A matched box keeps that face's id; an unmatched one is
    a new face with the next id (1, 2, 3, ... never reused). A face not seen for more than MAX_GAP
    (1.0) seconds is gone: if it comes back, it is a new face.

Why IoU and a gap: between frames a fraction of a second apart a face moves less than its own
size, so its boxes overlap; and the Haar detector misses a face now and then (a turned head,
motion blur), which the one-second gap bridges without merging a face with one that appears much
later. What the rule cannot do: two faces that cross may swap ids, and a sampling rate so low that
a face moves more than about half its width between kept frames gives it a new id.

Outputs. ``Timeline`` holds one row per face per kept frame (time, frame, face id, box, label,
probabilities) and formats it (``to_table``, ``to_csv``, ``to_dict`` for JSON); ``Timeline.plot_png``
draws each face's class probabilities over time; ``AnnotatedVideo`` writes the kept frames with
each face's box, id and expression drawn (an .mp4, written atomically).

Python (``predictor`` is a minivit.Predictor):

    >>> from minivit.inference.video import VideoReader, predict_video                       # doctest: +SKIP
    >>> with VideoReader("clip.mp4", fps=5) as reader:                             # doctest: +SKIP
    ...     timeline = predict_video(predictor, reader, progress=False)
    >>> timeline.rows[0]                                                           # doctest: +SKIP
    TimelineRow(time=0.0, frame=0, face=1, box=(28, 37, 67, 67), label='happy', ...)

The tracker on its own:

    >>> tracker = FaceTracker()
    >>> tracker.update([(10, 10, 50, 50)], time=0.0), tracker.update([(14, 12, 50, 50)], time=0.1)
    ([1], [1])
    >>> tracker.update([(200, 10, 50, 50), (16, 12, 50, 50)], time=0.2)   # a second face appears
    [2, 1]
"""

from __future__ import annotations

import csv
import io
import math
import os
import tempfile
from collections import Counter
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..common.files import cannot_write, ensure_folder
from ..common.errors import ConfigError, DataError, OutputError

# Suffixes that make minivit.predict read a path as a video (OpenCV's FFmpeg reads them all).
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv")
MIN_IOU = 0.3  # a box continues a face when it overlaps the face's last box at least this much
MAX_GAP = 1.0  # seconds a face may go undetected and keep its id
PROGRESS_MIN_FRAMES = 100  # a progress bar for clips of at least this many frames (or of unknown length)
MAX_PANELS = 8  # the plot shows at most this many faces: the ones seen in the most frames
FOURCC = "mp4v"  # MPEG-4 Part 2: an encoder every OpenCV wheel has (H.264 is not licensed into them)
FALLBACK_FPS = 25.0  # the annotated video's rate when the input does not say its own
# One colour per face id, cycled (Matplotlib's tab10 as RGB): the same face keeps its colour in the video.
FACE_COLORS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
               (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]
INSTALL_HINT = "pip install 'minivit[faces]' (opencv-python-headless>=4.8,<5)"


class UnreadableVideo(DataError):
    """A video file OpenCV cannot read: missing, not a video, or a container or codec its FFmpeg lacks."""


def is_video(path) -> bool:
    """Whether a path names a video by its suffix (VIDEO_SUFFIXES), e.g. ``clip.MP4``."""
    return Path(str(path)).suffix.lower() in VIDEO_SUFFIXES


def _opencv():
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
def _quiet(cv2):
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


# -- frames --------------------------------------------------------------------------------------


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
        self._cv2 = cv2 = _opencv()
        with _quiet(cv2):
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
            with _quiet(cv2):
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


# -- faces from frame to frame -------------------------------------------------------------------


def iou(a, b) -> float:
    """Intersection over union of two (x, y, w, h) boxes: 1 for the same box, 0 when they do not touch.

    >>> iou((0, 0, 10, 10), (5, 0, 10, 10))
    0.3333333333333333
    """
    (ax, ay, aw, ah), (bx, by, bw, bh) = a, b
    inter = max(0, min(ax + aw, bx + bw) - max(ax, bx)) * max(0, min(ay + ah, by + bh) - max(ay, by))
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


class FaceTracker:
    """Face ids that stay with a face while it moves (the rule is in this module's docstring)."""

    def __init__(self, min_iou: float = MIN_IOU, max_gap: float = MAX_GAP):
        self.min_iou, self.max_gap = min_iou, max_gap
        self.faces: dict[int, tuple[tuple, float]] = {}  # id -> (last box, last time seen)
        self.next_id = 1

    def update(self, boxes, time: float) -> list[int]:
        """The id of each (x, y, w, h) box found in the frame at ``time`` (seconds, not decreasing)."""
        self.faces = {i: f for i, f in self.faces.items() if time - f[1] <= self.max_gap + 1e-9}
        pairs = sorted(((iou(box, last), j, i) for j, box in enumerate(boxes) for i, (last, _) in self.faces.items()),
                       key=lambda p: (-p[0], p[1], p[2]))
        ids: list[int | None] = [None] * len(boxes)
        for overlap, j, i in pairs:
            if overlap < self.min_iou:
                break
            if ids[j] is None and i not in ids:
                ids[j] = i
        for j, box in enumerate(boxes):
            if ids[j] is None:
                ids[j], self.next_id = self.next_id, self.next_id + 1
            self.faces[ids[j]] = (tuple(box), time)
        return ids


# -- the timeline --------------------------------------------------------------------------------


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

    def to_csv(self) -> str:
        """CSV, one row per face per kept frame: time, frame, face, box, label, its probability, then
        one ``p_<class>`` column per class."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["time", "frame", "face", "x", "y", "w", "h", "label", "probability"]
                        + [f"p_{c}" for c in self.classes])
        for r in self.rows:
            writer.writerow([f"{r.time:.3f}", r.frame, "" if r.face is None else r.face, *(r.box or [""] * 4),
                             r.label, f"{r.probabilities[r.label]:.6f}",
                             *(f"{r.probabilities[c]:.6f}" for c in self.classes)])
        return buf.getvalue().rstrip("\n")

    def to_table(self, top_k: int = 3) -> str:
        """The readable timeline: one line per face per kept frame."""
        lines = [("time", "face", "box", "expression", f"top {top_k}")]
        for r in self.rows:
            top = sorted(r.probabilities.items(), key=lambda kv: -kv[1])[:top_k]
            lines.append((f"{r.time:.2f}s", "-" if r.face is None else str(r.face),
                          "(" + ", ".join(map(str, r.box)) + ")" if r.box else r.note,
                          f"{r.label} {r.probabilities[r.label]:.2f}", ", ".join(f"{k} {v:.2f}" for k, v in top)))
        widths = [max(len(line[c]) for line in lines) for c in range(4)]
        return "\n".join("  ".join(v.ljust(w) for v, w in zip(line[:4], widths)) + "  " + line[4] for line in lines)

    def plot_figure(self):
        """A matplotlib Figure: one panel per face (the MAX_PANELS seen most), each class's probability
        over time; a line breaks where the face was not seen for longer than two kept frames."""
        from matplotlib.figure import Figure

        faces = sorted(self.faces(), key=lambda f: -f["frames"])[:MAX_PANELS]
        faces.sort(key=lambda f: (f["face"] is None, f["face"] or 0))
        fig = Figure(figsize=(10, 1.2 + 2.2 * max(1, len(faces))), layout="constrained")
        axes = fig.subplots(max(1, len(faces)), 1, sharex=True, squeeze=False)[:, 0]
        step = 1 / self.sample_rate if self.sample_rate else 0.0
        for ax, face in zip(axes, faces):
            rows = [r for r in self.rows if r.face == face["face"]]
            t = np.array([r.time for r in rows])
            gap = np.r_[False, np.diff(t) > 2 * step + 1e-9] if step else np.zeros(len(t), bool)
            for c, color in zip(self.classes, _class_colors(len(self.classes))):
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
        shown = "" if len(self.faces()) <= MAX_PANELS else f" ({MAX_PANELS} of {len(self.faces())} faces: the longest)"
        fig.suptitle(f"{Path(self.source).name}: expression probabilities over time{shown}", fontsize=11)
        return fig

    def plot_png(self, path) -> str:
        """Write plot_figure as a PNG (atomically); returns the path."""
        from ..evaluate.plots import save_png

        return save_png(self.plot_figure(), path)


def _class_colors(n: int) -> list:
    return [tuple(v / 255 for v in FACE_COLORS[i % len(FACE_COLORS)]) for i in range(n)]


# -- the annotated video -------------------------------------------------------------------------


class AnnotatedVideo:
    """Frames with each face's box, id and expression drawn, written to ``path`` (an .mp4, mp4v) at
    ``fps``: first to a temp file beside it, renamed to ``path`` by close(); discard() (or an error
    inside a ``with`` block) leaves no file."""

    def __init__(self, path, fps: float, size: tuple[int, int]):
        self._cv2 = cv2 = _opencv()
        self.path = Path(path)
        ensure_folder(self.path.parent, self.path)
        try:  # the suffix stays .mp4: FFmpeg picks the container from the name
            fd, self._tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.stem}.", suffix=".mp4")
            os.close(fd)
        except OSError as e:
            raise cannot_write(self.path, e) from None
        with _quiet(cv2):
            self._writer = cv2.VideoWriter(self._tmp, cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*FOURCC),
                                           float(fps), tuple(int(s) for s in size))
        if not self._writer.isOpened():
            self.discard()
            raise OutputError(f"{self.path}: OpenCV cannot write an {FOURCC} video here")
        self.frames = 0

    def write(self, image: np.ndarray, rows: list[TimelineRow]) -> None:
        """Draw ``rows`` on a uint8 (H, W, 3) RGB frame and append it."""
        self._writer.write(self._cv2.cvtColor(draw_rows(image, rows), self._cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self) -> str:
        self._writer.release()
        umask = os.umask(0)
        os.umask(umask)
        try:
            os.chmod(self._tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give the usual permissions
            os.replace(self._tmp, self.path)
        except OSError as e:
            self.discard()
            raise cannot_write(self.path, e) from None
        return str(self.path)

    def discard(self) -> None:
        if getattr(self, "_writer", None) is not None:
            self._writer.release()
        if os.path.exists(self._tmp):
            os.unlink(self._tmp)

    def __enter__(self) -> "AnnotatedVideo":
        return self

    def __exit__(self, kind, *exc) -> None:
        if kind is None:
            self.close()
        else:
            self.discard()


def draw_rows(image: np.ndarray, rows: list[TimelineRow]) -> np.ndarray:
    """A copy of a uint8 (H, W, 3) RGB frame with each row's box (coloured by face id) and
    "<id> <label> <probability>" drawn; a whole-frame row gets its label in the top left corner."""
    cv2 = _opencv()
    out = np.ascontiguousarray(image.copy())  # (H, W, 3)
    H, W = out.shape[:2]
    scale = max(0.4, min(H, W) / 600)
    thick = max(2, round(2 * scale))  # 2 pixels at least: a 1-pixel line blurs away in the video's compression
    for r in rows:
        color = FACE_COLORS[(r.face - 1) % len(FACE_COLORS)] if r.face else (90, 90, 90)
        text = f"{r.label} {r.probabilities[r.label]:.2f}"
        text = f"{r.face} {text}" if r.face else text
        x, y, w, h = r.box or (0, 0, W, H)
        if r.box:
            cv2.rectangle(out, (x, y), (x + w - 1, y + h - 1), color, thick)
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        ty = y - th - base - 4 if r.box and y >= th + base + 4 else y  # above the box where it fits
        cv2.rectangle(out, (x, ty), (x + tw + 4, ty + th + base + 4), color, -1)
        cv2.putText(out, text, (x + 2, ty + th + 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thick,
                    cv2.LINE_AA)
    return out


# -- putting it together -------------------------------------------------------------------------


def predict_video(predictor, reader: VideoReader, *, annotate=None, progress: bool = True,
                  batch_frames: int = 8) -> Timeline:
    """Predict every kept frame of ``reader`` with ``predictor`` (a minivit.Predictor): the
    Timeline, and with ``annotate`` (an .mp4 path) the labelled frames written there. Frames go
    through the predictor ``batch_frames`` at a time: memory stays bounded however long the video.
    A progress bar (tqdm, on stderr) shows frames read, for clips of PROGRESS_MIN_FRAMES or more."""
    from tqdm.auto import tqdm

    timeline = Timeline(reader.name, predictor.classes, video_fps=reader.fps, sample_rate=reader.sample_rate,
                        width=reader.width, height=reader.height)
    writer = (AnnotatedVideo(annotate, reader.sample_rate or FALLBACK_FPS, (reader.width, reader.height))
              if annotate else None)
    short = 0 < reader.frame_count < PROGRESS_MIN_FRAMES
    bar = tqdm(total=reader.frame_count or None, desc="video", unit="frame", disable=not progress or short)
    try:
        batch: list[Frame] = []
        for frame in reader:
            batch.append(frame)
            bar.update(frame.index + 1 - bar.n)
            if len(batch) == batch_frames:
                _predict_frames(predictor, batch, timeline, writer)
        _predict_frames(predictor, batch, timeline, writer)
        bar.update(reader.frames_read - bar.n)
    except BaseException:
        if writer is not None:
            writer.discard()
        raise
    finally:
        bar.close()
    if writer is not None:
        writer.close()
    return timeline


def _predict_frames(predictor, batch: list[Frame], timeline: Timeline, writer: AnnotatedVideo | None) -> None:
    """Predict a batch of frames, add them to the timeline in order, draw them; empties ``batch``."""
    if not batch:
        return
    results = predictor.predict([f.image for f in batch], names=[f"{timeline.source} at {f.time:.3f}s" for f in batch])
    for frame, result in zip(batch, results):
        rows = timeline.add(frame, frame.time, result)
        if writer is not None:
            writer.write(frame.image, rows)
    batch.clear()


__all__ = ["VIDEO_SUFFIXES", "MIN_IOU", "MAX_GAP", "UnreadableVideo", "is_video", "Frame", "VideoReader", "iou",
           "FaceTracker", "TimelineRow", "Timeline", "AnnotatedVideo", "draw_rows", "predict_video"]
