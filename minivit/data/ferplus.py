"""FER+ (Microsoft): better labels for FER2013, from 10 annotator votes per face.

`fer2013new.csv`: `Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF`
in the original fer2013.csv row order. FER+ holds labels only: the pixels come from the original fer2013.csv,
joined row by row, or from a folder of the fer*.png files the rows name.

label modes (rows are dropped, with counts in the log, where noted):
  "majority": the single emotion with the most votes. Dropped: ties between emotions, and rows
              whose top vote (or a tie for it) is contempt, unknown or NF (not a face).
  "soft":     float (7,) vote distribution over the 7 emotions (contempt/unknown/NF votes
              removed, renormalised to sum 1). Dropped: the same contempt/unknown/NF-top rows.
Rows with an empty image name (173 in the real file: FER+ found no face there) are always dropped.
"""

import logging
from pathlib import Path

import torch

from ..common.errors import ConfigError, DataError
from .fer2013 import read_fer2013_rows, row_ids, split_mask
from .imageset import ImageSet, Problems, decode_images, open_csv, read_header
from .labels import FERPLUS_COLUMNS, LABELS, label_index

log = logging.getLogger("minivit.data")

LABEL_MODES = ("majority", "soft")


def is_ferplus_csv(path: Path) -> bool:
    """True when the file's header has the FER+ vote columns."""
    header = read_header(path)
    return "Image name" in header and all(c in header for c in FERPLUS_COLUMNS[:7])


def read_ferplus_labels(path: str | Path, label_mode: str = "majority", *, on_error: str = "raise") -> dict:
    """FER+ vote counts -> targets in the LABELS order, without any pixels.

    Returns a dict: targets int64 (N,) (majority) or float32 (N, 7) rows summing to 1 (soft);
    row int64 (N,) 0-based data-row index of each kept row (the join key with fer2013.csv);
    usage list[str]; name list[str] (image names); num_rows (all data rows in the file); dropped {reason: count}.
    """
    path = Path(path)
    if label_mode not in LABEL_MODES:
        raise ConfigError(f"label_mode={label_mode!r}: expected one of {', '.join(LABEL_MODES)}")
    problems = Problems(on_error, "malformed row", f"in {path}")
    # Vote column -> canonical index, or None for contempt / unknown / NF.
    vote_targets = [label_index(c) for c in FERPLUS_COLUMNS]
    votes, usage, rows, names = [], [], [], []
    dropped = {"no image name": 0, "contempt/unknown/not-a-face top vote": 0, "no votes": 0}
    if label_mode == "majority":
        dropped["tie between emotions"] = 0
    with open_csv(path) as (header, csv_rows):
        missing = [c for c in ("Usage", "Image name") + FERPLUS_COLUMNS if c not in header]
        if missing:
            raise DataError(f"{path}: not a FER+ label file (missing columns {', '.join(missing)})")
        vote_cols = [header.index(c) for c in FERPLUS_COLUMNS]
        usage_col, name_col = header.index("Usage"), header.index("Image name")
        for row_index, (line, fields) in enumerate(csv_rows):
            where = f"{path.name} line {line}"
            if len(fields) != len(header):
                problems(f"{where}: expected {len(header)} fields, got {len(fields)}")
                continue
            try:
                v = [int(fields[c]) for c in vote_cols]
            except ValueError:
                problems(f"{where}: vote counts must be integers, got {[fields[c] for c in vote_cols]}")
                continue
            if min(v) < 0:
                problems(f"{where}: negative vote count")
                continue
            if not fields[name_col].strip():
                dropped["no image name"] += 1
                continue
            votes.append(v)
            names.append(fields[name_col].strip())
            usage.append(fields[usage_col].strip())
            rows.append(row_index)
    problems.report()
    num_rows = csv_rows.rows

    votes = torch.tensor(votes, dtype=torch.float32).reshape(-1, len(FERPLUS_COLUMNS))  # (M, 10)
    # Columns -> canonical order: (M, 7) emotion votes plus (M, 3) for the dropped columns.
    keep_cols = [i for i, t in enumerate(vote_targets) if t is not None]
    drop_cols = [i for i, t in enumerate(vote_targets) if t is None]
    emo = torch.zeros(len(votes), len(LABELS))
    emo[:, [vote_targets[i] for i in keep_cols]] = votes[:, keep_cols]  # (M, 7)
    top = votes.max(1).values  # (M,)
    no_votes = top == 0
    other_top = (votes[:, drop_cols] == top[:, None]).any(1) & ~no_votes
    keep = ~no_votes & ~other_top
    dropped["no votes"] += int(no_votes.sum())
    dropped["contempt/unknown/not-a-face top vote"] += int(other_top.sum())
    if label_mode == "majority":
        tie = ((emo == top[:, None]).sum(1) > 1) & keep
        dropped["tie between emotions"] += int(tie.sum())
        keep &= ~tie
        targets = emo.argmax(1)[keep]  # (N,)
    else:
        targets = (emo / emo.sum(1, keepdim=True).clamp_min(1))[keep]  # (N, 7), rows sum to 1
    log.info("%s (%s): kept %d of %d rows; dropped %s", path, label_mode, int(keep.sum()), num_rows,
             {k: n for k, n in dropped.items() if n})
    return {"targets": targets, "row": torch.tensor(rows, dtype=torch.int64)[keep],
            "usage": [u for u, k in zip(usage, keep.tolist()) if k], "name": [n for n, k in zip(names, keep.tolist()) if k],
            "num_rows": num_rows, "dropped": dropped, "skipped": problems.count}


# Microsoft's FERPlus scripts write the images as PNGs into one folder per split.
FERPLUS_IMAGE_DIRS = {"Training": "FER2013Train", "PublicTest": "FER2013Valid", "PrivateTest": "FER2013Test"}


def load_ferplus(path: str | Path, split: str = "train", *, ferplus_images: str | Path | None = None,
                 label_mode: str = "majority", resize_mixed_to: int | None = None, on_error: str = "raise",
                 progress: bool = True) -> ImageSet:
    """FER+ labels with their pixels: `ferplus_images` is either the original fer2013.csv (joined
    row by row) or a folder of the images FER+ names (`fer0000000.png`, directly inside or in
    FER2013Train/ FER2013Valid/ FER2013Test/ as Microsoft's FERPlus scripts write them)."""
    if ferplus_images is None:
        # named as the command line spells it, the common path (from Python: ferplus_images=)
        raise DataError(f"{path}: FER+ has labels only; give its pixels with --ferplus-images: the original "
                        f"fer2013.csv or the folder of its fer*.png images")
    labels = read_ferplus_labels(path, label_mode, on_error=on_error)
    if Path(ferplus_images).is_dir():
        return _load_ferplus_folder(path, labels, Path(ferplus_images), split, label_mode,
                                    dict(resize_mixed_to=resize_mixed_to, on_error=on_error, progress=progress))
    pixels = read_fer2013_rows(ferplus_images, on_error=on_error, progress=progress)
    if labels["num_rows"] != pixels["num_rows"]:
        raise DataError(f"{ferplus_images}: {pixels['num_rows']} rows but {path} has {labels['num_rows']}; "
                        f"FER+ labels must be paired with the original fer2013.csv (same row order)")
    # data-row index -> position in pixels (-1 where that pixel row was skipped as malformed)
    position = torch.full((labels["num_rows"],), -1, dtype=torch.int64)
    position[pixels["row"]] = torch.arange(len(pixels["row"]))
    pos = position[labels["row"]]
    joined = pos >= 0  # FER+ rows whose pixel row was skipped were already counted in that warning
    pos = pos[joined]
    usage = [u for u, j in zip(labels["usage"], joined.tolist()) if j]
    pixel_usage = [pixels["usage"][i] for i in pos.tolist()]
    mismatch = next((i for i, (a, b) in enumerate(zip(usage, pixel_usage)) if b and a != b), None)
    if mismatch is not None:
        raise DataError(f"{ferplus_images}: data row {int(labels['row'][joined][mismatch]) + 1} has Usage "
                        f"{pixel_usage[mismatch]!r} but {path} says {usage[mismatch]!r}; not the matching fer2013.csv")
    keep = split_mask(usage, split, str(path))
    return ImageSet(pixels["images"][pos[keep]], labels["targets"][joined][keep],
                    source=f"{path} + {ferplus_images} [{split}, {label_mode}]",
                    skipped=labels["skipped"] + pixels["skipped"], ids=row_ids(labels["row"][joined][keep]))


def _load_ferplus_folder(path, labels, folder: Path, split, label_mode, decode: dict) -> ImageSet:
    """FER+ rows of `split` with pixels from the image files they name."""
    keep = split_mask(labels["usage"], split, str(path))  # a DataError when the split has no rows
    index = keep.nonzero()[:, 0].tolist()
    paths = []
    for i in index:
        name = labels["name"][i]
        in_split_dir = folder / FERPLUS_IMAGE_DIRS.get(labels["usage"][i], "") / name
        paths.append(in_split_dir if in_split_dir.is_file() else folder / name)
    problems = Problems(decode["on_error"], "unreadable image", f"in {folder}")
    images, kept = decode_images(paths, resize_mixed_to=decode["resize_mixed_to"], problems=problems,
                                 desc=f"decoding FER+ {split}", progress=decode["progress"])
    return ImageSet(images, labels["targets"][index][kept], source=f"{path} + {folder} [{split}, {label_mode}]",
                    skipped=labels["skipped"] + problems.count, ids=row_ids(labels["row"][index][kept]))
