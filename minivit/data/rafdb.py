"""RAF-DB basic: `EmoLabel/list_patition_label.txt` (sic) with lines `train_00001.jpg 5`.

Codes 1..7 in RAF's order: 1 surprise, 2 fear, 3 disgust, 4 happiness, 5 sadness, 6 anger, 7 neutral.
Images in `Image/aligned/train_00001_aligned.jpg` (preferred: 100x100 aligned faces) or
`Image/original/train_00001.jpg`. RAF-DB has train and test only: "val" is a MissingSplit (training
carves a validation split out of train, see minivit.data.splits).
"""

from pathlib import Path

import torch

from ..common.errors import ConfigError, DataError
from .cache import CacheSource, decode_source
from .imageset import ImageSet, Problems, is_ascii_integer, read_text_lines
from .labels import RAFDB_CODES, MissingSplit, code_table

LABEL_FILE = "list_patition_label.txt"  # RAF-DB's own spelling


def find_rafdb_label_file(path: str | Path) -> Path | None:
    """The RAF-DB label file for a path that is it, or a folder holding it (directly or in EmoLabel/)."""
    path = Path(path)
    if path.is_file():
        return path if path.name == LABEL_FILE else None
    for candidate in (path / "EmoLabel" / LABEL_FILE, path / LABEL_FILE):
        if candidate.is_file():
            return candidate
    return None


def load_rafdb(path: str | Path, split: str = "train", *, resize_mixed_to: int | None = None,
               on_error: str = "raise", progress: bool = True) -> ImageSet:
    """One split of RAF-DB basic as an ImageSet (uint8 (N, 3, 100, 100) for the aligned faces): the
    listing of list_rafdb, decoded into memory."""
    source = list_rafdb(path, split, on_error=on_error)
    return decode_source(source, resize_mixed_to=resize_mixed_to, on_error=on_error, progress=progress,
                         desc=f"decoding RAF-DB {split}")


def list_rafdb(path: str | Path, split: str = "train", *, on_error: str = "raise") -> CacheSource:
    """One split of RAF-DB basic as listed, nothing decoded: the image files its label file names (the
    aligned faces where Image/aligned/ exists), their targets, and the names in the label file as ids."""
    label_file = find_rafdb_label_file(path)
    if label_file is None:
        raise DataError(f"{path}: no {LABEL_FILE} (expected <root>/EmoLabel/{LABEL_FILE})")
    if split not in ("train", "val", "test"):
        raise ConfigError(f"split={split!r} for {label_file}: expected one of train, val, test")
    if split == "val":
        raise MissingSplit(f"{label_file}: RAF-DB has no validation split (train_* and test_* only)")
    root = label_file.parent.parent if label_file.parent.name == "EmoLabel" else label_file.parent
    aligned, original = root / "Image" / "aligned", root / "Image" / "original"
    if not aligned.is_dir() and not original.is_dir():
        raise DataError(f"{root}: no Image/aligned/ or Image/original/ folder next to {label_file.name}")

    to_canonical = code_table(RAFDB_CODES)
    problems = Problems(on_error, "malformed line", f"in {label_file}")
    paths, targets, names = [], [], []
    for line_no, line in enumerate(read_text_lines(label_file), start=1):
        if not line.strip():
            continue
        fields = line.split()
        where = f"{label_file.name} line {line_no}"
        if len(fields) != 2:
            problems(f"{where}: expected '<image> <label>', got {line.strip()!r}")
            continue
        name, code = fields
        if not is_ascii_integer(code) or not 1 <= int(code) <= len(to_canonical):
            problems(f"{where}: unknown label {code!r} (RAF-DB codes are 1..{len(to_canonical)})")
            continue
        if not name.startswith(split + "_"):
            continue
        stem = Path(name).stem
        image = aligned / f"{stem}_aligned.jpg" if aligned.is_dir() else original / name
        paths.append(image)
        targets.append(to_canonical[int(code) - 1])
        names.append(name)
    problems.report()
    if not paths:
        raise DataError(f"{label_file}: no '{split}_*' images listed")
    return CacheSource(root, paths, torch.tensor(targets, dtype=torch.int64), ids=tuple(names),
                       name=f"{root} [{split}]", label_files=(label_file,), skipped=problems.count)
