"""python -m minivit.predict clip.mp4 and minivit.video: frames sampled by --every / --fps at the right
times, each face keeping its id while it moves (and a new one after a gap longer than MAX_GAP), the
timeline as JSON / CSV / a table, the probability plot, the annotated .mp4 (written atomically), and
a bad video or option as one line with exit 2.

The clip is made here: scikit-image's astronaut photo (a test dependency; no ../shared needed), her
face cut out twice. Face A moves right and is mirrored every half second; face B, mirrored, moves
down, leaves the frame for 1.4 s and comes back where it left."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import minivit
from minivit.checkpoints import save_checkpoint
from minivit.common.cli import run
from minivit.commands.predict import main

cv2 = pytest.importorskip("cv2", reason="videos are read with OpenCV (the 'faces' extra)")
skimage_data = pytest.importorskip("skimage.data", reason="the test clip is made from scikit-image's astronaut photo")

from minivit.inference import video  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FPS, FRAMES, SIZE = 10.0, 30, (352, 240)  # (W, H)
FACE = 110  # side of each pasted face, in pixels
B_GONE = range(12, 26)  # frames without face B: 1.4 s, more than MAX_GAP


def clip_frames() -> list[np.ndarray]:
    """30 RGB frames (240, 352, 3): face A moving right (mirrored in every other half second), face B
    moving down, absent in B_GONE, back at the place it left."""
    face = cv2.resize(skimage_data.astronaut()[30:190, 140:300], (FACE, FACE), interpolation=cv2.INTER_AREA)
    frames = []
    for i in range(FRAMES):
        f = np.full((SIZE[1], SIZE[0], 3), 128, np.uint8)
        x = 5 + 3 * i
        f[15:15 + FACE, x:x + FACE] = face[:, ::-1] if (i // 5) % 2 else face
        if i not in B_GONE:
            y = 5 + 2 * (i if i < B_GONE.start else i - len(B_GONE))
            f[y:y + FACE, SIZE[0] - 10 - FACE:SIZE[0] - 10] = face[:, ::-1]
        frames.append(f)
    return frames


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, SIZE)
    assert writer.isOpened()
    for f in clip_frames():
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = minivit.create_model("Ti/16", image_size=48, patch_size=8, dim=32, depth=2, heads=2, mlp_dim=64,
                                 num_classes=7)
    torch.nn.init.normal_(model.head.weight, std=0.5)  # a zero head predicts uniformly: nothing to see
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_checkpoint(model, path)
    return path


def which_face(row) -> str:
    """The face a box belongs to by where it is: A on the left half, B on the right."""
    x, _, w, _ = row["box"]
    return "A" if x + w / 2 < SIZE[0] / 2 else "B"


@pytest.fixture(scope="module")
def predicted(clip, checkpoint, tmp_path_factory):
    """One run of the command on the clip with --json --annotate --plot: (its JSON, stderr, the annotated
    .mp4, the plot, and the Timeline the plot was drawn from)."""
    import contextlib
    import io

    folder = tmp_path_factory.mktemp("predicted")
    out, plot, drawn = folder / "labelled.mp4", folder / "faces.png", []
    real_plot_png = video.plot_png

    def plot_png(timeline, path):  # still draws it: only remembers what it drew
        drawn.append(timeline)
        return real_plot_png(timeline, path)

    video.plot_png, stdout, stderr = plot_png, io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            assert main([str(clip), "--checkpoint", str(checkpoint), "--json", "--annotate", str(out), "--plot",
                         str(plot), "--no-progress"]) == 0
    finally:
        video.plot_png = real_plot_png
    return json.loads(stdout.getvalue()), stderr.getvalue(), out, plot, drawn[0]


def test_every_frame_is_in_the_timeline_at_its_time(predicted):
    result, *_ = predicted
    rows = result["timeline"]
    assert result["frames"] == FRAMES and result["video_fps"] == FPS and (result["width"], result["height"]) == SIZE
    assert sorted({r["frame"] for r in rows}) == list(range(FRAMES))
    assert all(r["time"] == pytest.approx(r["frame"] / FPS, abs=1e-6) for r in rows)
    for r in rows:  # every class, summing to 1, the label the most probable
        assert list(r["probabilities"]) == list(minivit.data.LABELS)
        assert sum(r["probabilities"].values()) == pytest.approx(1, abs=1e-5)
        assert r["label"] == max(r["probabilities"], key=r["probabilities"].get)


def test_each_face_keeps_its_id_while_it_moves_and_gets_a_new_one_after_a_gap(predicted):
    result, *_ = predicted
    faces = [r for r in result["timeline"] if r["box"]]
    a = [r for r in faces if which_face(r) == "A"]
    b = [r for r in faces if which_face(r) == "B"]
    # A keeps id 1 while it moves and flips; B is 2, and 3 after its 1.4 s absence (more than MAX_GAP)
    assert len(a) >= 20 and {r["face"] for r in a} == {1}, [(r["frame"], r["face"]) for r in a]
    assert len({r["frame"] for r in a}) == len(a)  # one box per face per frame
    assert a[-1]["box"][0] > a[0]["box"][0] + 40  # it moved, 3 pixels a frame
    before = [r for r in b if r["frame"] < B_GONE.start]
    after = [r for r in b if r["frame"] >= B_GONE.stop]
    assert len(before) >= 8 and {r["face"] for r in before} == {2}
    assert len(after) >= 2 and {r["face"] for r in after} == {3}
    assert not [r for r in b if r["frame"] in B_GONE]
    summary = {f["face"]: f for f in result["faces"]}
    assert summary[1]["first"] == 0.0 and summary[3]["first"] >= B_GONE.stop / FPS - 1e-6


def test_the_plot_draws_each_faces_probabilities_over_time(predicted):
    """One panel per face, each holding one line per class whose points are that face's probabilities at
    its frames' times; the PNG written is that figure."""
    result, err, _, plot, timeline = predicted
    assert f"plot: {plot}" in err
    fig = video.timeline_figure(timeline)
    by_face = {}
    for r in result["timeline"]:
        by_face.setdefault(r["face"], []).append(r)
    axes = [ax for ax in fig.axes if ax.get_lines()]
    assert len(axes) == len(by_face) == 3  # faces 1, 2, 3 (no whole-frame rows: every frame had a face)
    for ax, face in zip(axes, sorted(by_face)):
        rows = by_face[face]
        assert ax.get_title(loc="left").startswith(f"face {face}: {len(rows)} frames")
        lines = {line.get_label(): line for line in ax.get_lines()}
        assert list(lines) == list(minivit.data.LABELS)
        for c, line in lines.items():
            x, y = np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float)
            drawn = ~np.isnan(y)  # NaNs break the line where the face was not seen
            np.testing.assert_allclose(x[drawn], [r["time"] for r in rows], atol=1e-6)
            np.testing.assert_allclose(y[drawn], [r["probabilities"][c] for r in rows], atol=1e-6)
    width, height = (fig.get_size_inches() * 100).round().astype(int)  # the PNG is the figure at 100 dpi
    with Image.open(plot) as im:
        assert im.format == "PNG" and im.size == (width, height)


def test_the_annotated_video_has_every_frame_with_each_face_boxed_in_its_colour(predicted):
    result, err, out, _, _ = predicted
    assert f"annotated: {out}" in err
    cap = cv2.VideoCapture(str(out))
    frames = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    assert len(frames) == FRAMES and frames[0].shape == (SIZE[1], SIZE[0], 3)
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(FPS)
    first = next(r for r in result["timeline"] if r["box"] and which_face(r) == "A")
    x, y, w, h = first["box"]
    left_edge = frames[first["frame"]][y + h // 4:y + 3 * h // 4, x].astype(float).mean(axis=0)  # along the box's side
    assert np.abs(left_edge - video.FACE_COLORS[0]).max() < 60, left_edge
    assert np.abs(clip_frames()[first["frame"]][y + h // 4:y + 3 * h // 4, x].astype(float).mean(axis=0)
                  - video.FACE_COLORS[0]).max() > 60  # the source frame does not have that colour there
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp file left


def test_every_and_fps_sample_the_right_frames(clip):
    with video.VideoReader(clip, every=3) as reader:
        kept = [(f.index, f.time) for f in reader]
        assert reader.sample_rate == pytest.approx(FPS / 3) and reader.frames_read == FRAMES
    assert kept == [(i, pytest.approx(i / FPS)) for i in range(0, FRAMES, 3)]
    with video.VideoReader(clip, fps=2.5) as reader:  # the first frame at or after 0, 0.4, 0.8, ... s
        assert [f.index for f in reader] == [0, 4, 8, 12, 16, 20, 24, 28]
    with video.VideoReader(clip, fps=4) as reader:  # 0.25 s steps fall between frames: the next one is kept
        assert [f.index for f in reader] == [0, 3, 5, 8, 10, 13, 15, 18, 20, 23, 25, 28]
    with video.VideoReader(clip, fps=100) as reader:  # more than the video has: every frame, at its own rate
        frames = list(reader)
        assert len(frames) == FRAMES and reader.sample_rate == FPS
    assert frames[7].image.shape == (SIZE[1], SIZE[0], 3) and frames[7].image.dtype == np.uint8
    # RGB, not OpenCV's BGR: the background is gray, the face's skin has more red than blue
    skin = frames[0].image[15 + FACE // 2, 5 + FACE // 2].astype(int)
    assert skin[0] > skin[2], skin


def test_csv_table_plot_only_when_asked_and_every(clip, checkpoint, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main([str(clip), "--checkpoint", str(checkpoint), "--csv", "--every", "2", "--no-progress"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines[0].split(",")
    assert header[:9] == ["time", "frame", "face", "x", "y", "w", "h", "label", "probability"]
    assert header[9:] == [f"p_{c}" for c in minivit.data.LABELS]
    rows = [dict(zip(header, line.split(","))) for line in lines[1:]]
    assert {int(r["frame"]) for r in rows} == set(range(0, FRAMES, 2))
    assert all(float(r["time"]) == pytest.approx(int(r["frame"]) / FPS) for r in rows)
    assert all(sum(float(r[f"p_{c}"]) for c in minivit.data.LABELS) == pytest.approx(1, abs=1e-4) for r in rows)
    assert {r["face"] for r in rows if r["x"]} >= {"1", "2"}
    assert list(tmp_path.iterdir()) == []  # nothing written that was not asked for

    # the same command again in the same folder: nothing of the first run is in its way
    assert run(main, [str(clip), "--checkpoint", str(checkpoint), "--csv", "--every", "2", "--no-progress"]) == 0
    assert capsys.readouterr().out.splitlines() == lines
    # a plot when asked for; asked for again, the file is kept unless --overwrite says otherwise
    assert main([str(clip), "--checkpoint", str(checkpoint), "--every", "5", "--plot", "p.png", "--no-progress"]) == 0
    assert (tmp_path / "p.png").is_file() and "plot: p.png" in capsys.readouterr().err
    assert run(main, [str(clip), "--checkpoint", str(checkpoint), "--plot", "p.png", "--no-progress"]) == 2
    assert "p.png: file exists (pass --overwrite" in capsys.readouterr().err
    (tmp_path / "p.png").unlink()
    assert main([str(clip), "--checkpoint", str(checkpoint), "--fps", "5", "--no-progress"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:4] == ["time", "face", "box", "expression"]
    assert table[1].startswith("0.00s  ") and any(line.startswith("0.20s  ") for line in table)
    assert not any(line.startswith("0.10s") for line in table)  # 5 frames a second of a 10 fps video
    assert not list(tmp_path.glob("*.png"))


def test_progress_bar_on_long_clips_and_no_progress_silences_it(clip, checkpoint, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(video.predict, "PROGRESS_MIN_FRAMES", 10)  # our 30-frame clip counts as long
    monkeypatch.setenv("MINIVIT_PROGRESS", "always")  # capsys is no terminal: bars only when asked for
    assert main([str(clip), "--checkpoint", str(checkpoint), "--every", "5"]) == 0
    err = capsys.readouterr().err
    assert "video: 100%" in err and f"{FRAMES}/{FRAMES}" in err
    assert main([str(clip), "--checkpoint", str(checkpoint), "--every", "5", "--no-progress"]) == 0
    assert "video:" not in capsys.readouterr().err


def test_the_tracker_rule():
    t = video.FaceTracker()
    assert t.update([(0, 0, 40, 40)], 0.0) == [1]
    assert t.update([(8, 0, 40, 40)], 0.1) == [1]  # IoU 0.67: the same face, moved
    assert t.update([(30, 0, 40, 40)], 0.2) == [2]  # IoU 0.14 with face 1's last box: a new face
    assert t.update([(100, 100, 40, 40), (32, 2, 40, 40)], 0.3) == [3, 2]  # order of the boxes does not matter
    # face 1 unseen since 0.1 s: still matched at 1.1 s (a gap of exactly MAX_GAP), gone after it
    assert t.update([(8, 0, 40, 40)], 1.1) == [1]
    assert t.update([(8, 0, 40, 40)], 2.2) == [4]  # 1.1 s later: a new face, id 1 is never given again
    assert t.update([], 2.3) == [] and t.next_id == 5

    # greedy by IoU, highest first: the box nearest face 1 gets id 1 even when listed second
    t = video.FaceTracker()
    t.update([(0, 0, 40, 40)], 0.0)
    assert t.update([(16, 0, 40, 40), (2, 0, 40, 40)], 0.1) == [2, 1]
    assert video.iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0 and video.iou((0, 0, 10, 10), (10, 0, 10, 10)) == 0.0


def test_a_failed_run_leaves_no_annotated_video(clip, checkpoint, tmp_path):
    predictor = minivit.Predictor.from_checkpoint(checkpoint, device="cpu")
    calls = []

    def failing_predict(images, names=None):
        calls.append(len(images))
        if len(calls) == 2:
            raise RuntimeError("out of memory")
        return minivit.Predictor.predict(predictor, images, names=names)

    predictor.predict = failing_predict
    out = tmp_path / "labelled.mp4"
    with video.VideoReader(clip) as reader, pytest.raises(RuntimeError, match="out of memory"):
        video.predict_video(predictor, reader, annotate=out, progress=False)
    assert calls == [8, 8] and list(tmp_path.iterdir()) == []  # neither the video nor its temp file


def test_bad_video_options_are_one_line_before_any_work(clip, checkpoint, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    photo = tmp_path / "photo.png"
    Image.fromarray(np.zeros((60, 60, 3), np.uint8)).save(photo)
    existing = tmp_path / "keep.mp4"
    existing.write_bytes(b"precious")
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(clip.read_bytes()[:5000])  # the index (moov) is at the end of the file: gone
    ck = ["--checkpoint", str(checkpoint)]
    cases = [
        ([str(clip), *ck, "--every", "0"], "argument --every: must be an integer >= 1"),
        ([str(clip), *ck, "--fps", "-2"], "argument --fps: must be a finite number > 0"),
        ([str(clip), *ck, "--fps", "2", "--every", "3"], "not allowed with argument"),
        ([str(clip), *ck, "--annotate", "out.avi"], "--annotate out.avi: must end in .mp4"),
        ([str(clip), *ck, "--annotate", str(existing)], "keep.mp4: file exists (pass --overwrite"),
        ([str(clip), *ck, "--annotate", str(clip), "--overwrite"], "is the video being read"),
        ([str(clip), *ck, "--plot", "faces.jpg"], "--plot faces.jpg: must end in .png"),
        ([str(clip), str(photo), *ck], "a video is predicted on its own, but the paths name 2"),
        ([str(photo), *ck, "--every", "2"], "--every applies to a video"),
        ([str(photo), *ck, "--plot", "p.png"], "--plot applies to a video"),
        ([str(tmp_path / "gone.mp4"), *ck], "gone.mp4: no such file"),
        ([str(cut), *ck], "cut.mp4: not a video OpenCV can read"),
    ]
    for argv, message in cases:
        with pytest.raises(SystemExit) as e:
            raise SystemExit(run(main, argv))
        err = capsys.readouterr().err
        assert e.value.code == 2 and message in err and len(err.strip().splitlines()) == 1, (argv, err)
    assert existing.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.mp4", "keep.mp4", "photo.png"]  # nothing written


def test_files_that_are_not_readable_videos_are_one_line_in_a_real_process(clip, checkpoint, tmp_path):
    """A text file named .mp4 and an AVI whose codec FFmpeg does not know: exit 2 and one line on
    stderr naming the file -- no FFmpeg or OpenCV log lines beside it, nothing on stdout."""
    (tmp_path / "notes.mp4").write_text("this is a text file renamed .mp4\n")
    writer = cv2.VideoWriter(str(tmp_path / "mjpg.avi"), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (64, 48))
    for i in range(3):
        writer.write(np.full((48, 64, 3), 60 * i, np.uint8))
    writer.release()
    data = (tmp_path / "mjpg.avi").read_bytes()
    assert data.count(b"MJPG") >= 1
    (tmp_path / "unknown_codec.avi").write_bytes(data.replace(b"MJPG", b"ZZZZ"))  # a codec no FFmpeg has
    env = {k: v for k, v in os.environ.items() if k != "OPENCV_FFMPEG_LOGLEVEL"}
    env.update(PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1")
    names = ["notes.mp4", "unknown_codec.avi"]
    procs = {name: subprocess.Popen([sys.executable, "-m", "minivit.predict", name, "--checkpoint", str(checkpoint)],
                                    cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name in names}
    for name, p in procs.items():
        out, err = p.communicate(timeout=120)
        assert p.returncode == 2 and out == "", (name, p.returncode, out, err)
        assert err.splitlines() == [f"error: {name}: not a video OpenCV can read (not a video file, or a container "
                                    f"or codec its FFmpeg cannot decode)"], err
    assert not list(tmp_path.glob("*.png"))  # no plot of nothing
