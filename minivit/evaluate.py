"""Evaluation: predictions, classification metrics and the report written for a model on a dataset.

The report of a model on a dataset is:
    metrics.json           accuracy, macro/weighted F1, per-class precision/recall/F1/support,
                           the confusion matrix, a ``warning`` when the model is close to a majority-class
                           predictor (dominant_class_warning), with --tta the flip-averaged numbers, and
                           what was measured: ``split``, ``data``, ``split_label`` (split, source, image
                           count, whether it selected the checkpoint), ``note`` (data of another kind
                           than the training data: synthetic vs real, gray vs colour, other classes)
    confusion_matrix.png   rows: true class, columns: predicted, coloured by row rate; titled with the split
    attention_maps.png     a couple of images per class with their attention rollout overlaid
                           (attention_report), titled with the split and the true and predicted labels

From the command line (``examples/evaluate_fer.py`` is the same command)::

    python -m minivit.evaluate --checkpoint runs/synthetic-20260101-120000        # the run's own test split
    python -m minivit.evaluate --checkpoint runs/fer --split val                  # its validation split, as it had it
    python -m minivit.evaluate --checkpoint runs/fer/best.safetensors --data ../shared/data/fer2013 --tta

The default split is "test": the one that selected nothing, so its numbers are not optimistic.

This module never imports minivit.train: a run folder is read through its files (best.safetensors,
config.json), so evaluation works on any checkpoint, trained here or elsewhere.

Example:
    >>> import torch
    >>> from minivit.evaluate import classification_metrics
    >>> m = classification_metrics(torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 1, 1]), classes=("a", "b"))
    >>> m["accuracy"], round(m["macro_f1"], 3)
    (0.75, 0.733)
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

from .checkpoints.io import ensure_folder, file_in_the_way, write_json
from .cli import ArgumentParser, integer, run
from .device import DEVICES
from .errors import CheckpointError, ConfigError
from .plots import attention_grid_png, confusion_matrix_png
from .rollout import attention_rollout

REPORT_FILES = ("metrics.json", "confusion_matrix.png", "attention_maps.png")  # what --out receives
# A folder holding one of these is a transformers / timm checkpoint, even with a config.json: not a run.
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                   "pytorch_model.bin.index.json")


def confusion_matrix(y_true: torch.Tensor, y_pred: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(K, K) int64 counts; row = true class, column = predicted class."""
    idx = y_true.long() * num_classes + y_pred.long()
    return torch.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def classification_metrics(y_true: torch.Tensor, y_pred: torch.Tensor, classes) -> dict:
    """Accuracy, macro and support-weighted F1, and a per-class table, from hard labels.

    A class with no predictions has precision 0 (and no support: recall 0), as scikit-learn's
    ``zero_division=0``; macro F1 averages over every class, present or not in y_true.
    """
    k = len(classes)
    cm = confusion_matrix(y_true.cpu(), y_pred.cpu(), k).double()
    tp = cm.diag()
    support, predicted = cm.sum(1), cm.sum(0)
    precision = torch.where(predicted > 0, tp / predicted.clamp(min=1), torch.zeros_like(tp))
    recall = torch.where(support > 0, tp / support.clamp(min=1), torch.zeros_like(tp))
    denom = precision + recall
    f1 = torch.where(denom > 0, 2 * precision * recall / denom.clamp(min=1e-12), torch.zeros_like(tp))
    total = support.sum().clamp(min=1)
    per_class = [
        dict(name=name, precision=precision[i].item(), recall=recall[i].item(), f1=f1[i].item(),
             support=int(support[i].item()))
        for i, name in enumerate(classes)
    ]
    return dict(
        accuracy=(tp.sum() / total).item(),
        macro_f1=f1.mean().item(),
        weighted_f1=((f1 * support).sum() / total).item(),
        num_samples=int(support.sum().item()),
        per_class=per_class,
        confusion_matrix=cm.long().tolist(),
        classes=list(classes),
    )


# A model close to a majority-class predictor is named in the console and in metrics.json ("warning"). The
# rule, stated once: either
DOMINANT_SHARE = 0.70  # 1. one class gets more than 70% of the predictions while
DOMINANT_TRUE_SHARE = 0.40  # under 40% of the images truly are that class, or
BASELINE_MARGIN = 0.02  # 2. macro F1 is at most 0.02 above the majority-class baseline's.


def majority_baseline_macro_f1(support) -> float:
    """Macro F1 of always predicting the most frequent true class: that class has precision p (its
    share), recall 1, F1 2p / (1 + p); every other class 0; averaged over all K classes.

    >>> round(majority_baseline_macro_f1([467, 56, 496, 895, 653, 415, 607]), 4)  # FER2013 PublicTest
    0.057
    """
    support = torch.as_tensor(support, dtype=torch.float64)
    total = float(support.sum())
    if total == 0:
        return 0.0
    p = float(support.max()) / total
    return 2 * p / (1 + p) / len(support)


def dominant_class_warning(metrics: dict) -> str | None:
    """A one-line warning when the model is close to a majority-class predictor, else None: one class
    predicted for more than DOMINANT_SHARE (70%) of the images while its true share is under
    DOMINANT_TRUE_SHARE (40%), or macro F1 within BASELINE_MARGIN (0.02) of always predicting the most
    frequent class (majority_baseline_macro_f1). Reads the confusion matrix and macro F1 of ``metrics``.

    >>> classes = ("angry", "happy", "sad", "neutral")
    >>> y = torch.tensor([0] * 25 + [1] * 25 + [2] * 25 + [3] * 25)  # happy: 25% of the images
    >>> p = torch.cat([torch.tensor([1] * 83), torch.tensor([0, 2, 3] * 5 + [0, 2])])  # happy for 83%
    >>> dominant_class_warning(classification_metrics(y, p, classes)).split(";")[0]
    "the model predicts 'happy' for 83% of the 100 images, whose true share is 25%"
    >>> dominant_class_warning(classification_metrics(y, y, classes)) is None  # a healthy model
    True
    """
    cm = torch.tensor(metrics["confusion_matrix"], dtype=torch.float64)  # (K, K) rows true, columns predicted
    predicted, support = cm.sum(0), cm.sum(1)
    total = float(predicted.sum())
    if total == 0:
        return None
    top = int(predicted.argmax())
    share, true_share = float(predicted[top]) / total, float(support[top]) / total
    baseline = majority_baseline_macro_f1(support)
    swallowed = share > DOMINANT_SHARE and true_share < DOMINANT_TRUE_SHARE  # rule 1
    if not swallowed and metrics["macro_f1"] > baseline + BASELINE_MARGIN:  # nor rule 2
        return None
    majority = metrics["classes"][int(support.argmax())]
    return (f"the model predicts {metrics['classes'][top]!r} for {100 * share:.0f}% of the {int(total)} images, "
            f"whose true share is {100 * true_share:.0f}%; macro F1 {metrics['macro_f1']:.3f} against "
            f"{baseline:.3f} for always predicting {majority!r}: it is close to a majority-class predictor "
            f"(check the learning rate, warm-up, number of epochs and class balance)")


def format_table(metrics: dict) -> str:
    """The per-class table as fixed-width text (what the CLI prints)."""
    lines = [f"{'class':<10} {'precision':>9} {'recall':>7} {'f1':>7} {'support':>8}"]
    for row in metrics["per_class"]:
        lines.append(f"{row['name']:<10} {row['precision']:>9.3f} {row['recall']:>7.3f} {row['f1']:>7.3f} "
                     f"{row['support']:>8d}")
    lines.append(f"accuracy {metrics['accuracy']:.4f}  macro F1 {metrics['macro_f1']:.4f}  "
                 f"weighted F1 {metrics['weighted_f1']:.4f}  (n={metrics['num_samples']})")
    return "\n".join(lines)


def hard_targets(targets: torch.Tensor) -> torch.Tensor:
    """Class indices from int labels (N,) or soft labels (N, K) (the majority class)."""
    return targets.argmax(1) if targets.ndim == 2 else targets


@torch.no_grad()
def predict(model: torch.nn.Module, images: torch.Tensor, transform, *, batch_size: int = 256,
            tta: bool = False, autocast_dtype: torch.dtype | None = None, progress: bool = False) -> torch.Tensor:
    """Logits (N, K) float32 on the CPU for uint8 images (N, C, H, W) kept on the CPU.

    ``transform`` maps a uint8 batch on the model's device to float input (e.g.
    ``lambda x: eval_transform(x, aug_cfg)``). ``tta`` averages the logits of each image and
    its horizontal mirror (faces are left-right symmetric; the mirror is a free second view).
    """
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    amp = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else nullcontext()
    out = []
    starts = range(0, len(images), batch_size)
    for start in tqdm(starts, desc="eval", leave=False, disable=not progress):
        x = transform(images[start:start + batch_size].to(device, non_blocking=True))  # (B, C, S, S)
        with amp:
            logits = model(x).float()  # (B, K)
            if tta:
                logits = 0.5 * (logits + model(x.flip(-1)).float())
        out.append(logits.cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, 0)


def evaluate(model: torch.nn.Module, dataset, transform, *, batch_size: int = 256, tta: bool = False,
             autocast_dtype: torch.dtype | None = None, progress: bool = False) -> dict:
    """Metrics of ``model`` on an ImageSet (see classification_metrics), plus mean cross-entropy ``loss``
    and ``warning`` (dominant_class_warning, None when the predictions are not collapsed)."""
    logits = predict(model, dataset.images, transform, batch_size=batch_size, tta=tta,
                     autocast_dtype=autocast_dtype, progress=progress)
    y = hard_targets(dataset.targets)
    metrics = classification_metrics(y, logits.argmax(1), dataset.classes)
    metrics["loss"] = torch.nn.functional.cross_entropy(logits, y).item() if len(y) else float("nan")
    metrics["tta"] = tta
    metrics["warning"] = dominant_class_warning(metrics)
    return metrics


def confusion_report_png(metrics: dict, path, label: str = "") -> str:
    """confusion_matrix.png of a report: the accuracy in the title, ``label`` (which split of which data,
    how many images: minivit.data.split_label) under it."""
    return confusion_matrix_png(metrics["confusion_matrix"], metrics["classes"], path,
                                title=f"Confusion matrix (accuracy {100 * metrics['accuracy']:.1f}%)", subtitle=label)


def write_report(metrics: dict, out_dir, *, name: str = "metrics", extra: dict | None = None, label: str = "") -> dict:
    """Write ``<name>.json`` and ``confusion_matrix.png`` (or ``<name>_confusion_matrix.png``) into out_dir;
    ``label`` names what was measured, in the PNG (see confusion_report_png).

    Returns the paths written. The JSON is written atomically (temp file + os.replace).
    """
    out_dir = ensure_folder(out_dir)
    stem = "" if name == "metrics" else f"{name}_"
    cm_path = confusion_report_png(metrics, out_dir / f"{stem}confusion_matrix.png", label)
    json_path = out_dir / f"{name}.json"
    write_json({**metrics, **(extra or {})}, json_path)
    return {"metrics": str(json_path), "confusion_matrix": cm_path}


def select_examples(targets: torch.Tensor, num_classes: int, *, per_class: int = 2, min_images: int = 8) -> list[int]:
    """Indices of a few examples per class, in class order: the first ones of each class in the set.

    Takes ``per_class`` of every class present, more per class (up to the same number each) when
    there are few classes, so that about ``min_images`` are picked where the set has them.

    >>> select_examples(torch.tensor([1, 0, 1, 1, 0, 2, 1]), 3, per_class=1, min_images=4)
    [1, 4, 0, 2, 5]
    """
    y = hard_targets(targets).cpu()
    by_class = [torch.nonzero(y == c).flatten().tolist() for c in range(num_classes)]
    present = sum(1 for idx in by_class if idx)
    k = max(per_class, -(-min_images // max(present, 1)))  # ceil: fill ~min_images with few classes
    return [i for idx in by_class for i in idx[:k]]


def _pooling(cfg) -> str:
    if cfg.classifier == "map":
        return "weighted by the MAP head's probe attention"
    return "the CLS token's row" if cfg.num_prefix_tokens else "mean over all tokens (GAP)"


@torch.no_grad()
def attention_report(model: torch.nn.Module, dataset, transform, path, *, per_class: int = 2, min_images: int = 8,
                     autocast_dtype: torch.dtype | None = None, title: str = "Attention maps",
                     batch_size: int = 8) -> str:
    """Draw ``attention_maps.png``: a few images per class (select_examples), each beside its attention
    rollout overlay (minivit.rollout.attention_rollout), captioned with the true and predicted labels.

    The model's one forward with ``attention=True`` gives every block's attention (and a MAP head's
    probe attention); the rollout follows the model's pooling (CLS row, GAP mean, or the probe).
    ``batch_size`` images at a time bound the memory of the (B, heads, T, T) maps. Runs on the
    model's device, under autocast when ``autocast_dtype`` is given; rollout works in float32.
    Returns the path written.
    """
    device = next(model.parameters()).device
    cfg = model.config
    classes = list(dataset.classes)
    truth = hard_targets(dataset.targets)
    chosen = select_examples(dataset.targets, len(classes), per_class=per_class, min_images=min_images)
    was_training = model.training
    model.eval()
    amp = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else nullcontext()
    heats, preds = [], []
    try:
        for start in range(0, len(chosen), batch_size):
            x = transform(dataset.images[chosen[start:start + batch_size]].to(device))  # (b, C, S, S)
            with amp:
                logits, out = model(x, attention=True)
            heats += attention_rollout(out["attention"], cfg.grid, cfg.num_prefix_tokens,
                                       out.get("map_attention")).cpu()  # b x (gh, gw)
            preds += logits.float().argmax(-1).tolist()
    finally:
        model.train(was_training)
    captions = []
    for i, pred in zip(chosen, preds):
        true = int(truth[i])
        name = classes[pred] if pred < len(classes) else str(pred)
        captions.append([(f"true: {classes[true]}", "black"),
                         (f"pred: {name}", "green" if pred == true else "red")])
    # whole classes per row: k examples of a class side by side, two classes a row when k is small
    k = max(Counter(int(truth[i]) for i in chosen).values(), default=1)
    subtitle = (f"left: input; right: attention rollout (Abnar & Zuidema 2020) over {cfg.depth} layers, "
                f"{_pooling(cfg)}, scaled to [0, 1] per image")
    return attention_grid_png([dataset.images[i] for i in chosen], heats, captions, path, cols=k * max(1, 4 // k),
                              title=title, subtitle=subtitle)


# -- evaluating a saved model: the checkpoint, the run folder, the data, the report folder ----------

def find_checkpoint(checkpoint) -> tuple[str, Path | None]:
    """(what ViT.from_pretrained should read, the run folder or None) for a --checkpoint value.

    A run folder (config.json and no transformers/timm weight file) means its best.safetensors; a
    file inside a run folder keeps that folder as its run. Anything else (a .npz, a transformers
    folder, a Hub id) has no run.
    """
    path = Path(checkpoint)

    def is_run(folder: Path) -> bool:
        return (folder / "config.json").is_file() and not any((folder / f).exists() for f in HF_WEIGHT_FILES)

    if path.is_dir() and is_run(path):
        if not (path / "best.safetensors").is_file():
            raise CheckpointError(f"{checkpoint}: run folder without best.safetensors (no epoch finished yet)")
        return str(path / "best.safetensors"), path
    if path.is_file() and is_run(path.parent):
        return str(path), path.parent
    return str(checkpoint), None


def run_config(run_dir: Path) -> dict:
    """A run folder's config.json; one line naming the file if it is unreadable or has no "train" section."""
    path = run_dir / "config.json"
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        raise ConfigError(f"{path}: not valid JSON ({str(e).splitlines()[0]})") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror})") from None
    if not isinstance(saved, dict) or not isinstance(saved.get("train"), dict):
        raise ConfigError(f"{path}: has no \"train\" section (not a minivit run's config.json)")
    return saved


def run_train_fields(run_dir: Path) -> dict:
    """The "train" section of a run folder's config.json (see run_config)."""
    return run_config(run_dir)["train"]


@dataclass
class RunData:
    """What a run folder says about its data: the dataset, how it was read, and its split rule (the one
    its config.json recorded; for runs from before that record, minivit.data.splits.legacy_rule)."""

    folder: Path
    train: dict  # config.json "train"
    rule: dict

    @classmethod
    def read(cls, folder: Path) -> "RunData":
        from .data.splits import legacy_rule

        saved = run_config(folder)
        section = saved.get("data") if isinstance(saved.get("data"), dict) else {}
        data = str(saved["train"].get("data", "synthetic"))
        rule = section.get("split") if isinstance(section.get("split"), dict) else legacy_rule(data)
        return cls(folder, saved["train"], rule)

    @property
    def data(self) -> str:
        return str(self.train.get("data", "synthetic"))

    @property
    def given(self) -> bool:
        """Whether the run trained on ImageSets passed to train() in Python: no dataset to re-read."""
        return self.rule.get("val") == "given"

    def owns(self, data: str) -> bool:
        """Whether ``data`` is the dataset this run trained on (then its split rule applies)."""
        if self.given:
            return False
        if data == "synthetic" or self.data == "synthetic":
            return data == self.data
        return Path(data).expanduser().resolve() == Path(self.data).expanduser().resolve()

    def synthetic(self) -> dict:
        missing = [k for k in ("synthetic_samples", "img_size", "seed") if k not in self.train]
        if missing:
            raise ConfigError(f"{self.folder / 'config.json'}: no train {', '.join(missing)}: cannot re-draw the "
                              f"run's synthetic faces")
        return dict(samples=self.train["synthetic_samples"], image_size=self.train["img_size"], seed=self.train["seed"])


def load_eval_data(data: str, split: str, run: RunData | None, model, *, fallback: bool = False, **read):
    """(the ImageSet to evaluate on, the split it is). The run's own data is split as the run split it
    (minivit.data.splits.load_run_split): "val" is its carved validation split, rebuilt and checked
    against the recorded hash, and "synthetic" re-draws its synthetic faces. Other data: that dataset's
    split (load_dataset). Folders of mixed image sizes are resized to the model's input size; ``read``:
    load_dataset's on_error, progress, label_mode, ferplus_images. ``fallback``: a dataset without
    ``split`` is evaluated on its val split instead (the report names the split it used)."""
    from .data import MissingSplit, load_dataset, load_run_split

    read = dict(read, resize_mixed_to=model.config.image_size)
    if data == "synthetic" and (run is None or not run.owns(data)):
        raise ConfigError("--data synthetic re-draws a run's own synthetic faces: --checkpoint must be a run folder "
                          "(or a file inside one) of a synthetic run; give --data a dataset path otherwise")

    def load(s: str):
        if run is not None and run.owns(data):
            return load_run_split(data, s, run.rule, synthetic=run.synthetic() if data == "synthetic" else None,
                                  **read)
        return load_dataset(data, s, **read)

    try:
        return load(split), split
    except MissingSplit:
        if not fallback:
            raise
    try:
        return load("val"), "val"
    except MissingSplit:
        raise MissingSplit(f"{data}: has neither a test nor a val split; pass --split train to score the "
                           f"training images") from None


def check_classes(model, num_classes: int, where: str) -> None:
    """A classifier whose output count differs from the dataset's classes cannot be scored: say so first."""
    k = model.config.num_classes
    if k != num_classes:
        has = "no classifier head (num_classes=0)" if k == 0 else f"{k} classes"
        raise ConfigError(f"{where}: checkpoint has {has}, the dataset has {num_classes}")


def check_report_folder(out: Path, overwrite: bool) -> None:
    """Never lose a report: a folder that already holds one is refused unless ``overwrite``.

    Other files in the folder are left alone either way; --overwrite replaces the report's own files
    (atomically, one by one), nothing else.
    """
    held = [f for f in REPORT_FILES if (out / f).exists()]
    if held and not overwrite:
        raise ConfigError(f"--out {out}: already holds a report ({', '.join(held)}); pass --overwrite to replace "
                          f"it, or choose another --out")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a folder")
    if (blocker := file_in_the_way(out / REPORT_FILES[0])) is not None:
        raise ConfigError(f"--out {out}: {blocker} is a file, not a folder")


def report_folder(out, run_dir: Path | None, source: str, data: str, split: str, tta: bool) -> Path:
    """--out, or ``<run>/eval-<data>-<split>[-tta]`` (``runs/eval-...-<checkpoint>`` outside a run)."""
    name = "synthetic" if data == "synthetic" else Path(data).name
    report = f"eval-{name}-{split}{'-tta' if tta else ''}"
    return Path(out) if out else run_dir / report if run_dir else Path("runs") / f"{report}-{Path(source).stem}"


def evaluate_checkpoint(checkpoint, data: str | None = None, *, split: str | None = None, out=None, tta: bool = False,
                        device: str = "auto", batch_size: int = 256, ferplus_images=None,
                        label_mode: str = "majority", progress: bool = True, on_error: str = "raise",
                        overwrite: bool = False) -> dict:
    """Evaluate a saved model on a dataset split and write the report; returns the metrics.

    ``checkpoint``: a run folder (its best.safetensors is used), a minivit .safetensors, or anything
    ViT.from_pretrained reads. ``data``: a dataset path, or "synthetic" (a run's own synthetic faces);
    by default the run's own data, split as the run split it (its carved validation split rebuilt).
    ``split``: by default "test", the split that selected nothing (a dataset without one: its val split,
    said so). The report goes to ``out`` (default ``<run>/eval-<data>-<split>``), which must not already
    hold one unless ``overwrite``. Printed: what was measured (split, source, image count, and whether it
    selected the checkpoint), a note when the data differs in kind from the training data, the per-class
    table and any majority-class warning. Every check that can fail runs before the model sees an image.
    """
    from .data import LABELS
    from .device import pick_device
    from .model import ViT

    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size={batch_size!r}: expected an integer >= 1")
    source, run_dir = find_checkpoint(checkpoint)
    run = RunData.read(run_dir) if run_dir else None
    if data is None:  # the run's own data, read the way the run read it
        if run_dir is None and not Path(checkpoint).exists():
            raise CheckpointError(f"{checkpoint}: no such file or folder (and --data is needed for a checkpoint "
                                  f"that is not in a run folder)")
        if run is None:
            raise ConfigError(f"--data is needed: {checkpoint} is not a run folder (no config.json beside it)")
        if run.given:
            raise ConfigError(f"--data is needed: the run in {run_dir} trained on images passed to train() in "
                              f"Python, which evaluate cannot read again")
        data, label_mode = run.data, run.train.get("label_mode", label_mode)
        ferplus_images = ferplus_images or run.train.get("ferplus_images")
    out_dir = report_folder(out, run_dir, source, data, split or "test", tta)
    check_report_folder(out_dir, overwrite)
    model = ViT.from_pretrained(source).to(pick_device(device)).eval()
    check_classes(model, len(LABELS), source)  # every reader maps to LABELS: known before reading any data
    dataset, used = load_eval_data(data, split or "test", run, model, fallback=split is None, on_error=on_error,
                                   progress=progress, label_mode=label_mode, ferplus_images=ferplus_images)
    if used != (split or "test"):
        print(f"note: {data} has no test split: evaluating its {used} split")
        if out is None:
            out_dir = report_folder(out, run_dir, source, data, used, tta)
            check_report_folder(out_dir, overwrite)
    check_classes(model, len(dataset.classes), source)
    rule = run.rule if run is not None and run.owns(data) else None
    return score_and_report(model, dataset, used, rule, source, out_dir, tta=tta, batch_size=batch_size,
                            progress=progress)


def score_and_report(model, dataset, split: str, rule: dict | None, source: str, out_dir: Path, *, tta: bool,
                     batch_size: int, progress: bool) -> dict:
    """evaluate_checkpoint's second half: score, write the report, print what was measured."""
    from .augment import AugmentConfig, eval_transform
    from .data import data_kind, kind_note, split_label
    from .data.provenance import read_trained_on
    from .data.splits import selection_role, split_title
    from .device import resolve_precision

    device = next(model.parameters()).device
    aug = AugmentConfig(image_size=model.config.image_size, channels=model.config.in_chans)
    _, dtype, _ = resolve_precision("auto", device)
    label = split_label(split, dataset, rule)
    note = kind_note(read_trained_on(source), data_kind(dataset))
    print(f"{Path(source).name} on {label}" + (" (flip TTA)" if tta else ""))
    if note:
        print(f"note: {note}")
    metrics = evaluate(model, dataset, lambda x: eval_transform(x, aug), batch_size=batch_size, tta=tta,
                       autocast_dtype=dtype, progress=progress)
    metrics["skipped"] = dataset.skipped
    paths = write_report(metrics, out_dir, label=label, extra=dict(
        checkpoint=source, data=dataset.source, split=split, split_label=label,
        selection=selection_role(split, rule), note=note))
    attention = attention_report(model, dataset, lambda x: eval_transform(x, aug), out_dir / "attention_maps.png",
                                 autocast_dtype=dtype,
                                 title=f"Attention maps: {Path(source).name} on {split_title(split, dataset, rule)}")
    print(format_table(metrics))
    if dataset.skipped:
        print(f"skipped {dataset.skipped} unreadable items (--on-bad-image skip)")
    if metrics["warning"]:
        print(f"warning: {metrics['warning']}")
    print(f"report: {paths['metrics']}, {paths['confusion_matrix']}, {attention}")
    return metrics


# -- the command line ----------------------------------------------------------------------------

def build_parser(prog: str | None = None) -> ArgumentParser:
    p = ArgumentParser(prog=prog, description="Evaluate a saved model on a facial-expression dataset and write "
                       "the report (metrics.json, confusion_matrix.png, attention_maps.png).")
    p.add_argument("--checkpoint", required=True, help="run folder (uses best.safetensors), a minivit "
                   ".safetensors, or anything ViT.from_pretrained reads")
    p.add_argument("--data", help="dataset path (FER2013 csv, image folder, FER+ csv, RAF-DB root) or 'synthetic' "
                   "(a run's own synthetic faces); default: the data the run trained on")
    p.add_argument("--split", choices=("train", "val", "test"),
                   help="default test: the split that selected nothing (a dataset without one: its val split, said "
                        "so); val on a run's own data is its validation split as the run had it, a carved one rebuilt")
    p.add_argument("--ferplus-images", help="FER+ csv only: the original fer2013.csv or the folder of its images")
    p.add_argument("--label-mode", default="majority", choices=("majority", "soft"), help="FER+ only")
    p.add_argument("--tta", action="store_true", help="average the logits of each image and its mirror")
    p.add_argument("--batch-size", type=integer(at_least=1), default=256, help="images per forward pass, >= 1")
    p.add_argument("--device", default="auto", choices=DEVICES, help="auto: a GPU when CUDA is available, else the CPU")
    p.add_argument("--on-bad-image", default="raise", choices=("raise", "skip"),
                   help="an unreadable image or malformed row: stop with its name (raise, default) or skip it and "
                        "report the count (skip)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (reading, decoding, evaluating)")
    p.add_argument("--out", help="report folder (default <run>/eval-<data>-<split>); refused if it already holds "
                   "a report, unless --overwrite")
    p.add_argument("--overwrite", action="store_true", help="replace the report files already in --out")
    return p


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """The evaluation command; MinivitErrors are turned into one line and exit 2 by minivit.cli.run."""
    args = build_parser(prog).parse_args(argv)
    evaluate_checkpoint(args.checkpoint, args.data, split=args.split, out=args.out, tta=args.tta,
                        device=args.device, batch_size=args.batch_size, ferplus_images=args.ferplus_images,
                        label_mode=args.label_mode, progress=not args.no_progress, on_error=args.on_bad_image,
                        overwrite=args.overwrite)
    return 0


__all__ = ["evaluate_checkpoint", "confusion_matrix", "classification_metrics", "dominant_class_warning",
           "majority_baseline_macro_f1", "format_table", "hard_targets", "predict", "evaluate", "write_report",
           "confusion_report_png", "select_examples", "attention_report", "find_checkpoint", "main"]


if __name__ == "__main__":
    sys.exit(run(main))
