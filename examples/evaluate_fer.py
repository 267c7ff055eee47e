"""Evaluate a saved model on a facial-expression dataset and write the report.

    python examples/evaluate_fer.py --checkpoint runs/synthetic-20260101-120000          # its synthetic val set
    python examples/evaluate_fer.py --checkpoint runs/fer2013-.../best.safetensors --data ../shared/data/fer2013 --tta

Writes metrics.json (accuracy, macro/weighted F1, per-class precision/recall/F1/support, confusion
matrix), confusion_matrix.png and attention_maps.png (a couple of images per class with their attention
rollout) into --out (default <run>/eval-<data>-<split>) and prints the table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from minivit.errors import MinivitError  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="run folder (uses best.safetensors), a minivit "
                   ".safetensors, or anything ViT.from_pretrained reads")
    p.add_argument("--data", default="synthetic", help="dataset path (FER2013 csv, image folder, FER+ csv, RAF-DB "
                   "root) or 'synthetic' = the run's own synthetic val set (default)")
    p.add_argument("--split", default="val", choices=("train", "val", "test"), help="default val")
    p.add_argument("--ferplus-images", help="FER+ csv only: folder of the images it names")
    p.add_argument("--label-mode", default="majority", choices=("majority", "soft"))
    p.add_argument("--tta", action="store_true", help="average the logits of each image and its mirror")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--out", help="report folder")
    args = p.parse_args(argv)
    from minivit.evaluate import evaluate_checkpoint

    try:
        evaluate_checkpoint(args.checkpoint, args.data, split=args.split, out=args.out, tta=args.tta,
                            device=args.device, batch_size=args.batch_size, ferplus_images=args.ferplus_images,
                            label_mode=args.label_mode)
    except MinivitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
