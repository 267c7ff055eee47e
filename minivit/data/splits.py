"""Which images a run trains on, picks its checkpoint on, and is scored on: the one home of that rule.

A checkpoint is selected on a validation split, never on the images it is then scored on:

* ``val_split="auto"`` (``--val-split auto``, the default): the dataset's own validation split --
  FER2013 csv PublicTest, a ``val/`` folder, FER+ PublicTest, the synthetic val set. A dataset without
  one (Kaggle's FER2013 folders hold only train/ and test/; RAF-DB) gets one carved out of its training
  split: ``val_fraction`` (default 0.1) of every class, picked by a fixed seed (carve_validation). The
  run trains on the rest.
* ``"carve"``: carve out of train even where the dataset has a validation split.
* ``"test"``: select on the test split. Only when asked for; every report of such a run says
  "selected on the test split (optimistic)", and there is no separate test figure.

The test split (FER2013 csv PrivateTest, a ``test/`` folder, RAF-DB test, the synthetic test faces),
where the dataset has one and it did not select, scores the best checkpoint once, at the end of the run.

The carve is recorded -- fraction, seed and a hash of the held-out images' ids (file paths relative to
the split folder, CSV row numbers) -- in the run's config.json and checkpoints, so ``--resume``,
``python -m minivit.evaluate --split val`` and a re-run hold out the same images, and notice when the
training folder has changed since.

    >>> import torch
    >>> s = ImageSet(torch.zeros(40, 1, 8, 8, dtype=torch.uint8), torch.arange(40) % 4,
    ...              ids=[f"f{i}.png" for i in range(40)])
    >>> train, val, digest = carve_validation(s, 0.1)
    >>> len(train), len(val), val.class_counts().tolist()
    (36, 4, [1, 1, 1, 1, 0, 0, 0])
    >>> sorted(set(train.ids) & set(val.ids))
    []
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

from ..common.errors import ConfigError, DataError
from ..common.text import counted
from .formats import list_split, load_dataset
from .imageset import ImageSet
from .labels import MissingSplit
from .synthetic import SYNTHETIC

VAL_SPLITS = ("auto", "carve", "test")  # the choices of --val-split
DEFAULT_VAL_FRACTION = 0.1
CARVE_SEED = 0  # fixed, not the run's --seed: runs that differ only in their seed are selected on the same images
OPTIMISTIC = "selected on the test split (optimistic)"  # what every report of a --val-split test run says


@dataclass
class DataSplits:
    """The images of a run and the rule that chose them.

    train: what the model learns from (a carved validation split already taken out); val: what picks
    best.safetensors; test: scored once with best.safetensors at the end, or None (the dataset has no
    test split, or it was used for selection); rule: see split_rule, recorded in config.json.
    """

    train: ImageSet
    val: ImageSet
    test: ImageSet | None
    rule: dict


def split_rule(val_split: str, val_from: str, val: ImageSet, test: ImageSet | None = None, *,
               fraction: float | None = None, seed: int | None = None, digest: str | None = None) -> dict:
    """The record of how a run's splits were chosen (config.json "data" -> "split", checkpoints' trained_on).

    val_from: "dataset" (its own val split), "carved" (out of train: fraction, seed, hash of the held-out
    ids), "test" (the test split selects: optimistic) or "given" (ImageSets passed to train() in Python).
    """
    return {"val_split": val_split, "val": val_from, "val_fraction": fraction, "seed": seed, "val_hash": digest,
            "val_size": len(val), "val_source": val.source, "test": test.source if test is not None else None,
            "test_size": len(test) if test is not None else None}


def image_ids(s: ImageSet) -> tuple[str, ...]:
    """The set's ids, or its positions ("#0", "#1", ...) for an ImageSet made without ids."""
    return s.ids if s.ids is not None else tuple(f"#{i}" for i in range(len(s)))


def ids_hash(ids) -> str:
    """A fingerprint of a set of image ids, whatever their order: sha256 of the sorted ids, 16 hex digits.

    >>> ids_hash(["b.png", "a.png"]) == ids_hash(["a.png", "b.png"]) != ids_hash(["a.png"])
    True
    """
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()[:16]


def carve_count(n: int, fraction: float) -> int:
    """How many of a class's ``n`` training images are held out: ``fraction * n`` rounded half up, at least
    one and at most n - 1. A class with 2 or more images is in both train and val; a class with a single
    image keeps it in train (and is named as absent from val at the start of the run).

    >>> [carve_count(n, 0.1) for n in (0, 1, 2, 5, 14, 15, 436)]
    [0, 0, 1, 1, 1, 2, 44]
    """
    if n < 2:
        return 0
    return min(n - 1, max(1, int(fraction * n + 0.5)))


def carve_validation(train_set: ImageSet, fraction: float = DEFAULT_VAL_FRACTION,
                     seed: int = CARVE_SEED) -> tuple[ImageSet, ImageSet, str]:
    """(the training set without the held-out images, the held-out validation set, ids_hash of its ids).

    Stratified by class (soft labels by their top class), carve_count(n, fraction) images of each. Which
    ones: those whose sha256("<seed>:<id>") is smallest -- a function of the ids alone, so the order the
    files are listed in does not matter, and a file added to a class moves at most one image of that class.
    """
    ids = image_ids(train_set)
    held = held_out(ids, train_set.hard_targets(), len(train_set.classes), fraction, seed)
    source = f"{train_set.source} [{100 * fraction:g}% carved out as val, stratified by class, seed {seed}]"
    val = train_set.subset(held, source=source)
    val.skipped = 0  # the train split's unreadable files are counted once, with the training set
    return train_set.subset(~held), val, ids_hash(ids[i] for i in held.nonzero().flatten().tolist())


def held_out(ids, hard_targets: torch.Tensor, num_classes: int, fraction: float, seed: int = CARVE_SEED) -> torch.Tensor:
    """Boolean (N,): the images carve_validation holds out, from their ids and class indices alone."""
    if not 0 < fraction < 1:
        raise ConfigError(f"--val-fraction must be in (0, 1), not {fraction!r}")
    key = [hashlib.sha256(f"{seed}:{i}".encode()).digest() for i in ids]
    held = torch.zeros(len(ids), dtype=torch.bool)
    for c in range(num_classes):
        members = (hard_targets == c).nonzero().flatten().tolist()
        chosen = sorted(members, key=key.__getitem__)[:carve_count(len(members), fraction)]
        held[torch.tensor(chosen, dtype=torch.int64)] = True
    return held


def listed_val_hash(data: str, fraction: float, seed: int = CARVE_SEED) -> str | None:
    """The val_hash a carve out of ``data``'s train split gives when every listed file reads, from the file
    listing alone, nothing decoded (so a resumed run on a changed folder is refused before it decodes, or
    builds a cache); None where the listing does not tell: CSV datasets, whose rows come with their pixels."""
    source = list_split(data, "train")
    if source is None:
        return None
    ids = source.ids  # the listers name every file (its path in the split folder, RAF-DB's name)
    hard = source.targets.argmax(1) if source.targets.ndim == 2 else source.targets
    held = held_out(ids, hard, len(source.classes), fraction, seed)
    return ids_hash(ids[i] for i in held.nonzero().flatten().tolist())


def _optional(load, split: str) -> ImageSet | None:
    try:
        return load(split)
    except MissingSplit:
        return None


def load_splits(data: str, val_split: str = "auto", val_fraction: float = DEFAULT_VAL_FRACTION, *,
                seed: int = CARVE_SEED, recorded: dict | None = None, resumed: str = "", **read) -> DataSplits:
    """The train, val and test sets of a run on ``data`` (a dataset path or "synthetic"), by the rule above.

    ``read``: load_dataset's options (resize_mixed_to, on_error, progress, label_mode, ferplus_images, cache,
    and for "synthetic" synthetic=dict(samples=, image_size=, seed=)). ``recorded``: the rule a run recorded,
    when it is resumed (``resumed``: how the user named it): a carve must hold out what it held out
    (check_carve), checked from the files' listing before anything is decoded where the listing tells, and
    on the carve itself.
    """
    if val_split not in VAL_SPLITS:
        raise ConfigError(f"--val-split must be one of {', '.join(VAL_SPLITS)}, not {val_split!r}")
    load = lambda s: load_dataset(data, s, **read)  # noqa: E731
    if recorded and recorded.get("val") == "carved" and read.get("on_error", "raise") == "raise":
        # every listed file is then read, so the ids carved are the listed ones; None: the listing cannot tell
        listed = listed_val_hash(data, recorded["val_fraction"], recorded["seed"])
        if listed is not None:
            check_carve(data, recorded, listed, resumed)
    train = load("train")
    own_val = _optional(load, "val") if val_split == "auto" else None
    test = _optional(load, "test")
    if val_split == "test":
        if test is None:
            raise DataError(f"--val-split test: {data} has no test split to select on")
        return DataSplits(train, test, None, split_rule(val_split, "test", test))
    if own_val is not None:
        return DataSplits(train, own_val, test, split_rule(val_split, "dataset", own_val, test))
    train, val, digest = carve_validation(train, val_fraction, seed)
    if recorded:
        check_carve(data, recorded, digest, resumed)
    return DataSplits(train, val, test, split_rule(val_split, "carved", val, test, fraction=val_fraction, seed=seed,
                                                   digest=digest))


def check_carve(data: str, recorded: dict, digest: str | None, resumed: str = "") -> None:
    """The one check that images carved out of ``data`` (their ids hash to ``digest``; None: nothing was
    carved) are the ones a run held out (``recorded``: its split rule): a DataError otherwise, saying what
    to do, for a run being resumed (``resumed``: how it was named) or evaluated."""
    if not recorded.get("val_hash") or digest == recorded["val_hash"]:
        return
    then = f"start a new run: --resume {resumed} cannot continue this one" if resumed else (
        "evaluate on --split test instead")
    raise DataError(f"{data}: the run's validation split, carved out of its train split, cannot be rebuilt: the "
                    f"held-out images hash to {digest}, the run recorded {recorded['val_hash']} (the training images "
                    f"changed since the run); {then}")


def load_run_split(data: str, split: str, rule: dict, **read) -> ImageSet:
    """One split of a run's own data exactly as the run had it: "val" is the carved validation split
    rebuilt from the recorded fraction and seed (its ids hash checked against the recorded one: a training
    folder changed since the run is a DataError) or the test split for a --val-split test run; "train"
    is the training split without the carved images."""
    load = lambda s: load_dataset(data, s, **read)  # noqa: E731
    if rule.get("val") == "carved" and split in ("train", "val"):
        kept, val, digest = carve_validation(load("train"), rule["val_fraction"], rule["seed"])
        check_carve(data, rule, digest)
        return val if split == "val" else kept
    if split == "val" and rule.get("val") == "test":
        return load("test")
    return load(split)


def selection_role(split: str, rule: dict | None) -> str | None:
    """What ``split`` was to the run that made the checkpoint: "selected" (it picked best.safetensors),
    "optimistic" (that was the test split), "unseen" (the test split, never used for selection), or
    None (the training split, or no run known)."""
    if rule is None:
        return None
    on_test = rule.get("val") == "test"
    if split == "val" or (split == "test" and on_test):
        return "optimistic" if on_test else "selected"
    return "unseen" if split == "test" else None


def source_name(image_set: ImageSet) -> str:
    """Where a set's images come from, as reports say it: "synthetic faces" for minivit's drawn ones."""
    return "synthetic faces" if image_set.source == SYNTHETIC else image_set.source or "images given in Python"


def split_label(split: str, image_set: ImageSet, rule: dict | None = None) -> str:
    """One line naming a split's role, source and size, as every report prints it:

    >>> s = ImageSet(torch.zeros(3589, 1, 1, 1, dtype=torch.uint8), torch.zeros(3589, dtype=torch.int64),
    ...              source="fer2013/test")
    >>> split_label("test", s, {"val": "carved"})
    'test: fer2013/test, 3,589 images, never used for selection'
    >>> split_label("val", s, {"val": "test"})
    'val: fer2013/test, 3,589 images, selected on the test split (optimistic)'
    """
    text = f"{split}: {source_name(image_set)}, {counted(len(image_set), 'image')}"
    role = selection_role(split, rule)
    if role == "optimistic":
        return f"{text}, {OPTIMISTIC}"
    if role == "selected":
        return f"{text}, used to select best.safetensors"
    if role == "unseen":
        return f"{text}, never used for selection"
    return text


def split_title(split: str, image_set: ImageSet, rule: dict | None = None) -> str:
    """A short form of split_label for figure titles: "the test split (3,589 images, never used for selection)".

    >>> split_title("val", ImageSet(torch.zeros(700, 1, 1, 1, dtype=torch.uint8), torch.zeros(700, dtype=torch.int64),
    ...                             source="synthetic"))
    'the val split (700 synthetic faces)'
    """
    what = "synthetic faces" if image_set.source == SYNTHETIC else "images"
    role = {"optimistic": f", {OPTIMISTIC}", "selected": ", used for selection",
            "unseen": ", never used for selection"}.get(selection_role(split, rule), "")
    return f"the {split} split ({len(image_set):,} {what}{role})"


def absent_classes(splits: dict) -> list[str]:
    """A warning per split that lacks classes, e.g. "no images of disgust, fear in val (...)":
    ``splits`` maps a split name to its ImageSet (None: skipped)."""
    warnings = []
    for name, s in splits.items():
        if s is None:
            continue
        missing = [c for c, n in zip(s.classes, s.class_counts().tolist()) if n == 0]
        if missing:
            warnings.append(f"no images of {', '.join(missing)} in {name} ({source_name(s)}): "
                            f"{'the model cannot learn them' if name == 'train' else 'they are never scored there'}")
    return warnings


__all__ = ["VAL_SPLITS", "DEFAULT_VAL_FRACTION", "CARVE_SEED", "OPTIMISTIC", "DataSplits", "split_rule",
           "carve_count", "carve_validation", "held_out", "listed_val_hash", "ids_hash", "load_splits", "load_run_split", "check_carve",
           "selection_role", "source_name", "split_label", "split_title", "absent_classes"]
