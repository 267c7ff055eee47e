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
probabilities); minivit/inference/tables.py prints it (a table, CSV, JSON); ``plot_png`` draws each
face's class probabilities over time; ``annotated_video`` writes the kept frames with each face's box,
id and expression drawn (minivit/inference/drawing.py), as an .mp4 written atomically.

One job per file:

    reader.py     opening a video with OpenCV, its frames sampled by every / fps (VideoReader)
    tracking.py   face ids from frame to frame (FaceTracker, iou)
    timeline.py   the rows of a video's prediction and the faces they follow (Timeline)
    plot.py       each face's class probabilities over time, a PNG
    writer.py     the annotated .mp4 (annotated_video)
    predict.py    putting it together: predict_video

Python (``predictor`` is a minivit.Predictor):

    >>> from minivit.inference.video import VideoReader, predict_video                       # doctest: +SKIP
    >>> with VideoReader("clip.mp4", fps=5) as reader:                             # doctest: +SKIP
    ...     timeline = predict_video(predictor, reader, progress=False)
    >>> timeline.rows[0]                                                           # doctest: +SKIP
    TimelineRow(time=0.0, frame=0, face=1, box=(28, 37, 67, 67), label='happy', ...)

The tracker on its own:

    >>> from minivit.inference.video import FaceTracker
    >>> tracker = FaceTracker()
    >>> tracker.update([(10, 10, 50, 50)], time=0.0), tracker.update([(14, 12, 50, 50)], time=0.1)
    ([1], [1])
    >>> tracker.update([(200, 10, 50, 50), (16, 12, 50, 50)], time=0.2)   # a second face appears
    [2, 1]
"""

from ..drawing import FACE_COLORS
from .plot import plot_png, timeline_figure
from .predict import PROGRESS_MIN_FRAMES, predict_video
from .reader import VIDEO_SUFFIXES, Frame, UnreadableVideo, VideoReader, is_video
from .timeline import Timeline, TimelineRow
from .tracking import MAX_GAP, MIN_IOU, FaceTracker, iou
from .writer import annotated_video

__all__ = ["VIDEO_SUFFIXES", "MIN_IOU", "MAX_GAP", "PROGRESS_MIN_FRAMES", "FACE_COLORS", "UnreadableVideo", "is_video",
           "Frame", "VideoReader", "iou", "FaceTracker", "TimelineRow", "Timeline", "timeline_figure", "plot_png",
           "annotated_video", "predict_video"]
