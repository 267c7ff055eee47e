"""Putting it together: every kept frame of a video through a Predictor, into a Timeline (and an .mp4)."""

from __future__ import annotations

from contextlib import nullcontext

from ...common.console import bar
from .reader import Frame, VideoReader
from .timeline import Timeline
from .writer import annotated_video

PROGRESS_MIN_FRAMES = 100  # a progress bar for clips of at least this many frames (or of unknown length)
FALLBACK_FPS = 25.0  # the annotated video's rate when the input does not say its own


def predict_video(predictor, reader: VideoReader, *, annotate=None, progress: bool = True,
                  batch_frames: int = 8) -> Timeline:
    """Predict every kept frame of ``reader`` with ``predictor`` (a minivit.Predictor): the
    Timeline, and with ``annotate`` (an .mp4 path) the labelled frames written there. Frames go
    through the predictor ``batch_frames`` at a time: memory stays bounded however long the video.
    A progress bar (on stderr, on a terminal: minivit.common.console) shows frames read, for clips of PROGRESS_MIN_FRAMES or more."""
    timeline = Timeline(reader.name, predictor.classes, video_fps=reader.fps, sample_rate=reader.sample_rate,
                        width=reader.width, height=reader.height)
    writing = (annotated_video(annotate, reader.sample_rate or FALLBACK_FPS, (reader.width, reader.height))
               if annotate else nullcontext())
    short = 0 < reader.frame_count < PROGRESS_MIN_FRAMES
    with writing as writer, bar(total=reader.frame_count or None, desc="video", unit="frame",
                                show=progress and not short) as shown:
        batch: list[Frame] = []
        for frame in reader:
            batch.append(frame)
            shown.update(frame.index + 1 - shown.n)
            if len(batch) == batch_frames:
                _predict_frames(predictor, batch, timeline, writer)
        _predict_frames(predictor, batch, timeline, writer)
        shown.update(reader.frames_read - shown.n)
    return timeline


def _predict_frames(predictor, batch: list[Frame], timeline: Timeline, writer) -> None:
    """Predict a batch of frames, add them to the timeline in order, draw them; empties ``batch``."""
    if not batch:
        return
    results = predictor.predict([f.image for f in batch], names=[f"{timeline.source} at {f.time:.3f}s" for f in batch])
    for frame, result in zip(batch, results):
        rows = timeline.add(frame, frame.time, result)
        if writer is not None:
            writer.write(frame.image, rows)
    batch.clear()


__all__ = ["PROGRESS_MIN_FRAMES", "FALLBACK_FPS", "predict_video"]
