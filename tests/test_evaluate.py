"""Metrics, TTA, the collapse warning, the attention report and the evaluation command."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from minivit import ViT, ViTConfig
from minivit.data.augment import AugmentConfig, eval_transform
from minivit.checkpoints import save_checkpoint
from minivit.common.cli import run
from minivit.data import synthetic_faces, synthetic_split
from minivit.commands.evaluate import main
from minivit.evaluate import (attention_report, classification_metrics, confusion_matrix, dominant_class_warning,
                              evaluate, format_table, predict, select_examples, write_report)
from minivit.evaluate.plots import curves_png

REPO = Path(__file__).resolve().parents[1]


def test_metrics_by_hand():
    y = torch.tensor([0, 0, 0, 1, 1, 2])
    p = torch.tensor([0, 0, 1, 1, 2, 2])
    m = classification_metrics(y, p, classes=("a", "b", "c"))
    assert m["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]  # rows true, columns predicted
    assert m["accuracy"] == pytest.approx(4 / 6)
    # per class: a P=1 R=2/3 F1=0.8; b P=1/2 R=1/2 F1=0.5; c P=1/2 R=1 F1=2/3
    f1 = [r["f1"] for r in m["per_class"]]
    assert f1 == pytest.approx([0.8, 0.5, 2 / 3])
    assert m["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert m["weighted_f1"] == pytest.approx((3 * 0.8 + 2 * 0.5 + 1 * 2 / 3) / 6)
    assert [r["support"] for r in m["per_class"]] == [3, 2, 1]
    assert "macro F1" in format_table(m)


def test_absent_class_gives_zero_not_nan():
    m = classification_metrics(torch.tensor([0, 0]), torch.tensor([0, 0]), classes=("a", "b"))
    assert m["per_class"][1] == dict(name="b", precision=0.0, recall=0.0, f1=0.0, support=0)
    assert m["macro_f1"] == pytest.approx(0.5) and m["weighted_f1"] == pytest.approx(1.0)


def test_confusion_matrix_counts_match_loop():
    g = torch.Generator().manual_seed(0)
    y, p = torch.randint(0, 7, (500,), generator=g), torch.randint(0, 7, (500,), generator=g)
    cm = confusion_matrix(y, p, 7)
    ref = np.zeros((7, 7), dtype=np.int64)
    for a, b in zip(y.tolist(), p.tolist()):
        ref[a, b] += 1
    assert (cm.numpy() == ref).all()


class Asymmetric(torch.nn.Module):
    """A linear model on the flattened image: not flip-invariant, so TTA changes its logits."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(3 * 4 * 4, 3)

    def forward(self, x):
        return self.fc(x.flatten(1))


def test_tta_averages_the_mirror():
    torch.manual_seed(0)
    model = Asymmetric()
    images = torch.randint(0, 256, (10, 3, 4, 4), dtype=torch.uint8)

    def transform(x):
        return x.float() / 127.5 - 1

    plain = predict(model, images, transform, batch_size=3)
    tta = predict(model, images, transform, batch_size=3, tta=True)
    x = transform(images)
    with torch.no_grad():
        expected = 0.5 * (model(x) + model(x.flip(-1)))
    assert torch.allclose(tta, expected, atol=1e-6) and not torch.allclose(plain, tta)


def test_report_and_pngs(tmp_path):
    m = classification_metrics(torch.tensor([0, 1, 2, 2]), torch.tensor([0, 2, 2, 2]), classes=("x", "y", "z"))
    paths = write_report(m, tmp_path, extra={"split": "val"})
    saved = json.loads(open(paths["metrics"]).read())
    assert saved["split"] == "val" and saved["confusion_matrix"] == m["confusion_matrix"]
    img = Image.open(paths["confusion_matrix"])
    assert img.size[0] > 200 and img.size[1] > 200
    assert len(np.unique(np.asarray(img.convert("RGB")).reshape(-1, 3), axis=0)) > 10  # cells, text, colour bar
    history = [dict(epoch=e, train_loss=2 - 0.1 * e, val_loss=2.1 - 0.1 * e, train_acc=0.1 * e, val_acc=0.09 * e)
               for e in range(1, 6)]
    curves = Image.open(curves_png(history, tmp_path / "curves.png"))
    assert curves.size[0] > 400
    # the curves are drawn: the train colour appears in the picture
    assert (np.asarray(curves.convert("RGB")) == (31, 119, 180)).all(-1).sum() > 100


def test_select_examples_takes_a_couple_per_class():
    y = torch.tensor([3, 0, 0, 1, 3, 0, 1, 1, 3, 0])
    assert select_examples(y, 7, per_class=2, min_images=0) == [1, 2, 3, 6, 0, 4]  # class order, 2 each
    assert select_examples(y, 7, per_class=2, min_images=8) == [1, 2, 5, 3, 6, 7, 0, 4, 8]  # 3 classes: 3 each
    soft = torch.nn.functional.one_hot(y, 7).float()
    assert select_examples(soft, 7, min_images=0) == select_examples(y, 7, min_images=0)


# ----------------------------------------------------------------------------- the collapse warning

def test_dominant_class_warning():
    classes = ("angry", "happy", "sad")
    y = torch.tensor([0] * 30 + [1] * 40 + [2] * 30)
    collapsed = classification_metrics(y, torch.tensor([1] * 97 + [0] * 3), classes)
    message = dominant_class_warning(collapsed)
    assert message.startswith("the model predicts 'happy' for 97% of the 100 images, whose true share is 40%")
    assert dominant_class_warning(classification_metrics(y, y, classes)) is None  # a healthy model


def spread_predictions(y: torch.Tensor, dominant: int, count: int) -> torch.Tensor:
    """Predictions for y: class ``dominant`` for the first ``count`` images, the true class for the rest."""
    p = y.clone()
    p[:count] = dominant
    return p


def test_majority_class_rule_one_class_swallows_the_predictions():
    """Rule 1: one class predicted for over 70% of the images while under 40% of them truly are it. The case
    the former 90% rule let through: 83% 'happy' predictions where happy is 25% of the images (a 2-epoch
    FER2013 run)."""
    from minivit.evaluate import DOMINANT_SHARE, DOMINANT_TRUE_SHARE

    assert (DOMINANT_SHARE, DOMINANT_TRUE_SHARE) == (0.7, 0.4)
    classes = ("angry", "happy", "sad", "neutral")
    y = torch.tensor([1] * 25 + [0] * 25 + [2] * 25 + [3] * 25)  # happy: 25%
    p = spread_predictions(y, 1, 83)  # happy for 83 of 100, the other 17 right
    m = classification_metrics(y, p, classes)
    assert m["macro_f1"] > 0.3  # far above the 0.1 of always predicting happy: rule 2 alone would not fire
    message = dominant_class_warning(m)
    assert message.startswith("the model predicts 'happy' for 83% of the 100 images, whose true share is 25%")
    assert dominant_class_warning(classification_metrics(y, spread_predictions(y, 1, 70), classes)) is None  # 70%
    assert dominant_class_warning(classification_metrics(y, spread_predictions(y, 1, 71), classes))  # over 70%
    # a class that truly is 40% of the images may take 75% of the predictions without rule 1 firing
    y40 = torch.tensor([1] * 40 + [0] * 20 + [2] * 20 + [3] * 20)
    assert dominant_class_warning(classification_metrics(y40, spread_predictions(y40, 1, 75), classes)) is None


def test_majority_class_rule_macro_f1_near_the_baseline():
    """Rule 2: macro F1 at most 0.02 above always predicting the most frequent class (a common class
    swallowing the predictions is not caught by rule 1, since its true share is 40% or more)."""
    from minivit.evaluate import BASELINE_MARGIN, majority_baseline_macro_f1

    classes = ("angry", "happy", "sad")
    y = torch.tensor([1] * 60 + [0] * 20 + [2] * 20)  # happy: 60%
    baseline = majority_baseline_macro_f1([20, 60, 20])
    assert baseline == pytest.approx(2 * 0.6 / 1.6 / 3) and BASELINE_MARGIN == 0.02
    p = torch.full((100,), 1)
    p[-1] = 0  # happy for 99 images, and one sad face called angry: no better than the baseline
    near = classification_metrics(y, p, classes)
    assert near["macro_f1"] <= baseline + BASELINE_MARGIN and dominant_class_warning(near)
    assert "macro F1" in dominant_class_warning(near) and f"{baseline:.3f}" in dominant_class_warning(near)
    healthy = classification_metrics(y, spread_predictions(y, 1, 80), classes)  # 80% happy, rest right
    assert healthy["macro_f1"] > baseline + BASELINE_MARGIN and dominant_class_warning(healthy) is None


class Constant(torch.nn.Module):
    """Predicts class `k` for every image."""

    def __init__(self, k, num_classes=7):
        super().__init__()
        self.bias = torch.nn.Parameter(torch.nn.functional.one_hot(torch.tensor(k), num_classes).float())

    def forward(self, x):
        return self.bias.expand(len(x), -1)


def test_evaluate_puts_the_warning_in_metrics_json(tmp_path):
    data = synthetic_faces(70, image_size=8)
    metrics = evaluate(Constant(3), data, lambda x: x.float())
    assert metrics["warning"].startswith("the model predicts 'happy' for 100% of the 70 images")
    saved = json.loads(Path(write_report(metrics, tmp_path)["metrics"]).read_text())
    assert saved["warning"] == metrics["warning"]
    spread = Constant(0)
    spread.forward = lambda x: torch.nn.functional.one_hot(torch.arange(len(x)) % 7, 7).float()  # every class
    assert evaluate(spread, data, lambda x: x.float())["warning"] is None


# ----------------------------------------------------------------------------- attention report

def tiny_vit(classifier="token", num_classes=7, image_size=16):
    torch.manual_seed(0)
    return ViT(ViTConfig(image_size=image_size, patch_size=4, dim=32, depth=2, heads=2, mlp_dim=64,
                         num_classes=num_classes, classifier=classifier))


@pytest.mark.parametrize("classifier,amp", [("token", None), ("gap", torch.bfloat16), ("map", torch.bfloat16)])
def test_attention_report_png(tmp_path, classifier, amp, monkeypatch):
    import minivit.evaluate.reports as ev

    drawn = {}
    real_grid = ev.attention_grid_png
    monkeypatch.setattr(ev, "attention_grid_png", lambda images, heats, captions, path, **kw: drawn.update(
        captions=captions) or real_grid(images, heats, captions, path, **kw))  # spied on, still drawn
    model = tiny_vit(classifier)
    data = synthetic_faces(70, image_size=24, seed=0)  # 10 per class, resized to the model's 16 x 16
    aug = AugmentConfig(16)
    path = attention_report(model, data, lambda x: eval_transform(x, aug), tmp_path / "attention_maps.png",
                            autocast_dtype=amp, batch_size=3)
    assert model.training  # mode restored
    arr = np.asarray(Image.open(path).convert("RGB")).astype(int)
    # 7 classes x 2 = 14 images, 4 a row -> 4 rows; a cell is a 144-px input + 144-px overlay under 2 caption lines
    assert arr.shape[:2] == (78 + 4 * (36 + 144 + 14) + 14, 2 * 14 + 4 * (2 * 144 + 6) + 3 * 30)
    x0, y0 = 14, 78 + 36  # first cell: input panel, then the overlay 6 px to its right
    base, overlay = arr[y0:y0 + 144, x0:x0 + 144], arr[y0:y0 + 144, x0 + 150:x0 + 294]
    assert base.std() > 10 and overlay.std() > 10  # a face, not a blank panel
    assert np.abs(base - overlay).mean() > 10  # the heat map is drawn over it
    # captions: the true label in black, the prediction in green (right) or red (wrong), for every image
    chosen = select_examples(data.targets, 7)
    captions = drawn["captions"]
    assert len(captions) == len(chosen) == 14
    colours = {"green": (0, 128, 0), "red": (255, 0, 0)}
    for k, (i, caption) in enumerate(zip(chosen, captions)):
        (true_text, true_colour), (pred_text, pred_colour) = caption
        true_name = data.classes[int(data.targets[i])]
        assert (true_text, true_colour) == (f"true: {true_name}", "black") and pred_text.startswith("pred: ")
        assert pred_colour == ("green" if pred_text == f"pred: {true_name}" else "red")
        # and drawn so: that exact colour in the cell's caption strip (second line), the other one nowhere in it
        x, y = 14 + (k % 4) * (2 * 144 + 6 + 30), 78 + (k // 4) * (36 + 144 + 14)
        strip = arr[y:y + 36, x:x + 2 * 144 + 6]
        other = colours["red" if pred_colour == "green" else "green"]
        assert (strip[18:] == colours[pred_colour]).all(-1).sum() >= 10
        assert (strip == other).all(-1).sum() == 0 and (strip[:18] == 0).all(-1).sum() >= 10  # black first line


def test_attention_report_maps_are_the_rollout_of_each_image(tmp_path, monkeypatch):
    """The heat maps drawn are attention_rollout of the model's own attention, image by image,
    however the images are batched."""
    import minivit.evaluate.reports as ev
    from minivit.evaluate.rollout import attention_rollout

    drawn = {}
    monkeypatch.setattr(ev, "attention_grid_png", lambda images, heats, captions, path, **kw: drawn.update(
        images=images, heats=heats, captions=captions) or str(path))
    model = tiny_vit("map").eval()
    data = synthetic_faces(14, image_size=16, seed=0)
    aug = AugmentConfig(16)
    attention_report(model, data, lambda x: eval_transform(x, aug), tmp_path / "a.png", batch_size=4)
    chosen = select_examples(data.targets, 7)
    with torch.no_grad():
        logits, out = model(eval_transform(data.images[chosen], aug), attention=True)
    want = attention_rollout(out["attention"], (4, 4), 0, out["map_attention"])
    assert torch.allclose(torch.stack(drawn["heats"]), want, atol=1e-5)
    preds = logits.argmax(-1).tolist()
    assert [c[1][0] for c in drawn["captions"]] == [f"pred: {data.classes[p]}" for p in preds]


# ----------------------------------------------------------------------------- the evaluation command

def fake_run(folder, model, samples=64, image_size=16, seed=3):
    """A run folder as minivit.train writes it: best.safetensors and config.json (train section)."""
    folder.mkdir(parents=True)
    save_checkpoint(model, folder / "best.safetensors", extra={"epoch": 1})
    (folder / "config.json").write_text(json.dumps(
        {"train": {"data": "synthetic", "synthetic_samples": samples, "image_size": image_size, "seed": seed}}))
    return folder


def face_folder(root, n=2, size=(16, 16)):
    for cls in ("happy", "sad"):
        for i in range(n):
            (root / "val" / cls).mkdir(parents=True, exist_ok=True)
            Image.new("L", size, 60 * i + 30).save(root / "val" / cls / f"{i}.png")
    return root


def cli(argv, capsys):
    code = run(main, [str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_evaluating_a_run_redraws_its_synthetic_val_set(tmp_path, capsys):
    model = tiny_vit().eval()
    run_dir = fake_run(tmp_path / "run", model)
    code, out, err = cli(["--checkpoint", run_dir, "--split", "val", "--no-progress", "--batch-size", 5], capsys)
    assert code == 0, err
    assert err == ""  # --no-progress: not one bar
    report = run_dir / "eval-synthetic-val"
    saved = json.loads((report / "metrics.json").read_text())
    val = synthetic_split(64, image_size=16, seed=3)[1]  # what the run validated on
    expected = evaluate(model, val, lambda x: eval_transform(x, AugmentConfig(16)))
    assert saved["num_samples"] == len(val) and saved["accuracy"] == pytest.approx(expected["accuracy"])
    assert saved["confusion_matrix"] == expected["confusion_matrix"] and "warning" in saved
    assert (report / "confusion_matrix.png").is_file() and (report / "attention_maps.png").is_file()
    assert "macro F1" in out


def test_existing_report_is_never_overwritten_without_the_flag(tmp_path, capsys):
    run_dir = fake_run(tmp_path / "run", tiny_vit())
    assert cli(["--checkpoint", run_dir, "--no-progress"], capsys)[0] == 0
    report = run_dir / "eval-synthetic-test"  # the default split: the test faces that selected nothing
    before = {p.name: p.read_bytes() for p in report.iterdir()}
    code, _, err = cli(["--checkpoint", run_dir, "--no-progress"], capsys)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "already holds a report (metrics.json, confusion_matrix.png, attention_maps.png)" in err
    assert "--overwrite" in err
    assert {p.name: p.read_bytes() for p in report.iterdir()} == before  # untouched
    (report / "metrics.json").write_text("{}")
    assert cli(["--checkpoint", run_dir, "--no-progress", "--overwrite"], capsys)[0] == 0
    assert json.loads((report / "metrics.json").read_text())["num_samples"] == 64
    assert not list(report.glob(".*.tmp"))


def test_class_count_mismatch_is_one_line_before_any_work(tmp_path, capsys, monkeypatch):
    import minivit.data

    path = tmp_path / "ten.safetensors"
    save_checkpoint(tiny_vit(num_classes=10), path)
    monkeypatch.setattr(minivit.data, "load_dataset", lambda *a, **k: pytest.fail("data read before the check"))
    code, _, err = cli(["--checkpoint", path, "--data", face_folder(tmp_path / "faces"), "--out", tmp_path / "r"],
                       capsys)
    assert code == 2 and "Traceback" not in err and err.count("\n") == 1
    assert err.strip() == f"error: {path}: checkpoint has 10 classes, the dataset has 7"
    assert not (tmp_path / "r").exists()


def test_run_folder_with_broken_config_json(tmp_path, capsys):
    run_dir = fake_run(tmp_path / "run", tiny_vit())
    (run_dir / "config.json").write_text('{"train": {"data": "synthetic",')
    code, _, err = cli(["--checkpoint", run_dir], capsys)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"error: {run_dir / 'config.json'}: not valid JSON (")
    (run_dir / "config.json").write_text('["not", "a", "run"]')
    code, _, err = cli(["--checkpoint", run_dir], capsys)
    assert code == 2 and "config.json: has no \"train\" section" in err


@pytest.mark.parametrize("value", ["0", "-3", "1.5", "many"])
def test_batch_size_is_checked_up_front(tmp_path, capsys, value):
    with pytest.raises(SystemExit) as e:
        main(["--checkpoint", str(tmp_path / "missing"), "--batch-size", value])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "argument --batch-size: must be an integer >= 1" in err and err.count("\n") == 1


def test_on_bad_image_skip_counts_and_mixed_sizes_are_resized(tmp_path, capsys):
    path = tmp_path / "m.safetensors"
    save_checkpoint(tiny_vit(), path)
    faces = face_folder(tmp_path / "faces")
    Image.new("L", (40, 30), 90).save(faces / "val" / "sad" / "wide.png")  # another size: resized on decode
    (faces / "val" / "happy" / "broken.jpg").write_bytes(b"not a jpeg")
    argv = ["--checkpoint", path, "--data", faces, "--no-progress", "--out", tmp_path / "r"]
    code, _, err = cli(argv, capsys)
    assert code == 2 and "broken.jpg: cannot read image" in err and err.count("\n") == 1
    code, out, err = cli(argv + ["--on-bad-image", "skip"], capsys)
    assert code == 0, err
    # said once, as a warning, singular, naming the file: neither twice nor "1 unreadable items"
    said = [line for line in (out + err).splitlines() if "skipped" in line]
    assert len(said) == 1 and said[0].startswith("warning: skipped 1 unreadable image in ") and "broken.jpg" in said[0]
    saved = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert saved["skipped"] == 1 and saved["num_samples"] == 5


def test_evaluation_never_imports_training():
    imported = set()
    for path in (REPO / "minivit" / "evaluate").glob("*.py"):
        tree = ast.parse(path.read_text())
        imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert "model.vit" in imported and "reports" in imported  # the package's files were read (cli.py, __init__.py)
    assert not any(m == "train" or m.startswith("train.") or "minivit.train" in m for m in imported), imported
    r = subprocess.run([sys.executable, "-c", "import sys, minivit.evaluate; print('minivit.train' in sys.modules)"],
                       capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.stdout.strip() == "False", r.stderr


@pytest.mark.parametrize("command", [["-m", "minivit.evaluate"], ["examples/evaluate_fer.py"]])
def test_command_line_entry_points(tmp_path, command):
    path = tmp_path / "ten.safetensors"
    save_checkpoint(tiny_vit(num_classes=10), path)
    faces = face_folder(tmp_path / "faces")
    r = subprocess.run([sys.executable, *command, "--checkpoint", str(path), "--data", str(faces)],
                       capture_output=True, text=True, cwd=REPO, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().endswith("checkpoint has 10 classes, the dataset has 7")
    r = subprocess.run([sys.executable, *command, "--help"], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert r.returncode == 0 and "--on-bad-image" in r.stdout and "--overwrite" in r.stdout
