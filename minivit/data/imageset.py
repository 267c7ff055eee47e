"""ImageSet (a decoded dataset in memory), image decoding, and the on_error policy."""

import csv
import logging
import os
from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from ..errors import ConfigError, DataError
from .labels import LABELS

log = logging.getLogger("minivit.data")


@dataclass
class ImageSet:
    """A whole dataset decoded into memory: uint8 images plus targets in the LABELS order.

    images:  uint8 (N, C, H, W), C = 1 (grayscale) or 3 (colour), one size for all, CPU.
    targets: int64 (N,) class indices into `classes`, or float32 (N, K) soft labels whose rows sum to 1.

    >>> s = ImageSet(torch.zeros(2, 1, 48, 48, dtype=torch.uint8), torch.tensor([3, 3]))
    >>> len(s), s.class_counts().tolist()
    (2, [0, 0, 0, 2, 0, 0, 0])
    """

    images: torch.Tensor
    targets: torch.Tensor
    classes: tuple[str, ...] = LABELS
    source: str = ""

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[1] not in (1, 3):
            raise DataError(f"{self.source or 'ImageSet'}: images must be uint8 (N, 1|3, H, W), "
                            f"got {self.images.dtype} {tuple(self.images.shape)}")
        if len(self.targets) != len(self.images):
            raise DataError(f"{self.source or 'ImageSet'}: {len(self.images)} images but {len(self.targets)} targets")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def soft(self) -> bool:
        """True when targets are (N, K) soft labels rather than class indices."""
        return self.targets.ndim == 2

    def class_counts(self) -> torch.Tensor:
        """(K,) images per class; for soft labels, the summed probability mass per class (float)."""
        if self.soft:
            return self.targets.sum(0)
        return torch.bincount(self.targets, minlength=len(self.classes))

    def subset(self, index) -> "ImageSet":
        """The ImageSet restricted to `index` (a slice, index tensor or boolean mask)."""
        return ImageSet(self.images[index], self.targets[index], self.classes, self.source)


class Problems:
    """The on_error policy: "raise" turns the first problem into a DataError; "skip" counts them
    and `report()` logs one warning with the count and the first message (never a silent drop)."""

    def __init__(self, on_error: str, what: str):
        if on_error not in ("raise", "skip"):
            raise ConfigError(f"on_error={on_error!r}: expected 'raise' or 'skip'")
        self.on_error, self.what, self.count, self.first = on_error, what, 0, None

    def __call__(self, message: str) -> None:
        if self.on_error == "raise":
            raise DataError(message)
        self.count += 1
        self.first = self.first or message

    def report(self) -> None:
        if self.count:
            log.warning("skipped %d %s (on_error='skip'); first: %s", self.count, self.what, self.first)


@contextmanager
def open_csv(path: Path):
    """Yield (header, row reader) of a CSV file; a DataError naming the file if it cannot be opened.

    ``utf-8-sig`` drops the byte-order mark that spreadsheet exports put before the header.
    """
    try:
        f = open(path, newline="", encoding="utf-8-sig")
    except OSError as e:
        raise DataError(f"{path}: cannot open ({e.strerror})") from None
    with f:
        reader = csv.reader(f)
        yield [h.strip() for h in next(reader, [])], reader


def _decode_one(path: Path, image_size: int | None) -> np.ndarray:
    """One image file -> uint8 (H, W) for grayscale or (H, W, 3) for colour."""
    with Image.open(path) as im:
        # Keep grayscale as 1 channel (FER2013 is 48x48 'L'); everything else becomes RGB.
        im = im.convert("L" if im.mode in ("L", "LA", "I", "I;16", "1") else "RGB")
        if image_size is not None and im.size != (image_size, image_size):
            # Pillow's bicubic filter is antialiased when shrinking.
            im = im.resize((image_size, image_size), Image.Resampling.BICUBIC)
        return np.asarray(im)


def decode_images(paths: list[Path], *, image_size: int | None = None, problems: Problems | None = None,
                  desc: str = "decoding images") -> tuple[torch.Tensor, list[int]]:
    """Decode image files once into one uint8 (N, C, H, W) tensor.

    Returns (images, kept) where kept lists the indices into `paths` that decoded (all of them unless
    problems skips unreadable files). Images differing in size need `image_size`; a mix of grayscale
    and colour files is stored as colour. Threads: Pillow releases the GIL while decoding, which helps
    for large JPEGs (for 48x48 ones file-open overhead dominates and it is about even).
    """
    problems = problems or Problems("raise", "unreadable images")

    def work(path):
        try:
            return _decode_one(path, image_size)
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            return f"{path}: cannot read image ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"

    # Threads get chunks of files (one future per file costs as much as decoding a 48x48 JPEG).
    chunk = 256
    chunks = [paths[i:i + chunk] for i in range(0, len(paths), chunk)]
    workers = min(4, os.cpu_count() or 1)
    arrays, kept = [], []
    pool = ThreadPoolExecutor(workers)
    try:
        results = pool.map(lambda part: [work(p) for p in part], chunks)
        with tqdm(total=len(paths), desc=desc, unit="img", disable=len(paths) < 2000, leave=False) as bar:
            for c, part in enumerate(results):
                for j, result in enumerate(part):
                    if isinstance(result, str):
                        problems(result)  # raises, or counts a skip
                        continue
                    arrays.append(result)
                    kept.append(c * chunk + j)
                bar.update(len(part))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # on an error, don't decode the rest first
    problems.report()
    if not arrays:
        raise DataError(f"no readable images among {len(paths)} files" + (f" (first: {paths[0]})" if paths else ""))

    sizes = {a.shape[:2] for a in arrays}
    if len(sizes) > 1:
        a, b = sorted(sizes)[:2]
        raise DataError(f"{paths[kept[0]].parent}: images differ in size ({a[1]}x{a[0]} and {b[1]}x{b[0]}); "
                        f"pass image_size=... to resize them to one size")
    colour = any(a.ndim == 3 for a in arrays)
    if colour:  # a few grayscale files in a colour set: replicate to 3 channels
        arrays = [a if a.ndim == 3 else np.repeat(a[:, :, None], 3, axis=2) for a in arrays]
        images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()  # (N, 3, H, W)
    else:
        images = torch.from_numpy(np.stack(arrays))[:, None]  # (N, 1, H, W)
    return images, kept
