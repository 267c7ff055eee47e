"""The dataset formats minivit reads, recognised from a path: detect_format and load_dataset, the one entry point."""

from pathlib import Path

from ..common.errors import ConfigError, DataError
from .cache import CachePlan, CacheSource, open_or_decode
from .fer2013 import load_fer2013_csv
from .ferplus import LABEL_MODES, is_ferplus_csv, load_ferplus
from .folders import is_image_folder_dataset, list_image_folder, load_image_folder
from .imageset import ImageSet, read_header
from .labels import SPLITS
from .rafdb import find_rafdb_label_file, list_rafdb, load_rafdb


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
            if path.stat().st_size == 0:
                raise DataError(f"{path}: empty file (no header line)")
            if is_ferplus_csv(path):
                return "ferplus"
            if "pixels" in read_header(path):
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


def load_dataset(path: str | Path, split: str = "train", *, resize_mixed_to: int | tuple[int, int] | None = None,
                 on_error: str = "raise", progress: bool = True, label_mode: str = "majority",
                 ferplus_images: str | Path | None = None, cache: CachePlan | None = None) -> ImageSet:
    """Load one split of a facial-expression dataset, labels in the LABELS order.

    path: a fer2013.csv (or a folder holding one), a FER+ fer2013new.csv (needs ferplus_images=
    the original fer2013.csv, or the folder of the fer*.png images it names, for pixels), a RAF-DB
    basic folder or its list_patition_label.txt,
    or an image-folder tree <path>/<split>/<class>/*.jpg (Kaggle FER2013, AffectNet-style).
    split: "train", "val" (PublicTest / a val folder) or "test". A dataset without the split raises
    MissingSplit (a DataError), never answering with another split: Kaggle's FER2013 folders and RAF-DB
    have no val split, and training carves one out of train (minivit.data.splits).
    resize_mixed_to: S (or (h, w)): where a folder's images are not all one size, every image is
    resized on decode to it (the training CLI passes its --image-size); uniform data keeps its size.
    on_error: "raise" (DataError naming file and line) or "skip" (skip, log the count, and record it
    in ImageSet.skipped). progress: tqdm bars while reading CSVs and decoding images.
    label_mode: FER+ only, "majority" -> int64 (N,) targets, "soft" -> float32 (N, 7).
    cache: None decodes into this process's memory. A CachePlan keeps image folders and RAF-DB decoded
    once in its folder at ``resize_mixed_to`` (needed then) and memory-maps them (minivit.data.cache:
    open_or_decode); CSVs hold their pixels (FER2013's 48x48 faces: 66 MB), so they stay in memory.

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
    sizes = resize_mixed_to if isinstance(resize_mixed_to, (tuple, list)) else (resize_mixed_to,)
    if resize_mixed_to is not None and not all(isinstance(v, int) and v >= 1 for v in sizes):
        raise ConfigError(f"resize_mixed_to={resize_mixed_to!r}: expected a positive int, (h, w) or None")
    if on_error not in ("raise", "skip"):
        raise ConfigError(f"on_error={on_error!r}: expected 'raise' or 'skip'")
    fmt = detect_format(path)
    path = Path(path)
    if fmt != "ferplus" and (label_mode != "majority" or ferplus_images is not None):
        # named as the command line spells them, the common path (from Python: label_mode=, ferplus_images=)
        given = [f"--{name}" for name, on in (("ferplus-images", ferplus_images is not None),
                                              ("label-mode", label_mode != "majority")) if on]
        raise ConfigError(f"{' and '.join(given)}: for FER+ label files (fer2013new.csv) only, not {path} ({fmt})")
    common = dict(resize_mixed_to=tuple(resize_mixed_to) if isinstance(resize_mixed_to, list) else resize_mixed_to,
                  on_error=on_error, progress=progress)
    if fmt == "fer2013_csv":
        return load_fer2013_csv(path if path.is_file() else path / "fer2013.csv", split, **common)
    if fmt == "ferplus":
        return load_ferplus(path, split, ferplus_images=ferplus_images, label_mode=label_mode, **common)
    if fmt in ("rafdb", "folders") and cache is not None:
        if resize_mixed_to is None:
            raise ConfigError(f"{path}: a decoded cache needs the training size (resize_mixed_to)")
        source = list_split(path, split, on_error=on_error)
        return open_or_decode(source, common["resize_mixed_to"], cache, on_error=on_error, progress=progress)
    if fmt == "rafdb":
        return load_rafdb(path, split, **common)
    return load_image_folder(path, split, **common)


def list_split(path: str | Path, split: str = "train", *, on_error: str = "raise") -> CacheSource | None:
    """One split of a dataset of image files as listed, nothing decoded (an image folder tree, RAF-DB): its
    files, targets and ids (minivit.data.cache.CacheSource); None for the CSV formats, whose rows hold
    their pixels (FER2013) or name them (FER+), read together."""
    fmt = detect_format(path)
    if fmt == "rafdb":
        return list_rafdb(path, split, on_error=on_error)
    if fmt == "folders":
        return list_image_folder(path, split, on_error=on_error)
    return None
