"""minivit's own bad-input corpus: every command, fed what users really feed it.

Each case builds its bad input in a fresh folder, runs a command line in-process (``main(argv)``
through ``minivit.common.cli.run``, as ``python -m`` does) and asserts the contract of every minivit
command:

- exit code 2 (the web upload: a 4xx answer, and the server still healthy afterwards);
- no traceback anywhere in stdout/stderr;
- stderr ends in one ``error: ...`` line that names the offending file or option;
- every file in the case's folder (and the shared checkpoints) is byte-for-byte unchanged.

A handful of cases also run as real subprocesses (one per command family) to prove the exit code
and the absence of a traceback end to end. ``test_option_fuzz_*`` throws random option values at
the parsers: each is accepted within its documented range or refused with exit 2 and one line.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import os
import re
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from minivit import ViT, ViTConfig
from minivit.common import cli
from minivit.checkpoints import save_checkpoint
from minivit.checkpoints.writing import write_safetensors
from minivit.data import LABELS

REPO = Path(__file__).resolve().parents[1]
TINY = dict(image_size=16, patch_size=8, dim=16, depth=1, heads=2, mlp_dim=32, gelu="tanh")


# -- the commands, called as `python -m` calls them -------------------------------------------------

def _train(argv):
    from minivit.commands.train import main
    return main(argv)


def _evaluate(argv):
    from minivit.commands.evaluate import main
    return main(argv)


def _convert(argv):
    from minivit.commands.convert import main
    return main(argv)


def _predict(argv):
    from minivit.commands.predict import main
    return main(argv)


def _attention(argv):
    from minivit.commands.attention import main
    return main(argv)


def _export(argv):
    from minivit.commands.export import main
    return main(argv)


def _hub(argv):
    from minivit.commands.hub import main
    return main(argv)


def _serve_parse(argv):
    # parsing only: serve's main would start a web server once the options are accepted
    from minivit.commands.serve import build_parser
    build_parser().parse_args(argv)
    return 0


MAINS = {"train": _train, "evaluate": _evaluate, "convert": _convert, "predict": _predict,
         "attention": _attention, "export": _export, "hub": _hub, "serve": _serve_parse}


def run_cli(name: str, argv: list[str], capsys) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``python -m minivit.<name> argv``, in this process."""
    capsys.readouterr()
    try:
        code = cli.run(MAINS[name], [str(a) for a in argv])
    except SystemExit as e:  # argparse exits from inside main
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, out, err, names, expect_code=2):
    """Exit ``expect_code``, no traceback, and stderr's last line is ``error: ...`` naming each of ``names``."""
    both = out + err
    assert code == expect_code, f"exit code {code}, expected {expect_code}\nstdout: {out}\nstderr: {err}"
    assert "Traceback" not in both, both
    assert not any(line.lstrip().startswith('File "') for line in both.splitlines()), both
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines, f"nothing on stderr; stdout: {out}"
    last = lines[-1]
    assert last.startswith("error: "), f"last stderr line is not an error line: {last!r}\n{err}"
    for name in names:
        assert name in last, f"{name!r} not named in {last!r}"
    return last


def tree_hashes(*folders: Path) -> dict[str, str]:
    """{path: sha256} of every file under the folders (what a bad input must leave untouched)."""
    found = {}
    for folder in folders:
        for p in sorted(Path(folder).rglob("*")):
            if p.is_file():
                found[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return found


# -- shared inputs: checkpoints and a good image -------------------------------------------------------

def tiny_model(num_classes=7, **kw) -> ViT:
    torch.manual_seed(0)
    return ViT(ViTConfig(**{**TINY, "num_classes": num_classes, **kw})).eval()


@pytest.fixture(scope="module")
def fx(tmp_path_factory) -> dict:
    """Read-only inputs every case may point at: checkpoints, a run folder, a good image and CSV rows."""
    d = tmp_path_factory.mktemp("shared")
    save_checkpoint(tiny_model(7), d / "seven.safetensors")
    save_checkpoint(tiny_model(10), d / "ten.safetensors")
    run = d / "run"
    run.mkdir()
    save_checkpoint(tiny_model(7), run / "best.safetensors")
    from minivit.train import TrainConfig
    train_fields = TrainConfig(synthetic_samples=14, image_size=16, epochs=1, batch_size=7).to_dict()
    (run / "config.json").write_text(json.dumps({"train": train_fields}))
    Image.fromarray((np.arange(48 * 48) % 251).astype(np.uint8).reshape(48, 48)).save(d / "face.png")
    return {"dir": d, "seven": d / "seven.safetensors", "ten": d / "ten.safetensors", "run": run,
            "face": d / "face.png", "train_fields": train_fields, "real_run": _real_run(tmp_path_factory)}


def _real_run(tmp_path_factory) -> Path:
    """A tiny finished run made by the training loop itself, saved with overwrite=True (--overwrite)."""
    from minivit.train import TrainConfig, train
    out = tmp_path_factory.mktemp("real") / "run"
    train(TrainConfig(model="Ti/16", model_overrides=dict(patch_size=8, dim=16, depth=1, heads=2, mlp_dim=32),
                      image_size=16, synthetic_samples=14, batch_size=7, epochs=1, warmup_epochs=0, out=str(out),
                      overwrite=True, progress=False, log=False, device="cpu", compile="no"))
    return out


# -- makers of bad files -------------------------------------------------------------------------------

def good_jpeg_bytes(size=48) -> bytes:
    import io
    buf = io.BytesIO()
    Image.fromarray((np.arange(size * size) % 253).astype(np.uint8).reshape(size, size)).save(buf, "JPEG")
    return buf.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A valid PNG signature and IHDR claiming width x height 8-bit gray, with a tiny IDAT: a bomb header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


BAD_IMAGES = {
    # name -> (file name, bytes, what the error line must name)
    "text_renamed_jpg": ("notes.jpg", b"these are my notes, not a photo\n"),
    "truncated_jpeg": ("cut.jpg", None),  # filled in lazily: half of a real JPEG
    "png_bomb_header": ("bomb.png", None),  # 30000x30000
    "zero_byte": ("empty.jpg", b""),
    "png_broken_chunk": ("broken.png", None),
}


def bad_image_bytes(kind: str) -> tuple[str, bytes]:
    name, data = BAD_IMAGES[kind]
    if kind == "png_broken_chunk":  # the first chunk length after IHDR zeroed: Pillow raises SyntaxError
        import io
        buf = io.BytesIO()
        Image.fromarray(np.random.RandomState(0).randint(0, 255, (24, 24, 3), np.uint8)).save(buf, "PNG")
        raw = bytearray(buf.getvalue())
        raw[35] = 0
        data = bytes(raw)
    elif kind == "truncated_jpeg":
        full = good_jpeg_bytes()
        data = full[: len(full) // 2]
    elif kind == "png_bomb_header":
        data = png_claiming(30000, 30000)
    return name, data


def fer_csv(rows: int = 3, usage: str = "PublicTest") -> str:
    pixels = " ".join(str(i % 256) for i in range(48 * 48))
    return "emotion,pixels,Usage\n" + "".join(f"{i % 7},{pixels},{usage}\n" for i in range(rows))


def image_folder(root: Path, split: str = "test", bad: tuple[str, bytes] | None = None, goods: int = 2) -> Path:
    """<root>/<split>/happy/*.jpg (+ a bad file): a Kaggle-style FER2013 folder."""
    cls = root / split / "happy"
    cls.mkdir(parents=True)
    for i in range(goods):
        (cls / f"good{i}.jpg").write_bytes(good_jpeg_bytes())
    if bad:
        (cls / bad[0]).write_bytes(bad[1])
    return root


# -- the corpus ----------------------------------------------------------------------------------------

@dataclass
class Case:
    """A bad input: ``make(tmp, fx) -> (argv, names)``; ``names`` must appear in the error line."""

    kind: str
    cli: str
    make: Callable
    env: dict = field(default_factory=dict)
    chdir: bool = False
    xfail: str | None = None  # a known gap in a file this corpus's author does not own (temporary)


CASES: dict[str, Case] = {}


def case(kind: str, cli_name: str, **kw):
    def register(make):
        CASES[f"{kind}-{make.__name__}"] = Case(kind, cli_name, make, **kw)
        return make
    return register


# checkpoints (through the converter, which reads any checkpoint; a mismatch through evaluate/predict)

@case("checkpoint", "convert")
def truncated_safetensors(tmp, fx):
    p = tmp / "cut.safetensors"
    data = fx["seven"].read_bytes()
    p.write_bytes(data[: len(data) * 2 // 3])
    return [p], ["cut.safetensors"]


@case("checkpoint", "convert")
def truncated_npz(tmp, fx):
    from minivit.checkpoints import export
    full = tmp / "full.npz"
    export(tiny_model(7), full, "vit_jax")
    p = tmp / "cut.npz"
    p.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    full.unlink()
    return [p], ["cut.npz"]


@case("checkpoint", "convert")
def html_page(tmp, fx):
    p = tmp / "ViT-B_16.npz"
    p.write_text("\n <!DOCTYPE html>\n<html><head><title>Sign in - Google Drive</title></head></html>")
    return [p], ["ViT-B_16.npz", "HTML"]


@case("checkpoint", "convert")
def git_lfs_pointer(tmp, fx):
    p = tmp / "model.safetensors"
    p.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:4e0b\nsize 346000000\n")
    return [p], ["model.safetensors", "Git LFS"]


@case("checkpoint", "convert")
def pickle_npz(tmp, fx):
    p = tmp / "pickled.npz"
    np.savez(p, **{"embedding/kernel": np.array([{"a": 1}], dtype=object)})
    return [p], ["pickled.npz", "pickle"]


@case("checkpoint", "convert")
def corrupt_safetensors_header(tmp, fx):
    p = tmp / "hugelen.safetensors"
    p.write_bytes(struct.pack("<Q", 10**12) + fx["seven"].read_bytes()[8:])
    return [p], ["hugelen.safetensors", "header"]


@case("checkpoint", "convert")
def wrong_layout(tmp, fx):
    p = tmp / "resnet.npz"
    np.savez(p, **{"conv1/weight": np.zeros((3, 3), np.float32)})
    return [p], ["resnet.npz", "layout"]


@case("checkpoint", "convert")
def empty_checkpoint(tmp, fx):
    p = tmp / "zero.safetensors"
    p.write_bytes(b"")
    return [p], ["zero.safetensors", "empty"]


@case("checkpoint", "convert")
def missing_path_that_looks_local(tmp, fx):
    (tmp / "runs").mkdir()
    return ["runs/nope.safetensors"], ["runs/nope.safetensors", "no such file"]


@case("checkpoint", "convert", chdir=True)
def missing_run_folder_under_existing_parent(tmp, fx):
    (tmp / "runs").mkdir()
    return ["runs/nope"], ["runs/nope", "no such file"]


@case("checkpoint", "convert", env={"HF_HUB_OFFLINE": "1"})
def unknown_repo_id(tmp, fx):
    return ["nobody-here/no-such-vit"], ["nobody-here/no-such-vit", "Hugging Face"]


@case("checkpoint", "convert")
def convert_output_exists(tmp, fx):
    (tmp / "mine.safetensors").write_bytes(b"precious weights")
    return [fx["seven"], "-o", tmp / "mine.safetensors"], ["mine.safetensors", "--overwrite"]


@case("checkpoint", "convert")
def convert_default_output_exists(tmp, fx):
    from minivit.checkpoints import export
    export(tiny_model(7), tmp / "vit.npz", "vit_jax")
    (tmp / "vit.safetensors").write_bytes(b"an older conversion, kept")
    return [tmp / "vit.npz"], ["vit.safetensors", "--overwrite"]


@case("checkpoint", "convert")
def convert_folder_output_not_empty(tmp, fx):
    (tmp / "hf").mkdir()
    (tmp / "hf" / "config.json").write_text("{}")
    return [fx["seven"], "--to", "transformers", "-o", tmp / "hf"], ["hf", "--overwrite"]


@case("checkpoint", "evaluate")
def class_count_mismatch(tmp, fx):
    (tmp / "fer.csv").write_text(fer_csv())
    return (["--checkpoint", fx["ten"], "--data", tmp / "fer.csv", "--out", tmp / "report"],
            ["ten.safetensors", "10 classes", "7"])


@case("checkpoint", "predict")
def class_names_do_not_fit_head(tmp, fx):
    p = tmp / "named.safetensors"
    save_checkpoint(tiny_model(7), p, extra={"classes": ["a", "b", "c"]})
    return [fx["face"], "--checkpoint", p, "--no-detect"], ["named.safetensors", "3 class names"]


# images: through the data reader (evaluate --data <folder>) and the predictor (predict <file>)

def _eval_folder(kind):
    def make(tmp, fx):
        name, data = bad_image_bytes(kind)
        image_folder(tmp / "faces", bad=(name, data))
        return (["--checkpoint", fx["seven"], "--data", tmp / "faces", "--out", tmp / "report", "--no-progress"],
                [name])
    make.__name__ = f"dataset_{kind}"
    return make


def _predict_file(kind):
    def make(tmp, fx):
        name, data = bad_image_bytes(kind)
        (tmp / name).write_bytes(data)
        return [tmp / name, "--checkpoint", fx["seven"], "--no-detect"], [name]
    make.__name__ = f"predict_{kind}"
    return make


for _kind in BAD_IMAGES:
    case("image", "evaluate")(_eval_folder(_kind))
    case("prediction", "predict")(_predict_file(_kind))


@case("image", "evaluate")
def dataset_folder_without_images(tmp, fx):
    (tmp / "faces" / "test" / "happy").mkdir(parents=True)
    (tmp / "faces" / "test" / "happy" / "readme.txt").write_text("no images here")
    return (["--checkpoint", fx["seven"], "--data", tmp / "faces", "--out", tmp / "report"],
            [str(Path("faces") / "test"), "no images"])


@case("image", "attention")
def attention_on_text_file(tmp, fx):
    name, data = bad_image_bytes("text_renamed_jpg")
    (tmp / name).write_bytes(data)
    return [tmp / name, "--checkpoint", fx["seven"], "-o", tmp / "maps.png", "--no-detect"], [name]


@case("prediction", "predict")
def predict_empty_folder(tmp, fx):
    (tmp / "photos").mkdir()
    return [tmp / "photos", "--checkpoint", fx["seven"]], ["photos", "no images"]


@case("prediction", "predict")
def predict_missing_checkpoint(tmp, fx):
    return [fx["face"], "--checkpoint", tmp / "runs" / "gone", "--no-detect"], ["gone", "no such file"]


@case("prediction", "predict")
def predict_annotate_would_overwrite(tmp, fx):
    (tmp / "labelled.png").write_bytes(b"precious")
    return ([fx["face"], "--checkpoint", fx["seven"], "--annotate", tmp / "labelled.png"],
            ["--annotate", "labelled.png", "--overwrite"])


# CSVs (through evaluate --data file.csv)

def _eval_csv(tmp, fx, data: bytes, name="fer.csv"):
    (tmp / name).write_bytes(data)
    return ["--checkpoint", fx["seven"], "--data", tmp / name, "--out", tmp / "report", "--no-progress"]


@case("csv", "evaluate")
def csv_not_utf8(tmp, fx):
    data = fer_csv().encode().replace(b"PublicTest", b"Public\xe9Test", 1)
    return _eval_csv(tmp, fx, data), ["fer.csv", "UTF-8"]


@case("csv", "evaluate")
def csv_unclosed_quote(tmp, fx):
    lines = fer_csv().splitlines(keepends=True)
    lines[2] = lines[2].replace(",", ',"', 1)
    return _eval_csv(tmp, fx, "".join(lines).encode()), ["fer.csv", "quote"]


@case("csv", "evaluate")
def csv_only_header(tmp, fx):
    return _eval_csv(tmp, fx, b"emotion,pixels,Usage\n"), ["fer.csv", "no data rows"]


@case("csv", "evaluate")
def csv_bad_pixel_row(tmp, fx):
    lines = fer_csv().splitlines(keepends=True)
    lines[2] = lines[2].replace(" 7 ", " seven ", 1)
    return _eval_csv(tmp, fx, "".join(lines).encode()), ["fer.csv", "line 3", "seven"]


@case("csv", "evaluate")
def csv_wrong_column_count(tmp, fx):
    lines = fer_csv().splitlines(keepends=True)
    lines[1] = lines[1].rstrip("\n") + ",extra\n"
    return _eval_csv(tmp, fx, "".join(lines).encode()), ["fer.csv", "line 2", "fields"]


@case("csv", "train")
def train_csv_only_header(tmp, fx):
    (tmp / "fer.csv").write_text("emotion,pixels,Usage\n")
    return (["--data", tmp / "fer.csv", "--out", tmp / "run", "--epochs", "1", "--no-progress"],
            ["fer.csv", "no data rows"])


@case("csv", "evaluate")
def csv_emotion_superscript_two(tmp, fx):
    # "²".isdigit() is True and int("²") raises ValueError: a decimal-digit check, not isdigit
    lines = fer_csv().splitlines(keepends=True)
    lines[2] = "²" + lines[2][1:]
    return _eval_csv(tmp, fx, "".join(lines).encode()), ["fer.csv", "line 3", "emotion label '²'"]


@case("csv", "train")
def train_csv_emotion_superscript_two(tmp, fx):
    (tmp / "fer.csv").write_text(fer_csv(usage="Training").replace("\n1,", "\n²,", 1), encoding="utf-8")
    return (["--data", tmp / "fer.csv", "--out", tmp / "run", "--epochs", "1", "--no-progress"],
            ["fer.csv", "emotion label '²'"])


# options: every command line, each numeric option's range and each choice

OPTION_CASES = {
    # name: (cli, argv after the required ones, the option named)
    "train_lr_negative": ("train", ["--lr", "-1"], "--lr"),
    "train_lr_nan": ("train", ["--lr", "nan"], "--lr"),
    "train_lr_inf": ("train", ["--lr", "inf"], "--lr"),
    "train_drop_path_1": ("train", ["--drop-path", "1.0"], "--drop-path"),
    "train_ema_1_5": ("train", ["--ema", "1.5"], "--ema"),
    "train_batch_size_0": ("train", ["--batch-size", "0"], "--batch-size"),
    "train_img_size_0": ("train", ["--img-size", "0"], "--img-size"),
    "train_epochs_text": ("train", ["--epochs", "ten"], "--epochs"),
    "train_unknown_optimizer": ("train", ["--optimizer", "adam"], "--optimizer"),
    "train_synthetic_samples_0": ("train", ["--synthetic-samples", "0"], "--synthetic-samples"),
    "train_in_chans_2": ("train", ["--in-chans", "2"], "--in-chans"),
    "train_min_lr_above_lr": ("train", ["--lr", "1e-4", "--min-lr", "1e-3"], "--min-lr"),
    "evaluate_batch_size_0": ("evaluate", ["--checkpoint", "X", "--batch-size", "0"], "--batch-size"),
    "evaluate_unknown_split": ("evaluate", ["--checkpoint", "X", "--split", "holdout"], "--split"),
    "convert_num_classes_negative": ("convert", ["X", "--num-classes", "-1"], "--num-classes"),
    "convert_image_size_0": ("convert", ["X", "--image-size", "0"], "--image-size"),
    "convert_tolerance_nan": ("convert", ["X", "--tolerance", "nan"], "--tolerance"),
    "convert_unknown_target": ("convert", ["X", "--to", "onnx"], "--to"),
    "predict_top_k_0": ("predict", ["X", "--checkpoint", "X", "--top-k", "0"], "--top-k"),
    "predict_batch_size_0": ("predict", ["X", "--checkpoint", "X", "--batch-size", "0"], "--batch-size"),
    "predict_max_pixels_text": ("predict", ["X", "--checkpoint", "X", "--max-pixels", "lots"], "--max-pixels"),
    "attention_face_0": ("attention", ["X", "--checkpoint", "X", "-o", "m.png", "--face", "0"], "--face"),
    "export_opset_3": ("export", ["--checkpoint", "X", "--onnx", "m.onnx", "--opset", "3"], "--opset"),
    "export_tolerance_negative": ("export", ["--checkpoint", "X", "--onnx", "m.onnx", "--tolerance", "-1"],
                                  "--tolerance"),
    "hub_unknown_command": ("hub", ["fetch", "ViT-B_16"], "fetch"),
    "serve_port_70000": ("serve", ["--checkpoint", "X", "--port", "70000"], "--port"),
    "serve_max_upload_0": ("serve", ["--checkpoint", "X", "--max-upload-mb", "0"], "--max-upload-mb"),
    "serve_top_k_nan": ("serve", ["--checkpoint", "X", "--top-k", "nan"], "--top-k"),
}


def _option_case(cli_name, argv, option):
    def make(tmp, fx):
        return [str(tmp / "out") if a == "X" else a for a in argv] + (
            ["--out", tmp / "run"] if cli_name == "train" else []), [option]
    return make


for _name, (_cli, _argv, _option) in OPTION_CASES.items():
    _make = _option_case(_cli, _argv, _option)
    _make.__name__ = _name
    case("option", _cli, chdir=True)(_make)


# outputs that cannot be written: a file sits where the output's folder should be

def _blocked(tmp):
    (tmp / "notes.txt").write_text("a file, not a folder")
    return tmp / "notes.txt" / "sub"


@case("output", "attention")
def attention_output_under_a_file(tmp, fx):
    return [fx["face"], "--checkpoint", fx["seven"], "-o", _blocked(tmp) / "maps.png", "--no-detect"], ["notes.txt"]


@case("output", "predict")
def predict_annotate_under_a_file(tmp, fx):
    return [fx["face"], "--checkpoint", fx["seven"], "--annotate", _blocked(tmp) / "a.png", "--no-detect"], ["notes.txt"]


@case("output", "evaluate")
def evaluate_out_under_a_file(tmp, fx):
    (tmp / "fer.csv").write_text(fer_csv())
    return ["--checkpoint", fx["seven"], "--data", tmp / "fer.csv", "--out", _blocked(tmp)], ["--out", "notes.txt"]


@case("output", "export")
def export_onnx_under_a_file(tmp, fx):
    return ["--checkpoint", fx["seven"], "--onnx", _blocked(tmp) / "m.onnx"], ["m.onnx", "notes.txt"]


@case("output", "convert")
def convert_output_under_a_file(tmp, fx):
    return [fx["seven"], "-o", _blocked(tmp) / "m.safetensors"], ["m.safetensors", "notes.txt"]


# resume folders and run folders (the training command)

def _run_folder(tmp, fx, *, config: str | None = None, resume: bytes | None = None, best=True) -> Path:
    run = tmp / "run"
    run.mkdir()
    (run / "config.json").write_text(config if config is not None else json.dumps({"train": fx["train_fields"]}))
    if best:
        (run / "best.safetensors").write_bytes(fx["seven"].read_bytes())
    if resume is not None:
        (run / "resume.safetensors").write_bytes(resume)
    return run


@case("resume", "train")
def resume_config_not_json(tmp, fx):
    run = _run_folder(tmp, fx, config='{"train": {"lr": 0.001,', resume=fx["seven"].read_bytes())
    return ["--resume", run], ["config.json", "JSON"]


@case("resume", "train")
def resume_without_resume_file(tmp, fx):
    run = _run_folder(tmp, fx)
    return ["--resume", run, "--no-progress"], ["resume.safetensors"]


@case("resume", "train")
def resume_file_truncated(tmp, fx):
    from minivit.checkpoints.run_folder import save_resume
    model = tiny_model(7)
    save_resume(tmp / "full.safetensors", model, torch.optim.AdamW(model.parameters()), None, None,
                {"epoch": 0, "step": 1})
    data = (tmp / "full.safetensors").read_bytes()
    (tmp / "full.safetensors").unlink()
    run = _run_folder(tmp, fx, resume=data[: len(data) // 2])
    return ["--resume", run, "--no-progress"], ["resume.safetensors"]


@case("resume", "train")
def out_holds_finished_run(tmp, fx):
    run = _run_folder(tmp, fx)
    (run / "metrics.json").write_text('{"accuracy": 0.5}')
    return ["--out", run, "--epochs", "1", "--synthetic-samples", "14", "--no-progress"], ["run", "--overwrite"]


@case("resume", "train")
def out_is_an_existing_file(tmp, fx):
    (tmp / "notes.txt").write_text("my notes")
    return (["--out", tmp / "notes.txt", "--synthetic-samples", "14", "--batch-size", "7", "--epochs", "1",
             "--img-size", "16", "--patch-size", "8", "--dim", "16", "--depth", "1", "--heads", "2", "--mlp-dim", "32",
             "--no-progress"], ["notes.txt"])


@case("resume", "train")
def resume_into_other_finished_run_inherits_overwrite(tmp, fx):
    import shutil
    run = tmp / "run"
    shutil.copytree(fx["real_run"], run)
    other = tmp / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"train": fx["train_fields"]}))
    (other / "metrics.json").write_text('{"accuracy": 0.93}')
    return ["--resume", run, "--out", other, "--no-progress"], ["other", "--overwrite"]


@case("resume", "train")
def resume_config_without_train_section(tmp, fx):
    run = _run_folder(tmp, fx, config='{"model": {}}', resume=fx["seven"].read_bytes())
    return ["--resume", run], ["config.json", "train"]


# evaluation

@case("evaluation", "evaluate")
def eval_run_config_not_json(tmp, fx):
    run = _run_folder(tmp, fx, config="{oops")
    return ["--checkpoint", run], ["config.json", "JSON"]


@case("evaluation", "evaluate")
def eval_run_without_best(tmp, fx):
    run = _run_folder(tmp, fx, best=False)
    return ["--checkpoint", run], ["run", "best.safetensors"]


@case("evaluation", "evaluate")
def eval_report_would_overwrite(tmp, fx):
    (tmp / "fer.csv").write_text(fer_csv())
    (tmp / "report").mkdir()
    (tmp / "report" / "metrics.json").write_text('{"accuracy": 0.9}')
    return (["--checkpoint", fx["seven"], "--data", tmp / "fer.csv", "--out", tmp / "report"],
            ["report", "--overwrite"])


@case("evaluation", "evaluate")
def eval_checkpoint_outside_run_without_data(tmp, fx):
    return ["--checkpoint", fx["seven"]], ["--data", "seven.safetensors"]


@case("evaluation", "evaluate")
def eval_missing_dataset(tmp, fx):
    return ["--checkpoint", fx["seven"], "--data", tmp / "fer2013", "--out", tmp / "report"], ["fer2013"]


# added cases: bad config values in checkpoints, changed options on --resume, out-of-range seeds

def _hf_folder_with(tmp, **changes) -> Path:
    from minivit.checkpoints import export
    folder = tmp / "hf_model"
    export(tiny_model(7, gelu="exact"), folder, "transformers")
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, **changes}))
    return folder


@case("checkpoint", "convert")
def hf_config_hidden_size_text(tmp, fx):
    return [_hf_folder_with(tmp, hidden_size="big"), "-o", tmp / "out.safetensors"], ["hf_model", "bad config"]


@case("checkpoint", "convert")
def hf_config_layer_norm_eps_null(tmp, fx):
    return [_hf_folder_with(tmp, layer_norm_eps=None), "-o", tmp / "out.safetensors"], ["hf_model", "bad config"]


@case("checkpoint", "convert")
def minivit_metadata_out_of_range(tmp, fx):
    model = tiny_model(7)
    p = tmp / "odd.safetensors"
    write_safetensors(model.state_dict(), p, {"minivit_config": json.dumps({**model.config.to_dict(), "depth": 0})})
    return [p, "-o", tmp / "out.safetensors"], ["odd.safetensors", "depth"]


@case("checkpoint", "convert")
def scan_stacked_npz_0d(tmp, fx):
    from minivit.checkpoints import export
    export(tiny_model(7, classifier="gap"), tmp / "good.npz", "big_vision")
    with np.load(tmp / "good.npz") as z:
        arrays = {k: z[k] for k in z.files}
    (tmp / "good.npz").unlink()
    name = next(k for k in arrays if "encoderblock_0/" in k)
    arrays[name.replace("encoderblock_0/", "encoderblock/")] = np.float32(1.0)
    np.savez(tmp / "scan.npz", **arrays)
    return [tmp / "scan.npz", "-o", tmp / "out.safetensors"], ["scan.npz", "0-d"]


def _resumable_run(tmp, fx) -> Path:
    import shutil
    run = tmp / "run"
    shutil.copytree(fx["real_run"], run)
    return run


@case("resume", "train")
def resume_with_other_layer_decay(tmp, fx):
    return ["--resume", _resumable_run(tmp, fx), "--layer-decay", "0.5", "--no-progress"], ["--layer-decay", "1.0"]


@case("resume", "train")
def resume_with_other_optimizer(tmp, fx):
    return ["--resume", _resumable_run(tmp, fx), "--optimizer", "sgd", "--no-progress"], ["--optimizer", "adamw"]


@case("resume", "train")
def resume_with_other_weight_decay(tmp, fx):
    return ["--resume", _resumable_run(tmp, fx), "--weight-decay", "0.3", "--no-progress"], ["--weight-decay"]


@case("option", "train", chdir=True)
def train_seed_above_31_bits(tmp, fx):
    return ["--seed", str(2**31), "--out", tmp / "run"], ["--seed"]


@case("option", "convert", chdir=True)
def convert_seed_above_31_bits(tmp, fx):
    return [fx["seven"], "-o", tmp / "out.safetensors", "--seed", str(2**32)], ["--seed"]


# config files (train --config FILE): each bad file is one line naming it and the key, before any work

def _config(tmp, name: str, text: str, *extra) -> tuple[list, Path]:
    (tmp / name).write_text(text)
    return ["--config", tmp / name, "--out", tmp / "run", "--no-progress", *extra], tmp / name


@case("config", "train")
def config_unknown_key(tmp, fx):
    return _config(tmp, "cfg.json", '{"epochs": 1, "lrr": 0.001}')[0], ["cfg.json", "'lrr'", "did you mean lr"]


@case("config", "train")
def config_wrong_type(tmp, fx):
    return _config(tmp, "cfg.json", '{"epochs": "5"}')[0], ["cfg.json", "epochs", "integer", "'5'"]


@case("config", "train")
def config_value_out_of_range(tmp, fx):
    return _config(tmp, "cfg.json", '{"lr": -1}')[0], ["cfg.json", "lr", "> 0"]


@case("config", "train")
def config_value_not_a_choice(tmp, fx):
    return _config(tmp, "cfg.yaml", "optimizer: adam\n")[0], ["cfg.yaml", "optimizer", "adamw, sgd"]


@case("config", "train")
def config_not_a_mapping(tmp, fx):
    return _config(tmp, "cfg.json", "[1, 2]")[0], ["cfg.json", "mapping", "list"]


@case("config", "train")
def config_train_section_not_a_mapping(tmp, fx):
    return _config(tmp, "config.json", '{"train": 3}')[0], ["config.json", "train"]


@case("config", "train")
def config_bad_yaml(tmp, fx):
    return _config(tmp, "cfg.yaml", "epochs: [1\nlr: 3\n")[0], ["cfg.yaml", "YAML", "line 2"]


@case("config", "train")
def config_bad_json(tmp, fx):
    return _config(tmp, "cfg.json", '{"epochs": 1,')[0], ["cfg.json", "JSON"]


@case("config", "train")
def config_missing_file(tmp, fx):
    return ["--config", tmp / "nope.json", "--out", tmp / "run"], ["--config", "nope.json", "no such file"]


@case("config", "train")
def config_names_resume(tmp, fx):
    return _config(tmp, "cfg.yaml", "resume: runs/a\n")[0], ["cfg.yaml", "resume", "command line"]


@case("config", "train")
def config_with_resume(tmp, fx):
    run = _resumable_run(tmp, fx)
    return ["--config", run / "config.json", "--resume", run], ["--config", "--resume"]


@case("config", "train")
def config_out_holds_a_run(tmp, fx):
    # a flat file's out is read: it is refused like --out, and the run there is left untouched
    run = _resumable_run(tmp, fx)
    (tmp / "cfg.json").write_text(json.dumps({"out": str(run), "epochs": 1}))
    return ["--config", tmp / "cfg.json"], ["run", "--overwrite"]


@case("csv", "train")
def ferplus_without_its_images(tmp, fx):
    from minivit.data.labels import FERPLUS_COLUMNS
    votes = ",".join(["10"] + ["0"] * (len(FERPLUS_COLUMNS) - 1))
    (tmp / "fer2013new.csv").write_text("Usage,Image name," + ",".join(FERPLUS_COLUMNS) + "\n"
                                        + "".join(f"Training,fer{i:07d}.png,{votes}\n" for i in range(7)))
    return (["--data", tmp / "fer2013new.csv", "--out", tmp / "run", "--no-progress"],
            ["fer2013new.csv", "--ferplus-images"])


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=CASES[n].xfail)) if CASES[n].xfail else n
    for n in sorted(CASES)])
def test_bad_input(name, tmp_path, fx, capsys, monkeypatch):
    c = CASES[name]
    for k, v in c.env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.chdir(tmp_path)  # relative names in a case are relative to its folder; nothing lands in the repo
    argv, names = c.make(tmp_path, fx)
    before = tree_hashes(tmp_path, fx["dir"])
    code, out, err = run_cli(c.cli, argv, capsys)
    assert_one_line_error(code, out, err, names)
    assert tree_hashes(tmp_path, fx["dir"]) == before, "a bad input changed files on disk"


def test_corpus_size_by_kind():
    """At least 40 cases across these kinds, so that every kind of bad input is more than a token; keep the
    table honest."""
    kinds = {}
    for c in CASES.values():
        kinds[c.kind] = kinds.get(c.kind, 0) + 1
    assert sum(kinds.values()) >= 45, kinds
    assert set(kinds) >= {"checkpoint", "image", "csv", "option", "resume", "evaluation", "prediction", "output"}, kinds
    assert {c.cli for c in CASES.values()} == set(MAINS), "every command line is in the corpus"


# -- the accepted case: a valid CSV with trailing blank lines -------------------------------------------

def test_csv_with_trailing_blank_lines_is_accepted(tmp_path, fx, capsys):
    (tmp_path / "fer.csv").write_text(fer_csv(rows=7) + "\n\n\r\n")
    code, out, err = run_cli("evaluate", ["--checkpoint", fx["seven"], "--data", tmp_path / "fer.csv",
                                          "--out", tmp_path / "report", "--no-progress"], capsys)
    assert code == 0, err
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert metrics["num_samples"] == 7 and metrics["skipped"] == 0


def test_mixed_sizes_and_a_bad_image_are_accepted_with_skip(tmp_path, fx, capsys):
    """Real-world folders: mixed image sizes are resized on decode; --on-bad-image skip counts the bad one."""
    cls = tmp_path / "faces" / "test" / "happy"
    cls.mkdir(parents=True)
    for i, size in enumerate((48, 64, 37)):
        (cls / f"f{i}.jpg").write_bytes(good_jpeg_bytes(size))
    (cls / "notes.jpg").write_bytes(b"not an image")
    argv = ["--checkpoint", fx["seven"], "--data", tmp_path / "faces", "--out", tmp_path / "report", "--no-progress"]
    code, out, err = run_cli("evaluate", argv, capsys)
    assert_one_line_error(code, out, err, ["notes.jpg"])  # raise is the default
    code, out, err = run_cli("evaluate", [*argv, "--on-bad-image", "skip"], capsys)
    assert code == 0, err
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert metrics["num_samples"] == 3 and metrics["skipped"] == 1
    assert "warning: skipped 1 unreadable image" in err  # once, as a warning (stderr)


def test_convert_replaces_an_existing_output_only_with_overwrite(tmp_path, fx, capsys):
    out = tmp_path / "mine.safetensors"
    out.write_bytes(b"precious weights")
    code, _, err = run_cli("convert", [fx["seven"], "-o", out], capsys)
    assert code == 2 and out.read_bytes() == b"precious weights", err
    code, _, err = run_cli("convert", [fx["seven"], "-o", out, "--overwrite"], capsys)
    assert code == 0, err
    assert ViT.from_pretrained(out).config.num_classes == 7


IMAGE_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fmt=st.sampled_from(IMAGE_FORMATS), data=st.data())
def test_damaged_images_load_or_fail_with_one_line(tmp_path_factory, fmt, data):
    """Random truncation and byte flips of real image files: both readers (the dataset decoder and the
    predictor's read_image) decode them or raise their one-line error naming the file -- nothing else."""
    import io

    from minivit.data import load_dataset
    from minivit.common.errors import DataError
    from minivit.inference.images import UnreadableImage, read_image

    buf = io.BytesIO()
    Image.fromarray(np.random.RandomState(0).randint(0, 255, (24, 24, 3), np.uint8)).save(buf, fmt)
    raw = bytearray(buf.getvalue())
    if data.draw(st.booleans(), label="truncate"):
        raw = raw[: data.draw(st.integers(0, len(raw) - 1), label="length")]
    for _ in range(data.draw(st.integers(0, 6), label="flips")):
        if raw:
            raw[data.draw(st.integers(0, len(raw) - 1), label="offset")] = data.draw(st.integers(0, 255), label="byte")
    root = tmp_path_factory.mktemp("damaged")
    image_folder(root, split="train", bad=(f"damaged.{fmt.lower()}", bytes(raw)), goods=1)
    try:
        load_dataset(root, "train", progress=False, resize_mixed_to=24)
    except DataError as e:
        assert "\n" not in str(e) and "damaged" in str(e), str(e)
    try:
        read_image(bytes(raw), name="damaged-upload")
    except UnreadableImage as e:
        assert "\n" not in str(e) and "damaged-upload" in str(e), str(e)


# -- the web upload -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def client(fx):
    from fastapi.testclient import TestClient

    from minivit.inference.predictor import Predictor
    from minivit.inference.web import create_app
    predictor = Predictor.from_checkpoint(fx["seven"], device="cpu", detect_faces=False)
    return TestClient(create_app(predictor, max_upload_bytes=64 * 1024, max_pixels=4_000_000))


UPLOADS = {
    # name -> (file name, bytes or a maker, expected status, words the answer must hold)
    "oversize": ("big.jpg", lambda: os.urandom(200 * 1024), 413, ["limit"]),
    "non_image": ("notes.jpg", lambda: b"plain text, not a picture", 415, ["notes.jpg", "not an image"]),
    "truncated": ("cut.jpg", lambda: good_jpeg_bytes(256)[:900], 422, ["cut.jpg"]),
    "bomb": ("bomb.png", lambda: png_claiming(30000, 30000), 413, ["bomb.png", "pixels"]),
    "zero_byte": ("empty.png", lambda: b"", 415, ["empty.png"]),
}


@pytest.mark.parametrize("name", sorted(UPLOADS))
def test_bad_upload_is_4xx_and_server_stays_healthy(client, name):
    filename, make, status, words = UPLOADS[name]
    r = client.post("/predict", files={"file": (filename, make(), "image/jpeg")})
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert "\n" not in detail and "Traceback" not in detail
    for w in words:
        assert w in detail, detail
    assert client.get("/health").json()["status"] == "ok"
    good = client.post("/predict", files={"file": ("face.jpg", good_jpeg_bytes(), "image/jpeg")})
    assert good.status_code == 200 and len(good.json()["predictions"]) == 1


# -- end to end: real subprocesses, one per command family -------------------------------------------

def test_bad_inputs_as_real_processes(tmp_path, fx):
    """``python -m minivit.<cli>`` with a bad input: exit 2, one error line, no traceback (run in parallel)."""
    text = tmp_path / "notes.jpg"
    text.write_bytes(b"not an image")
    (tmp_path / "only_header.csv").write_text("emotion,pixels,Usage\n")
    runs = {
        "train": (["--lr", "nan"], ["--lr"]),
        "evaluate": (["--checkpoint", fx["seven"], "--data", tmp_path / "only_header.csv"], ["only_header.csv"]),
        "convert": ([text], ["notes.jpg"]),
        "predict": ([text, "--checkpoint", fx["seven"], "--no-detect"], ["notes.jpg"]),
        "export": (["--checkpoint", tmp_path / "nope" / "x.safetensors", "--onnx", tmp_path / "m.onnx"],
                   ["x.safetensors"]),
    }
    before = tree_hashes(tmp_path, fx["dir"])
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    procs = {name: subprocess.Popen([sys.executable, "-m", f"minivit.{name}", *map(str, argv)], cwd=tmp_path,
                                    env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name, (argv, _) in runs.items()}
    for name, p in procs.items():
        out, err = p.communicate(timeout=120)
        assert_one_line_error(p.returncode, out, err, runs[name][1])
    assert tree_hashes(tmp_path, fx["dir"]) == before


# -- option fuzz: accepted within range, or exit 2 with one line naming the option --------------------


def _documented(parser) -> dict[str, Callable]:
    """{option: its type=} for every option with a type= (the range is stated once, as the type)."""
    found = {}
    for action in parser._actions:
        if action.type is not None and action.option_strings:
            found[action.option_strings[-1]] = action.type
    return found


def _parsers():
    from minivit.commands import convert, evaluate, predict, serve
    from minivit.commands import train as train_cli
    import minivit.commands.attention as attention
    import minivit.commands.export as export

    def train_parser():
        p = cli.ArgumentParser(prog="python -m minivit.train")
        train_cli.add_options(p)
        return p

    return {
        "train": (train_parser, []),
        "evaluate": (evaluate.build_parser, ["--checkpoint", "c"]),
        "convert": (convert.build_parser, ["c.npz"]),
        "predict": (predict.build_parser, ["a.jpg", "--checkpoint", "c"]),
        "attention": (attention.build_parser, ["a.jpg", "--checkpoint", "c", "-o", "m.png"]),
        "export": (export.build_parser, ["--checkpoint", "c", "--onnx", "m.onnx"]),
        "serve": (serve.build_parser, ["--checkpoint", "c"]),
    }


def _declared_range(parse: Callable) -> tuple[type, dict] | None:
    """(int or float, {bound name: value}) a ``cli.integer``/``cli.number`` type was declared with, read
    from the declaration itself (its closure), so the fuzz checks accepted values against the stated
    range with its own comparisons instead of asking the parser that produced them."""
    kind = {"integer": int, "number": float}.get(getattr(parse, "__name__", ""))
    if kind is None:
        return None
    declared = inspect.getclosurevars(parse).nonlocals
    return kind, {k: declared[k] for k in ("above", "at_least", "below", "at_most") if declared.get(k) is not None}


def _expected_value(text: str, kind: type, bounds: dict):
    """What a correct parser returns for ``text`` (Python's own int()/float() reading, finite, within
    every declared bound), or None when it must refuse it."""
    try:
        x = kind(text)
    except ValueError:
        return None
    if not math.isfinite(x):
        return None
    ok = {"above": x > bounds.get("above", -math.inf), "at_least": x >= bounds.get("at_least", -math.inf),
          "below": x < bounds.get("below", math.inf), "at_most": x <= bounds.get("at_most", math.inf)}
    return x if all(ok.values()) else None


def _expected_image_size(text: str):
    """convert --image-size: ``S`` or ``HxW`` (also ``H,W``), every size an integer >= 1; else None."""
    try:
        sizes = [int(part) for part in re.split(r"[xX,]", text)]
    except ValueError:
        return None
    if len(sizes) not in (1, 2) or min(sizes) < 1:
        return None
    return sizes[0] if len(sizes) == 1 else tuple(sizes)


VALUES = st.one_of(
    st.integers(-10**12, 10**12).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", " ", "nan", "-nan", "inf", "-inf", "1e309", "0x10", "1_000", "½", "٣", "1e-400",
                     "--", "-", "+3", "3.", ".5", "1,5", "None", "true", "2**31", "\x00"]),
    st.text(max_size=12),
)


@pytest.mark.parametrize("cli_name", ["train", "evaluate", "convert", "predict", "attention", "export", "serve"])
def test_option_fuzz(cli_name, capsys):
    """Random values for each numeric option: parsed into the documented range, or exit 2 with one line.

    What a correct parser does with each value is worked out here from the option's declaration
    (its bounds, its choices), independently of the parser: an accepted value must be exactly the
    number the text says and inside the range; a refused one must really be unreadable or outside it.
    """
    from minivit.commands.convert import parse_image_size

    make_parser, required = _parsers()[cli_name]
    actions = {o: make_parser()._option_string_actions[o] for o in _documented(make_parser())
               if o not in ("--output", "-o")}
    assert actions, cli_name

    def expected(option, value):
        """The correct parse of ``value`` for ``option``; None: it must be refused."""
        action = actions[option]
        if action.type is parse_image_size:
            return _expected_image_size(value)
        declared = _declared_range(action.type)
        assert declared is not None, f"{option}: type {action.type!r} has no declared range to check against"
        x = _expected_value(value, *declared)
        return x if action.choices is None or x in action.choices else None

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(option=st.sampled_from(sorted(actions)), value=VALUES)
    def check(option, value):
        parser = make_parser()
        capsys.readouterr()
        try:
            args = parser.parse_args([*required, f"{option}={value}"])
        except SystemExit as e:
            err = capsys.readouterr().err
            assert e.code == 2, (option, value, e.code, err)
            lines = [line for line in err.splitlines() if line.strip()]
            assert len(lines) == 1 and lines[0].startswith("error: ") and option in lines[0], (option, value, err)
            assert "Traceback" not in err
            assert expected(option, value) is None, (option, value, "a valid value was refused", err)
            return
        parsed = getattr(args, actions[option].dest)
        want = expected(option, value)
        assert want is not None, (option, value, parsed, "accepted, but it is outside the declared range")
        assert parsed == want and type(parsed) is type(want), (option, value, parsed, want)
    check()
