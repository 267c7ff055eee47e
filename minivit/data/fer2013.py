"""FER2013 in its original CSV form: `emotion,pixels,Usage`, one 48x48 grayscale face per row.

Usage column -> split: Training -> train, PublicTest -> val, PrivateTest -> test.
Kaggle's competition files without a Usage column (train.csv: `emotion,pixels`) are one split,
"train": asking them for "val" or "test" is a MissingSplit (a run carves its validation split out of
train, see minivit.data.splits), never the same rows again under another name.
"""

import logging
import warnings
from pathlib import Path

import numpy as np
import torch

from ..common.errors import ConfigError, DataError
from ..common.console import bar
from .imageset import ImageSet, Problems, is_ascii_integer, open_csv
from .labels import FER2013_CODES, SPLITS, MissingSplit, code_table

log = logging.getLogger("minivit.data")

SIDE = 48
NUM_PIXELS = SIDE * SIDE  # 2304
USAGE_TO_SPLIT = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}


def _parse_pixels(text: str) -> np.ndarray | str:
    """'70 80 82 ...' -> uint8 (2304,), or an error message."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy warns (-> raises) where it stops at a non-number
        try:
            values = np.fromstring(text, dtype=np.int64, sep=" ")  # ~4x faster than split + int
        except (ValueError, DeprecationWarning):
            values = None
    if values is None:  # slow path only to name the bad token
        bad = next((t for t in text.split() if not is_ascii_integer(t.lstrip("-"))), text[:20])
        return f"non-integer pixel value {bad!r}"
    if values.size != NUM_PIXELS:
        return f"expected {NUM_PIXELS} pixel values, got {values.size}"
    if values.min() < 0 or values.max() > 255:
        return f"pixel value {int(values.min() if values.min() < 0 else values.max())} outside 0..255"
    return values.astype(np.uint8)


def read_fer2013_rows(path: str | Path, *, on_error: str = "raise", progress: bool = True) -> dict:
    """Parse every data row of a fer2013.csv.

    Returns a dict: images uint8 (N, 1, 48, 48); labels int64 (N,) canonical (-1 where the file has
    no emotion column); usage list[str] (N,) ('' without a Usage column); row int64 (N,) 0-based
    index of each kept data row in the file (FER+ joins on it); num_rows, all data rows; skipped,
    the rows left out under on_error="skip". Malformed rows raise DataError naming file and line,
    or with on_error="skip" are skipped and counted in a warning. Blank lines are not rows.
    """
    path = Path(path)
    problems = Problems(on_error, "malformed row", f"in {path}")
    to_canonical = code_table(FER2013_CODES)
    images, labels, usage, rows = [], [], [], []
    with open_csv(path) as (header, csv_rows):
        if "pixels" not in header:
            raise DataError(f"{path}: not a FER2013 CSV (header {','.join(header)!r} has no 'pixels' column)")
        col = {name: header.index(name) for name in ("emotion", "pixels", "Usage") if name in header}
        rows_read = bar(csv_rows, desc=f"reading {path.name}", unit="row", leave=False, mininterval=1.0,
                        show=progress)
        for row_index, (line, fields) in enumerate(rows_read):
            problem, parsed = _parse_row(fields, header, col, to_canonical)
            if problem:
                problems(f"{path.name} line {line}: {problem}")
                continue
            images.append(parsed[0])
            labels.append(parsed[1])
            usage.append(parsed[2])
            rows.append(row_index)
    problems.report()
    n = len(images)
    return {
        "images": torch.from_numpy(np.stack(images)).view(n, 1, SIDE, SIDE) if n else
        torch.zeros(0, 1, SIDE, SIDE, dtype=torch.uint8),  # (N, 1, 48, 48)
        "labels": torch.tensor(labels, dtype=torch.int64),
        "usage": usage,
        "row": torch.tensor(rows, dtype=torch.int64),
        "num_rows": csv_rows.rows,
        "skipped": problems.count,
        "first_problem": problems.first,
    }


def _parse_row(fields: list[str], header: list[str], col: dict, to_canonical: list) -> tuple[str | None, tuple]:
    """(problem, None) or (None, (pixels uint8 (2304,), canonical label or -1, usage)) for one CSV row."""
    if len(fields) != len(header):
        return f"expected {len(header)} fields, got {len(fields)}", ()
    pixels = _parse_pixels(fields[col["pixels"]])
    if isinstance(pixels, str):
        return pixels, ()
    label = -1
    if "emotion" in col:
        code = fields[col["emotion"]].strip()
        if not is_ascii_integer(code) or int(code) >= len(to_canonical):
            return f"unknown emotion label {code!r} (expected 0..{len(to_canonical) - 1})", ()
        label = to_canonical[int(code)]
    use = fields[col["Usage"]].strip() if "Usage" in col else ""
    if use and use not in USAGE_TO_SPLIT:
        return f"unknown Usage {use!r} (expected {', '.join(USAGE_TO_SPLIT)})", ()
    return None, (pixels, label, use)


def split_mask(usage: list[str], split: str, source: str) -> torch.Tensor:
    """Boolean (N,) mask of rows whose Usage maps to `split`; a file without Usage is all "train".

    A split with no rows is a MissingSplit (a DataError): an empty set would fail later, far from its cause.
    """
    if split not in SPLITS:
        raise ConfigError(f"split={split!r} for {source}: expected one of {', '.join(SPLITS)}")
    if usage and not any(usage):
        if split != "train":
            raise MissingSplit(f"{source}: no Usage column, so every row is split 'train' (none is {split!r})")
        log.info("%s has no Usage column: using all rows as split 'train'", source)
        return torch.ones(len(usage), dtype=torch.bool)
    mask = torch.tensor([USAGE_TO_SPLIT.get(u) == split for u in usage], dtype=torch.bool)
    if not mask.any():
        usage_name = next(u for u, s in USAGE_TO_SPLIT.items() if s == split)
        raise MissingSplit(f"{source}: no rows for split {split!r} (Usage {usage_name})")
    return mask


def load_fer2013_csv(path: str | Path, split: str = "train", *, resize_mixed_to: int | None = None,
                     on_error: str = "raise", progress: bool = True) -> ImageSet:
    """One split of a fer2013.csv as an ImageSet of uint8 (N, 1, 48, 48) faces.

    resize_mixed_to is accepted for a uniform signature and never needed: every row is 48x48.
    """
    data = read_fer2013_rows(path, on_error=on_error, progress=progress)
    if data["skipped"] and not len(data["labels"]):  # on_error="skip" left nothing: say why, not "no rows"
        raise DataError(f"{path}: all {data['num_rows']} rows were skipped as malformed, none is left for split "
                        f"{split!r}; first: {data['first_problem']}")
    if (data["labels"] < 0).any():
        raise DataError(f"{path}: has no 'emotion' column, so it cannot be used for training or evaluation")
    keep = split_mask(data["usage"], split, str(path))
    return ImageSet(data["images"][keep], data["labels"][keep], source=f"{path} [{split}]",
                    skipped=data["skipped"], ids=row_ids(data["row"][keep]))


def row_ids(rows: torch.Tensor) -> tuple[str, ...]:
    """Stable names of CSV data rows (0-based): what a carved validation split records."""
    return tuple(f"row {r}" for r in rows.tolist())
