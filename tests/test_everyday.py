"""Everyday use: one ``minivit`` command, history.csv and TensorBoard logs, runs from a config file,
help text on every option, small report pictures, and messages that name the flags people type."""

import argparse
import csv
import importlib
import importlib.metadata
import io
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import minivit
from minivit.__main__ import build_parser as minivit_parser
from minivit.__main__ import main as minivit_main
from minivit.commands import COMMANDS, command as command_module
from minivit.common.cli import run
from minivit.train import TrainConfig, train
from minivit.commands.train import main as train_main

REPO = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", COLUMNS="100")
# a ~11k-parameter model on 140 synthetic faces at 16x16: 20 steps an epoch, a second an epoch on a CPU
TINY = dict(data="synthetic", synthetic_samples=140, image_size=16, batch_size=7, model="Ti/4",
            model_overrides=dict(dim=32, depth=1, heads=2, mlp_dim=64), device="cpu", compile="no",
            progress=False, log=False)
TINY_FLAGS = ["--synthetic-samples", "140", "--image-size", "16", "--batch-size", "7", "--model", "Ti/4",
              "--dim", "32", "--depth", "1", "--heads", "2", "--mlp-dim", "64", "--device", "cpu", "--compile",
              "no", "--no-progress"]


def command(capsys, argv, main=train_main):
    """(exit code, stdout, stderr) of a command run in this process, as ``python -m`` runs it."""
    capsys.readouterr()
    try:
        code = run(main, [str(a) for a in argv])
    except SystemExit as e:  # argparse exits from inside main
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code, err, *names):
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (code, err)
    assert "Traceback" not in err
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


def py(*argvs, python=True):
    """Run ``python <argv>`` (``<argv>`` itself without ``python``) for each argv at once, in the checkout:
    [(returncode, stdout, stderr)] in order."""
    procs = [subprocess.Popen([*([sys.executable] if python else []), *map(str, argv)], cwd=REPO, env=ENV,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for argv in argvs]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        results.append((p.returncode, out, err))
    return results


# -- one command ------------------------------------------------------------------------------------------

def test_minivit_help_lists_every_command_with_a_line_each():
    ((code, out, err),) = py(["-m", "minivit", "--help"])
    assert code == 0, err
    assert out.startswith("usage: minivit ")
    for name, about in COMMANDS.items():
        assert any(line.split() == [name, *about.split()] for line in out.splitlines()), (name, out)
    assert "--version" in out


def normalised(text: str, name: str) -> str:
    """Help text with the command's names (either spelling: a description may quote both) taken out and
    its line wrapping undone (a longer name wraps the usage line elsewhere)."""
    return " ".join(text.replace(f"python -m minivit.{name}", "PROG").replace(f"minivit {name}", "PROG").split())


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_subcommand_help_is_the_modules_help(name):
    """`minivit <name> --help` is `python -m minivit.<name> --help` but for the name it gives itself."""
    (code_a, short, err_a), (code_b, long, err_b) = py(["-m", "minivit", name, "--help"],
                                                       ["-m", f"minivit.{name}", "--help"])
    assert code_a == code_b == 0, (err_a, err_b)
    assert short.startswith(f"usage: minivit {name} ") and long.startswith(f"usage: python -m minivit.{name} ")
    assert normalised(short, name) == normalised(long, name)


def test_version_and_unknown_command():
    (code, out, err), (code_bad, out_bad, err_bad), (code_opt, _, err_opt) = py(
        ["-m", "minivit", "--version"], ["-m", "minivit", "frobnicate", "--lr", "1"],
        ["-m", "minivit", "train", "--lr", "-1"])
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert code == 0 and out.strip() == f"minivit {minivit.__version__}" == f"minivit {pyproject['project']['version']}"
    assert out_bad == ""
    one_line_error(code_bad, err_bad, "frobnicate", "train")  # the unknown command, and the known ones
    one_line_error(code_opt, err_opt, "--lr")  # a command's own one-line error, through minivit


def test_console_scripts_run():
    """The scripts pip installs from pyproject.toml's [project.scripts] start and answer: `minivit --version`,
    `minivit-convert` with a bad option (one line, exit 2)."""
    scripts = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="console_scripts")
               if ep.dist is not None and ep.dist.name == "minivit"}
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    if scripts != declared:
        pytest.skip(f"the installed scripts {scripts} are not this checkout's {declared}: pip install -e . first")
    bin_dir = Path(sys.executable).parent
    (code, out, err), (code_c, _, err_c) = py([bin_dir / "minivit", "--version"],
                                              [bin_dir / "minivit-convert", "x.npz", "--tolerance", "0"], python=False)
    assert code == 0 and out.strip() == f"minivit {minivit.__version__}", err
    one_line_error(code_c, err_c, "--tolerance")


def test_dispatch_names_the_command_in_its_usage(capsys):
    """In this process: the table's modules exist, each takes prog=, and its errors keep exit 2."""
    for name in COMMANDS:
        assert command_module(name).build_parser().prog == f"python -m minivit.{name}", name
        assert command_module(name).build_parser(f"minivit {name}").prog == f"minivit {name}"
    code, _, err = command(capsys, ["evaluate", "--checkpoint", "x", "--batch-size", "0"], main=minivit_main)
    one_line_error(code, err, "--batch-size")


def all_parsers():
    yield "minivit", minivit_parser()
    for name in COMMANDS:
        yield name, command_module(name).build_parser()


def test_every_option_of_every_command_has_help_text():
    missing = []

    def walk(parser, where):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub, subparser in action.choices.items():
                    walk(subparser, f"{where} {sub}")
                continue
            if action.help is argparse.SUPPRESS:
                continue
            if not (action.help or "").strip():
                missing.append(f"{where} {'/'.join(action.option_strings) or action.dest}")

    for where, parser in all_parsers():
        walk(parser, where)
    assert not missing, f"options without help text: {missing}"


# -- logs people already read -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def logged_run(tmp_path_factory):
    """A finished two-epoch run with --ema and --tensorboard."""
    pytest.importorskip("tensorboard", reason="the tensorboard extra (in the test extra)")
    out = tmp_path_factory.mktemp("logged") / "run"
    train(TrainConfig(**TINY, epochs=2, ema=0.9, tensorboard=True, out=str(out)))
    return out


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def events(run_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def test_history_csv_holds_every_epoch_as_history_json(logged_run):
    rows, history = read_csv(logged_run / "history.csv"), json.loads((logged_run / "history.json").read_text())
    assert list(rows[0]) == ["epoch", "step", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "val_macro_f1",
                             "val_ema_loss", "val_ema_acc", "val_ema_macro_f1", "epoch_seconds", "img_per_s"]
    assert [int(r["epoch"]) for r in rows] == [1, 2] and [int(r["step"]) for r in rows] == [20, 40]
    for row, saved in zip(rows, history):
        for column, text in row.items():
            assert float(text) == saved[column], column  # the same number, written exactly
        assert float(row["epoch_seconds"]) > 0 and float(row["img_per_s"]) > 0


def test_history_csv_without_ema_has_no_ema_columns(tmp_path):
    train(TrainConfig(**TINY, epochs=1, out=str(tmp_path / "run")))
    rows = read_csv(tmp_path / "run" / "history.csv")
    assert len(rows) == 1 and not any("ema" in column for column in rows[0])
    assert not (tmp_path / "run" / "tensorboard").exists()  # off unless asked for


def test_tensorboard_events_read_back_equal_history_csv(logged_run):
    acc = events(logged_run)
    rows = read_csv(logged_run / "history.csv")
    scalars = set(acc.Tags()["scalars"])
    for column in rows[0]:
        if column == "step":
            continue
        logged = {e.step: e.value for e in acc.Scalars(f"epoch/{column}")}
        assert logged == pytest.approx({int(r["step"]): float(r[column]) for r in rows}, rel=1e-6), column
    assert {"step/train_loss", "step/lr"} <= scalars
    losses = acc.Scalars("step/train_loss")
    assert [e.step for e in losses] == [10, 20, 30, 40]  # every 10 steps, at the global step
    # each value is the mean of its 10 steps: two of them average to the epoch's train loss
    for epoch, row in enumerate(rows):
        window = [e.value for e in losses[2 * epoch:2 * epoch + 2]]
        assert np.mean(window) == pytest.approx(float(row["train_loss"]), rel=1e-5)
    images = set(acc.Tags()["images"])
    assert {"report/confusion_matrix", "report/test_confusion_matrix", "report/attention_maps",
            "report/curves"} <= images
    shown = acc.Images("report/attention_maps")[-1]
    assert (shown.width, shown.height) == Image.open(logged_run / "attention_maps.png").size


def test_resume_continues_history_csv_and_events_without_repeats(tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard extra (in the test extra)")
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    train(TrainConfig(**TINY, epochs=2, tensorboard=True, out=str(whole)))
    stopped = train(TrainConfig(**TINY, epochs=2, tensorboard=True, out=str(broken), stop_after=35))
    assert stopped["interrupted"]  # mid-epoch 2: events up to step 30 were logged, the resume point is step 20
    train(TrainConfig(**TINY, epochs=2, tensorboard=True, out=str(broken), resume=str(broken)))
    rows, reference = read_csv(broken / "history.csv"), read_csv(whole / "history.csv")
    assert [r["epoch"] for r in rows] == ["1", "2"]
    timing = ("epoch_seconds", "img_per_s")
    assert [{k: v for k, v in r.items() if k not in timing} for r in rows] == \
        [{k: v for k, v in r.items() if k not in timing} for r in reference]  # resume is exact
    acc, ref = events(broken), events(whole)
    for tag in ("step/train_loss", "step/lr", "epoch/train_loss", "epoch/val_acc"):
        steps = [e.step for e in acc.Scalars(tag)]
        assert steps == sorted(set(steps)), (tag, steps)  # no step twice
        assert steps == [e.step for e in ref.Scalars(tag)], tag
        assert [e.value for e in acc.Scalars(tag)] == pytest.approx([e.value for e in ref.Scalars(tag)], rel=1e-6), tag
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    first, second = [list(EventFileLoader(str(f)).Load())
                     for f in sorted((broken / "tensorboard").glob("events.out.tfevents.*"))]  # one per process
    assert max(e.step for e in first) == 30  # the interrupted process logged past its resume point (step 20) ...
    starts = [e.step for e in second if e.HasField("session_log") and e.session_log.status == e.session_log.START]
    assert starts == [21]  # ... and the resumed one purges from step 21 on, for TensorBoard's every reader


def test_tensorboard_without_the_package_is_one_line_before_any_work(tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    code, _, err = command(capsys, [*TINY_FLAGS, "--tensorboard", "--out", tmp_path / "run"])
    one_line_error(code, err, "--tensorboard", "pip install 'minivit[tensorboard]'")
    assert not (tmp_path / "run").exists()


def test_overwrite_removes_the_old_runs_events(logged_run, tmp_path):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(logged_run, run_dir)
    old = sorted((run_dir / "tensorboard").iterdir())
    train(TrainConfig(**TINY, epochs=1, tensorboard=True, out=str(run_dir), overwrite=True))
    new = sorted((run_dir / "tensorboard").iterdir())
    assert len(new) == 1 and new[0] not in old
    assert [r["epoch"] for r in read_csv(run_dir / "history.csv")] == ["1"]


# -- runs from a file -------------------------------------------------------------------------------------

def metrics_of(run_dir: Path) -> dict:
    m = json.loads((run_dir / "metrics.json").read_text())
    return {k: m[k] for k in ("accuracy", "macro_f1", "loss", "confusion_matrix")} | {
        "test": {k: m["test"][k] for k in ("accuracy", "macro_f1", "loss", "confusion_matrix")}}


def train_fields(run_dir: Path) -> dict:
    return json.loads((run_dir / "config.json").read_text())["train"]


@pytest.fixture(scope="module")
def source_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("source") / "a"
    code = run(train_main, [*TINY_FLAGS, "--epochs", "2", "--seed", "3", "--out", str(out)])
    assert code == 0
    return out


def test_config_file_repeats_the_run_exactly(source_run, tmp_path, capsys):
    code, out, err = command(capsys, ["--config", source_run / "config.json", "--out", tmp_path / "b"])
    assert code == 0, err
    assert metrics_of(tmp_path / "b") == metrics_of(source_run)
    same = {k: v for k, v in train_fields(source_run).items() if k != "out"}
    assert {k: v for k, v in train_fields(tmp_path / "b").items() if k != "out"} == same
    # a run folder means its config.json
    code, _, err = command(capsys, ["--config", source_run, "--out", tmp_path / "c"])
    assert code == 0 and metrics_of(tmp_path / "c") == metrics_of(source_run), err


def test_flags_override_the_config_file(source_run, tmp_path, capsys):
    code, _, err = command(capsys, ["--config", source_run / "config.json", "--out", tmp_path / "d", "--epochs", "1",
                                    "--lr", "0.01", "--dim", "16"])
    assert code == 0, err
    fields, source = train_fields(tmp_path / "d"), train_fields(source_run)
    assert (fields["epochs"], fields["lr"], fields["model_overrides"]["dim"]) == (1, 0.01, 16)
    changed = {k for k in fields if fields[k] != source[k]}
    assert changed == {"epochs", "lr", "model_overrides", "out"}
    assert {k: v for k, v in fields["model_overrides"].items() if k != "dim"} == \
        {k: v for k, v in source["model_overrides"].items() if k != "dim"}


def test_a_flat_yaml_file_sets_trainconfig_fields(tmp_path, capsys, monkeypatch):
    pytest.importorskip("yaml", reason="the config extra (in the test extra)")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run.yaml").write_text(
        "# a hand-written run\n"
        "synthetic_samples: 140\nimage_size: 16\nbatch_size: 7\nmodel: Ti/4\n"
        "model_overrides: {dim: 32, depth: 1, heads: 2, mlp_dim: 64}\n"
        "lr: 1e-3   # YAML 1.1 reads this as text; minivit reads it as the number it is\n"
        "epochs: 1\ndevice: cpu\ncompile: 'no'\nprogress: false\nout: runs/from-yaml\n")
    code, _, err = command(capsys, ["--config", "run.yaml"])
    assert code == 0, err
    fields = train_fields(tmp_path / "runs" / "from-yaml")  # a flat file's out is read
    assert fields["lr"] == 0.001 and fields["epochs"] == 1 and fields["model_overrides"]["mlp_dim"] == 64
    assert fields["weight_decay"] == TrainConfig().weight_decay  # the rest: the synthetic profile's


def test_yaml_without_pyyaml_is_one_line_naming_the_extra(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "yaml", None)  # import yaml raises ImportError
    (tmp_path / "run.yaml").write_text("epochs: 1\n")
    code, _, err = command(capsys, ["--config", tmp_path / "run.yaml", "--out", tmp_path / "run"])
    one_line_error(code, err, "run.yaml", "pip install 'minivit[config]'")
    assert not (tmp_path / "run").exists()


# -- small pictures ---------------------------------------------------------------------------------------

REPORT_PNGS = ("curves.png", "confusion_matrix.png", "test_confusion_matrix.png", "attention_maps.png")
BUDGET = 150 * 1024


def test_report_pictures_of_a_small_run_are_small_and_show_something(logged_run):
    """Under the budget, and pictures: a blank or flat PNG would be small too. Each has ink on at least 2%
    of its pixels (darker than the light background) in many grey levels (text, lines, heat maps)."""
    for name in REPORT_PNGS:
        size = (logged_run / name).stat().st_size
        with Image.open(logged_run / name) as im:
            gray = np.asarray(im.convert("L"))
        ink, levels = (gray < 200).mean(), len(np.unique(gray))
        assert size < BUDGET and min(gray.shape) > 300 and ink > 0.02 and levels > 64, (name, size, ink, levels)


def test_attention_grid_of_sixteen_photos_is_small_and_shows_the_input(tmp_path):
    """Sixteen real photo crops (scikit-image's camera man and astronaut, 48x48 gray, as FER2013's faces)
    with smooth heat maps: under the budget, the input panels still the input, pixel for pixel."""
    skimage_data = pytest.importorskip("skimage.data", reason="the test photos come from scikit-image")
    from minivit.evaluate.plots import attention_grid_png

    photos = [skimage_data.camera(), np.asarray(Image.fromarray(skimage_data.astronaut()).convert("L"))]
    rng = np.random.default_rng(0)
    faces = []
    for k in range(16):
        photo = photos[k % 2]
        y, x = rng.integers(0, photo.shape[0] - 200, 2)
        faces.append(np.asarray(Image.fromarray(photo[y:y + 200, x:x + 200]).resize((48, 48), Image.BILINEAR)))
    heats = [rng.random((6, 6)) for _ in range(16)]
    captions = [[("true: happy", "black"), ("pred: sad", "red")]] * 16
    path = attention_grid_png(faces, heats, captions, tmp_path / "maps.png", title="Attention maps")
    assert path and os.path.getsize(path) < BUDGET, os.path.getsize(path)
    arr = np.asarray(Image.open(path).convert("L")).astype(int)
    # the first input panel (cell 144 px = 3x the face): find it by its top-left pixel block and compare
    expected = np.kron(faces[0], np.ones((3, 3), int))  # (144, 144)
    best = min(((np.abs(arr[y:y + 144, x:x + 144] - expected).mean(), y, x) for y in range(40, 140)
                for x in range(0, 40)), key=lambda t: t[0])
    assert best[0] < 3.0, best  # within a few grey levels of the input: a 256-colour palette, nothing worse


# -- messages name the flags --------------------------------------------------------------------------------

def test_ferplus_without_images_names_the_flag(tmp_path, capsys):
    from minivit.data.labels import FERPLUS_COLUMNS

    header = "Usage,Image name," + ",".join(FERPLUS_COLUMNS)
    rows = "".join(f"Training,fer{i:07d}.png,{','.join(['10'] + ['0'] * (len(FERPLUS_COLUMNS) - 1))}\n"
                   for i in range(7))
    (tmp_path / "fer2013new.csv").write_text(header + "\n" + rows)
    code, _, err = command(capsys, [*TINY_FLAGS, "--data", tmp_path / "fer2013new.csv", "--out", tmp_path / "run"])
    line = one_line_error(code, err, "fer2013new.csv", "--ferplus-images")
    assert "ferplus_images=" not in line


def test_label_mode_on_another_format_names_the_flag(tmp_path, capsys):
    pixels = " ".join(["7"] * 48 * 48)
    rows = "".join(f"{i},{pixels},PublicTest\n" for i in range(7))
    (tmp_path / "fer.csv").write_text("emotion,pixels,Usage\n" + rows)
    from minivit.checkpoints import save_checkpoint
    from minivit.commands.evaluate import main as evaluate_main

    save_checkpoint(minivit.create_model("Ti/16", image_size=16, patch_size=8, dim=16, depth=1, heads=2, mlp_dim=32,
                                         num_classes=7), tmp_path / "tiny.safetensors")
    code, _, err = command(capsys, ["--checkpoint", tmp_path / "tiny.safetensors", "--data", tmp_path / "fer.csv",
                                    "--label-mode", "soft", "--out", tmp_path / "report"], main=evaluate_main)
    line = one_line_error(code, err, "--label-mode", "fer.csv")
    assert line.startswith("error: --label-mode: for FER+ label files") and "label_mode=" not in line


def test_video_prints_the_provenance_note(logged_run, tmp_path, capsys):
    cv2 = pytest.importorskip("cv2", reason="videos are read with OpenCV (the 'faces' extra)")
    clip = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 5.0, (64, 48))
    for i in range(5):
        writer.write(np.full((48, 64, 3), 40 * i, np.uint8))
    writer.release()
    code, out, err = command(capsys, ["predict", clip, "--checkpoint", logged_run, "--no-detect",
                                      "--no-progress", "--json"], main=minivit_main)
    assert code == 0, err
    note = next(line for line in err.splitlines() if line.startswith("note: "))
    assert "the model was trained on synthetic faces (never a real one)" in note and "this video: real faces" in note
    assert json.loads(out)["frames"] == 5


def test_evaluate_and_predict_write_no_bars_into_a_redirected_log(logged_run, tmp_path):
    """One rule for every command (minivit.common.console): bars on a terminal, or when asked for; a log
    redirected to a file or a pipe gets lines only. Here stdout and stderr are pipes."""
    faces = tmp_path / "faces"
    faces.mkdir()
    for i in range(12):  # 10 or more files: predict's bar would be due
        Image.fromarray(np.full((16, 16, 3), 20 * i, np.uint8)).save(faces / f"{i}.png")
    evaluate = ["-m", "minivit", "evaluate", "--checkpoint", logged_run, "--batch-size", "8", "--overwrite"]
    predict = ["-m", "minivit", "predict", faces, "--checkpoint", logged_run, "--no-detect", "--csv"]
    (code_e, _, err_e), (code_p, _, err_p) = py(evaluate, predict)
    assert code_e == 0 and code_p == 0, err_e + err_p
    assert "eval:" not in err_e and "predict:" not in err_p and "it/s" not in err_e + err_p, err_e + err_p
    ENV["MINIVIT_PROGRESS"] = "always"  # asked for: drawn into the pipe all the same
    try:
        ((code, _, err),) = py(predict)
    finally:
        del ENV["MINIVIT_PROGRESS"]
    # (text=True reads the bar's carriage returns as newlines: the bar is its count reaching 12 of 12)
    assert code == 0 and "predict: 100%" in err and "12/12" in err


def test_a_printed_line_goes_out_in_one_write():
    """Under torchrun the ranks share one pipe, and Python may be unbuffered (PYTHONUNBUFFERED): a line written
    as its text and then its newline lets another rank's line in between ("...--resume runrank 1: ...").
    console.write hands the stream the whole line, newline included, at once, and flushes it."""
    from minivit.common.console import write

    class Recorder(io.StringIO):
        def __init__(self):
            super().__init__()
            self.writes, self.flushes = [], 0

        def write(self, text):
            if text:
                self.writes.append(text)
            return super().write(text)

        def flush(self):
            self.flushes += 1

    stream = Recorder()
    write("stopped after 3 steps; continue with --resume run", file=stream)
    assert stream.writes == ["stopped after 3 steps; continue with --resume run\n"]
    assert stream.flushes >= 1
