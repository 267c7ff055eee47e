"""The report of a model on a dataset: predictions, metrics, and the files people read.

    metrics.json           accuracy, macro/weighted F1, per-class precision/recall/F1/support, the
                           confusion matrix, a ``warning`` when the model is close to a majority-class
                           predictor (metrics.dominant_class_warning), with --tta the flip-averaged numbers,
                           and what was measured (evaluate/checkpoint.py and the training report add it)
    confusion_matrix.png   rows: true class, columns: predicted, coloured by row rate; titled with the split
    attention_maps.png     a couple of images per class with their attention rollout overlaid
                           (attention_report), titled with the split and the true and predicted labels

Training writes this report for its best checkpoint (minivit/train/report.py) and
``python -m minivit.evaluate`` for any checkpoint (minivit/evaluate/checkpoint.py).
"""

from __future__ import annotations

from collections import Counter
from contextlib import nullcontext

import torch

from ..common.files import ensure_folder, write_json
from ..common.console import bar
from .metrics import classification_metrics, dominant_class_warning, hard_targets
from .plots import attention_grid_png, confusion_matrix_png
from .rollout import attention_rollout


@torch.no_grad()
def predict(model: torch.nn.Module, images: torch.Tensor, transform, *, batch_size: int = 256,
            tta: bool = False, autocast_dtype: torch.dtype | None = None, progress: bool = False) -> torch.Tensor:
    """Logits (N, K) float32 on the CPU for uint8 images (N, C, H, W) kept on the CPU.

    ``transform`` maps a uint8 batch on the model's device to float input (e.g.
    ``lambda x: eval_transform(x, aug)``). ``tta`` averages the logits of each image and
    its horizontal mirror (faces are left-right symmetric; the mirror is a free second view).
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    amp = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else nullcontext()
    out = []
    starts = range(0, len(images), batch_size)
    for start in bar(starts, desc="eval", leave=False, show=progress):
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


def _pooling(config) -> str:
    if config.classifier == "map":
        return "weighted by the MAP head's probe attention"
    return "the CLS token's row" if config.num_prefix_tokens else "mean over all tokens (GAP)"


@torch.no_grad()
def attention_report(model: torch.nn.Module, dataset, transform, path, *, per_class: int = 2, min_images: int = 8,
                     autocast_dtype: torch.dtype | None = None, title: str = "Attention maps",
                     batch_size: int = 8) -> str:
    """Draw ``attention_maps.png``: a few images per class (select_examples), each beside its attention
    rollout overlay (minivit.evaluate.rollout.attention_rollout), captioned with the true and predicted labels.

    The model's one forward with ``attention=True`` gives every block's attention (and a MAP head's
    probe attention); the rollout follows the model's pooling (CLS row, GAP mean, or the probe).
    ``batch_size`` images at a time bound the memory of the (B, heads, T, T) maps. Runs on the
    model's device, under autocast when ``autocast_dtype`` is given; rollout works in float32.
    Returns the path written.
    """
    device = next(model.parameters()).device
    config = model.config
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
            heats += attention_rollout(out["attention"], config.grid, config.num_prefix_tokens,
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
    subtitle = (f"left: input; right: attention rollout (Abnar & Zuidema 2020) over {config.depth} layers, "
                f"{_pooling(config)}, scaled to [0, 1] per image")
    return attention_grid_png([dataset.images[i] for i in chosen], heats, captions, path, cols=k * max(1, 4 // k),
                              title=title, subtitle=subtitle)
