"""The default FER2013 recipe and its ablations, each trained through the real API, in one table.

    python benchmarks/fer_recipe.py --variants                                     # list them
    python benchmarks/fer_recipe.py --data ../shared/data/fer2013 --minutes 3      # equal wall time each
    python benchmarks/fer_recipe.py --data ../shared/data/fer2013 --epochs 30 --only default,patch-stem
    python benchmarks/fer_recipe.py --data synthetic --epochs 1 --tiny --out /tmp/recipe   # a CPU smoke run

Every variant is the "gpu" profile of ``minivit train`` (the default recipe that
``minivit train --data <fer2013>`` runs) with one knob changed; each is trained by
``minivit.train.train`` on the same data (decoded once) and split as the command splits it
(minivit.data.splits): best.safetensors is selected on the val split (for FER2013's folders, 10% of
each class carved out of train/), then scored on it and, once, on the test split (test/, FER2013's
PublicTest, which selected nothing), with flip TTA as the profile does. Every figure names its split,
its source and its image count. The output folder gets results.json and results.md (command, wall
time, epochs, epoch time, val and test accuracy and macro-F1, per-class recall on val) and each
variant's run folder (runs/<variant>/: metrics.json, confusion matrices, curves, checkpoints).

Equal wall time (``--minutes``): PyTorch gives no way to stop a cosine schedule early without
handicapping the variant that is stopped at a high learning rate, so the budget is met by choosing
each variant's number of epochs instead: a probe run of ``--probe-steps`` steps measures the
variant's steady-state img/s (minivit.train's ``train_img_per_s``) and its set-up cost (compilation
included), and the epochs that fit the budget follow (validation counted at a third of a training
step per image). Warmup keeps the profile's fraction of the run. The measured wall time of every
variant is in the table, so the equality can be checked.
"""

from __future__ import annotations

import copy
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from minivit.common.files import atomic_write, write_json  # noqa: E402
from minivit.common.device import DEVICES, pick_device  # noqa: E402
from minivit.common.cli import ArgumentParser, integer, number, run  # noqa: E402
from minivit.train import TrainConfig, load_data, train  # noqa: E402
from minivit.train.profiles import PROFILES  # noqa: E402
from minivit.checkpoints import RunFolder  # noqa: E402
from minivit.data.splits import split_label  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "fer2013"
# name -> (TrainConfig changes over the "gpu" profile, the same change as flags of minivit train,
#          what it tests)
VARIANTS = {
    "default": ({}, "", "the default FER recipe: the 'gpu' profile as it is"),
    "patch-stem": ({"model_overrides": {"stem": "patch"}}, "--stem patch",
                   "one 4x4 patchify convolution instead of the convolutional stem"),
    "no-mix": ({"mix_prob": 0.0}, "--mix-prob 0", "no CutMix / MixUp at all"),
    "mix-every-batch": ({"mix_prob": 1.0}, "--mix-prob 1", "CutMix on every batch (the old recipe's rate)"),
    "batch128": ({"batch_size": 128}, "--batch-size 128", "batch 128 instead of 256 (same learning rate)"),
    "rgb": ({"model_overrides": {"in_chans": 3}}, "--in-chans 3", "the gray image copied to 3 channels"),
}
# --tiny: a model and data small enough for a CPU smoke run in seconds (not a measurement)
TINY = dict(model_overrides=dict(dim=32, depth=1, heads=2, mlp_dim=64), image_size=16, synthetic_samples=168,
            eval_batch_size=64)
VALIDATION_COST = 1 / 3  # an evaluated image costs about a third of a trained one (forward only)


def variant_config(name: str, *, data: str, out: Path, epochs: int | None, tiny: bool, device: str,
                   progress: bool, seed: int, overwrite: bool = False) -> TrainConfig:
    """The gpu profile with ``name``'s change (and --tiny's sizes), for ``epochs`` epochs."""
    fields = copy.deepcopy(PROFILES["gpu"])
    change = copy.deepcopy(VARIANTS[name][0])
    fields["model_overrides"] = {**fields.get("model_overrides", {}), **change.pop("model_overrides", {})}
    fields.update(change)
    if tiny:  # every batch size scaled down by the same factor, so batch128 stays half of default
        fields["model_overrides"].update(TINY["model_overrides"])
        fields.update({k: v for k, v in TINY.items() if k != "model_overrides"}, batch_size=fields["batch_size"] // 8)
    if epochs is not None and epochs != fields["epochs"]:
        # warmup keeps its share of the run: 5 of 100 epochs stays 5% when a run is shortened
        fields["warmup_epochs"] = fields["warmup_epochs"] * epochs / fields["epochs"]
        fields["epochs"] = epochs
    fields.update(data=data, out=str(out), overwrite=overwrite, device=device, progress=progress, log=progress, seed=seed)
    return TrainConfig.from_dict(fields, where=f"variant {name}").validate()


def epochs_for_budget(seconds: float, img_per_s: float, overhead_s: float, train_size: int, val_size: int,
                      tta: bool) -> int:
    """Whole epochs that fit ``seconds`` of wall time at ``img_per_s``, after ``overhead_s`` of set-up.

    >>> epochs_for_budget(101, img_per_s=1000, overhead_s=10, train_size=8000, val_size=3000, tta=False)
    10
    """
    epoch_s = (train_size + VALIDATION_COST * val_size) / img_per_s  # one pass over each set
    final_s = VALIDATION_COST * val_size * (2 if tta else 1) / img_per_s  # the final report (flip TTA: twice)
    return max(1, math.floor((seconds - overhead_s - final_s) / epoch_s))


def probe(name: str, args, train_set, val_set, tmp: Path) -> dict:
    """Steady-state img/s and set-up seconds of a variant, from a run of --probe-steps steps."""
    cfg = variant_config(name, data=args.data, out=tmp / f"probe-{name}", epochs=1, tiny=args.tiny,
                         device=args.device, progress=False, seed=args.seed, overwrite=True)  # a fresh temp folder
    steps = min(args.probe_steps, max(1, len(train_set) // cfg.batch_size))
    cfg.stop_after = steps
    start = time.perf_counter()
    result = train(cfg, train_set, val_set)  # no test split: a probe's figures are never read, only its speed
    wall = time.perf_counter() - start
    img_s = result.get("train_img_per_s") or steps * cfg.batch_size / wall  # too few steps to time: the whole run
    return dict(img_per_s=img_s, overhead_s=max(0.0, wall - steps * cfg.batch_size / img_s), steps=steps)


def run_variant(name: str, args, splits, epochs: int | None) -> dict:
    """Train one variant to the end; its row of the table: val and test figures, each with its split."""
    out = args.out / "runs" / name
    cfg = variant_config(name, data=args.data, out=out, epochs=epochs, tiny=args.tiny, device=args.device,
                         progress=args.progress, seed=args.seed, overwrite=args.overwrite)
    start = time.perf_counter()
    result = train(cfg, splits.train, splits.val, splits.test)
    wall = time.perf_counter() - start
    metrics = read_json(out / "metrics.json")
    test = metrics.get("test") or {}  # metrics.json "test": best.safetensors on the test split, scored once
    history = metrics.get("history") or []
    marks = [0.0] + [row["seconds"] for row in history]
    epoch_s = [b - a for a, b in zip(marks, marks[1:])][1:] or [b - a for a, b in zip(marks, marks[1:])]
    flags = VARIANTS[name][1]
    return dict(
        variant=name, what=VARIANTS[name][2], epochs=cfg.epochs, wall_s=round(wall, 1),
        epoch_s=round(sum(epoch_s) / len(epoch_s), 2) if epoch_s else None,  # first epoch (compilation) left out
        train_img_per_s=result.get("train_img_per_s"), val_accuracy=result.get("val_accuracy"),
        val_macro_f1=result.get("val_macro_f1"), val_split=result.get("val_split_label"),
        test_accuracy=test.get("accuracy"), test_macro_f1=test.get("macro_f1"), test_split=test.get("split_label"),
        tta=cfg.tta, best_epoch=result.get("best_epoch"),
        recall={c["name"]: c["recall"] for c in metrics.get("per_class", [])}, run_dir=str(out),
        command=f"python benchmarks/fer_recipe.py --data {args.data} --only {name} --epochs {cfg.epochs}"
                + (" --tiny" if args.tiny else ""),
        train_command=f"minivit train --data {args.data} --epochs {cfg.epochs} {flags}".strip(),
        config=cfg.to_dict())


def figures(row: dict) -> str:
    """The row's accuracy on each split, each naming it: "val accuracy 61.2% [val: ...]; test ..."."""
    parts = []
    for split in ("val", "test"):
        if row[f"{split}_accuracy"] is not None:
            parts.append(f"{split} accuracy {100 * row[f'{split}_accuracy']:.1f}% [{row[f'{split}_split']}]")
    return "; ".join(parts) or "no accuracy (no epoch finished)"


def read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def markdown_table(rows: list[dict], meta: dict) -> str:
    """The results as Markdown: one row per variant, per-class recall in its own columns."""
    classes = list(rows[0]["recall"]) if rows and rows[0]["recall"] else []

    def pct(v):
        return f"{100 * v:.1f}%" if v is not None else "-"

    tta = " with flip TTA" if rows and rows[0]["tta"] else ""
    lines = [f"FER recipe ablations on {meta['data']} ({meta['train_size']} train / {meta['val_size']} val / "
             f"{meta['test_size'] or 'no'} test images, decoded in {meta['data_load_s']:.0f} s), {meta['device']}, "
             f"torch {meta['torch']}, {meta['budget']}.",
             f"Accuracy and macro-F1 of best.safetensors{tta}, selected on the val split ({meta['val_split']}); "
             f"test: {meta['test_split'] or 'none (the dataset has no test split)'}. Recall per class: val.", "",
             "| variant | what | epochs | wall time | epoch time | train img/s | val accuracy | val macro-F1 | "
             "test accuracy | test macro-F1 | " + " | ".join(f"{c} recall" for c in classes) + " | command |",
             "|---" * (10 + len(classes) + 1) + "|"]
    for r in rows:
        cells = [r["variant"], r["what"], str(r["epochs"]), f"{r['wall_s']:.0f} s",
                 f"{r['epoch_s']:.1f} s" if r["epoch_s"] is not None else "-",
                 f"{r['train_img_per_s']:,.0f}" if r["train_img_per_s"] else "-", pct(r["val_accuracy"]),
                 f"{r['val_macro_f1']:.3f}" if r["val_macro_f1"] is not None else "-", pct(r["test_accuracy"]),
                 f"{r['test_macro_f1']:.3f}" if r["test_macro_f1"] is not None else "-",
                 *[pct(r["recall"].get(c)) for c in classes], f"`{r['command']}`"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def device_name(choice: str) -> str:
    device = pick_device(choice)
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(DEFAULT_DATA), help="FER2013 folder (train/ + test/) or 'synthetic' "
                   "(default ../shared/data/fer2013)")
    p.add_argument("--variants", action="store_true", help="list the variants and exit")
    p.add_argument("--only", help="comma-separated variant names (default: all)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--epochs", type=integer(at_least=1), help="epochs of every variant (default: the profile's)")
    budget.add_argument("--minutes", type=number(above=0), help="wall-time budget of every variant (epochs chosen "
                        "from a timed probe run)")
    p.add_argument("--probe-steps", type=integer(at_least=5), default=30, help="--minutes: steps of the probe run")
    p.add_argument("--tiny", action="store_true",
                   help="a tiny model and synthetic-size data: a smoke run, not a result")
    p.add_argument("--device", choices=DEVICES, default="auto", help="auto: a GPU when CUDA is available, else the CPU")
    p.add_argument("--seed", type=integer(at_least=0), default=0)
    p.add_argument("--out", help="output folder (default runs/fer_recipe)")
    p.add_argument("--overwrite", action="store_true", help="replace the results in an existing --out")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars or epoch lines")
    args = p.parse_args(argv)
    if args.variants:
        return args
    names = [n.strip() for n in (args.only or ",".join(VARIANTS)).split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown or not names:
        p.error(f"argument --only: unknown variant(s) {', '.join(unknown) or '(none given)'} "
                f"(choose from {', '.join(VARIANTS)})")
    args.only = names
    if args.data != "synthetic" and not Path(args.data).exists():
        p.error(f"argument --data: {args.data} does not exist (a FER2013 folder with train/ and test/, or 'synthetic')")
    args.out = Path(args.out or "runs/fer_recipe")
    if (args.out / "results.json").exists() and not args.overwrite:
        p.error(f"argument --out: {args.out} already holds results.json (pass --overwrite to replace it)")
    taken = [args.out / "runs" / n for n in names if RunFolder(args.out / "runs" / n).state != "empty"]
    if taken and not args.overwrite:  # refused now, not after the variants before it have trained
        p.error(f"argument --out: {taken[0]} already holds a run (pass --overwrite to replace "
                f"{'it' if len(taken) == 1 else f'these {len(taken)} runs'})")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.variants:
        for name, (_, flags, what) in VARIANTS.items():
            print(f"{name:<16}{what}" + (f"  [minivit train ... {flags}]" if flags else ""))
        return 0
    first = variant_config(args.only[0], data=args.data, out=args.out, epochs=None, tiny=args.tiny,
                           device=args.device, progress=args.progress, seed=args.seed)
    start = time.perf_counter()
    splits = load_data(first, progress=args.progress)  # decoded once, shared by every variant
    train_set, val_set = splits.train, splits.val  # val: the dataset's, or carved out of train (minivit.data.splits)
    meta = dict(data=args.data, train_size=len(train_set), val_size=len(val_set),
                test_size=len(splits.test) if splits.test is not None else None,
                val_split=split_label("val", val_set, splits.rule),
                test_split=split_label("test", splits.test, splits.rule) if splits.test is not None else None,
                data_load_s=round(time.perf_counter() - start, 1), device=device_name(args.device),
                torch=torch.__version__,
                budget=f"{args.minutes:g} minutes per variant" if args.minutes else
                f"{args.epochs or first.epochs} epochs per variant", tiny=args.tiny,
                command="python benchmarks/fer_recipe.py " + " ".join(sys.argv[1:] if argv is None else argv))
    rows = []
    with tempfile.TemporaryDirectory(prefix="minivit-recipe-") as tmp:
        for name in args.only:
            epochs, timing = args.epochs, None
            if args.minutes:
                timing = probe(name, args, train_set, val_set, Path(tmp))
                epochs = epochs_for_budget(60 * args.minutes, timing["img_per_s"], timing["overhead_s"],
                                           len(train_set), len(val_set), tta=first.tta)
                print(f"{name}: probe {timing['img_per_s']:,.0f} img/s, set-up {timing['overhead_s']:.1f} s "
                      f"-> {epochs} epochs in {args.minutes:g} min", flush=True)
            row = run_variant(name, args, splits, epochs)
            row["probe"] = timing
            rows.append(row)
            print(f"{name}: {row['epochs']} epochs, {row['wall_s']:.0f} s, {figures(row)}", flush=True)
    write_json({"meta": meta, "variants": rows}, args.out / "results.json")
    table = markdown_table(rows, meta)
    atomic_write(args.out / "results.md", lambda tmp: Path(tmp).write_text(table))
    print("\n" + table + f"\nwrote {args.out / 'results.json'} and {args.out / 'results.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
