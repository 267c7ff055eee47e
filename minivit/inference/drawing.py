"""Boxes and labels drawn on an image: the one drawer of ``predict --annotate``, for photos and video frames.

Each label is (box or None, text, colour): the box (x, y, w, h) is outlined and the text sits on a tag of the
same colour above it (inside its top edge where there is no room above); a label without a box (a whole
image classified) puts its tag in the top left corner. Line width and text size follow the image's shorter
side, so a label reads the same on a 48-pixel face and a 4000-pixel photo. Drawn with Pillow, which
minivit always has: an annotated video needs OpenCV only to encode its frames.

Example:
    >>> import numpy as np
    >>> out = draw_labels(np.zeros((60, 80), np.uint8), [((10, 20, 30, 30), "happy 0.91", FACE_COLORS[0])])
    >>> out.shape, out.dtype, out[35, 10].tolist()   # an RGB copy; the box's left edge in its colour
    ((60, 80, 3), dtype('uint8'), [31, 119, 180])
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..common.files import atomic_write

# One colour per face, cycled (Matplotlib's tab10 as RGB): a face keeps its colour through a video.
FACE_COLORS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
               (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]
PHOTO_COLOR = (255, 40, 40)  # the boxes on an annotated photo
WHOLE_COLOR = (90, 90, 90)  # the tag of a whole-frame prediction in a video


def face_color(face: int | None) -> tuple[int, int, int]:
    """The colour of face id ``face`` (1, 2, ...), WHOLE_COLOR for None."""
    return FACE_COLORS[(face - 1) % len(FACE_COLORS)] if face else WHOLE_COLOR


def draw_labels(image, labels) -> np.ndarray:
    """A copy of ``image`` (uint8 (H, W) or (H, W, 3), or a PIL image) as uint8 (H, W, 3) RGB with each
    (box or None, text, colour) of ``labels`` drawn (the rule in the module docstring)."""
    im = (image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))).convert("RGB")
    draw = ImageDraw.Draw(im)
    size = max(12, round(min(im.size) / 30))  # text height in pixels
    font = ImageFont.load_default(size=size)
    width = max(2, size // 6)  # 2 pixels at least: a 1-pixel line blurs away in a video's compression
    for box, text, color in labels:
        x, y, w, h = box or (0, 0, im.width, im.height)
        if box:
            draw.rectangle([x, y, x + w - 1, y + h - 1], outline=color, width=width)
        left, top, right, bottom = draw.textbbox((x, y), text, font=font)
        ty = y - (bottom - top) - 6 if box and y >= bottom - top + 6 else y  # above the box where it fits
        draw.rectangle([x, ty, x + right - left + 6, ty + bottom - top + 6], fill=color)
        draw.text((x + 3, ty + 3 - (top - y)), text, fill=(255, 255, 255), font=font)
    return np.asarray(im)


def save_annotated(image: np.ndarray, result, path) -> str:
    """A photo with each face's box and "label probability" drawn (a whole-image prediction: its caption and
    what was classified), written as a PNG atomically; ``result`` is its ImageResult. Returns the path."""
    labels = []
    for p in result.predictions:
        text = f"{p.label} {p.probabilities[p.label]:.2f}"
        labels.append((p.box, text if p.box else f"{text} ({result.note})", PHOTO_COLOR))
    drawn = Image.fromarray(draw_labels(image, labels))
    atomic_write(Path(path), lambda tmp: drawn.save(tmp, format="PNG"))
    return str(path)


__all__ = ["FACE_COLORS", "PHOTO_COLOR", "WHOLE_COLOR", "face_color", "draw_labels", "save_annotated"]
