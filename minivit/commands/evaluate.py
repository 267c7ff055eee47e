"""``minivit evaluate``: score a saved model on a dataset split and write the report.

    minivit evaluate --checkpoint runs/synthetic-20260101-120000        # the run's own test split
    minivit evaluate --checkpoint runs/fer --split val                  # its validation split, as it had it
    minivit evaluate --checkpoint runs/fer/best.safetensors --data ../shared/data/fer2013 --tta

The work is minivit.evaluate.evaluate_checkpoint (minivit/evaluate/checkpoint.py).
"""

from __future__ import annotations

from ..common.cli import ArgumentParser, command_prog, integer
from ..common.console import forwarded
from ..common.device import DEVICES
from ..evaluate import evaluate_checkpoint


def build_parser(prog: str | None = None) -> ArgumentParser:
    p = ArgumentParser(prog=command_prog("evaluate", prog), description="Evaluate a saved model on a "
                       "facial-expression dataset and write the report (metrics.json, confusion_matrix.png, "
                       "attention_maps.png).")
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
    """The evaluation command; MinivitErrors are turned into one line and exit 2 by minivit.common.cli.run."""
    args = build_parser(prog).parse_args(argv)
    with forwarded("minivit.data"):  # building a decoded cache, skipped files: said as this command's lines
        evaluate_checkpoint(args.checkpoint, args.data, split=args.split, out=args.out, tta=args.tta,
                            device=args.device, batch_size=args.batch_size, ferplus_images=args.ferplus_images,
                            label_mode=args.label_mode, progress=not args.no_progress, on_error=args.on_bad_image,
                            overwrite=args.overwrite)
    return 0
