"""Honest evaluation, end to end: a run selects on a validation split and scores the test split once, every
report names what it measured, runs and checkpoints record what they trained on, and evaluate and predict
say when their data differs in kind."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from minivit import ViT, ViTConfig
from minivit.checkpoints import read_extra, save_checkpoint
from minivit.common.cli import run
from minivit.data import LABELS
from minivit.data.splits import OPTIMISTIC
from minivit.common.errors import ConfigError

TINY = ["--img-size", "16", "--model", "Ti/16", "--patch-size", "4", "--dim", "32", "--depth", "1", "--heads", "2",
        "--mlp-dim", "64", "--stem", "patch", "--in-chans", "1", "--batch-size", "8", "--epochs", "1",
        "--warmup-epochs", "0", "--mix-prob", "0", "--device", "cpu", "--no-progress"]


def face_folder(root: Path, splits=(("train", 20), ("test", 6)), classes=("happy", "sad"), mode="L") -> Path:
    """<root>/<split>/<class>/<i>.png, 16x16: a bright or a dark disc, by class, on noise."""
    g = np.random.default_rng(0)
    yy, xx = np.mgrid[:16, :16]
    disc = (yy - 8) ** 2 + (xx - 8) ** 2 < 25
    for split, n in splits:
        for k, cls in enumerate(classes):
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = g.integers(60, 120, (16, 16)).astype(np.uint8)
                pixels[disc] = 230 if k == 0 else 10
                image = Image.fromarray(pixels, "L")
                (image.convert("RGB") if mode == "RGB" else image).save(root / split / cls / f"{i}.png")
    return root


def cli(module, argv, capsys):
    """Run a minivit command in-process: (exit code, stdout, stderr)."""
    try:
        code = run(module.main, [str(a) for a in argv])
    except SystemExit as e:  # argparse errors
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def train_cli(argv, capsys):
    import minivit.commands.train as train_module

    return cli(train_module, argv, capsys)


def evaluate_cli(argv, capsys):
    import minivit.commands.evaluate as evaluate_module

    return cli(evaluate_module, argv, capsys)


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    """A run on a Kaggle-style folder (train/ and test/, no val/) holding 2 of the 7 classes."""
    import contextlib
    import io

    import minivit.commands.train as train_module

    base = tmp_path_factory.mktemp("honest")
    data = face_folder(base / "faces")
    out, err = io.StringIO(), io.StringIO()  # capsys is per test: capture the module's one run by hand
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run(train_module.main, ["--data", str(data), *TINY, "--out", str(base / "run")])
    assert code == 0, err.getvalue()
    return data, base / "run", out.getvalue(), err.getvalue()


def test_a_folder_without_val_selects_on_a_carved_val_and_scores_test_once(folder_run):
    data, run_dir, out, err = folder_run
    saved = json.loads((run_dir / "config.json").read_text())
    rule = saved["data"]["split"]
    assert rule["val"] == "carved" and rule["val_fraction"] == 0.1 and rule["seed"] == 0 and len(rule["val_hash"]) == 16
    assert (saved["data"]["train_size"], saved["data"]["val_size"], saved["data"]["test_size"]) == (36, 4, 12)
    assert saved["train"]["val_split"] == "auto" and saved["train"]["val_fraction"] == 0.1
    assert saved["data"]["class_counts"]["val"] == [0, 0, 0, 2, 2, 0, 0]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["split"] == "val" and metrics["num_samples"] == 4 and metrics["selection"] == "selected"
    assert metrics["split_label"] == (f"val: {data / 'train'} [10% carved out as val, stratified by class, seed 0], "
                                      f"4 images, used to select best.safetensors")
    test = metrics["test"]
    assert test["split"] == "test" and test["num_samples"] == 12 and test["selection"] == "unseen"
    assert test["split_label"] == f"test: {data / 'test'}, 12 images, never used for selection"
    assert sum(map(sum, test["confusion_matrix"])) == 12 and "warning" in test
    assert (run_dir / "test_confusion_matrix.png").is_file() and (run_dir / "confusion_matrix.png").is_file()
    # the console names both figures, each with its split, source and count
    assert f"test: {data / 'test'}, 12 images, never used for selection" in out  # at the start
    assert f"  {test['split_label']}: accuracy {test['accuracy']:.4f}, macro F1 {test['macro_f1']:.4f}" in out
    assert f"  {metrics['split_label']}: accuracy {metrics['accuracy']:.4f}" in out
    done = out.strip().splitlines()[-1]
    assert done.startswith("done in") and f"test accuracy {test['accuracy']:.4f}" in done and "never used" in done


def test_absent_classes_are_named_at_the_start(folder_run):
    _, _, out, err = folder_run
    assert "warning: no images of angry, disgust, fear, surprise, neutral in train" in err
    assert "warning: no images of angry, disgust, fear, surprise, neutral in val" in err


def test_checkpoints_and_config_record_what_the_run_trained_on(folder_run):
    data, run_dir, _, _ = folder_run
    saved = json.loads((run_dir / "config.json").read_text())
    for name in ("best.safetensors", "last.safetensors"):
        about = read_extra(run_dir / name)["trained_on"]
        assert about == saved["data"]["trained_on"], name
        assert about["data"] == str(data) and about["synthetic"] is False and about["channels"] == 1
        assert about["image_size"] == [16, 16] and about["classes"] == list(LABELS)
        assert about["class_counts"] == [0, 0, 0, 18, 18, 0, 0] and about["split"] == saved["data"]["split"]


def test_evaluate_defaults_to_test_and_rebuilds_the_runs_carved_val(folder_run, tmp_path, capsys):
    data, run_dir, _, _ = folder_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test"]["tta"] is True  # the profile's final report flips: evaluate the same way
    code, out, err = evaluate_cli(["--checkpoint", run_dir, "--tta", "--no-progress", "--out", tmp_path / "test"],
                                  capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "test" / "metrics.json").read_text())
    assert report["split"] == "test" and report["split_label"] == metrics["test"]["split_label"]
    assert report["confusion_matrix"] == metrics["test"]["confusion_matrix"]  # the run's own test figure, again
    assert out.startswith(f"best.safetensors on {metrics['test']['split_label']}")
    code, out, err = evaluate_cli(["--checkpoint", run_dir, "--split", "val", "--tta", "--no-progress",
                                   "--out", tmp_path / "val"], capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "val" / "metrics.json").read_text())
    assert report["num_samples"] == 4 and report["confusion_matrix"] == metrics["confusion_matrix"]
    assert report["split_label"] == metrics["split_label"] and report["selection"] == "selected"


def small_run(tmp_path, capsys, *extra) -> tuple[Path, Path, str, str]:
    data = face_folder(tmp_path / "faces")
    code, out, err = train_cli(["--data", data, *TINY, "--out", tmp_path / "run", *extra], capsys)
    assert code == 0, err
    return data, tmp_path / "run", out, err


def test_a_changed_training_folder_is_refused_by_evaluate_and_resume(tmp_path, capsys):
    data, run_dir, _, _ = small_run(tmp_path, capsys, "--epochs", "2", "--stop-after", "5")
    from minivit.data import load_splits

    rule = json.loads((run_dir / "config.json").read_text())["data"]["split"]
    (data / "train" / load_splits(str(data)).val.ids[0]).unlink()  # one of the carved val images is gone
    code, _, err = evaluate_cli(["--checkpoint", run_dir, "--split", "val", "--out", tmp_path / "r"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "cannot be rebuilt" in err, err
    assert rule["val_hash"] in err and "--split test" in err
    code, _, err = train_cli(["--resume", run_dir, "--no-progress"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--resume" in err and rule["val_hash"] in err, err


def spy_titles(monkeypatch) -> dict:
    """Record the titles the report's figures are drawn with (they are still drawn)."""
    import minivit.evaluate.reports as evaluate_module
    import minivit.train.report as report_module

    seen = {"confusion": [], "attention": [], "curves": []}
    real_cm, real_grid, real_curves = (evaluate_module.confusion_matrix_png, evaluate_module.attention_grid_png,
                                       report_module.curves_png)

    def cm(*a, **kw):
        seen["confusion"].append(kw.get("title", "") + " | " + kw.get("subtitle", ""))
        return real_cm(*a, **kw)

    def grid(*a, **kw):
        seen["attention"].append(kw.get("title", ""))
        return real_grid(*a, **kw)

    def curves(*a, **kw):
        seen["curves"].append(kw.get("subtitle", ""))
        return real_curves(*a, **kw)

    monkeypatch.setattr(evaluate_module, "confusion_matrix_png", cm)
    monkeypatch.setattr(evaluate_module, "attention_grid_png", grid)
    monkeypatch.setattr(report_module, "curves_png", curves)
    return seen


def test_val_split_test_is_labelled_optimistic_everywhere(tmp_path, capsys, monkeypatch):
    seen = spy_titles(monkeypatch)
    data, run_dir, out, err = small_run(tmp_path, capsys, "--val-split", "test")
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["data"]["split"]["val"] == "test" and saved["data"]["val"] == str(data / "test")
    assert saved["data"]["train_size"] == 40 and saved["data"]["test"] is None  # nothing carved, no test figure
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["split_label"].endswith(OPTIMISTIC) and metrics["selection"] == "optimistic"
    assert metrics["test"] is None and not (run_dir / "test_confusion_matrix.png").exists()
    assert f"warning: --val-split test: best.safetensors is {OPTIMISTIC}" in err
    assert OPTIMISTIC in out.strip().splitlines()[-1]  # the done line
    assert all(OPTIMISTIC in t for t in seen["confusion"] + seen["attention"] + seen["curves"]), seen
    assert seen["confusion"] and seen["attention"] and seen["curves"]
    code, out, err = evaluate_cli(["--checkpoint", run_dir, "--no-progress"], capsys)  # default: test = its val
    assert code == 0, err
    report = json.loads((run_dir / f"eval-{data.name}-test" / "metrics.json").read_text())
    assert report["split_label"].endswith(OPTIMISTIC) and report["selection"] == "optimistic"


def test_synthetic_figures_say_synthetic_faces(tmp_path, capsys, monkeypatch):
    seen = spy_titles(monkeypatch)
    code, out, err = train_cli(["--synthetic-samples", "64", *TINY, "--out", tmp_path / "s"],
                               capsys)
    assert code == 0, err
    assert len(seen["confusion"]) == 2  # val and test
    for title in seen["confusion"] + seen["attention"] + seen["curves"]:
        assert "synthetic faces" in title, title
    assert any("test: synthetic faces" in t for t in seen["confusion"])
    metrics = json.loads((tmp_path / "s" / "metrics.json").read_text())
    assert metrics["test"]["split_label"] == "test: synthetic faces, 64 images, never used for selection"


def checkpoint(path: Path, trained_on: dict | None, favour: int | None = None) -> Path:
    """A tiny 7-class gray model saved with ``trained_on``; ``favour``: a head that always says that class."""
    torch.manual_seed(0)
    model = ViT(ViTConfig(image_size=16, patch_size=4, dim=32, depth=1, heads=2, mlp_dim=64, num_classes=7,
                          in_chans=1))
    if favour is not None:
        with torch.no_grad():
            model.head.weight.zero_()
            model.head.bias.copy_(torch.nn.functional.one_hot(torch.tensor(favour), 7).float() * 10)
    save_checkpoint(model, path, extra={"classes": list(LABELS), "grayscale_data": True,
                                        **({"trained_on": trained_on} if trained_on else {})})
    return path


SYNTHETIC = {"data": "synthetic", "synthetic": True, "channels": 1, "image_size": [32, 32], "classes": list(LABELS)}


def test_evaluate_says_when_the_data_differs_in_kind(tmp_path, capsys):
    real = face_folder(tmp_path / "faces")
    path = checkpoint(tmp_path / "synthetic.safetensors", SYNTHETIC, favour=3)
    code, out, err = evaluate_cli(["--checkpoint", path, "--data", real, "--out", tmp_path / "r", "--no-progress"],
                                  capsys)
    assert code == 0, err
    note = "the model was trained on synthetic faces (never a real one); this data: real faces"
    assert f"note: {note}" in out.splitlines()
    report = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert report["note"] == note and report["split"] == "test"
    # and the model that says "happy" for everything is named: 100% happy, macro F1 at the majority baseline
    assert report["warning"].startswith("the model predicts 'happy' for 100% of the 12 images")
    assert f"warning: {report['warning']}" in out
    colour = face_folder(tmp_path / "colour", mode="RGB")
    real_gray = dict(SYNTHETIC, data=str(real), synthetic=False)
    code, out, err = evaluate_cli(["--checkpoint", checkpoint(tmp_path / "gray.safetensors", real_gray),
                                   "--data", colour, "--out", tmp_path / "c", "--no-progress"], capsys)
    assert code == 0, err
    assert "note: the model was trained on grayscale images; this data: colour images" in out
    code, out, err = evaluate_cli(["--checkpoint", tmp_path / "gray.safetensors", "--data", real,
                                   "--out", tmp_path / "same", "--no-progress"], capsys)
    assert code == 0 and "note:" not in out, out  # same kind: no line


def test_evaluate_falls_back_to_val_only_where_there_is_no_test_split_and_says_so(tmp_path, capsys):
    only_val = face_folder(tmp_path / "faces", splits=(("val", 3),))
    path = checkpoint(tmp_path / "m.safetensors", None)
    code, out, err = evaluate_cli(["--checkpoint", path, "--data", only_val, "--no-progress",
                                   "--out", tmp_path / "r"], capsys)
    assert code == 0, err
    assert f"note: {only_val} has no test split: evaluating its val split" in out
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["split"] == "val"
    code, _, err = evaluate_cli(["--checkpoint", path, "--data", only_val, "--split", "test",
                                 "--out", tmp_path / "t"], capsys)
    assert code == 2 and "no folder for split 'test'" in err and len(err.strip().splitlines()) == 1  # asked: no fallback


def test_predict_says_when_photos_differ_in_kind(tmp_path, capsys):
    from minivit.commands.predict import main

    photo = tmp_path / "photo.png"
    Image.new("RGB", (16, 16), (200, 120, 90)).save(photo)
    path = checkpoint(tmp_path / "synthetic.safetensors", SYNTHETIC)
    assert main([str(photo), "--checkpoint", str(path), "--no-detect", "--no-progress"]) == 0
    err = capsys.readouterr().err
    # the colour photo is turned gray, as the training images were: only the kind of face is news
    assert "note: the model was trained on synthetic faces (never a real one); these images: real faces\n" in err
    gray = tmp_path / "gray.png"
    Image.new("L", (16, 16), 90).save(gray)
    real_gray = checkpoint(tmp_path / "real.safetensors", dict(SYNTHETIC, data="faces", synthetic=False))
    assert main([str(gray), "--checkpoint", str(real_gray), "--no-detect", "--no-progress"]) == 0
    assert "note:" not in capsys.readouterr().err  # a gray photo for a model trained on real gray faces
    assert main([str(photo), "--checkpoint", str(real_gray), "--no-detect", "--no-progress"]) == 0
    assert "note:" not in capsys.readouterr().err  # a colour photo, used gray as in training: nothing to say
    assert main([str(photo), "--checkpoint", str(real_gray), "--no-detect", "--no-progress", "--no-grayscale"]) == 0
    assert ("note: the model was trained on grayscale images; these images: colour images"  # used otherwise: said
            in capsys.readouterr().err)


def test_resume_keeps_the_runs_split_options(folder_run):
    from minivit.commands.train import build_config, parse_args

    _, run_dir, _, _ = folder_run
    cfg, _ = build_config(parse_args(["--resume", str(run_dir), "--val-split", "test", "--val-fraction", "0.5"]))
    assert (cfg.val_split, cfg.val_fraction) == ("auto", 0.1)  # a resumed run holds out what it held out
    cfg, _ = build_config(parse_args(["--data", "faces/", "--val-split", "carve", "--val-fraction", "0.2"]))
    assert (cfg.val_split, cfg.val_fraction) == ("carve", 0.2)
    from minivit.train import TrainConfig

    with pytest.raises(ConfigError, match="--val-fraction"):
        TrainConfig(val_fraction=1.0).validate()
    with pytest.raises(ConfigError, match="--val-split"):
        TrainConfig(val_split="sometimes").validate()


def test_given_sets_are_used_as_given(tmp_path, capsys):
    """ImageSets passed to train() in Python: no carving, the rule says they were given, a test set is scored,
    and evaluate does not pretend to re-read them (cfg.data still says "synthetic")."""
    from minivit.data import synthetic_faces
    from minivit.train import TrainConfig, train

    train_set, val_set, test_set = (synthetic_faces(n, image_size=16, seed=s) for n, s in ((64, 0), (21, 1), (14, 2)))
    cfg = TrainConfig(image_size=16, epochs=1, batch_size=16, out=str(tmp_path / "r"), progress=False, log=False,
                      model_overrides=dict(patch_size=4, dim=32, depth=1, heads=2, mlp_dim=64))
    result = train(cfg, train_set, val_set, test_set)
    saved = json.loads((tmp_path / "r" / "config.json").read_text())["data"]
    assert saved["split"]["val"] == "given" and (saved["train_size"], saved["val_size"], saved["test_size"]) == (64, 21, 14)
    assert result["test_split_label"] == "test: synthetic faces, 14 images, never used for selection"
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["test"]["num_samples"] == 14 and result["test_accuracy"] == metrics["test"]["accuracy"]
    capsys.readouterr()  # the run's own warnings
    code, _, err = evaluate_cli(["--checkpoint", tmp_path / "r"], capsys)
    assert code == 2 and "--data is needed" in err and "passed to train()" in err and err.count("\n") == 1, err
