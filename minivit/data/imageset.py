"""ImageSet (a decoded dataset in memory), image decoding, and the on_error policy."""

import codecs
import csv
import logging
import os
from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import ExifTags, Image, ImageOps

from ..common.errors import ConfigError, DataError
from ..common.console import bar
from ..common.text import counted
from .labels import LABELS

log = logging.getLogger("minivit.data")
# How a user skips unreadable files and malformed rows: the commands' option and the Python API's argument.
SKIP_HINT = "--on-bad-image skip, on_error='skip' in Python,"


class RowView:
    """Rows ``rows`` of a uint8 (N, C, H, W) tensor, not copied: a subset of a memory-mapped set.

    Carving a validation split out of a 40 GB decoded cache (minivit.data.cache) with a tensor index
    would copy the 36 GB of training rows into this process's memory; a RowView holds the map and an
    int64 index (8 bytes a row) instead. Indexing it (an int, a slice, a list or an index tensor)
    gathers those rows into a new tensor, as a tensor's advanced indexing does; it is never written to.
    Batch readers that want the two parts (minivit.data.prefetch.gather) read ``base`` and ``rows``.

    >>> base = torch.arange(5, dtype=torch.uint8).view(5, 1, 1, 1)
    >>> v = RowView(base, torch.tensor([4, 1, 3]))
    >>> len(v), tuple(v.shape), v[1:].flatten().tolist(), v[[2, 0]].flatten().tolist(), v[-1].item()
    (3, (3, 1, 1, 1), [1, 3], [3, 4], 3)
    """

    def __init__(self, base: torch.Tensor, rows: torch.Tensor):
        self.base, self.rows = base, rows.to(torch.int64)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.rows), *self.base.shape[1:]))

    dtype = property(lambda self: self.base.dtype)
    ndim = property(lambda self: self.base.ndim)
    device = property(lambda self: self.base.device)

    def __len__(self) -> int:
        return len(self.rows)

    def numel(self) -> int:
        return self.shape.numel()

    def __getitem__(self, index) -> torch.Tensor:
        rows = self.rows[index if isinstance(index, (int, slice, torch.Tensor)) else torch.as_tensor(index)]
        if rows.ndim == 0:
            return self.base[int(rows)].clone()  # one image (C, H, W)
        out = torch.empty((len(rows), *self.base.shape[1:]), dtype=self.base.dtype)  # (n, C, H, W)
        np.take(self.base.numpy(), rows.numpy(), axis=0, out=out.numpy(), mode="clip")  # rows are in range: no buffer
        return out

    def subset(self, index) -> "RowView":
        return RowView(self.base, self.rows[index])


@dataclass
class ImageSet:
    """A whole dataset decoded once: uint8 images plus targets in the LABELS order.

    images:  uint8 (N, C, H, W), C = 1 (grayscale) or 3 (colour), one size for all, CPU: a tensor in
             memory, a read-only memory map of a decoded cache, or a RowView of one (a carved split).
    targets: int64 (N,) class indices into `classes`, or float32 (N, K) soft labels whose rows sum to 1.
    ids:     a stable name per image (a file path relative to the split's folder, "row 17" of a CSV), or
             None: what a carved validation split is recorded by (minivit.data.splits), so that the same
             images are held out again whatever order the files are listed in.
    cache:   the decoded cache folder whose images.u8 ``images`` maps (minivit.data.cache), or None when
             the images were decoded into this process's memory. A mapped set's subsets are RowViews.

    >>> s = ImageSet(torch.zeros(2, 1, 48, 48, dtype=torch.uint8), torch.tensor([3, 3]))
    >>> len(s), s.class_counts().tolist()
    (2, [0, 0, 0, 2, 0, 0, 0])
    """

    images: torch.Tensor
    targets: torch.Tensor
    classes: tuple[str, ...] = LABELS
    source: str = ""
    skipped: int = 0  # items left out under on_error="skip" (rows or image files)
    ids: tuple[str, ...] | None = None
    cache: str | None = None

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[1] not in (1, 3):
            raise DataError(f"{self.source or 'ImageSet'}: images must be uint8 (N, 1|3, H, W), "
                            f"got {self.images.dtype} {tuple(self.images.shape)}")
        if len(self.targets) != len(self.images):
            raise DataError(f"{self.source or 'ImageSet'}: {len(self.images)} images but {len(self.targets)} targets")
        if self.ids is not None:
            self.ids = tuple(self.ids)
            if len(self.ids) != len(self.images):
                raise DataError(f"{self.source or 'ImageSet'}: {len(self.images)} images but {len(self.ids)} ids")

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

    def hard_targets(self) -> torch.Tensor:
        """(N,) class indices: the targets, or for soft labels the class with the most mass."""
        return self.targets.argmax(1) if self.soft else self.targets

    def subset(self, index, source: str | None = None) -> "ImageSet":
        """The ImageSet restricted to `index` (a slice, index tensor or boolean mask), ids included.
        Images in memory are copied; a mapped set's are not: its subset is a RowView of the same map."""
        positions = torch.arange(len(self))[index]
        ids = None if self.ids is None else tuple(self.ids[i] for i in positions.tolist())
        if isinstance(self.images, RowView):
            images = self.images.subset(positions)
        elif self.cache is not None:
            images = RowView(self.images, positions)
        else:
            images = self.images[index]
        return ImageSet(images, self.targets[index], self.classes, self.source if source is None else source,
                        self.skipped, ids, self.cache)


class Problems:
    """The on_error policy for ``what`` (an "unreadable image", a "malformed row") ``where`` ("in <file>"):
    "raise" turns the first problem into a DataError that names the way to skip them; "skip" counts them
    and ``report()`` logs one warning with the count and the first message (never a silent drop)."""

    def __init__(self, on_error: str, what: str, where: str = ""):
        if on_error not in ("raise", "skip"):
            raise ConfigError(f"on_error={on_error!r}: expected 'raise' or 'skip'")
        self.on_error, self.what, self.where, self.count, self.first = on_error, what, where, 0, None

    def __call__(self, message: str) -> None:
        if self.on_error == "raise":
            raise DataError(f"{message} ({SKIP_HINT} leaves out every {self.what} and counts them)")
        self.count += 1
        self.first = self.first or message

    def report(self) -> None:
        if self.count:
            log.warning("skipped %s %s; first: %s", counted(self.count, self.what), self.where, self.first)


def is_ascii_integer(text: str) -> bool:
    """Whether int(text) reads a non-negative integer written in ASCII digits. str.isdigit() is not
    that test: "²".isdigit() is True and int("²") raises, and int() also accepts Arabic-Indic digits.

    >>> is_ascii_integer("12"), is_ascii_integer("²"), is_ascii_integer("-1"), is_ascii_integer("")
    (True, False, False, False)
    """
    return text.isascii() and text.isdecimal()


def _first_non_utf8(path: Path) -> tuple[int, int, int]:
    """(byte offset, line number, byte value) of the first bytes in a file that are not UTF-8."""
    pending, offset, line = b"", 0, 1  # offset: file position of pending[0]
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            data = pending + chunk
            try:
                text, used = codecs.utf_8_decode(data, "strict", False)  # keeps an incomplete tail
            except UnicodeDecodeError as e:
                return offset + e.start, line + data.count(b"\n", 0, e.start), data[e.start]
            line += text.count("\n")
            offset, pending = offset + used, data[used:]
    return offset, line, pending[0] if pending else 0  # a multi-byte sequence cut off by the end of file


def _not_utf8(path: Path) -> DataError:
    offset, line, byte = _first_non_utf8(path)
    return DataError(f"{path}: not UTF-8 text (byte 0x{byte:02x} at offset {offset}, line {line}); "
                     f"re-save it as UTF-8")


class CsvRows:
    """The data rows of an open CSV file as (line number, fields), blank lines skipped.

    Every way a file can fail to be CSV becomes one DataError naming the file and line: bytes that
    are not UTF-8, a quote that is never closed, no data rows at all. Trailing blank lines (common in
    hand-edited and re-exported files) are not rows.
    """

    def __init__(self, path: Path, f):
        self.path, self.rows = path, 0
        # strict: an unclosed quote is an error, not a field that silently swallows the rest of the file
        self._reader = csv.reader(f, strict=True)

    def header(self) -> list[str]:
        fields = self._next()
        if fields is None:
            raise DataError(f"{self.path}: empty file (no header line)")
        return [h.strip() for h in fields]

    def _next(self) -> list[str] | None:
        start = self._reader.line_num + 1  # where the record that fails began
        try:
            return next(self._reader)
        except StopIteration:
            return None
        except UnicodeDecodeError:
            raise _not_utf8(self.path) from None
        except csv.Error as e:
            what = ("a quoted field is never closed" if "end of data" in str(e) or "field larger" in str(e)
                    else "malformed CSV")
            raise DataError(f"{self.path.name} line {start}: {what} (csv: {e})") from None

    def __iter__(self):
        while (fields := self._next()) is not None:
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue  # a blank line
            self.rows += 1
            yield self._reader.line_num, fields
        if self.rows == 0:
            raise DataError(f"{self.path}: no data rows (only a header)")


@contextmanager
def open_csv(path: Path):
    """Yield (header, rows) of a CSV file: rows iterates (line number, fields) over the data rows.

    ``utf-8-sig`` drops the byte-order mark that spreadsheet exports put before the header. Errors
    (cannot open, not UTF-8, unclosed quote, no data rows) are DataErrors naming the file.

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "a.csv"
    >>> _ = path.write_text("x,y\\n1,2\\n\\n3,4\\n\\n\\n")
    >>> with open_csv(path) as (header, rows):
    ...     header, list(rows)
    (['x', 'y'], [(2, ['1', '2']), (4, ['3', '4'])])
    """
    path = Path(path)
    try:
        f = open(path, newline="", encoding="utf-8-sig")
    except OSError as e:
        raise DataError(f"{path}: cannot open ({e.strerror})") from None
    with f:
        rows = CsvRows(path, f)
        yield rows.header(), rows


def read_header(path: Path) -> list[str]:
    """The fields of a CSV file's first line, read leniently (undecodable bytes replaced): enough to
    recognise a format, while the strict reader (open_csv) reports what is wrong with the file."""
    try:
        with open(path, "rb") as f:
            first = f.readline(1 << 16).decode("utf-8-sig", errors="replace")
    except OSError:
        return []
    return [h.strip() for h in next(csv.reader([first]), [])]


def read_text_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 text file (label lists); DataError naming the file if unreadable."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError:
        raise _not_utf8(path) from None
    except OSError as e:
        raise DataError(f"{path}: cannot open ({e.strerror})") from None


GRAY_MODES = ("1", "L", "LA", "I;16", "I;16L", "I;16B", "I;16N", "I", "F")  # decoded to 1 channel


def to_uint8_array(im: Image.Image, name: str = "image") -> np.ndarray:
    """A decoded PIL image -> uint8 (H, W) for grayscale or (H, W, 3) for colour: the one rule that
    both the dataset readers and minivit.predict follow.

    Grayscale stays 1 channel (FER2013 is 48x48 'L'); alpha is dropped; palette and every colour
    mode become RGB. 16-bit grayscale (``I;16`` PNGs, big-endian ``I;16B`` TIFFs) keeps its top 8
    bits (>> 8) rather than being clipped at 255. 32-bit ``I`` is read as 8-bit data when its values
    are in 0..255 and as 16-bit when in 0..65535; float ``F`` as [0, 1] or [0, 255] data; values
    outside those ranges (or NaN) are a DataError naming ``name``: there is no safe way to guess.

    >>> to_uint8_array(Image.fromarray(np.array([[0, 256, 65535]], dtype=np.uint16))).tolist()
    [[0, 1, 255]]
    >>> to_uint8_array(Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))).tolist()
    [[0, 128, 255]]
    """
    if im.mode not in GRAY_MODES:
        return np.asarray(im.convert("RGB"))
    if im.mode in ("1", "L", "LA"):
        return np.asarray(im.convert("L"))
    a = np.asarray(im)  # uint16 (any byte order), int32 or float32 (H, W)
    if im.mode.startswith("I;16"):
        return (a.astype(np.uint16) >> 8).astype(np.uint8)  # the top 8 of 16 bits
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    kind = "32-bit integer" if im.mode == "I" else "32-bit float"
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0:
        raise DataError(f"{name}: {kind} pixels in [{lo:g}, {hi:g}] are not an image's 0..255 or 0..65535 "
                        f"(save it as 8- or 16-bit)")
    if im.mode == "I":
        if hi > 65535:
            raise DataError(f"{name}: 32-bit integer pixels up to {hi:g} are beyond 16 bits (save it as 8- or 16-bit)")
        return (a >> 8 if hi > 255 else a).astype(np.uint8)  # 16-bit data (>> 8) or 8-bit data
    if hi > 255:
        raise DataError(f"{name}: 32-bit float pixels up to {hi:g} are beyond 0..255 (save it as 8- or 16-bit)")
    scale = 255.0 if hi <= 1.0 else 1.0  # [0, 1] data, or [0, 255] data
    return np.clip(np.round(a * scale), 0, 255).astype(np.uint8)


def _decode_one(path: Path) -> np.ndarray:
    """One image file -> uint8 (H, W) for grayscale or (H, W, 3) for colour, at its own size, turned
    upright by its EXIF orientation (phone photos), decoded by to_uint8_array."""
    with Image.open(path) as im:
        return to_uint8_array(ImageOps.exif_transpose(im), str(path))


# Pillow's decoders also raise SyntaxError (a broken PNG chunk) and EOFError on damaged files
READ_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


def unreadable(path, e: Exception) -> str:
    """The one-line problem of a file Pillow cannot read: its path, the exception's kind and first line."""
    return f"{path}: cannot read image ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"


def decode_file(path) -> np.ndarray | str:
    """One image file as _decode_one reads it, or the problem message the on_error policy reports (a
    message, not an exception: the decoding threads hand problems back in file order)."""
    try:
        return _decode_one(path)
    except DataError as e:  # pixels that are not an image's (to_uint8_array): its own message
        return str(e)
    except READ_ERRORS as e:
        return unreadable(path, e)


def probe_file(path) -> tuple[int, tuple[int, int]] | str:
    """(channels, (h, w)) that decoding ``path`` will give, from its header alone (about 1% of decoding
    it), or the problem message: what the decoded cache plans its array by before decoding anything."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            if im.getexif().get(ExifTags.Base.Orientation, 1) in (5, 6, 7, 8):  # turned by 90 degrees upright
                w, h = h, w
            return (1 if im.mode in GRAY_MODES else 3), (h, w)
    except READ_ERRORS as e:
        return unreadable(path, e)


def resize_array(a: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """uint8 (H, W[, 3]) -> (S, S[, 3]) (or (h, w) for a tuple) with Pillow's antialiased bicubic filter."""
    h, w = (size, size) if isinstance(size, int) else size
    if a.shape[:2] == (h, w):
        return a
    return np.asarray(Image.fromarray(a).resize((w, h), Image.Resampling.BICUBIC))


class _Sizes:
    """Keeps decoded images at one size: native while all agree, ``resize_mixed_to`` once they differ."""

    def __init__(self, resize_mixed_to, folder: str):
        self.target, self.folder, self.first, self.mixed = resize_mixed_to, folder, None, False

    def admit(self, a: np.ndarray, path: Path, arrays: list) -> np.ndarray:
        if self.first is None:
            self.first = (a.shape[:2], path)
        if not self.mixed and a.shape[:2] != self.first[0]:
            (h0, w0), p0 = self.first
            if self.target is None:
                raise DataError(f"{self.folder}: images differ in size ({w0}x{h0} {p0.name}, {a.shape[1]}x{a.shape[0]} "
                                f"{path.name}); resize them on decode with resize_mixed_to=S in Python "
                                f"(the training CLI passes its --image-size)")
            log.info("%s: images differ in size (%dx%d, %dx%d ...): resizing all to %s on decode",
                     self.folder, w0, h0, a.shape[1], a.shape[0], self.target)
            self.mixed = True
            arrays[:] = [resize_array(b, self.target) for b in arrays]  # the ones decoded so far
        return resize_array(a, self.target) if self.mixed else a


def decode_images(paths: list[Path], *, resize_mixed_to: int | tuple[int, int] | None = None,
                  problems: Problems | None = None, desc: str = "decoding images",
                  progress: bool = True) -> tuple[torch.Tensor, list[int]]:
    """Decode image files once into one uint8 (N, C, H, W) tensor.

    Returns (images, kept) where kept lists the indices into `paths` that decoded (all of them unless
    problems skips unreadable files). Images of one size keep it; when sizes differ, every image is
    resized on decode to ``resize_mixed_to`` (AffectNet- and RAF-DB-style folders mix sizes), and
    without it that is a DataError naming two files. A mix of grayscale and colour files is stored as
    colour. Threads: Pillow releases the GIL while decoding, which helps for large JPEGs (for 48x48
    ones file-open overhead dominates and it is about even). ``progress``: a tqdm bar for 2000+ files.
    """
    problems = problems or Problems("raise", "unreadable image")
    sizes = _Sizes(resize_mixed_to, str(paths[0].parent) if paths else "")

    # Threads get chunks of files (one future per file costs as much as decoding a 48x48 JPEG).
    chunk = 256
    chunks = [paths[i:i + chunk] for i in range(0, len(paths), chunk)]
    arrays, kept = [], []
    pool = ThreadPoolExecutor(min(4, os.cpu_count() or 1))
    try:
        results = pool.map(lambda part: [decode_file(p) for p in part], chunks)
        with bar(total=len(paths), desc=desc, unit="img", show=progress and len(paths) >= 2000,
                 leave=False) as shown:
            for c, part in enumerate(results):
                for j, result in enumerate(part):
                    if isinstance(result, str):
                        problems(result)  # raises, or counts a skip
                        continue
                    arrays.append(sizes.admit(result, paths[c * chunk + j], arrays))
                    kept.append(c * chunk + j)
                shown.update(len(part))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # on an error, don't decode the rest first
    problems.report()
    if not arrays:
        raise DataError(f"no readable images among {len(paths)} files" + (f" (first: {paths[0]})" if paths else ""))
    return _stack(arrays), kept


def _stack(arrays: list[np.ndarray]) -> torch.Tensor:
    """Same-size uint8 arrays (H, W) or (H, W, 3) -> (N, 1, H, W), or (N, 3, H, W) if any is colour."""
    if any(a.ndim == 3 for a in arrays):  # a few grayscale files in a colour set: replicate to 3 channels
        arrays = [a if a.ndim == 3 else np.repeat(a[:, :, None], 3, axis=2) for a in arrays]
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()  # (N, 3, H, W)
    return torch.from_numpy(np.stack(arrays))[:, None]  # (N, 1, H, W)
