"""Evaluation: predictions, classification metrics and the report written to a run folder.

The report of a model on a dataset is:
    metrics.json           accuracy, macro/weighted F1, per-class precision/recall/F1/support,
                           the confusion matrix (and with --tta, the flip-averaged numbers)
    confusion_matrix.png   rows: true class, columns: predicted, coloured by row rate
    attention_maps.png     a couple of images per class with their attention rollout overlaid
                           (attention_report), titled with the true and predicted labels

Example:
    >>> import torch
    >>> from minivit.evaluate import classification_metrics
    >>> m = classification_metrics(torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 1, 1]), classes=("a", "b"))
    >>> m["accuracy"], round(m["macro_f1"], 3)
    (0.75, 0.733)
"""

from __future__ import annotations

import json
import math
from collections import Counter
from contextlib import nullcontext
from pathlib import Path

import torch

from .checkpoints.io import write_json
from .plots import attention_grid_png, attention_rollout, confusion_matrix_png


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
        x = transform(images[start:start + batch_size].to(device, non_blocking=True))  # (B, 3, S, S)
        with amp:
            logits = model(x).float()  # (B, K)
            if tta:
                logits = 0.5 * (logits + model(x.flip(-1)).float())
        out.append(logits.cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, 0)


def evaluate(model: torch.nn.Module, dataset, transform, *, batch_size: int = 256, tta: bool = False,
             autocast_dtype: torch.dtype | None = None, progress: bool = False) -> dict:
    """Metrics of ``model`` on an ImageSet (see classification_metrics), plus mean cross-entropy ``loss``."""
    logits = predict(model, dataset.images, transform, batch_size=batch_size, tta=tta,
                     autocast_dtype=autocast_dtype, progress=progress)
    y = hard_targets(dataset.targets)
    metrics = classification_metrics(y, logits.argmax(1), dataset.classes)
    metrics["loss"] = torch.nn.functional.cross_entropy(logits, y).item() if len(y) else float("nan")
    metrics["tta"] = tta
    return metrics


def write_report(metrics: dict, out_dir, *, name: str = "metrics", extra: dict | None = None) -> dict:
    """Write ``<name>.json`` and ``confusion_matrix.png`` (or ``<name>_confusion_matrix.png``) into out_dir.

    Returns the paths written. The JSON is written atomically (temp file + os.replace).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = "" if name == "metrics" else f"{name}_"
    cm_path = confusion_matrix_png(metrics["confusion_matrix"], metrics["classes"],
                                   out_dir / f"{stem}confusion_matrix.png",
                                   title=f"Confusion matrix (accuracy {100 * metrics['accuracy']:.1f}%)")
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


def map_pool_attention(head: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """A MAP head's pooling attention (B, heads, 1, N) over its input tokens (B, N, D), float32.

    The same probabilities minivit.model.MAPHead.forward feeds to its fused attention: the probe's
    query against the keys, the first half of the fused ``kv`` projection ([k; v], heads contiguous).
    """
    B, N, D = tokens.shape
    h = head.heads
    q = head.q(head.probe).float().reshape(1, h, 1, D // h)  # (1, h, 1, hd)
    k = head.kv(tokens).float()[..., :D].reshape(B, N, h, D // h).transpose(1, 2)  # (B, h, N, hd)
    return (q @ k.transpose(-2, -1) / math.sqrt(D // h)).softmax(-1)  # (B, h, 1, N)


@torch.no_grad()
def attention_report(model: torch.nn.Module, dataset, transform, path, *, per_class: int = 2, min_images: int = 8,
                     autocast_dtype: torch.dtype | None = None, title: str = "Attention maps") -> str:
    """Draw ``attention_maps.png``: a few images per class (select_examples), each beside its attention
    rollout overlay (minivit.plots.attention_rollout), captioned with the true and predicted labels.

    The map follows the model's pooling: the CLS token's rollout row for ``classifier="token"``, the
    mean of all rows for global average pooling ("gap": the pooled vector is the mean of the final
    tokens), and for attention pooling ("map") the probe's attention over the final tokens times the
    rollout. Runs on the model's device, under autocast when ``autocast_dtype`` is given; maps are
    cast to float32 before any arithmetic.
    Returns the path written.
    """
    device = next(model.parameters()).device
    cfg = model.config
    classes = list(dataset.classes)
    was_training = model.training
    model.eval()
    amp = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else nullcontext()
    truth = hard_targets(dataset.targets)
    images, heats, captions, pooled_by = [], [], [], None
    # A MAP head's pooling attention is not among forward_with_attention's maps: catch the head's
    # input tokens and recompute it (map_pool_attention), so the map shows what the probe read.
    map_head, pool_inputs = getattr(model, "map_head", None), []
    hook = map_head.register_forward_hook(lambda m, args, out: pool_inputs.append(args[0])) if map_head else None
    chosen = select_examples(dataset.targets, len(classes), per_class=per_class, min_images=min_images)
    try:
        for i in chosen:
            image = dataset.images[i]  # (C, H, W) uint8
            x = transform(image[None].to(device))  # (1, 3, S, S): one at a time, the maps are (heads, T, T) each
            with amp:
                logits, attentions = model.forward_with_attention(x)
                if pool_inputs:
                    attentions = [*attentions, map_pool_attention(map_head, pool_inputs.pop())]  # + (1, h, 1, N)
            # heads averaged on the device (less to copy); float32 before numpy sees it
            attentions = [a.float()[0].mean(0, keepdim=True).cpu() for a in attentions]  # each (1, Q, T)
            last = attentions[-1].shape
            pooled_by = ("the CLS token's row" if cfg.num_prefix_tokens else
                         "weighted by the MAP head's probe attention" if last[-2] != last[-1] else
                         "mean over all tokens (GAP)")
            heats.append(attention_rollout(attentions, cfg.num_prefix_tokens, tuple(cfg.grid)))
            pred, true = int(logits.float().argmax(-1)), int(truth[i])
            name = classes[pred] if pred < len(classes) else str(pred)
            captions.append([(f"true: {classes[true]}", "black"),
                             (f"pred: {name}", (0, 128, 0) if pred == true else (200, 0, 0))])
            images.append(image)
    finally:
        model.train(was_training)
        if hook is not None:
            hook.remove()
    # whole classes per row: k examples of a class side by side, two classes a row when k is small
    k = max(Counter(int(truth[i]) for i in chosen).values(), default=1)
    subtitle = (f"left: input; right: attention rollout (Abnar & Zuidema 2020) over {cfg.depth} layers, "
                f"{pooled_by}, scaled to [0, 1] per image")
    return attention_grid_png(images, heats, captions, path, cols=k * max(1, 4 // k), title=title,
                              subtitle=subtitle)


def evaluate_checkpoint(checkpoint, data: str = "synthetic", *, split: str = "val", out=None, tta: bool = False,
                        device: str = "auto", batch_size: int = 256, ferplus_images=None,
                        label_mode: str = "majority", progress: bool = True) -> dict:
    """Evaluate a saved model on a dataset split and write the report; returns the metrics.

    ``checkpoint``: a run folder (its best.safetensors is used), a minivit .safetensors, or
    anything ViT.from_pretrained reads. ``data``: a dataset path or "synthetic" (with a run
    folder, the run's own synthetic validation set). The report goes to ``out`` (default
    ``<run>/eval-<data>-<split>``) and the per-class table is printed.
    """
    from .errors import CheckpointError
    from .model import ViT
    from .train import TrainConfig, load_data, load_weights, resolve_precision

    path = Path(checkpoint)
    run_dir = None
    if path.is_dir() and (path / "best.safetensors").is_file():
        run_dir, path = path, path / "best.safetensors"
    elif path.is_file() and (path.parent / "config.json").is_file():
        run_dir = path.parent
    elif path.is_dir() and (path / "config.json").is_file() and not any(path.glob("*.bin")) \
            and not any(path.glob("model.safetensors")):
        raise CheckpointError(f"{checkpoint}: run folder without best.safetensors (no epoch finished yet)")
    if path.suffix == ".safetensors" and path.is_file() and _is_minivit_file(path):
        config, state = load_weights(path)
        model = ViT(config)
        model.load_state_dict(state)
    else:
        model = ViT.from_pretrained(str(checkpoint))
    dev = torch.device("cuda" if (device == "auto" and torch.cuda.is_available()) or device == "cuda" else "cpu")
    model.to(dev).eval()
    size = model.config.image_hw[0]

    if data == "synthetic":
        saved = json.loads((run_dir / "config.json").read_text())["train"] if run_dir else {}
        cfg = TrainConfig.from_dict({**saved, "data": "synthetic", "img_size": saved.get("img_size", size)})
        dataset = load_data(cfg)[1]  # the run's own validation faces
    else:
        from .data import load_dataset

        dataset = load_dataset(data, split, ferplus_images=ferplus_images, label_mode=label_mode)
    from .augment import AugmentConfig, eval_transform

    aug = AugmentConfig(image_size=size)
    _, dtype, _ = resolve_precision("auto", dev)
    metrics = evaluate(model, dataset, lambda x: eval_transform(x, aug), batch_size=batch_size, tta=tta,
                       autocast_dtype=dtype, progress=progress)
    name = "synthetic" if data == "synthetic" else Path(data).name
    out = Path(out) if out else (run_dir or Path("runs")) / f"eval-{name}-{split}{'-tta' if tta else ''}"
    paths = write_report(metrics, out, extra=dict(checkpoint=str(path), data=dataset.source, split=split))
    attention = attention_report(model, dataset, lambda x: eval_transform(x, aug), out / "attention_maps.png",
                                 autocast_dtype=dtype, title=f"Attention maps: {path.name} on {name} ({split})")
    print(format_table(metrics))
    print(f"report: {paths['metrics']}, {paths['confusion_matrix']}, {attention}")
    return metrics


def _is_minivit_file(path: Path) -> bool:
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return "minivit_config" in (f.metadata() or {})
    except Exception:
        return False  # let from_pretrained produce the error message


__all__ = ["evaluate_checkpoint", "confusion_matrix", "classification_metrics", "format_table", "hard_targets", "predict", "evaluate",
           "write_report", "select_examples", "attention_report", "map_pool_attention"]
