"""Evaluation: how well a model does on a dataset, and the pictures that show where it looks.

    metrics.py    confusion matrix, accuracy / macro F1 / per-class table, the majority-class warning
    reports.py    predict and evaluate a model on an ImageSet; the report: metrics.json,
                  confusion_matrix.png, attention_maps.png (write_report, attention_report)
    rollout.py    attention rollout and last-layer attention: which patches a prediction draws on
    plots.py      the PNGs, with matplotlib: confusion matrix, training curves, attention overlays
    checkpoint.py evaluate_checkpoint: a saved model, its run folder, the data it is scored on (``minivit evaluate``)

Each module's docstring has a runnable example (metrics.py: classification_metrics).
"""

from .checkpoint import (REPORT_FILES, check_classes, check_report_folder, evaluate_checkpoint, load_eval_data,
                         report_folder, score_and_report)
from .metrics import (BASELINE_MARGIN, DOMINANT_SHARE, DOMINANT_TRUE_SHARE, classification_metrics, confusion_matrix,
                      dominant_class_warning, format_table, hard_targets, majority_baseline_macro_f1)
from .reports import (attention_report, confusion_report_png, evaluate, predict, select_examples, write_report)

__all__ = ["evaluate_checkpoint", "confusion_matrix", "classification_metrics", "dominant_class_warning",
           "majority_baseline_macro_f1", "format_table", "hard_targets", "predict", "evaluate", "write_report",
           "confusion_report_png", "select_examples", "attention_report"]
