"""Image-folder datasets: `<root>/<split>/<class>/*.jpg`.

Covers Kaggle's FER2013 folder layout (train/ and test/, class folders named angry..surprise) and
AffectNet-style trees whose class folders are named by AffectNet index 0..7 (0 neutral, 1 happy,
2 sad, 3 surprise, 4 fear, 5 disgust, 6 anger, 7 contempt) or by name. Contempt is dropped.
"""

import logging
from pathlib import Path

import torch

from ..common.errors import ConfigError, DataError
from .cache import CacheSource, decode_source
from .imageset import ImageSet, Problems, is_ascii_integer
from .labels import AFFECTNET_CODES, MissingSplit, code_table, label_index

log = logging.getLogger("minivit.data")

# Image files, by suffix, when a folder is searched (the dataset readers and minivit.predict).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
# Folder names accepted for each split (compared case-insensitively), first match wins.
SPLIT_DIRS = {
    "train": ("train", "training", "train_set"),
    "val": ("val", "valid", "validation", "val_set", "publictest"),
    "test": ("test", "testing", "test_set", "privatetest"),
}


def _child_dirs(root: Path) -> dict[str, Path]:
    return {p.name.lower(): p for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")}


def find_split_dir(root: str | Path, split: str) -> Path:
    """The folder holding `split` under root; MissingSplit when there is none. Kaggle's FER2013 has only
    train/ and test/: its "val" is missing, never test/ in disguise (training carves one out of train/,
    see minivit.data.splits)."""
    root = Path(root)
    if split not in SPLIT_DIRS:
        raise ConfigError(f"split={split!r} for {root}: expected one of {', '.join(SPLIT_DIRS)}")
    children = _child_dirs(root)
    for name in SPLIT_DIRS[split]:
        if name in children:
            return children[name]
    raise MissingSplit(f"{root}: no folder for split {split!r} (looked for {', '.join(SPLIT_DIRS[split])}/)")


def is_image_folder_dataset(root: Path) -> bool:
    """True when root has a train/val/test-like folder."""
    names = set(_child_dirs(root)) if root.is_dir() else set()
    return any(n in names for aliases in SPLIT_DIRS.values() for n in aliases)


def folder_class(name: str, index_codes: tuple[str, ...] = AFFECTNET_CODES) -> int | None:
    """Canonical index for a class folder name: a label in any spelling, or a digit string read
    in `index_codes` order (AffectNet's by default). None = a class that is dropped (contempt)."""
    if is_ascii_integer(name):
        table = code_table(index_codes)
        if int(name) >= len(table):
            raise DataError(f"class folder index {name} outside 0..{len(table) - 1}")
        return table[int(name)]
    return label_index(name)


def list_image_folder(root: str | Path, split: str = "train", *, on_error: str = "raise",
                      index_codes: tuple[str, ...] = AFFECTNET_CODES) -> CacheSource:
    """One split of `<root>/<split>/<class>/*` as listed, nothing decoded: its files in dataset order (class
    folders sorted by name, files sorted), their targets and ids (the path relative to the split folder).

    Class folders are mapped to LABELS by name (any alias) or by index in `index_codes` order. An unknown
    class folder raises DataError; with on_error="skip" it is skipped and counted (CacheSource.skipped).
    """
    split_dir = find_split_dir(root, split)
    folder_problems = Problems(on_error, "unknown class folder", f"in {split_dir}")
    paths, targets, ids, dropped = [], [], [], {}
    for class_dir in _child_dirs(split_dir).values():
        try:
            target = folder_class(class_dir.name, index_codes)
        except DataError as e:
            folder_problems(f"{class_dir}: {e}")
            continue
        files = sorted(p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if target is None:
            dropped[class_dir.name] = len(files)
            continue
        paths += files
        targets += [target] * len(files)
        ids += [f"{class_dir.name}/{p.name}" for p in files]  # stable: the file, relative to the split folder
    folder_problems.report()
    if dropped:
        log.info("%s: dropped classes outside the 7 labels: %s", split_dir, dropped)
    if not paths:
        raise DataError(f"{split_dir}: no images found in class folders")
    return CacheSource(split_dir, paths, torch.tensor(targets, dtype=torch.int64), ids=tuple(ids),
                       name=str(split_dir), skipped=folder_problems.count)


def load_image_folder(root: str | Path, split: str = "train", *, resize_mixed_to: int | None = None,
                      on_error: str = "raise", progress: bool = True,
                      index_codes: tuple[str, ...] = AFFECTNET_CODES) -> ImageSet:
    """One split of `<root>/<split>/<class>/*` as an ImageSet (images decoded once, in memory): the
    listing of list_image_folder, decoded.

    An unknown class folder or an unreadable image raises DataError; with on_error="skip" it is
    skipped and counted in a logged warning (and in ImageSet.skipped). Images keep their size when
    all agree; mixed sizes are resized on decode to ``resize_mixed_to`` (see decode_images).
    """
    source = list_image_folder(root, split, on_error=on_error, index_codes=index_codes)
    return decode_source(source, resize_mixed_to=resize_mixed_to, on_error=on_error, progress=progress,
                         desc=f"decoding {source.root.name}/")
