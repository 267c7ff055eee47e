"""``minivit predict``: the facial expression of every face in photos, folders, globs or a video.

    minivit predict photo.jpg faces/ "shots/*.png" --checkpoint runs/fer     # a table
    minivit predict photo.jpg --checkpoint runs/fer --json --top-k 3         # or --csv
    minivit predict group.jpg --checkpoint runs/fer --annotate labelled.png  # boxes drawn
    minivit predict clip.mp4 --checkpoint runs/fer --fps 5 --annotate out.mp4  # a video

The model, its preprocessing and face detection are minivit.Predictor (minivit/inference/predictor.py);
the files a path names, inference/images.py (collect_inputs); the tables, inference/tables.py; the boxes
drawn, inference/drawing.py; videos, inference/video/. This module is the command line. Where no face is
found, detection is off (``--no-detect``) or OpenCV is not installed, the whole image is classified
and the output says which; an image no larger than twice the model's input is a face crop already.

Bad files (not an image, truncated, a decompression bomb, missing, an empty folder) each get one
``error: <file>: <what>`` line on stderr (and an ``error`` record with --json / --csv); the other
files are still predicted and the exit code is 2 at the end. ``--strict`` stops at the first one.
When no file gives a prediction, the table is not printed (nothing on stdout; the errors are on stderr).

A path with a video suffix (minivit.inference.video.VIDEO_SUFFIXES: .mp4, .mov, .avi, ...) is read as
a video, on its own: frames sampled by ``--every N`` or ``--fps F``, each face followed from frame to
frame with an id (minivit/inference/video/'s rule), a timeline on stdout (table, --json or --csv), with
``--plot out.png`` each face's class probabilities over time in a PNG, and with ``--annotate out.mp4`` the
frames with boxes and labels drawn. Nothing is written that was not asked for: a run in the same folder
never finds a file of the last one in its way.

The photo-reading options (--device, --no-detect, --grayscale, --max-pixels) are shared with the
attention and serve commands: minivit.inference.predictor.add_image_options.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..common.cli import ArgumentParser, command_prog, fail, integer, number, output_file_problem
from ..common.console import bar
from ..common.text import counted
from ..data.provenance import kind_note
from ..inference import faces, video
from ..inference.drawing import save_annotated
from ..inference.images import UnreadableImage, collect_inputs, read_image
from ..inference.predictor import (UNAVAILABLE, Predictor, add_checkpoint_option, add_image_options,
                                   checkpoint_or_shipped, predictor_options)
from ..inference.tables import records_csv, records_table, timeline_csv, timeline_table


def build_parser(prog: str | None = None) -> ArgumentParser:
    p = ArgumentParser(prog=command_prog("predict", prog), description=(
        "Predict the facial expression of every face in images. Faces are found with OpenCV's Haar "
        "cascade (pip install 'minivit[faces]'); where none is found, detection is off or OpenCV is "
        "missing, the whole image is classified and the output says so. An image no larger than twice the "
        "model's input size in both sides (e.g. a 48x48 FER2013 face for a 48-pixel model) is taken as a face "
        "crop already and classified whole, as the evaluation does. Bad files are reported one "
        "line each on stderr, the others are still predicted, and the exit code is then 2. A video file "
        "is read frame by frame instead, each face followed with an id (see the video options)."))
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="image files, folders (searched recursively for image files) or quoted glob patterns; "
                        f"or one video file ({', '.join(video.VIDEO_SUFFIXES)})")
    add_checkpoint_option(p)
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print JSON (a list, one object per image; for a video "
                     "one object with its timeline) instead of a table")
    fmt.add_argument("--csv", action="store_true", help="print CSV (one row per face; for a video one row per "
                     "face per frame) instead of a table")
    p.add_argument("--top-k", type=integer(at_least=1), default=3, help="how many of the most probable "
                   "expressions to list per face (an integer >= 1; default 3)")
    p.add_argument("--batch-size", type=integer(at_least=1), default=64,
                   help="faces classified per forward pass and files read per step (>= 1; default 64)")
    p.add_argument("--tta", action="store_true", help="average each face's logits with its mirror image's")
    add_image_options(p)
    p.add_argument("--annotate", metavar="OUT.png|OUT.mp4", help="with one input image: write a copy with each "
                   "face's box and expression drawn on it; with a video: an .mp4 of the frames read, each face's "
                   "box, id and expression drawn")
    p.add_argument("--overwrite", action="store_true", help="let --annotate and --plot replace an existing file")
    p.add_argument("--strict", action="store_true", help="stop at the first bad file (exit 2) instead of "
                   "reporting it and going on")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (shown for 10 or more files, "
                   f"or a video of {video.PROGRESS_MIN_FRAMES} frames or more)")
    clip = p.add_argument_group("videos", "a path with a video suffix is read as a video, on its own")
    rate = clip.add_mutually_exclusive_group()
    rate.add_argument("--every", type=integer(at_least=1), metavar="N",
                      help="predict every Nth frame (an integer >= 1; default: every frame)")
    rate.add_argument("--fps", type=number(above=0), metavar="F",
                      help="predict F frames a second of video (> 0; at most the video's own rate is used)")
    clip.add_argument("--plot", metavar="OUT.png", help="also write each face's class probabilities over time "
                      "as a PNG here (default: no plot)")
    return p


def _predict_files(predictor: Predictor, inputs, args) -> tuple[list[dict], dict, set]:
    """Records (one per input, an ``error`` one for a bad file), {file: decoded image} for --annotate,
    and the channel counts of the images read (1 grayscale, 3 colour)."""
    records, kept, channels = [], {}, set()
    shown = bar(total=len(inputs), desc="predict", unit="img", show=not args.no_progress and len(inputs) >= 10)
    for start in range(0, len(inputs), args.batch_size):
        chunk = inputs[start:start + args.batch_size]
        slots, images, names = [], [], []  # records in input order: errors in place, results filled in
        for name, error in chunk:
            try:
                if error:
                    raise UnreadableImage(f"{name}: {error}")
                images.append(read_image(name, max_pixels=args.max_pixels))
                channels.add(1 if images[-1].ndim == 2 else 3)
                names.append(name)
                slots.append(None)
            except UnreadableImage as e:
                if args.strict:
                    shown.close()
                    raise
                print(f"error: {e}", file=sys.stderr)
                slots.append({"source": name, "error": str(e)})
        results = iter(predictor.predict(images, names=names) if images else [])
        for i, slot in enumerate(slots):
            if slot is None:
                result = next(results)
                slots[i] = result.to_dict(args.top_k)
                if args.annotate:
                    kept[result.source] = (images[names.index(result.source)], result)
        records += slots
        shown.update(len(chunk))
    shown.close()
    return records, kept, channels


def _predict_video(args) -> int:
    """main for a video: the timeline on stdout, the probability plot, and with --annotate an .mp4
    with each face's box, id and expression (minivit.inference.video)."""
    if len(args.paths) != 1:
        return fail(f"a video is predicted on its own, but the paths name {len(args.paths)}: {' '.join(args.paths)}")
    path, plot = args.paths[0], args.plot
    problem = ((args.annotate and output_file_problem("--annotate", args.annotate, suffix=".mp4",
                                                      overwrite=args.overwrite))
               or (plot and output_file_problem("--plot", plot, suffix=".png", overwrite=args.overwrite)))
    if args.annotate and Path(args.annotate).resolve() == Path(path).resolve():
        problem = f"--annotate {args.annotate}: is the video being read"
    if problem:
        return fail(problem)
    try:
        reader = video.VideoReader(path, every=args.every, fps=args.fps)  # a bad file fails before the model loads
    except video.UnreadableVideo as e:
        return fail(str(e))
    with reader:
        predictor = Predictor.from_checkpoint(checkpoint_or_shipped(args.checkpoint), tta=args.tta,
                                              batch_size=args.batch_size, **predictor_options(args))
        if predictor.detection == UNAVAILABLE:
            print(f"note: {faces.unavailable_reason()}; classifying whole frames", file=sys.stderr)
        note = kind_note(predictor.trained_on, {"synthetic": False, "channels": predictor.channels_seen(3)},
                         what="this video")
        if note:
            print(f"note: {note}", file=sys.stderr)
        timeline = video.predict_video(predictor, reader, annotate=args.annotate, progress=not args.no_progress)
    if args.json:
        print(json.dumps(timeline.to_dict(), indent=2))
    elif args.csv:
        print(timeline_csv(timeline))
    elif timeline.rows:
        print(timeline_table(timeline, args.top_k))
    if plot:
        print(f"plot: {video.plot_png(timeline, plot)}", file=sys.stderr)
    if args.annotate:
        print(f"annotated: {args.annotate} ({counted(timeline.frames, 'frame')} at {reader.sample_rate:g} fps)",
              file=sys.stderr)
    return 0


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = build_parser(prog).parse_args(argv)
    if any(video.is_video(p) for p in args.paths):
        return _predict_video(args)
    video_only = next((o for o, v in (("--every", args.every), ("--fps", args.fps), ("--plot", args.plot))
                       if v is not None), None)
    if video_only:
        return fail(f"{video_only} applies to a video ({', '.join(video.VIDEO_SUFFIXES)}), and no path names one")
    problem = args.annotate and output_file_problem("--annotate", args.annotate, overwrite=args.overwrite)
    if problem:
        return fail(problem)
    inputs = collect_inputs(args.paths)
    if args.annotate and len(inputs) != 1:
        return fail(f"--annotate draws on one image, but the paths name {len(inputs)}")
    predictor = Predictor.from_checkpoint(checkpoint_or_shipped(args.checkpoint), tta=args.tta,
                                          batch_size=args.batch_size, **predictor_options(args))
    if predictor.detection == UNAVAILABLE:
        print(f"note: {faces.unavailable_reason()}; classifying whole images", file=sys.stderr)
    records, kept, channels = _predict_files(predictor, inputs, args)
    # photos are real faces, "colour" if any is, as the model sees them: one turned gray as its training
    # images were is used as in training, and is no news
    seen = predictor.channels_seen(max(channels, default=None))
    note = kind_note(predictor.trained_on, {"synthetic": False, "channels": seen}, what="these images")
    if note:
        print(f"note: {note}", file=sys.stderr)
    if args.json:
        print(json.dumps(records, indent=2))
    elif args.csv:
        print(records_csv(records, args.top_k))
    elif any(r.get("predictions") for r in records):  # every file failed: no lone table header on stdout
        print(records_table(records, args.top_k))
    for image, result in kept.values():
        print(f"annotated: {save_annotated(image, result, args.annotate)}", file=sys.stderr)
    return 2 if any(r.get("error") for r in records) else 0
