"""load_dataset: one entry point that recognises the format from the path."""

from pathlib import Path

from ..errors import ConfigError, DataError
from .fer2013 import load_fer2013_csv
from .ferplus import LABEL_MODES, is_ferplus_csv, load_ferplus
from .folders import is_image_folder_dataset, load_image_folder
from .imageset import ImageSet
from .rafdb import find_rafdb_label_file, load_rafdb

SPLITS = ("train", "val", "test")


def detect_format(path: str | Path) -> str:
    """'fer2013_csv', 'ferplus', 'rafdb' or 'folders' for a dataset path; DataError if none fits.

    Files: a CSV with a 'pixels' column is FER2013, one with FER+ vote columns is FER+,
    list_patition_label.txt is RAF-DB. Folders: fer2013.csv inside -> FER2013; EmoLabel/ -> RAF-DB;
    train/ val/ test/ subfolders -> image folders (Kaggle FER2013, AffectNet-style, ...).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_file():
        if find_rafdb_label_file(path):
            return "rafdb"
        if path.suffix.lower() == ".csv":
            if is_ferplus_csv(path):
                return "ferplus"
            with open(path, encoding="utf-8-sig", errors="replace") as f:
                if "pixels" in f.readline():
                    return "fer2013_csv"
        raise DataError(f"{path}: not a recognised dataset file (FER2013 CSV, FER+ CSV, RAF-DB label list)")
    if find_rafdb_label_file(path):
        return "rafdb"
    if (path / "fer2013.csv").is_file():
        return "fer2013_csv"
    if is_image_folder_dataset(path):
        return "folders"
    raise DataError(f"{path}: not a recognised dataset folder (expected train/ test/ class folders, "
                    f"fer2013.csv or RAF-DB's EmoLabel/)")


def load_dataset(path: str | Path, split: str = "train", *, image_size: int | None = None,
                 on_error: str = "raise", label_mode: str = "majority",
                 ferplus_images: str | Path | None = None) -> ImageSet:
    """Load one split of a facial-expression dataset into memory, labels in the LABELS order.

    path: a fer2013.csv (or a folder holding one), a FER+ fer2013new.csv (needs ferplus_images=
    the original fer2013.csv, or the folder of the fer*.png images it names, for pixels), a RAF-DB
    basic folder or its list_patition_label.txt,
    or an image-folder tree <path>/<split>/<class>/*.jpg (Kaggle FER2013, AffectNet-style).
    split: "train", "val" (PublicTest / val folder; falls back to test/ where there is none,
    logged) or "test". image_size: resize every image to (S, S) (needed when sizes differ).
    on_error: "raise" (DataError naming file and line) or "skip" (skip and log a count).
    label_mode: FER+ only, "majority" -> int64 (N,) targets, "soft" -> float32 (N, 7).

    >>> import tempfile, torch
    >>> from PIL import Image
    >>> root = Path(tempfile.mkdtemp())
    >>> for split, cls in [("train", "happiness"), ("train", "Angry"), ("test", "sad")]:
    ...     (root / split / cls).mkdir(parents=True)
    ...     Image.new("L", (48, 48), 128).save(root / split / cls / "a.png")
    >>> s = load_dataset(root, "train")
    >>> s.images.shape, s.targets.tolist()
    (torch.Size([2, 1, 48, 48]), [0, 3])
    """
    if split not in SPLITS:
        raise ConfigError(f"split={split!r}: expected one of {', '.join(SPLITS)}")
    if label_mode not in LABEL_MODES:
        raise ConfigError(f"label_mode={label_mode!r}: expected one of {', '.join(LABEL_MODES)}")
    if image_size is not None and (not isinstance(image_size, int) or image_size < 1):
        raise ConfigError(f"image_size={image_size!r}: expected a positive int or None")
    fmt = detect_format(path)
    path = Path(path)
    if fmt != "ferplus" and (label_mode != "majority" or ferplus_images is not None):
        raise ConfigError(f"label_mode / ferplus_images apply to FER+ label files only, not {path} ({fmt})")
    common = dict(image_size=image_size, on_error=on_error)
    if fmt == "fer2013_csv":
        return load_fer2013_csv(path if path.is_file() else path / "fer2013.csv", split, **common)
    if fmt == "ferplus":
        return load_ferplus(path, split, ferplus_images=ferplus_images, label_mode=label_mode, **common)
    if fmt == "rafdb":
        return load_rafdb(path, split, **common)
    return load_image_folder(path, split, **common)
