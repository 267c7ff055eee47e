"""Reading the images people give a model: files and uploads decoded safely, arrays and tensors checked.

    read_image        a path or the bytes of an upload -> uint8 (H, W) or (H, W, 3): the format sniffed
                      from the bytes (never the name), the pixel count checked from the header before
                      anything is decoded (decompression bombs), EXIF orientation applied
    to_image_tensor   a PIL image, numpy array, torch tensor or path -> (C, H, W), uint8 or float in [0, 1]
    collect_inputs    the files that paths, folders and glob patterns name, in order, each missing one named

Every bad input is an UnreadableImage (NotAnImage, ImageTooLarge) with one line naming the file: the
predict command reports it and goes on, the web demo answers it with a 4xx.

Example:
    >>> import numpy as np
    >>> to_image_tensor(np.zeros((4, 5, 3), dtype=np.uint8)).shape
    torch.Size([3, 4, 5])
    >>> read_image(b"not an image")
    Traceback (most recent call last):
    minivit.inference.images.NotAnImage: upload: not an image (expected JPEG, MPO, PNG, BMP, GIF, WEBP, TIFF or PPM data)
"""

from __future__ import annotations

import glob
import io
import re
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from ..common.errors import DataError
from ..data.folders import IMAGE_SUFFIXES
from ..data.imageset import to_uint8_array

# What Pillow may decode: recognised from the bytes, never from the name. MPO is how Pillow names
# the JPEGs phones write with a second (depth or preview) image inside.
IMAGE_FORMATS = ("JPEG", "MPO", "PNG", "BMP", "GIF", "WEBP", "TIFF", "PPM")
# A decompression bomb is a small file whose header claims a huge picture; the pixel count is read
# from the header and checked before anything is decoded. 64 MP is a 9248x6936 photo.
MAX_PIXELS = 64_000_000
PIL_MAX_PIXELS = 2 * Image.MAX_IMAGE_PIXELS  # Pillow itself refuses beyond this

# Pillow's warnings, filtered once for the process rather than per call (warnings.catch_warnings
# swaps a global and is not thread-safe, and the web demo reads images from many threads): our own
# max_pixels decides about decompression bombs, and Pillow's UserWarnings about odd but readable
# files (corrupt EXIF, palette transparency) are noise on a prediction's output.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL(\.|$)")


class UnreadableImage(DataError):
    """A file or upload that is not a readable image (truncated, corrupt, missing)."""


class NotAnImage(UnreadableImage):
    """Bytes that are none of the IMAGE_FORMATS (a text file renamed .jpg, a PDF, ...)."""


class ImageTooLarge(UnreadableImage):
    """An image whose header claims more pixels than the limit (a decompression bomb or a huge scan)."""


def read_image(source, *, max_pixels: int = MAX_PIXELS, name: str | None = None) -> np.ndarray:
    """A file path or the bytes of an upload -> uint8 (H, W) grayscale or (H, W, 3) RGB.

    The format is sniffed from the bytes; the pixel count from the header is checked against
    ``max_pixels`` before decoding; EXIF orientation is applied (phone photos); the pixels become
    uint8 as minivit.data decodes them (minivit.data.imageset.to_uint8_array: 16-bit scaled to 8).
    Raises NotAnImage, ImageTooLarge or UnreadableImage with one line naming ``name`` (default: the path).
    """
    name = name or ("upload" if isinstance(source, (bytes, bytearray)) else str(source))
    if isinstance(source, (bytes, bytearray)):
        fp = io.BytesIO(source)
    else:
        path = Path(source)
        if not path.exists():
            raise UnreadableImage(f"{name}: no such file")
        if path.is_dir():
            raise UnreadableImage(f"{name}: is a folder, not an image")
        try:
            fp = open(path, "rb")
        except OSError as e:
            raise UnreadableImage(f"{name}: cannot open ({e.strerror})") from None
    with fp:
        try:
            Image.init()  # register every plugin (MPO's is not among the ones Pillow preloads)
            im = Image.open(fp, formats=[f for f in IMAGE_FORMATS if f in Image.OPEN])
        except UnidentifiedImageError:
            raise NotAnImage(f"{name}: not an image (expected {', '.join(IMAGE_FORMATS[:-1])} or "
                             f"{IMAGE_FORMATS[-1]} data)") from None
        except Image.DecompressionBombError as e:  # Pillow's own ceiling, checked inside open()
            claimed = re.search(r"\((\d+) pixels\)", str(e))
            claimed = f"{int(claimed.group(1)):,} pixels" if claimed else "too many pixels"
            raise ImageTooLarge(f"{name}: its header claims {claimed}, more than the limit of {max_pixels:,}: "
                                f"refusing to decode it") from None
        except (OSError, ValueError, SyntaxError) as e:
            raise UnreadableImage(f"{name}: cannot read image ({type(e).__name__}: {_first_line(e)})") from None
        with im:
            w, h = im.size
            if w * h > max_pixels:
                raise ImageTooLarge(f"{name}: {w}x{h} = {w * h:,} pixels is more than the limit of "
                                    f"{max_pixels:,}: refusing to decode it")
            try:
                im = ImageOps.exif_transpose(im)  # decodes the pixels
                return to_uint8_array(im, name)
            except DataError as e:  # pixels no image should have (float ones beyond 0..255)
                raise UnreadableImage(str(e)) from None
            except (OSError, ValueError, SyntaxError, EOFError) as e:
                # Pillow says "image file is truncated" for a cut-off JPEG/PNG
                raise UnreadableImage(f"{name}: cannot decode image ({_first_line(e)})") from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def to_image_tensor(image, name: str = "image") -> torch.Tensor:
    """A PIL image, numpy (H, W) / (H, W, C) or torch (C, H, W) / (H, W) -> (C, H, W) tensor, C = 1 or 3,
    uint8 as given or float32 in [0, 1] (alpha dropped). Paths and bytes are read with read_image.

    >>> to_image_tensor(np.zeros((4, 5, 3), dtype=np.uint8)).shape
    torch.Size([3, 4, 5])
    """
    if isinstance(image, (str, Path, bytes, bytearray)):
        image = read_image(image)
    if isinstance(image, Image.Image):
        image = to_uint8_array(image, name)
    if isinstance(image, np.ndarray):
        if image.ndim == 3 and image.shape[-1] in (1, 3, 4):
            image = image.transpose(2, 0, 1)  # (H, W, C) -> (C, H, W)
        elif image.ndim != 2:
            raise DataError(f"{name}: numpy images are (H, W) or (H, W, C) with C = 1, 3 or 4, got {image.shape}")
        image = torch.from_numpy(np.array(image))  # a copy: arrays from Pillow are read-only
    if not isinstance(image, torch.Tensor):
        raise DataError(f"{name}: expected a PIL image, numpy array, torch tensor or path, got {type(image).__name__}")
    x = image.detach().cpu()
    x = x[None] if x.ndim == 2 else x  # (C, H, W)
    if x.ndim != 3 or x.shape[0] not in (1, 3, 4) or min(x.shape[1:]) < 1:
        raise DataError(f"{name}: tensors are (C, H, W) or (H, W) with C = 1, 3 or 4, got {tuple(image.shape)}")
    x = x[:3] if x.shape[0] == 4 else x  # drop alpha
    if x.dtype == torch.uint8:
        return x
    if not x.is_floating_point():
        raise DataError(f"{name}: pixel type {x.dtype} is not supported (use uint8, or float in [0, 1])")
    x = x.float()
    lo, hi = (x.min().item(), x.max().item())
    if not (0.0 <= lo and hi <= 1.0):  # also false for NaN
        raise DataError(f"{name}: float pixels must be in [0, 1], got values in [{lo:g}, {hi:g}]")
    return x


def collect_inputs(paths: list[str]) -> list[tuple[str, str | None]]:
    """Expand files, folders (recursively: files with an IMAGE_SUFFIXES suffix) and globs into
    [(file, None)] in order, with [(path, error)] for a missing path, an empty folder or a glob
    that matches nothing. Files named explicitly are read whatever their suffix."""
    out = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            files = sorted(f for f in path.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
            out += [(str(f), None) for f in files] or [(p, f"folder has no images ({', '.join(IMAGE_SUFFIXES)})")]
        elif path.exists():
            out.append((p, None))
        elif glob.has_magic(p):
            files = sorted(f for f in glob.glob(p, recursive=True) if Path(f).is_file())
            out += [(f, None) for f in files] or [(p, "no file matches this pattern")]
        else:
            out.append((p, "no such file or folder"))
    return out


__all__ = ["IMAGE_FORMATS", "MAX_PIXELS", "PIL_MAX_PIXELS", "UnreadableImage", "NotAnImage", "ImageTooLarge",
           "read_image", "to_image_tensor", "collect_inputs"]
