"""minivit.Predictor and python -m minivit.predict: the Python API (every input type, the evaluation's preprocessing), the CLI's
outputs, and bad inputs (one line each naming the file, exit 2, the other files still predicted)."""

import csv
import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import minivit
from minivit.data.augment import AugmentConfig, eval_transform
from minivit.checkpoints import save_checkpoint
from minivit.common.errors import DataError
from minivit.inference.predictor import NO_FACE, OFF, Predictor
from minivit.commands.predict import main

TINY = dict(image_size=48, patch_size=8, dim=32, depth=2, heads=2, mlp_dim=64, num_classes=7)


def tiny_model(seed=0, **overrides):
    torch.manual_seed(seed)
    model = minivit.create_model("Ti/16", **{**TINY, **overrides})
    torch.nn.init.normal_(model.head.weight, std=0.5)  # the zero-initialised head would predict uniformly
    return model.eval()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_checkpoint(tiny_model(), path)
    return path


def png_header(width, height) -> bytes:
    """A valid PNG signature and IHDR claiming width x height, with a tiny IDAT: a decompression bomb."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A good face-free JPEG, and every kind of bad file."""
    d = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    good = d / "noise.jpg"
    # larger than twice the tiny model's 48-pixel input: a photo, where face detection runs
    Image.fromarray(rng.integers(0, 256, (100, 120, 3), dtype=np.uint8)).save(good, quality=95)
    (d / "notes.jpg").write_text("this is a text file renamed .jpg\n")
    (d / "cut.jpg").write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    (d / "bomb.png").write_bytes(png_header(30000, 30000))
    (d / "empty").mkdir()
    return d


# -- Python API ----------------------------------------------------------------------------------


@pytest.mark.parametrize("in_chans,tta", [(3, False), (1, True)])
def test_predictions_equal_the_evaluation_on_real_fer2013(shared_dir, checkpoint, tmp_path, in_chans, tta):
    """Predictor's logits on FER2013 files == minivit.evaluate.predict's on the same files decoded by minivit.data."""
    from minivit.data import decode_images
    from minivit.evaluate import predict

    root = shared_dir / "data" / "fer2013" / "test"
    if not root.is_dir():
        pytest.skip(f"real FER2013 images {root} are absent")
    paths = [p for c in sorted(root.iterdir()) for p in sorted(c.glob("*.jpg"))[:3]]  # 3 per class
    model = tiny_model(seed=1, in_chans=in_chans)
    path = tmp_path / "m.safetensors"
    save_checkpoint(model, path)
    images, kept = decode_images(paths, progress=False)  # uint8 (N, 1, 48, 48), as the evaluation reads them
    assert len(kept) == len(paths) and images.shape[1] == 1
    aug = AugmentConfig(image_size=48, channels=in_chans)
    expected = predict(model, images, lambda x: eval_transform(x, aug), tta=tta)  # (N, 7)

    predictor = Predictor.from_checkpoint(path, detect_faces=False, tta=tta, device="cpu", batch_size=5)
    results = predictor.predict([str(p) for p in paths])
    got = torch.tensor([r.predictions[0].logits for r in results])
    assert all(r.detection == OFF and r.predictions[0].box is None for r in results)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert [r.predictions[0].label for r in results] == [minivit.data.LABELS[i] for i in expected.argmax(1)]


def fer2013_test_files(shared_dir, per_class):
    root = shared_dir / "data" / "fer2013" / "test"
    if not root.is_dir():
        pytest.skip(f"real FER2013 images {root} are absent")
    return [p for c in sorted(root.iterdir()) for p in sorted(c.glob("*.jpg"))[:per_class]]


def test_the_default_predictor_classifies_fer2013_crops_whole_as_the_evaluation_does(shared_dir, tmp_path):
    """detect_faces="auto" (the default): the Haar cascade would find "faces" inside 48x48 crops and
    re-crop them; a face-sized image is classified whole, so the logits equal the evaluation's."""
    from minivit.inference import faces
    from minivit.data import decode_images
    from minivit.evaluate import predict
    from minivit.inference.predictor import FACE_SIZED

    if not faces.available():
        pytest.skip(f"face detection is what this tests, and it is unavailable: {faces.unavailable_reason()}")
    paths = fer2013_test_files(shared_dir, per_class=13)  # 91 faces
    model = tiny_model(seed=2)
    path = tmp_path / "m.safetensors"
    save_checkpoint(model, path)
    images, _ = decode_images(paths, progress=False)  # uint8 (N, 1, 48, 48)
    expected = predict(model, images, lambda x: eval_transform(x, AugmentConfig(image_size=48, channels=3)))

    predictor = Predictor.from_checkpoint(path, device="cpu")  # every default, detection included
    results = predictor.predict([str(p) for p in paths])
    assert {r.detection for r in results} == {FACE_SIZED}
    assert results[0].note == "image is already face-sized: classified whole"
    torch.testing.assert_close(torch.tensor([r.predictions[0].logits for r in results]), expected,
                               atol=1e-5, rtol=1e-5)
    big = np.kron(images[0, 0].numpy(), np.ones((3, 3), np.uint8))  # 144x144: more than 2 x 48, a photo
    assert predictor.predict(big).detection != FACE_SIZED


def test_a_repo_id_or_manifest_name_goes_to_from_pretrained_and_a_missing_path_is_one_line(monkeypatch, tmp_path):
    from minivit.common.errors import CheckpointError
    from minivit.model.vit import ViT
    from minivit.inference.predictor import load_model, resolve_checkpoint

    asked = []
    monkeypatch.setattr(ViT, "from_pretrained", classmethod(lambda cls, source: asked.append(source) or tiny_model()))
    manifest_name = "augreg/Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0"
    for name in ("google/vit-base-patch16-224", manifest_name, "ViT-B_16"):
        assert resolve_checkpoint(name) == name
        model, classes, source = load_model(name)
        assert asked[-1] == name and source == name and classes == minivit.data.LABELS
    for missing in (tmp_path / "runs" / "nope.safetensors", tmp_path / "nope", "~/surely-not-here.npz"):
        with pytest.raises(CheckpointError, match="no such file or folder") as e:
            resolve_checkpoint(str(missing))
        assert len(str(e.value).splitlines()) == 1
    home_run = tmp_path / "home" / "run"
    home_run.mkdir(parents=True)
    (home_run / "best.safetensors").write_bytes(b"x")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_checkpoint("~/run") == home_run / "best.safetensors"  # ~ expanded


def test_the_predictor_uses_the_evaluations_precision(checkpoint, monkeypatch):
    """One rule for both: resolve_precision("auto", device). fp32 on the CPU; where it picks bf16 (a GPU,
    simulated here), the Predictor's logits are the evaluation's under the same autocast."""
    from minivit.common.device import resolve_precision
    from minivit.evaluate import predict

    assert Predictor.from_checkpoint(checkpoint, detect_faces=False, device="cpu").autocast_dtype is None
    assert resolve_precision("auto", torch.device("cpu"))[1] is None
    monkeypatch.setattr("minivit.inference.predictor.resolve_precision", lambda choice, device: ("bf16", torch.bfloat16, False))
    predictor = Predictor.from_checkpoint(checkpoint, detect_faces=False, device="cpu")
    images = torch.from_numpy(np.random.default_rng(3).integers(0, 256, (4, 1, 48, 48), dtype=np.uint8))
    aug = AugmentConfig(image_size=48, channels=3)
    expected = predict(predictor.model, images, lambda x: eval_transform(x, aug), autocast_dtype=torch.bfloat16)
    fp32 = predict(predictor.model, images, lambda x: eval_transform(x, aug))
    got = torch.tensor([r.predictions[0].logits for r in predictor.predict(list(images))])
    assert not torch.allclose(expected, fp32, atol=1e-4)  # bf16 is visibly different: the check can fail
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)


def test_every_input_type_gives_the_same_prediction(checkpoint):
    predictor = Predictor.from_checkpoint(checkpoint, detect_faces=False)
    rgb = np.random.default_rng(1).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    gray = rgb[..., 0]
    reference = predictor.predict(rgb).predictions[0].logits
    same_rgb = [Image.fromarray(rgb), torch.from_numpy(rgb).permute(2, 0, 1), rgb.astype(np.float32) / 255,
                torch.from_numpy(rgb).permute(2, 0, 1).float() / 255, np.dstack([rgb, np.full_like(gray, 255)])]
    for image in same_rgb:
        np.testing.assert_allclose(predictor.predict(image).predictions[0].logits, reference, atol=1e-5)
    gray_ref = predictor.predict(gray).predictions[0].logits
    for image in (Image.fromarray(gray), torch.from_numpy(gray), gray[..., None], gray.astype(np.float64) / 255):
        np.testing.assert_allclose(predictor.predict(image).predictions[0].logits, gray_ref, atol=1e-5)
    assert not np.allclose(gray_ref, reference)  # the inputs differ, and so do the predictions
    batch = predictor.predict(torch.from_numpy(rgb).permute(2, 0, 1)[None].repeat(2, 1, 1, 1))
    assert len(batch) == 2 and batch[1].predictions[0].label == predictor.predict(rgb).predictions[0].label


def test_results_are_plain_data(checkpoint):
    result = Predictor.from_checkpoint(checkpoint, detect_faces=False).predict(np.zeros((48, 48), np.uint8))
    p = result.predictions[0]
    assert set(p.probabilities) == set(minivit.data.LABELS) and abs(sum(p.probabilities.values()) - 1) < 1e-5
    assert p.label == max(p.probabilities, key=p.probabilities.get)
    d = json.loads(json.dumps(result.to_dict(top_k=2)))
    assert d["faces_detected"] is False and d["detection"] == "off" and "whole image" in d["note"]
    assert [t["label"] for t in d["predictions"][0]["top_k"]] == [name for name, _ in p.top(2)]


@pytest.mark.parametrize("bad,message", [
    (np.full((8, 8), 1.5, np.float32), "must be in [0, 1]"),
    (np.zeros((3, 8, 8), np.uint8), "(H, W) or (H, W, C)"),
    (torch.zeros(2, 8, 8, dtype=torch.uint8), "C = 1, 3 or 4"),
    (np.zeros((8, 8), np.int64), "not supported"),
])
def test_bad_arrays_are_refused_with_a_reason(checkpoint, bad, message):
    with pytest.raises(DataError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        Predictor.from_checkpoint(checkpoint, detect_faces=False).predict(bad)


def test_class_names_come_from_the_checkpoint(tmp_path):
    named = tmp_path / "named.safetensors"
    save_checkpoint(tiny_model(num_classes=3), named, extra={"classes": ["cat", "dog", "owl"]})
    assert Predictor.from_checkpoint(named, detect_faces=False).classes == ("cat", "dog", "owl")
    unnamed = tmp_path / "unnamed.safetensors"
    save_checkpoint(tiny_model(num_classes=3), unnamed)
    assert Predictor.from_checkpoint(unnamed, detect_faces=False).classes == ("class_0", "class_1", "class_2")


def test_a_run_folder_means_its_best_checkpoint(tmp_path, checkpoint):
    run = tmp_path / "run"
    run.mkdir()
    (run / "best.safetensors").write_bytes(checkpoint.read_bytes())
    x = np.zeros((48, 48), np.uint8)
    a = Predictor.from_checkpoint(run, detect_faces=False).predict(x).predictions[0].logits
    b = Predictor.from_checkpoint(checkpoint, detect_faces=False).predict(x).predictions[0].logits
    assert a == b


# -- command line --------------------------------------------------------------------------------


def test_cli_table_json_and_csv(checkpoint, files, capsys):
    good = str(files / "noise.jpg")
    assert main([good, "--checkpoint", str(checkpoint), "--no-detect", "--no-progress"]) == 0
    table = capsys.readouterr().out
    assert "noise.jpg" in table and "face detection off: whole image classified" in table

    assert main([good, "--checkpoint", str(checkpoint), "--json", "--top-k", "2", "--no-progress"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert len(records) == 1 and records[0]["detection"] in (NO_FACE, "faces")
    assert len(records[0]["predictions"][0]["top_k"]) == 2

    assert main([str(files), "--checkpoint", str(checkpoint), "--csv", "--no-detect"]) == 2  # the bad files too
    captured = capsys.readouterr()
    rows = list(csv.DictReader(io.StringIO(captured.out)))
    by_name = {Path(r["image"]).name: r for r in rows}
    assert by_name["noise.jpg"]["label"] in minivit.data.LABELS and not by_name["noise.jpg"]["error"]
    assert "not an image" in by_name["notes.jpg"]["error"]


def test_cli_bad_inputs_one_line_each_and_exit_2(checkpoint, files, capsys):
    bad = ["notes.jpg", "cut.jpg", "bomb.png", "missing.jpg", "empty"]
    args = [str(files / "noise.jpg")] + [str(files / b) for b in bad]
    assert main(args + ["--checkpoint", str(checkpoint), "--json", "--no-detect"]) == 2
    captured = capsys.readouterr()
    errors = captured.err.strip().splitlines()
    assert len(errors) == len(bad) and "Traceback" not in captured.err
    for name, line in zip(bad, errors):
        assert line.startswith("error: ") and name in line
    assert "not an image" in errors[0] and "truncated" in errors[1]
    assert "900,000,000 pixels" in errors[2] and "no such file" in errors[3] and "no images" in errors[4]
    records = json.loads(captured.out)
    assert "predictions" in records[0] and all("error" in r for r in records[1:])  # the good file still predicted

    assert minivit.common.cli.run(main, args + ["--checkpoint", str(checkpoint), "--strict"]) == 2  # stops at the first
    assert capsys.readouterr().err.strip().splitlines() == [errors[0]]


def test_cli_bomb_refused_below_pillows_own_limit(checkpoint, tmp_path, capsys):
    big = tmp_path / "big.png"
    big.write_bytes(png_header(9000, 9000))  # 81 MP: under Pillow's ceiling, over ours
    assert main([str(big), "--checkpoint", str(checkpoint), "--max-pixels", "1000000"]) == 2
    assert "9000x9000 = 81,000,000 pixels is more than the limit of 1,000,000" in capsys.readouterr().err


def test_cli_annotate_writes_a_png_and_never_overwrites(checkpoint, files, tmp_path, capsys):
    out = tmp_path / "labelled.png"
    assert main([str(files / "noise.jpg"), "--checkpoint", str(checkpoint), "--annotate", str(out)]) == 0
    assert Image.open(out).size == (120, 100)
    before = out.read_bytes()
    assert main([str(files / "noise.jpg"), "--checkpoint", str(checkpoint), "--annotate", str(out)]) == 2
    assert "exists" in capsys.readouterr().err and out.read_bytes() == before
    assert main([str(files / "noise.jpg"), "--checkpoint", str(checkpoint), "--annotate", str(out),
                 "--overwrite", "--no-detect"]) == 0


def test_cli_bad_options_and_checkpoint(checkpoint, files, capsys):
    for argv, expect in [([str(files / "noise.jpg"), "--checkpoint", str(checkpoint), "--top-k", "0"], "--top-k"),
                         ([str(files / "noise.jpg"), "--checkpoint", str(files / "nope.safetensors")], "nope.safetensors"),
                         ([str(files / "noise.jpg"), "--checkpoint", str(files / "notes.jpg")], "notes.jpg")]:
        with pytest.raises(SystemExit) as e:
            raise SystemExit(minivit.common.cli.run(main, argv))
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and expect in err and "Traceback" not in err and len(err.splitlines()) == 1


def test_cli_help_explains_every_flag(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for flag in ("--checkpoint", "--json", "--csv", "--top-k", "--batch-size", "--device", "--tta", "--no-detect",
                 "--annotate", "--overwrite", "--strict", "--no-progress", "--grayscale", "--max-pixels"):
        assert flag in text


def test_a_training_run_tells_the_predictor_its_classes_and_that_its_faces_were_gray(tmp_path):
    from minivit.checkpoints import read_extra
    from minivit.train import TrainConfig, train

    run = tmp_path / "run"
    train(TrainConfig(data="synthetic", synthetic_samples=70, image_size=16, epochs=1, batch_size=35, model="Ti/4",
                      model_overrides=dict(dim=16, depth=1, heads=2, mlp_dim=32), out=str(run), progress=False,
                      log=False, tta=False))
    extra = read_extra(run / "best.safetensors")
    assert extra["classes"] == list(minivit.data.LABELS) and extra["grayscale_data"] is True
    assert Predictor.from_checkpoint(run, detect_faces=False).grayscale is True   # synthetic faces are gray
    assert Predictor.from_checkpoint(run, detect_faces=False, grayscale=False).grayscale is False  # asked: kept
    # a file without the note (e.g. saved by hand) keeps colour photos in colour
    save_checkpoint(tiny_model(), tmp_path / "plain.safetensors")
    assert Predictor.from_checkpoint(tmp_path / "plain.safetensors", detect_faces=False).grayscale is False


def test_pillow_warnings_are_filtered_once_at_import_not_per_call(tmp_path):
    """Warnings made errors (-W error): a palette PNG whose convert() warns, and a header over Pillow's
    warning threshold, still read as today; read_image swaps no global warning state per call
    (warnings.catch_warnings is not thread-safe, and the web demo reads from many threads)."""
    import inspect
    import subprocess
    import sys

    import minivit.inference.images

    palette = tmp_path / "palette.png"
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).convert("P").save(palette, transparency=bytes(10))
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header(9500, 9500))  # 90 MP: past Pillow's warning, under its error
    code = ("import sys; from minivit.inference.images import read_image, PIL_MAX_PIXELS, UnreadableImage\n"
            f"print(read_image({str(palette)!r}).shape)\n"
            f"try:\n    read_image({str(bomb)!r}, max_pixels=PIL_MAX_PIXELS)\n"
            "except UnreadableImage as e:\n    print('unreadable:', e)\n")
    done = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(minivit.__file__).parents[1])
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "(8, 8, 3)" and "bomb.png: cannot decode image" in done.stdout
    assert "catch_warnings" not in inspect.getsource(minivit.inference.images.read_image)


def test_read_image_decodes_as_the_dataset_reader_does(tmp_path):
    """16-bit PNGs, big-endian 16-bit TIFFs, float TIFFs and EXIF-rotated JPEGs: read_image gives the
    pixels minivit.data decodes (one function for both), so predictions match the evaluation's."""
    from minivit.data import decode_images
    from minivit.inference.images import UnreadableImage, read_image

    ramp = (np.arange(48 * 64, dtype=np.uint32).reshape(48, 64) * 65535 // (48 * 64 - 1)).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "ramp16.png")
    Image.frombytes("I;16B", (64, 48), ramp.astype(">u2").tobytes()).save(tmp_path / "ramp16be.tif")
    Image.fromarray(ramp.astype(np.float32) / 65535).save(tmp_path / "float.tif")
    im = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8))
    exif = im.getexif()
    exif[0x0112] = 8  # "rotate 90 degrees counter-clockwise to display"
    im.save(tmp_path / "phone.jpg", exif=exif)
    for name in ("ramp16.png", "ramp16be.tif", "float.tif", "phone.jpg"):
        mine = read_image(tmp_path / name)
        dataset, _ = decode_images([tmp_path / name], progress=False)  # (1, C, H, W)
        assert np.array_equal(mine if mine.ndim == 3 else mine[..., None], dataset[0].permute(1, 2, 0).numpy()), name
    assert np.array_equal(read_image(tmp_path / "ramp16.png"), (ramp >> 8).astype(np.uint8))
    assert read_image(tmp_path / "phone.jpg").shape == (60, 40, 3)  # upright
    Image.fromarray(np.full((8, 8), -3.0, np.float32)).save(tmp_path / "negative.tif")
    with pytest.raises(UnreadableImage, match=r"negative.tif: 32-bit float pixels in \[-3, -3\]"):
        read_image(tmp_path / "negative.tif")
    from minivit.inference.images import to_image_tensor

    as_pil = to_image_tensor(Image.open(tmp_path / "ramp16be.tif"))  # a PIL image given to the Predictor
    assert as_pil.shape == (1, 48, 64) and torch.equal(as_pil[0], torch.from_numpy((ramp >> 8).astype(np.uint8)))


def test_bytes_obey_the_predictors_pixel_limit_and_names_must_match_the_images(checkpoint):
    from minivit.common.errors import ConfigError
    from minivit.inference.images import ImageTooLarge

    buf = io.BytesIO()
    Image.fromarray(np.zeros((100, 120), np.uint8)).save(buf, format="PNG")
    predictor = Predictor.from_checkpoint(checkpoint, detect_faces=False, max_pixels=10_000)
    with pytest.raises(ImageTooLarge, match="100 = 12,000 pixels is more than the limit of 10,000"):
        predictor.predict(buf.getvalue())
    with pytest.raises(ImageTooLarge, match="more than the limit of 10,000"):
        predictor.predict([bytearray(buf.getvalue())], names=["upload.png"])
    assert Predictor.from_checkpoint(checkpoint, detect_faces=False).predict(buf.getvalue()).width == 120

    x = np.zeros((48, 48), np.uint8)
    for names in (["a"], ["a", "b", "c"]):
        with pytest.raises(ConfigError, match=f"{len(names)} names for 2 images"):
            predictor.predict([x, x], names=names)
    assert [r.source for r in predictor.predict([x, x], names=["a", "b"])] == ["a", "b"]


def test_no_table_on_stdout_when_no_file_gave_a_prediction(checkpoint, files, capsys):
    """Errors go to stderr; a table header with no rows under it is not printed. With a good file
    beside the bad one the table is there, the bad file's error still on stderr only."""
    notes = str(files / "notes.jpg")
    assert main([notes, str(files / "missing.jpg"), "--checkpoint", str(checkpoint), "--no-detect"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert [line.split(":")[0] for line in captured.err.splitlines()] == ["error", "error"]
    assert main([notes, str(files / "noise.jpg"), "--checkpoint", str(checkpoint), "--no-detect"]) == 2
    captured = capsys.readouterr()
    assert captured.out.splitlines()[0].split()[:3] == ["image", "region", "expression"]
    assert "noise.jpg" in captured.out and "notes.jpg" not in captured.out and "notes.jpg" in captured.err
