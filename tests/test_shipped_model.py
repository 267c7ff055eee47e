"""The FER model minivit ships (weights/minivit-fer.safetensors, weights/README.md): its manifest entry says what the
file is and holds, it loads by name offline, Predictor() and every command that uses a model fall back to it, its
figures are the file's own, and the training command in the manifest is the recipe that made it."""

import hashlib
import json
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import minivit
from minivit.checkpoints import hub
from minivit.common.errors import DownloadError
from minivit.data import LABELS

REPO = Path(__file__).resolve().parents[1]
ENTRY = hub.manifest_entry(hub.SHIPPED_MODEL)
FILE = REPO / "weights" / ENTRY["file"]


def face(seed=0) -> np.ndarray:
    """A 48x48 gray face drawn by minivit (no ../shared needed)."""
    from minivit.data.synthetic import synthetic_faces

    return synthetic_faces(7, seed=seed).images[0, 0].numpy()


def test_the_manifest_entry_describes_the_shipped_file():
    assert ENTRY["format"] == "minivit" and ENTRY["shipped"] is True and ENTRY["urls"] == []
    data = FILE.read_bytes()
    assert hashlib.sha256(data).hexdigest() == ENTRY["sha256"] and len(data) == ENTRY["size_bytes"]
    assert len(data) <= 8 * 2**20  # the limit: at most 8 MiB
    model = minivit.ViT.from_pretrained(FILE)
    config = model.config
    preset = minivit.create_model(ENTRY["config"]["preset"]).config
    for key, value in ENTRY["config"].items():  # the entry states the file's architecture, and nothing else
        if key != "preset":
            assert getattr(config, key) == value, key
    assert preset.patch_size == config.patch_size  # the preset is the family the overrides start from
    assert ENTRY["classes"] == list(LABELS) and config.num_classes == len(LABELS)
    for split, images in (("val", 2873), ("test", 3589)):
        figures = ENTRY[split]
        assert figures["split"] == split and figures["images"] == images and figures["flip_tta"] is True
        assert 0 < figures["accuracy"] < 1 and 0 < figures["macro_f1"] < 1
        assert sorted(figures["recall"]) == sorted(LABELS)
    assert "never used for selection" in ENTRY["test"]["used_for"] and "selected" in ENTRY["val"]["used_for"]
    training = ENTRY["training"]
    assert training["command"].startswith("minivit train --data ../shared/data/fer2013 ")
    assert 0 < training["wall_time_s"] <= 90 * 60  # the CPU recipe's budget: 90 minutes on a 2-core machine
    assert "/work/" not in json.dumps(ENTRY)  # no path of the machine it was made on


def test_it_loads_by_name_with_no_network(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "download", lambda *a, **k: pytest.fail("the shipped model must not be downloaded"))
    by_name = minivit.ViT.from_pretrained("minivit-fer")
    by_path = minivit.ViT.from_pretrained(FILE)
    x = torch.from_numpy(face()).float().div(255).sub(0.5).div(0.5)[None, None]  # (1, 1, 48, 48) in [-1, 1]
    with torch.no_grad():
        assert torch.equal(by_name(x), by_path(x))
    assert minivit.ViT.from_pretrained("fer2013/minivit-fer").config == by_path.config  # its alias


def test_predictor_with_no_argument_uses_it():
    predictor = minivit.Predictor(detect_faces=False)
    assert predictor.classes == tuple(LABELS) and predictor.grayscale  # trained on gray faces: photos turn gray
    assert predictor.trained_on and not predictor.trained_on["synthetic"]
    result = predictor.predict(face())
    probs = result.predictions[0].probabilities
    assert sorted(probs) == sorted(LABELS) and abs(sum(probs.values()) - 1) < 1e-5


def test_predict_with_no_checkpoint_names_the_model_and_recognises_happy_faces(shared_dir, capsys):
    """The issue's "done when": `minivit predict <a happy test face>` with no --checkpoint prints an expression.
    Over the first 20 happy PublicTest faces, most must come out happy (the model's happy recall is in the manifest)."""
    from minivit.commands.predict import main

    happy = sorted((shared_dir / "data" / "fer2013" / "test" / "happy").glob("*.jpg"))[:20]
    assert main([*map(str, happy), "--csv", "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert err.splitlines()[0].startswith("model: minivit-fer, shipped with minivit: ")
    rows = list(__import__("csv").DictReader(out.splitlines()))
    assert len(rows) == 20
    assert sum(r["label"] == "happy" for r in rows) >= 14, [r["label"] for r in rows]


def test_the_manifest_figures_are_the_shipped_files_own(shared_dir, tmp_path):
    """Evaluating the shipped file on FER2013's test/ gives the manifest's test figures, to the 4 decimals stated."""
    from minivit.evaluate import evaluate_checkpoint

    metrics = evaluate_checkpoint(FILE, str(shared_dir / "data" / "fer2013"), split="test", tta=True,
                                  out=tmp_path / "eval", device="cpu", progress=False)
    test = ENTRY["test"]
    assert metrics["num_samples"] == test["images"]
    assert round(metrics["accuracy"], 4) == test["accuracy"] and round(metrics["macro_f1"], 4) == test["macro_f1"]
    recall = {c["name"]: round(c["recall"], 4) for c in metrics["per_class"]}
    assert recall == test["recall"]


def test_the_manifest_command_trains_the_same_recipe(shared_dir, tmp_path, monkeypatch):
    """The training command in the manifest, run for one step, writes the shipped model's config (model and
    recipe): the recipe that made the file is the one the command runs today."""
    from minivit.commands.train import main

    argv = shlex.split(ENTRY["training"]["command"])
    assert argv[:2] == ["minivit", "train"]
    monkeypatch.chdir(REPO)  # the command is written for the repository root (../shared beside it)
    out = tmp_path / "run"
    argv = [a for a in argv[2:]]
    if "--out" in argv:  # the run folder of the command is replaced by a temporary one
        i = argv.index("--out")
        del argv[i:i + 2]
    assert main([*argv, "--out", str(out), "--stop-after", "1", "--no-progress"]) == 0
    written = json.loads((out / "config.json").read_text())
    assert minivit.ViTConfig.from_dict(written["model"]) == minivit.ViT.from_pretrained(FILE).config
    recipe = ENTRY["training"]["config"]
    ignore = {"out", "stop_after", "progress", "overwrite", "resume"}
    assert {k: v for k, v in written["train"].items() if k not in ignore} == \
        {k: v for k, v in recipe.items() if k not in ignore}


def copy_weights(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "weights"
    folder.mkdir()
    (folder / "manifest.json").write_bytes((REPO / "weights" / "manifest.json").read_bytes())
    (folder / ENTRY["file"]).write_bytes(FILE.read_bytes())
    monkeypatch.setattr(hub, "MANIFEST_PATH", folder / "manifest.json")
    monkeypatch.setattr(hub, "REPO_ROOT", tmp_path)
    return folder / ENTRY["file"]


@pytest.mark.parametrize("damage", ["truncated", "missing", "lfs-pointer"])
def test_a_damaged_or_missing_file_is_one_line_naming_it(tmp_path, monkeypatch, damage):
    path = copy_weights(tmp_path, monkeypatch)
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:1000])
    elif damage == "missing":
        path.unlink()
    else:
        path.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 1\n")
    with pytest.raises(DownloadError) as err:
        hub.resolve("minivit-fer")
    message = str(err.value)
    assert "\n" not in message and str(path) in message and "git checkout -- weights/minivit-fer.safetensors" in message
    assert ("missing" in message) if damage == "missing" else ("sha256" in message)


def test_attention_and_export_fall_back_to_it(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from minivit.commands import attention, export

    photo = tmp_path / "face.png"
    Image.fromarray(face()).save(photo)
    assert attention.main([str(photo), "-o", str(tmp_path / "maps.png"), "--no-detect"]) == 0
    assert export.main(["--onnx", str(tmp_path / "fer.onnx")]) == 0
    err = capsys.readouterr().err
    assert err.count("model: minivit-fer, shipped with minivit") == 2
    assert (tmp_path / "maps.png").stat().st_size > 0 and (tmp_path / "fer.onnx").stat().st_size > 0


def test_serve_uses_it_when_no_checkpoint_is_given():
    from minivit.commands.serve import build_parser

    assert build_parser().parse_args([]).checkpoint is None  # main() then loads checkpoint_or_shipped(None)
    from minivit.inference.predictor import checkpoint_or_shipped

    assert checkpoint_or_shipped(None) == "minivit-fer" and checkpoint_or_shipped("runs/x") == "runs/x"
