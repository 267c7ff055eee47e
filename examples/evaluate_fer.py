"""Evaluate a saved model on a facial-expression dataset and write the report.

    python examples/evaluate_fer.py --checkpoint runs/synthetic-20260101-120000          # the run's own test split
    python examples/evaluate_fer.py --checkpoint runs/fer2013-... --split val             # its val split, as it had it
    python examples/evaluate_fer.py --checkpoint runs/fer2013-.../best.safetensors --data ../shared/data/fer2013 --tta

The default split is test, the one that selected nothing. Writes metrics.json (accuracy, macro/weighted
F1, per-class precision/recall/F1/support, confusion matrix, the split with its source and image count,
a warning when the model is close to a majority-class predictor, a note when the data differs in kind
from the training data), confusion_matrix.png and attention_maps.png (a couple of images per class with
their attention rollout) into --out (default <run>/eval-<data>-<split>; an existing report is kept unless
--overwrite) and prints the table.
This is ``python -m minivit.evaluate``; see ``--help`` for every option.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from minivit.common.cli import run  # noqa: E402
from minivit.commands.evaluate import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(run(lambda argv: main(argv, prog="evaluate_fer.py")))
