"""Evaluating a saved model: ``python -m minivit.evaluate`` and ``evaluate_checkpoint`` from Python.

From the command line (``examples/evaluate_fer.py`` is the same command)::

    python -m minivit.evaluate --checkpoint runs/synthetic-20260101-120000        # the run's own test split
    python -m minivit.evaluate --checkpoint runs/fer --split val                  # its validation split, as it had it
    python -m minivit.evaluate --checkpoint runs/fer/best.safetensors --data ../shared/data/fer2013 --tta

The default split is "test": the one that selected nothing, so its numbers are not optimistic. The
report (reports.py) goes to ``<run>/eval-<data>-<split>`` and says what was measured: ``split``,
``data``, ``split_label`` (split, source, image count, whether it selected the checkpoint) and ``note``
(data of another kind than the training data: synthetic vs real, gray vs colour, other classes).

This module never imports minivit.train: a run folder is read through its files (minivit.checkpoints.runs:
best.safetensors, config.json), so evaluation works on any checkpoint, trained here or elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..checkpoints.runs import CONFIG, locate_checkpoint, read_config, split_rule_of
from ..common.cli import ArgumentParser, command_prog, integer
from ..common.device import DEVICES, pick_device, resolve_precision
from ..common.errors import CheckpointError, ConfigError
from ..common.files import file_in_the_way
from .metrics import format_table
from .reports import attention_report, evaluate, write_report

REPORT_FILES = ("metrics.json", "confusion_matrix.png", "attention_maps.png")  # what --out receives


@dataclass
class RunData:
    """What a run folder says about its data: the dataset, how it was read, and the split rule its
    config.json recorded."""

    folder: Path
    train: dict  # config.json "train"
    rule: dict

    @classmethod
    def read(cls, folder: Path) -> "RunData":
        saved = read_config(folder)
        return cls(folder, saved["train"], split_rule_of(saved) or {})

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
        missing = [k for k in ("synthetic_samples", "image_size", "seed") if k not in self.train]
        if missing:
            raise ConfigError(f"{self.folder / CONFIG}: no train {', '.join(missing)}: cannot re-draw the "
                              f"run's synthetic faces")
        return dict(samples=self.train["synthetic_samples"], image_size=self.train["image_size"],
                    seed=self.train["seed"])


def load_eval_data(data: str, split: str, run: RunData | None, model, *, fallback: bool = False, **read):
    """(the ImageSet to evaluate on, the split it is). The run's own data is split as the run split it
    (minivit.data.splits.load_run_split): "val" is its carved validation split, rebuilt and checked
    against the recorded hash, and "synthetic" re-draws its synthetic faces. Other data: that dataset's
    split (load_dataset). Folders of mixed image sizes are resized to the model's input size; ``read``:
    load_dataset's on_error, progress, label_mode, ferplus_images. ``fallback``: a dataset without
    ``split`` is evaluated on its val split instead (the report names the split it used)."""
    from ..data import MissingSplit, load_dataset, load_run_split

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
    from ..data import LABELS
    from ..model.vit import ViT

    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size={batch_size!r}: expected an integer >= 1")
    source, run_dir = locate_checkpoint(checkpoint)
    run = RunData.read(run_dir) if run_dir is not None and (run_dir / CONFIG).is_file() else None
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
    from ..data import data_kind, kind_note, split_label
    from ..data.augment import AugmentConfig, eval_transform
    from ..data.provenance import read_trained_on
    from ..data.splits import selection_role, split_title

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
    evaluate_checkpoint(args.checkpoint, args.data, split=args.split, out=args.out, tta=args.tta,
                        device=args.device, batch_size=args.batch_size, ferplus_images=args.ferplus_images,
                        label_mode=args.label_mode, progress=not args.no_progress, on_error=args.on_bad_image,
                        overwrite=args.overwrite)
    return 0
