"""Faces in real photos: OpenCV's Haar cascade on scikit-image's bundled astronaut photograph (Eileen
Collins, NASA, public domain; it ships inside the scikit-image wheel: nothing is downloaded), two faces
pasted into one image, a photo without a face, and what happens without OpenCV."""

import numpy as np
import pytest
import torch

import minivit
from minivit.inference import faces
from minivit.checkpoints import save_checkpoint
from minivit.common.errors import ConfigError
from minivit.inference.predictor import DETECTED, NO_FACE, UNAVAILABLE, Predictor
from minivit.commands.predict import main

pytest.importorskip("cv2", reason="face detection needs the 'faces' extra (opencv-python-headless<5)")
skimage_data = pytest.importorskip("skimage.data", reason="the astronaut photo ships with scikit-image")

# Where the face is in the astronaut photo (512x512), by eye: forehead to chin, ear to ear.
FACE_REGION = (165, 55, 115, 120)  # x, y, w, h


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skimage_data.astronaut()  # uint8 (512, 512, 3), read from the installed package


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    torch.manual_seed(0)
    model = minivit.create_model("Ti/16", image_size=48, patch_size=8, dim=32, depth=2, heads=2, mlp_dim=64,
                                 num_classes=7)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_checkpoint(model, path)
    return Predictor.from_checkpoint(path, detect_faces=True)


def inside(box, region, slack=10) -> bool:
    x, y, w, h = box
    rx, ry, rw, rh = region
    return rx - slack <= x and ry - slack <= y and x + w <= rx + rw + slack and y + h <= ry + rh + slack


def test_one_face_in_a_real_photograph(astronaut):
    boxes = faces.detect_faces(astronaut)
    assert len(boxes) == 1
    x, y, w, h = boxes[0]
    assert inside(boxes[0], FACE_REGION) and 70 <= w <= 120 and abs(w - h) <= 5  # the face, at face size


def test_two_pasted_faces_give_two_results_left_to_right(astronaut, predictor):
    face = astronaut[40:190, 150:300]  # (150, 150, 3): the head with some margin
    group = np.full((320, 640, 3), 120, np.uint8)
    group[30:180, 40:190] = face
    group[140:290, 420:570] = face
    result = predictor.predict(group)
    assert result.detection == DETECTED and result.faces_detected and len(result.predictions) == 2
    left, right = (p.box for p in result.predictions)
    assert inside(left, (40, 30, 150, 150)) and inside(right, (420, 140, 150, 150))
    assert "2 faces found" == result.note


def test_predictor_classifies_the_crop_with_margin(astronaut, predictor):
    result = predictor.predict(astronaut)
    assert len(result.predictions) == 1 and inside(result.predictions[0].box, FACE_REGION)
    box = result.predictions[0].box
    x, y, w, h = faces.expand_box(box, 512, 512)
    assert (w, h) == (box[2] + 2 * round(box[2] * faces.FACE_MARGIN), box[3] + 2 * round(box[3] * faces.FACE_MARGIN))
    crop = torch.from_numpy(astronaut[y:y + h, x:x + w]).permute(2, 0, 1)  # what the model should have seen
    expected = predictor.classify([crop])[1][0].tolist()
    np.testing.assert_allclose(result.predictions[0].logits, expected, atol=1e-6)


def test_a_photo_without_a_face_says_so(predictor):
    plain = np.tile(np.linspace(0, 255, 300, dtype=np.uint8), (200, 1))  # (200, 300): a gradient
    result = predictor.predict(plain)
    assert result.detection == NO_FACE and not result.faces_detected
    assert len(result.predictions) == 1 and result.predictions[0].box is None
    assert result.note == "no face found: whole image classified"


def test_without_opencv_the_whole_image_is_classified_and_said(monkeypatch, predictor, astronaut, tmp_path, capsys):
    monkeypatch.setattr(faces, "unavailable_reason", lambda: "OpenCV is not installed: pip install 'minivit[faces]'")
    auto = Predictor(predictor.model, detect_faces="auto")
    result = auto.predict(astronaut)
    assert result.detection == UNAVAILABLE and result.predictions[0].box is None and "unavailable" in result.note
    with pytest.raises(ConfigError, match="minivit\\[faces\\]"):
        Predictor(predictor.model, detect_faces=True)


def test_cli_finds_the_face_in_the_photo_file(astronaut, tmp_path, capsys):
    from PIL import Image

    path = tmp_path / "astronaut.jpg"
    Image.fromarray(astronaut).save(path, quality=92)
    ckpt = tmp_path / "tiny.safetensors"
    save_checkpoint(minivit.create_model("Ti/16", image_size=48, patch_size=8, dim=32, depth=1, heads=2, mlp_dim=64,
                                         num_classes=7), ckpt)
    assert main([str(path), "--checkpoint", str(ckpt)]) == 0
    out = capsys.readouterr().out
    assert "face 1/1 at (" in out
    assert main([str(path), "--checkpoint", str(ckpt), "--no-detect"]) == 0
    assert "face detection off: whole image classified" in capsys.readouterr().out
