"""Classification metrics from hard labels, and the one rule that calls a model a majority-class predictor.

    confusion_matrix, classification_metrics   counts, accuracy, macro / support-weighted F1, per-class table
    dominant_class_warning                     a one-line warning when the model is close to always
                                               predicting one class (the rule, stated once, below)
    format_table                               the per-class table as the commands print it

Example:
    >>> import torch
    >>> from minivit.evaluate import classification_metrics
    >>> m = classification_metrics(torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 1, 1]), classes=("a", "b"))
    >>> m["accuracy"], round(m["macro_f1"], 3)
    (0.75, 0.733)
"""

from __future__ import annotations

import torch


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
