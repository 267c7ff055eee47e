"""The data sources minivit reads, one registry: each recognised from its path, read, and -- where it is a
set of image files -- listed for the decoded cache. ``load_dataset`` is the one entry point.

    synthetic     the path "synthetic": minivit's drawn faces (minivit/data/synthetic.py)
    rafdb         RAF-DB basic: list_patition_label.txt, or a folder holding it (or EmoLabel/)
    ferplus       a FER+ fer2013new.csv (vote columns); its pixels come from --ferplus-images
    fer2013_csv   a CSV with a 'pixels' column, or a folder holding fer2013.csv
    folders       an image-folder tree <path>/<split>/<class>/*.jpg (Kaggle FER2013, AffectNet-style)

The first source that claims a path reads it (FORMATS, in this order).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..common.errors import ConfigError, DataError
from .cache import CachePlan, CacheSource, open_or_decode
from .fer2013 import load_fer2013_csv
from .ferplus import LABEL_MODES, is_ferplus_csv, load_ferplus
from .folders import is_image_folder_dataset, list_image_folder, load_image_folder
from .imageset import ImageSet, read_header
from .labels import SPLITS
from .rafdb import find_rafdb_label_file, list_rafdb, load_rafdb
from .synthetic import SYNTHETIC, load_synthetic


@dataclass(frozen=True)
class Format:
    """A kind of dataset: whether it ``claims`` a path, how it is ``read`` (path, split, options -> ImageSet:
    load_dataset's options, each source taking those it has a use for), and for sets of image files how
    it is ``listed`` (path, split, on_error -> CacheSource) so that the decoded cache can hold them.
    ``in_memory`` says why its sets are never cached (a run's log prints it)."""

    name: str
    claims: Callable[[Path], bool]
    read: Callable[..., ImageSet]
    listed: Callable[..., CacheSource] | None = None
    in_memory: str = ""


def _csv_header(path: Path) -> list[str]:
    """A CSV file's header, for recognising it; an empty file is a DataError naming it."""
    if path.suffix.lower() != ".csv" or not path.is_file():
        return []
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file (no header line)")
    return read_header(path)


def _is_fer2013(path: Path) -> bool:
    return (path / "fer2013.csv").is_file() if path.is_dir() else "pixels" in _csv_header(path)


def _is_ferplus(path: Path) -> bool:
    return bool(_csv_header(path)) and is_ferplus_csv(path)


def _read_fer2013(path: Path, split: str, **o) -> ImageSet:
    return load_fer2013_csv(path if path.is_file() else path / "fer2013.csv", split, **_common(o))


def _read_ferplus(path: Path, split: str, *, ferplus_images=None, label_mode="majority", **o) -> ImageSet:
    return load_ferplus(path, split, ferplus_images=ferplus_images, label_mode=label_mode, **_common(o))


def _common(options: dict) -> dict:
    """The options every file reader takes (resize_mixed_to, on_error, progress)."""
    return {k: options[k] for k in ("resize_mixed_to", "on_error", "progress") if k in options}


FORMATS = {f.name: f for f in (
    Format("synthetic", lambda path: str(path) == SYNTHETIC,
           lambda path, split, *, synthetic=None, **o: load_synthetic(split, synthetic),
           in_memory="synthetic faces, drawn at every start"),
    Format("rafdb", lambda path: find_rafdb_label_file(path) is not None,
           lambda path, split, **o: load_rafdb(path, split, **_common(o)), listed=list_rafdb),
    Format("ferplus", _is_ferplus, _read_ferplus, in_memory="FER+ faces, 48x48"),
    Format("fer2013_csv", _is_fer2013, _read_fer2013, in_memory="pixels in the CSV"),
    Format("folders", is_image_folder_dataset, lambda path, split, **o: load_image_folder(path, split, **_common(o)),
           listed=list_image_folder),
)}


def detect_format(path: str | Path) -> str:
    """The name of the source (FORMATS) that claims ``path``; DataError if none does.

    Files: a CSV with a 'pixels' column is FER2013, one with FER+ vote columns is FER+,
    list_patition_label.txt is RAF-DB. Folders: fer2013.csv inside -> FER2013; EmoLabel/ -> RAF-DB;
    train/ val/ test/ subfolders -> image folders (Kaggle FER2013, AffectNet-style, ...).
    """
    path = Path(path)
    found = next((f.name for f in FORMATS.values() if f.claims(path)), None)
    if found is not None:
        return found
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_file():
        raise DataError(f"{path}: not a recognised dataset file (FER2013 CSV, FER+ CSV, RAF-DB label list)")
    raise DataError(f"{path}: not a recognised dataset folder (expected train/ test/ class folders, "
                    f"fer2013.csv or RAF-DB's EmoLabel/)")


def load_dataset(path: str | Path, split: str = "train", *, resize_mixed_to: int | tuple[int, int] | None = None,
                 on_error: str = "raise", progress: bool = True, label_mode: str = "majority",
                 ferplus_images: str | Path | None = None, cache: CachePlan | None = None,
                 synthetic: dict | None = None) -> ImageSet:
    """Load one split of a facial-expression dataset, labels in the LABELS order.

    path: a fer2013.csv (or a folder holding one), a FER+ fer2013new.csv (needs ferplus_images=
    the original fer2013.csv, or the folder of the fer*.png images it names, for pixels), a RAF-DB
    basic folder or its list_patition_label.txt, an image-folder tree <path>/<split>/<class>/*.jpg
    (Kaggle FER2013, AffectNet-style), or "synthetic" (needs synthetic=dict(samples=, image_size=, seed=)).
    split: "train", "val" (PublicTest / a val folder) or "test". A dataset without the split raises
    MissingSplit (a DataError), never answering with another split: Kaggle's FER2013 folders and RAF-DB
    have no val split, and training carves one out of train (minivit.data.splits).
    resize_mixed_to: S (or (h, w)): where a folder's images are not all one size, every image is
    resized on decode to it (the training CLI passes its --image-size); uniform data keeps its size.
    on_error: "raise" (DataError naming file and line) or "skip" (skip, log the count, and record it
    in ImageSet.skipped). progress: tqdm bars while reading CSVs and decoding images.
    label_mode: FER+ only, "majority" -> int64 (N,) targets, "soft" -> float32 (N, 7).
    cache: None decodes into this process's memory. A CachePlan keeps the sources of image files
    (image folders, RAF-DB) decoded once in its folder at ``resize_mixed_to`` (needed then) and
    memory-maps them (minivit.data.cache: open_or_decode); the others say why not (Format.in_memory).

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
    _check_options(split, label_mode, resize_mixed_to, on_error)
    fmt = FORMATS[detect_format(path)]
    path = Path(path)
    if fmt.name != "ferplus" and (label_mode != "majority" or ferplus_images is not None):
        # named as the command line spells them, the common path (from Python: label_mode=, ferplus_images=)
        given = [f"--{name}" for name, on in (("ferplus-images", ferplus_images is not None),
                                              ("label-mode", label_mode != "majority")) if on]
        raise ConfigError(f"{' and '.join(given)}: for FER+ label files (fer2013new.csv) only, not {path} ({fmt.name})")
    size = tuple(resize_mixed_to) if isinstance(resize_mixed_to, list) else resize_mixed_to
    if fmt.listed is not None and cache is not None:
        if size is None:
            raise ConfigError(f"{path}: a decoded cache needs the training size (resize_mixed_to)")
        return open_or_decode(fmt.listed(path, split, on_error=on_error), size, cache, on_error=on_error,
                              progress=progress)
    return fmt.read(path, split, resize_mixed_to=size, on_error=on_error, progress=progress, label_mode=label_mode,
                    ferplus_images=ferplus_images, synthetic=synthetic)


def _check_options(split, label_mode, resize_mixed_to, on_error) -> None:
    if split not in SPLITS:
        raise ConfigError(f"split={split!r}: expected one of {', '.join(SPLITS)}")
    if label_mode not in LABEL_MODES:
        raise ConfigError(f"label_mode={label_mode!r}: expected one of {', '.join(LABEL_MODES)}")
    sizes = resize_mixed_to if isinstance(resize_mixed_to, (tuple, list)) else (resize_mixed_to,)
    if resize_mixed_to is not None and not all(isinstance(v, int) and v >= 1 for v in sizes):
        raise ConfigError(f"resize_mixed_to={resize_mixed_to!r}: expected a positive int, (h, w) or None")
    if on_error not in ("raise", "skip"):
        raise ConfigError(f"on_error={on_error!r}: expected 'raise' or 'skip'")


def list_split(path: str | Path, split: str = "train", *, on_error: str = "raise") -> CacheSource | None:
    """One split of a dataset of image files as listed, nothing decoded (an image folder tree, RAF-DB): its
    files, targets and ids (minivit.data.cache.CacheSource); None for the other sources, whose pixels come
    with their rows (FER2013), are named by them (FER+), or are drawn (synthetic)."""
    listed = FORMATS[detect_format(path)].listed
    return listed(path, split, on_error=on_error) if listed is not None else None


__all__ = ["Format", "FORMATS", "detect_format", "load_dataset", "list_split"]
