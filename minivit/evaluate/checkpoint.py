"""Evaluating a saved model: ``evaluate_checkpoint`` (the ``minivit evaluate`` command, minivit/commands/evaluate.py).

From the command line (``examples/evaluate_fer.py`` is the same command)::

    minivit evaluate --checkpoint runs/synthetic-20260101-120000        # the run's own test split
    minivit evaluate --checkpoint runs/fer --split val                  # its validation split, as it had it
    minivit evaluate --checkpoint runs/fer/best.safetensors --data ../shared/data/fer2013 --tta

The default split is "test": the one that selected nothing, so its numbers are not optimistic. The
report (reports.py) goes to ``<run>/eval-<data>-<split>`` and says what was measured: ``split``,
``data``, ``split_label`` (split, source, image count, whether it selected the checkpoint) and ``note``
(data of another kind than the training data: synthetic vs real, gray vs colour, other classes).

This module never imports minivit.train: a run folder is read through minivit.checkpoints.RunFolder (its
best.safetensors, its config.json), so evaluation works on any checkpoint, trained here or elsewhere.
"""

from __future__ import annotations

from pathlib import Path

from ..checkpoints.run_folder import RunFolder
from ..common.device import pick_device, resolve_precision
from ..common.errors import CheckpointError, ConfigError
from ..common.files import file_in_the_way
from .metrics import format_table
from .reports import attention_report, evaluate, write_report

REPORT_FILES = ("metrics.json", "confusion_matrix.png", "attention_maps.png")  # what --out receives


def synthetic_of(run: RunFolder) -> dict:
    """How the run drew synthetic faces, should its data be "synthetic": its samples, image size and seed."""
    fields = run.train_fields
    missing = [k for k in ("synthetic_samples", "image_size", "seed") if k not in fields]
    if missing:
        raise ConfigError(f"{run.config_file}: no train {', '.join(missing)}: cannot read the run's data again")
    return dict(samples=fields["synthetic_samples"], image_size=fields["image_size"], seed=fields["seed"])


def load_eval_data(data: str, split: str, run: RunFolder | None, model, *, fallback: bool = False, **read):
    """(the ImageSet to evaluate on, the split it is). The run's own data is read and split as the run had it
    (minivit.data.splits.load_run_split): "val" is its carved validation split, rebuilt and checked
    against the recorded hash, and synthetic faces are drawn again from its seed. Other data: that
    dataset's split (load_dataset). Folders of mixed image sizes are resized to the model's input size;
    ``read``: load_dataset's on_error, progress, label_mode, ferplus_images. ``fallback``: a dataset without
    ``split`` is evaluated on its val split instead (the report names the split it used)."""
    from ..data import MissingSplit, load_dataset, load_run_split

    read = dict(read, resize_mixed_to=model.config.image_size)
    own = run is not None and run.trained_on(data)

    def load(s: str):
        if own:
            return load_run_split(data, s, run.split_rule or {}, synthetic=synthetic_of(run), **read)
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
    name = Path(data).name
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
    source, folder = RunFolder.of_checkpoint(checkpoint)
    run = folder if folder is not None and folder.config_file.is_file() else None
    run_dir = folder.path if folder is not None else None
    if data is None:  # the run's own data, read the way the run read it
        if folder is None and not Path(checkpoint).exists():
            raise CheckpointError(f"{checkpoint}: no such file or folder (and --data is needed for a checkpoint "
                                  f"that is not in a run folder)")
        if run is None:
            raise ConfigError(f"--data is needed: {checkpoint} is not a run folder (no config.json beside it)")
        if run.trained_on_given_sets:
            raise ConfigError(f"--data is needed: the run in {run_dir} trained on images passed to train() in "
                              f"Python, which evaluate cannot read again")
        data, label_mode = run.data, run.train_fields.get("label_mode", label_mode)
        ferplus_images = ferplus_images or run.train_fields.get("ferplus_images")
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
    rule = (run.split_rule or {}) if run is not None and run.trained_on(data) else None
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
    print(format_table(metrics))  # (skipped files were said once, as the data was read; metrics.json counts them)
    if metrics["warning"]:
        print(f"warning: {metrics['warning']}")
    print(f"report: {paths['metrics']}, {paths['confusion_matrix']}, {attention}")
    return metrics
