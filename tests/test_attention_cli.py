"""python -m minivit.attention: one PNG of attention rollout and last-layer attention, for a non-square
model and for attention pooling; no overwriting without --overwrite; one-line errors."""

import numpy as np
import pytest
import torch
from PIL import Image

import minivit
from minivit.commands.attention import main
from minivit.checkpoints import save_checkpoint


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "face.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (60, 90, 3), dtype=np.uint8)).save(path)
    return path


@pytest.mark.parametrize("classifier", ["token", "map"])
def test_writes_one_png_for_a_non_square_model(tmp_path, image, classifier, capsys):
    torch.manual_seed(0)
    model = minivit.create_model("Ti/16", image_size=(32, 48), patch_size=8, dim=32, depth=2, heads=2, mlp_dim=64,
                                 num_classes=7, classifier=classifier)
    save_checkpoint(model, tmp_path / "m.safetensors")
    out = tmp_path / "maps.png"
    assert main([str(image), "--checkpoint", str(tmp_path / "m.safetensors"), "-o", str(out), "--no-detect"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    with Image.open(out) as png:
        assert png.format == "PNG" and png.width > png.height > 100  # input + two maps side by side
        assert len(np.unique(np.asarray(png.convert("L")))) > 20  # a picture, not a blank canvas


def test_refuses_to_overwrite_and_reports_bad_input(tmp_path, image, capsys):
    save_checkpoint(minivit.create_model("Ti/16", image_size=32, patch_size=8, dim=32, depth=1, heads=2, mlp_dim=64,
                                         num_classes=7), tmp_path / "m.safetensors")
    out = tmp_path / "maps.png"
    out.write_bytes(b"keep")
    args = ["--checkpoint", str(tmp_path / "m.safetensors"), "-o", str(out)]
    assert main([str(image)] + args) == 2
    assert "--overwrite" in capsys.readouterr().err and out.read_bytes() == b"keep"
    (tmp_path / "notes.jpg").write_text("not an image")
    assert minivit.common.cli.run(main, [str(tmp_path / "notes.jpg")] + args + ["--overwrite"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "notes.jpg: not an image" in err and len(err.splitlines()) == 1
    assert minivit.common.cli.run(main, [str(image)] + args + ["--overwrite", "--face", "3", "--no-detect"]) == 2
    assert "--face 3" in capsys.readouterr().err and out.read_bytes() == b"keep"


def test_face_numbers_say_why_there_is_no_such_face(tmp_path, image, monkeypatch, capsys):
    """--face N where detection is off, unavailable, or skipped for a face-sized image says that, in one
    line; without OpenCV the same note as minivit.predict's is printed."""
    import minivit.inference.faces

    save_checkpoint(minivit.create_model("Ti/16", image_size=32, patch_size=8, dim=32, depth=1, heads=2, mlp_dim=64,
                                         num_classes=7), tmp_path / "m.safetensors")
    args = ["--checkpoint", str(tmp_path / "m.safetensors"), "-o", str(tmp_path / "maps.png"), "--face", "1"]

    def error_of(argv):
        assert minivit.common.cli.run(main, argv) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and not (tmp_path / "maps.png").exists()
        return err

    assert error_of([str(image)] + args + ["--no-detect"]).strip() == (
        "error: --face 1: face detection is off (--no-detect): the whole image is used")
    small = tmp_path / "small.png"
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(small)
    if minivit.inference.faces.available():
        assert "already face-sized" in error_of([str(small)] + args)
    monkeypatch.setattr(minivit.inference.faces, "unavailable_reason", lambda: "OpenCV is not installed: pip install x")
    err = error_of([str(image)] + args).splitlines()
    assert err == ["note: OpenCV is not installed: pip install x; classifying whole images",
                   "error: --face 1: face detection is unavailable (OpenCV is not installed: pip install x)"]
