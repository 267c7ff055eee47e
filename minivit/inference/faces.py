"""Finding faces in photos, so that a model trained on face crops sees face crops.

A photo of a person is not a 48x48 face crop: classifying the whole frame asks the model about
background, clothes and hair it never saw in training. This module finds the faces with the
Haar cascade (Viola & Jones 2001) that ships inside OpenCV 4.x -- an offline detector with no
model download -- and cuts each one out with a margin.

    pip install "minivit[faces]"        # opencv-python-headless>=4.8,<5 (5.0 dropped the cascades)

    >>> import numpy as np
    >>> from minivit.inference.faces import expand_box
    >>> expand_box((100, 50, 40, 40), width=640, height=480)   # 20% margin on every side
    (92, 42, 56, 56)

Detection (needs the extra):

    >>> from minivit.inference.faces import detect_faces                          # doctest: +SKIP
    >>> detect_faces(np.asarray(PIL.Image.open("group.jpg")))          # doctest: +SKIP
    [(177, 66, 95, 95), (402, 80, 90, 90)]                              # (x, y, w, h), left to right

Why a margin: the cascade's box runs from the eyebrows to the mouth, while FER2013's crops
(and most FER datasets') show the whole face with a little hair and chin. ``FACE_MARGIN`` = 0.2
widens the box by 20% of its size on each side (a 1.4x larger square), clipped to the image,
before the crop is resized to the model's input size.
"""

from __future__ import annotations

import os
import threading

import numpy as np

from ..common.errors import ConfigError

FACE_MARGIN = 0.2  # fraction of the detected box added on each side of the crop
DETECT_MAX_SIDE = 1024  # photos are shrunk to at most this side for detection: speed, same boxes
MIN_FACE_FRACTION = 0.04  # ignore "faces" smaller than this fraction of the image's shorter side
CASCADE_FILE = "haarcascade_frontalface_default.xml"
INSTALL_HINT = "pip install 'minivit[faces]' (opencv-python-headless>=4.8,<5)"

_lock = threading.Lock()  # cv2.CascadeClassifier is not documented as thread-safe: one caller at a time
_cascade = None


def unavailable_reason() -> str | None:
    """Why face detection cannot run here (a one-line hint), or None when it can."""
    try:
        import cv2
    except ImportError:
        return f"OpenCV is not installed: {INSTALL_HINT}"
    data = getattr(getattr(cv2, "data", None), "haarcascades", None)
    if not hasattr(cv2, "CascadeClassifier") or not data or not os.path.isfile(os.path.join(data, CASCADE_FILE)):
        return f"OpenCV {cv2.__version__} has no Haar cascades (OpenCV 5 dropped them): {INSTALL_HINT}"
    return None


def available() -> bool:
    """True when OpenCV with its bundled Haar cascades is installed."""
    return unavailable_reason() is None


def _get_cascade():
    global _cascade
    if _cascade is None:
        reason = unavailable_reason()
        if reason:
            raise ConfigError(f"face detection unavailable: {reason} (or classify whole images with --no-detect)")
        import cv2

        cascade = cv2.CascadeClassifier(os.path.join(cv2.data.haarcascades, CASCADE_FILE))
        if cascade.empty():
            raise ConfigError(f"OpenCV could not load its {CASCADE_FILE}: reinstall opencv-python-headless")
        _cascade = cascade
    return _cascade


def to_gray_u8(image: np.ndarray) -> np.ndarray:
    """uint8 (H, W) luminance (ITU-R 601) of a uint8 (H, W) or (H, W, 3) image."""
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ConfigError(f"face detection takes uint8 (H, W) or (H, W, 3) images, got {image.dtype} {image.shape}")
    if image.ndim == 2:
        return np.ascontiguousarray(image)
    gray = image[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)  # (H, W)
    return np.clip(gray.round(), 0, 255).astype(np.uint8)


def detect_faces(image: np.ndarray, *, min_neighbors: int = 5) -> list[tuple[int, int, int, int]]:
    """Boxes (x, y, w, h) in the image's pixels of the frontal faces in a uint8 (H, W) or (H, W, 3)
    image, ordered left to right (then top to bottom). An empty list when there is none.

    Large photos are shrunk (to DETECT_MAX_SIDE) before detection and the boxes scaled back;
    boxes smaller than MIN_FACE_FRACTION of the shorter side are dropped (texture false positives).
    ``min_neighbors``: how many overlapping detections confirm a face (OpenCV's default 3 finds
    more faces and more false ones; 5 is the usual choice for photos).
    """
    import cv2

    cascade = _get_cascade()
    gray = to_gray_u8(image)  # (H, W)
    H, W = gray.shape
    scale = min(1.0, DETECT_MAX_SIDE / max(H, W))
    if scale < 1.0:
        gray = cv2.resize(gray, (max(1, round(W * scale)), max(1, round(H * scale))), interpolation=cv2.INTER_AREA)
    gray = cv2.equalizeHist(gray)  # the cascade was trained on contrast-normalised faces
    min_side = max(24, round(MIN_FACE_FRACTION * min(gray.shape)))  # 24: the cascade's own window
    with _lock:
        found = cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=min_neighbors,
                                         minSize=(min_side, min_side))
    boxes = [tuple(int(round(v / scale)) for v in box) for box in np.asarray(found).reshape(-1, 4)]
    return sorted(boxes, key=lambda b: (b[0], b[1]))


def expand_box(box: tuple[int, int, int, int], width: int, height: int,
               margin: float = FACE_MARGIN) -> tuple[int, int, int, int]:
    """The crop (x, y, w, h) for a face box: ``margin`` of its size added on each side, moved back
    inside the image where it sticks out, and clipped only where the image is too small for it.

    >>> expand_box((0, 0, 10, 10), width=100, height=100)   # shifted inside rather than clipped
    (0, 0, 14, 14)
    """
    x, y, w, h = box
    grow_w, grow_h = round(w * margin), round(h * margin)
    new_w, new_h = min(w + 2 * grow_w, width), min(h + 2 * grow_h, height)
    new_x = min(max(x - grow_w, 0), width - new_w)
    new_y = min(max(y - grow_h, 0), height - new_h)
    return new_x, new_y, new_w, new_h


__all__ = ["FACE_MARGIN", "available", "unavailable_reason", "detect_faces", "expand_box", "to_gray_u8"]
