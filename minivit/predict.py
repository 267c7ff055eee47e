"""Predict facial expressions with a trained model, from the command line or from Python.

    python -m minivit.predict photo.jpg faces/ "shots/*.png" --checkpoint runs/fer     # a table
    python -m minivit.predict photo.jpg --checkpoint runs/fer --json --top-k 3         # or --csv
    python -m minivit.predict group.jpg --checkpoint runs/fer --annotate labelled.png  # boxes drawn
    python -m minivit.predict clip.mp4 --checkpoint runs/fer --fps 5 --annotate out.mp4  # a video (minivit.video)

Each photo goes through face detection (minivit.faces, the ``faces`` extra): one prediction per
face found, with its box. Where no face is found, detection is off (``--no-detect``) or OpenCV is
not installed, the whole image is classified and the output says which. An image no larger than
twice the model's input side (both sides; a 48x48 FER2013 face) is a face crop already: it is
classified whole without detection ("image is already face-sized"). Preprocessing is the
evaluation's: images decode to uint8 as minivit.data decodes them (grayscale files stay 1-channel),
then ``eval_transform(x, AugmentConfig(image_size, channels=in_chans))`` resizes and normalises,
so predictions on FER2013 images equal ``minivit.evaluate.predict``'s.

Bad files (not an image, truncated, a decompression bomb, missing, an empty folder) each get one
``error: <file>: <what>`` line on stderr (and an ``error`` record with --json / --csv); the other
files are still predicted and the exit code is 2 at the end. ``--strict`` stops at the first one.
When no file gives a prediction, the table is not printed (nothing on stdout; the errors are on stderr).

A path with a video suffix (minivit.video.VIDEO_SUFFIXES: .mp4, .mov, .avi, ...) is read as a video,
on its own: frames sampled by ``--every N`` or ``--fps F``, each face followed from frame to frame
with an id (minivit.video's rule), a timeline on stdout (table, --json or --csv), each face's class
probabilities over time in a PNG (``--plot``, default ``<clip>_expressions.png``), and with
``--annotate out.mp4`` the frames with boxes and labels drawn.

Python:
    >>> import os, tempfile, numpy as np, minivit
    >>> from minivit.checkpoints import save_checkpoint
    >>> path = os.path.join(tempfile.mkdtemp(), "tiny.safetensors")
    >>> save_checkpoint(minivit.create_model("Ti/16", image_size=48, patch_size=8, dim=32, depth=1, heads=2,
    ...                                      mlp_dim=64, num_classes=7), path)
    >>> predictor = minivit.Predictor.from_checkpoint(path, detect_faces=False)
    >>> result = predictor.predict(np.zeros((48, 48), dtype=np.uint8))   # PIL, numpy, torch, or a path
    >>> result.detection, len(result.predictions), result.predictions[0].box
    ('off', 1, None)
    >>> sorted(result.predictions[0].probabilities)[:3]
    ['angry', 'disgust', 'fear']
"""

from __future__ import annotations

import argparse
import csv
import glob
import io
import json
import re
import sys
import threading
import warnings
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont, ImageOps, UnidentifiedImageError

from . import faces, video
from .augment import AugmentConfig, eval_transform
from .cli import ArgumentParser, fail, integer, number, output_file_problem, run
from .data.folders import IMAGE_SUFFIXES
from .data.imageset import to_uint8_array
from .data.provenance import kind_note, read_trained_on
from .device import DEVICES, pick_device, resolve_precision
from .errors import CheckpointError, ConfigError, DataError

# What Pillow may decode: recognised from the bytes, never from the name. MPO is how Pillow names
# the JPEGs phones write with a second (depth or preview) image inside.
IMAGE_FORMATS = ("JPEG", "MPO", "PNG", "BMP", "GIF", "WEBP", "TIFF", "PPM")
# A decompression bomb is a small file whose header claims a huge picture; the pixel count is read
# from the header and checked before anything is decoded. 64 MP is a 9248x6936 photo.
MAX_PIXELS = 64_000_000
PIL_MAX_PIXELS = 2 * Image.MAX_IMAGE_PIXELS  # Pillow itself refuses beyond this

# What happened to face detection for one image (ImageResult.detection).
DETECTED = "faces"          # one prediction per face found
NO_FACE = "no face found"   # detection ran, found nothing: the whole image was classified
FACE_SIZED = "face-sized"   # the image is no larger than FACE_SIZED_FACTOR x the model's input: already a face crop
OFF = "off"                 # detect_faces=False / --no-detect: the whole image was classified
UNAVAILABLE = "unavailable"  # OpenCV is not installed: the whole image was classified

# Pillow's warnings, filtered once for the process rather than per call (warnings.catch_warnings
# swaps a global and is not thread-safe, and the web demo reads images from many threads): our own
# max_pixels decides about decompression bombs, and Pillow's UserWarnings about odd but readable
# files (corrupt EXIF, palette transparency) are noise on a prediction's output.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL(\.|$)")
# An image at most this many times the model's input side (both sides) is taken as a face crop
# already (FER2013's 48x48 faces, RAF-DB's aligned 100x100 ones) and classified whole: the Haar
# cascade finds "faces" inside such crops (an eye and a nostril), and re-cropping them would make
# predictions differ from the evaluation's on the very images the model was trained on.
FACE_SIZED_FACTOR = 2


class UnreadableImage(DataError):
    """A file or upload that is not a readable image (truncated, corrupt, missing)."""


class NotAnImage(UnreadableImage):
    """Bytes that are none of the IMAGE_FORMATS (a text file renamed .jpg, a PDF, ...)."""


class ImageTooLarge(UnreadableImage):
    """An image whose header claims more pixels than the limit (a decompression bomb or a huge scan)."""


# -- reading images ------------------------------------------------------------------------------


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


# -- loading a model -----------------------------------------------------------------------------


def default_classes(num_classes: int) -> tuple[str, ...]:
    """minivit.data.LABELS for a 7-class model, else class_0, class_1, ..."""
    from .data.labels import LABELS

    return LABELS if num_classes == len(LABELS) else tuple(f"class_{i}" for i in range(num_classes))


def resolve_checkpoint(checkpoint) -> Path | str:
    """A run folder -> its best.safetensors; an existing file or folder as is (``~`` expanded); a
    manifest name or Hugging Face repo id as given (ViT.from_pretrained resolves it); a missing local
    path is an error here. minivit.hub decides what counts as a path or a repo id (one rule for both).

    >>> resolve_checkpoint("google/vit-base-patch16-224")
    'google/vit-base-patch16-224'
    >>> resolve_checkpoint("no/such/run.safetensors")
    Traceback (most recent call last):
    minivit.errors.CheckpointError: no/such/run.safetensors: no such file or folder
    """
    from .hub import could_be_repo_id, find_checkpoint, looks_like_a_path

    path = Path(checkpoint).expanduser()
    if path.is_dir() and (path / "best.safetensors").is_file():
        return path / "best.safetensors"
    if path.is_dir() and (path / "resume.safetensors").is_file() and not (path / "model.safetensors").is_file():
        raise CheckpointError(f"{checkpoint}: run folder without best.safetensors (no epoch finished yet); "
                              f"pass {path / 'resume.safetensors'} to use the latest weights")
    if path.exists():
        return path
    source = str(checkpoint)
    if find_checkpoint(source) is None and not could_be_repo_id(source) and looks_like_a_path(source):
        raise CheckpointError(f"{checkpoint}: no such file or folder")
    return source


def load_model(checkpoint):
    """(model in eval mode on the CPU, class names, resolved checkpoint) from a run folder, a minivit
    .safetensors or anything ViT.from_pretrained reads. Class names come from the checkpoint's
    stored extra ("classes") when present, else default_classes."""
    from .model import ViT

    source = resolve_checkpoint(checkpoint)
    model = ViT.from_pretrained(str(source)).eval()
    classes = None
    if isinstance(source, Path) and source.suffix == ".safetensors" and source.is_file():
        from .checkpoints import read_extra

        extra = read_extra(source) or {}
        classes = next((extra[k] for k in ("classes", "class_names", "labels") if isinstance(extra.get(k), list)), None)
    n = model.config.num_classes
    if classes is not None and len(classes) != n:
        raise CheckpointError(f"{checkpoint}: stores {len(classes)} class names for a {n}-class head")
    return model, tuple(str(c) for c in classes) if classes else default_classes(n), source


def trained_on_grayscale(source) -> bool:
    """Whether a minivit training run stored that its images were grayscale (``grayscale_data``)."""
    if not (isinstance(source, Path) and source.suffix == ".safetensors" and source.is_file()):
        return False
    from .checkpoints import read_extra

    return bool((read_extra(source) or {}).get("grayscale_data", False))


# -- predictions ---------------------------------------------------------------------------------


@dataclass
class FacePrediction:
    """One classified region: a face, or the whole image (box None)."""

    label: str
    probabilities: dict[str, float]         # every class, in the model's class order
    box: tuple[int, int, int, int] | None   # (x, y, w, h) of the detected face in image pixels; None: whole image
    logits: list[float] = field(repr=False, default_factory=list)

    def top(self, k: int) -> list[tuple[str, float]]:
        """The k most probable (label, probability) pairs, most probable first."""
        return sorted(self.probabilities.items(), key=lambda kv: -kv[1])[:k]


@dataclass
class ImageResult:
    """Predictions for one image: one per face found, or one for the whole image (see ``detection``)."""

    source: str
    width: int
    height: int
    detection: str  # DETECTED, NO_FACE, FACE_SIZED, OFF or UNAVAILABLE
    predictions: list[FacePrediction]

    @property
    def faces_detected(self) -> bool:
        return self.detection == DETECTED

    @property
    def note(self) -> str:
        """What was classified, in words (the tables and the web page show it)."""
        n = len(self.predictions)
        return {DETECTED: f"{n} face{'s' * (n != 1)} found",
                NO_FACE: "no face found: whole image classified",
                FACE_SIZED: "image is already face-sized: classified whole",
                OFF: "face detection off: whole image classified",
                UNAVAILABLE: "face detection unavailable (pip install 'minivit[faces]'): whole image classified",
                }[self.detection]

    def to_dict(self, top_k: int | None = None) -> dict:
        d = asdict(self)
        d.update(faces_detected=self.faces_detected, note=self.note)
        for p, pd in zip(self.predictions, d["predictions"]):
            pd["box"] = list(p.box) if p.box else None
            if top_k:
                pd["top_k"] = [{"label": name, "probability": prob} for name, prob in p.top(top_k)]
        return d


class Predictor:
    """A trained model plus its preprocessing and face detection: images in, plain data out.

    ``detect_faces``: True (needs the ``faces`` extra), False (classify whole images) or "auto"
    (detect when OpenCV is installed). An image no larger than FACE_SIZED_FACTOR (2) times the
    model's input side, in both sides, is a face crop already (a 48x48 FER2013 face for a 48-pixel
    model) and is classified whole without detection (``detection == "face-sized"``), so that
    predictions on dataset crops equal the evaluation's. ``tta`` averages the logits of each crop
    and its mirror. ``grayscale`` turns colour photos to luminance first (closer to grayscale
    training data such as FER2013; 1-channel models do this anyway). Precision is the evaluation's:
    minivit.device.resolve_precision("auto", device) (bf16/fp16 autocast on a GPU, fp32 on the CPU).
    Thread-safe: the model runs under a lock.
    """

    def __init__(self, model, classes=None, *, device="auto", detect_faces="auto", tta: bool = False,
                 grayscale: bool = False, batch_size: int = 64, max_pixels: int = MAX_PIXELS):
        cfg = model.config
        if not cfg.num_classes:
            raise ConfigError("this model has no classifier head (num_classes=0): nothing to predict")
        self.classes = tuple(classes) if classes else default_classes(cfg.num_classes)
        if len(self.classes) != cfg.num_classes:
            raise ConfigError(f"{len(self.classes)} class names for a {cfg.num_classes}-class model")
        if detect_faces not in (True, False, "auto"):
            raise ConfigError(f"detect_faces must be True, False or 'auto', not {detect_faces!r}")
        reason = faces.unavailable_reason() if detect_faces is not False else None
        if detect_faces is True and reason:
            raise ConfigError(f"face detection unavailable: {reason}")
        self.detection = OFF if detect_faces is False else UNAVAILABLE if reason else DETECTED
        self.device = device if isinstance(device, torch.device) else pick_device(device)
        self.model = model.to(self.device).eval()
        self.aug = AugmentConfig(image_size=cfg.image_size, channels=cfg.in_chans)
        _, self.autocast_dtype, _ = resolve_precision("auto", self.device)  # as evaluate_checkpoint does
        self.tta, self.grayscale, self.batch_size, self.max_pixels = tta, grayscale, batch_size, max_pixels
        self.trained_on = None  # what the checkpoint says it was trained on (from_checkpoint), for provenance notes
        self._lock = threading.Lock()

    @classmethod
    def from_checkpoint(cls, checkpoint, **kwargs) -> "Predictor":
        """A Predictor for a run folder, a minivit .safetensors or anything ViT.from_pretrained reads.

        Keyword arguments are Predictor's (device, detect_faces, tta, grayscale, batch_size, max_pixels).
        """
        model, classes, source = load_model(checkpoint)
        if kwargs.get("grayscale") is None:  # not chosen: do what the training data did
            kwargs["grayscale"] = trained_on_grayscale(source)
        predictor = cls(model, classes, **kwargs)
        predictor.trained_on = read_trained_on(source)
        return predictor

    def predict(self, images, names=None):
        """One image (PIL, numpy (H, W) / (H, W, C) uint8 or float in [0, 1], torch (C, H, W) / (H, W),
        a path, or a file's bytes) -> ImageResult; a list of them, or a (B, C, H, W) tensor ->
        list[ImageResult]. ``names``: one per image (default: the path, or "image <i>")."""
        single = not isinstance(images, (list, tuple)) and not (isinstance(images, torch.Tensor) and images.ndim == 4)
        items = [images] if single else list(images)
        names = list(names) if names is not None else [
            str(x) if isinstance(x, (str, Path)) else f"image {i}" for i, x in enumerate(items)]
        if len(names) != len(items):  # zip() below would silently drop the images without a name
            raise ConfigError(f"names: {len(names)} names for {len(items)} images")
        prepared = [self.regions(to_image_tensor(self._read(x, n), n)) for x, n in zip(items, names)]
        crops = [c for _, _, boxes_crops in prepared for _, c in boxes_crops]
        probs, logits = self.classify(crops)
        results, i = [], 0
        for (x, detection, boxes_crops), name in zip(prepared, names):
            preds = []
            for box, _ in boxes_crops:
                p = dict(zip(self.classes, probs[i].tolist()))
                preds.append(FacePrediction(self.classes[int(probs[i].argmax())], p, box, logits[i].tolist()))
                i += 1
            results.append(ImageResult(name, x.shape[-1], x.shape[-2], detection, preds))
        return results[0] if single else results

    def _read(self, image, name):
        """Paths and the bytes of a file are decoded here, under this predictor's max_pixels."""
        if isinstance(image, (str, Path, bytes, bytearray)):
            return read_image(image, max_pixels=self.max_pixels, name=name)
        return image

    def regions(self, x: torch.Tensor):
        """(image, detection, [(box or None, crop (C, h, w))]) for an image (C, H, W): the faces found,
        each cropped with faces.FACE_MARGIN, or the whole image (see ImageResult.detection)."""
        if self.grayscale and x.shape[0] == 3:
            gray = 0.299 * x[0:1].float() + 0.587 * x[1:2].float() + 0.114 * x[2:3].float()  # (1, H, W)
            x = gray.round().to(torch.uint8) if x.dtype == torch.uint8 else gray
        if self.detection != DETECTED:
            return x, self.detection, [(None, x)]
        if self.is_face_sized(x):
            return x, FACE_SIZED, [(None, x)]
        u8 = x if x.dtype == torch.uint8 else (x * 255).round().to(torch.uint8)
        boxes = faces.detect_faces(u8.permute(1, 2, 0).squeeze(-1).numpy())  # detector wants (H, W[, 3])
        if not boxes:
            return x, NO_FACE, [(None, x)]
        H, W = x.shape[-2:]
        regions = []
        for box in boxes:
            cx, cy, cw, ch = faces.expand_box(box, W, H)
            regions.append((box, x[:, cy:cy + ch, cx:cx + cw]))  # (C, ch, cw)
        return x, DETECTED, regions

    def is_face_sized(self, x: torch.Tensor) -> bool:
        """Whether an image (C, H, W) is small enough to be a face crop already (see FACE_SIZED_FACTOR)."""
        (H, W), (S_h, S_w) = x.shape[-2:], self.model.config.image_hw
        return H <= FACE_SIZED_FACTOR * S_h and W <= FACE_SIZED_FACTOR * S_w

    def preprocess(self, crop: torch.Tensor) -> torch.Tensor:
        """One image (C, h, w) -> the model's input (1, in_chans, S, S) on its device: the evaluation's
        eval_transform (resize, channels, normalisation)."""
        return eval_transform(crop[None].to(self.device), self.aug)  # (1, C', S, S)

    @torch.no_grad()
    def classify(self, crops: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(probabilities, logits), each float32 (N, K) on the CPU, for N images (C, h, w), each
        preprocessed by eval_transform (with tta: logits averaged with the mirror's)."""
        K = len(self.classes)
        out = []
        for start in range(0, len(crops), self.batch_size):
            batch = torch.cat([self.preprocess(c) for c in crops[start:start + self.batch_size]])  # (B, C', S, S)
            amp = (torch.autocast(self.device.type, dtype=self.autocast_dtype) if self.autocast_dtype
                   else nullcontext())
            with self._lock, amp:
                logits = self.model(batch).float()  # (B, K)
                if self.tta:
                    logits = 0.5 * (logits + self.model(batch.flip(-1)).float())
            out.append(logits.cpu())
        logits = torch.cat(out) if out else torch.zeros(0, K)  # (N, K)
        return logits.softmax(-1), logits


# -- command line --------------------------------------------------------------------------------


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


def _box_text(box) -> str:
    return "(" + ", ".join(map(str, box)) + ")"


def format_rows(records: list[dict], top_k: int) -> str:
    """The readable table: one line per face (or whole image)."""
    rows = [("image", "region", "expression", f"top {top_k}")]
    for r in records:
        if r.get("error"):
            continue
        n = len(r["predictions"])
        for i, p in enumerate(r["predictions"]):
            where = (f"face {i + 1}/{n} at {_box_text(p['box'])}" if p["box"] else r["note"])
            rows.append((r["source"], where, f"{p['label']} {p['probabilities'][p['label']]:.2f}",
                         ", ".join(f"{t['label']} {t['probability']:.2f}" for t in p["top_k"])))
    widths = [max(len(row[c]) for row in rows) for c in range(3)]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(row[:3], widths)) + "  " + row[3] for row in rows)


def format_csv(records: list[dict], top_k: int) -> str:
    """CSV: one row per face (or whole image, or error) with the box, the label and the top k."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["image", "detection", "face", "x", "y", "w", "h", "label", "probability"]
                    + [c for i in range(1, top_k + 1) for c in (f"top{i}", f"top{i}_probability")] + ["error"])
    for r in records:
        if r.get("error"):
            writer.writerow([r["source"], "", "", "", "", "", "", "", ""] + [""] * 2 * top_k + [r["error"]])
            continue
        for i, p in enumerate(r["predictions"]):
            box = p["box"] or [""] * 4
            tops = [v for t in p["top_k"] for v in (t["label"], f"{t['probability']:.6f}")]
            tops += [""] * (2 * top_k - len(tops))
            writer.writerow([r["source"], r["detection"], i + 1 if p["box"] else "", *box, p["label"],
                             f"{p['probabilities'][p['label']]:.6f}", *tops, ""])
    return buf.getvalue().rstrip("\n")


def annotate(image: np.ndarray, result: ImageResult, path) -> str:
    """Draw each face's box and 'label probability' (or a caption for a whole-image prediction)
    on the image and write a PNG atomically. Returns the path."""
    from .checkpoints.io import atomic_write

    im = Image.fromarray(image).convert("RGB")
    draw = ImageDraw.Draw(im)
    size = max(12, round(min(im.size) / 30))
    font = ImageFont.load_default(size=size)
    for p in result.predictions:
        text = f"{p.label} {p.probabilities[p.label]:.2f}"
        x, y, w, h = p.box or (0, 0, im.width, im.height)
        if p.box:
            draw.rectangle([x, y, x + w - 1, y + h - 1], outline=(255, 40, 40), width=max(2, size // 6))
        else:
            text = f"{text} ({result.note})"
        left, top, right, bottom = draw.textbbox((x, y), text, font=font)
        ty = y - (bottom - top) - 6 if p.box and y >= bottom - top + 6 else y  # above the box where it fits
        draw.rectangle([x, ty, x + right - left + 6, ty + bottom - top + 6], fill=(255, 40, 40))
        draw.text((x + 3, ty + 3 - (top - y)), text, fill=(255, 255, 255), font=font)
    atomic_write(Path(path), lambda tmp: im.save(tmp, format="PNG"))
    return str(path)


def add_image_options(p, *, max_pixels: int = MAX_PIXELS, refused: str = "refused before decoding") -> None:
    """The options every command that reads photos for a model shares (predict, attention, serve):
    --device, --no-detect, --grayscale, --max-pixels, with one wording and one range each."""
    p.add_argument("--device", choices=DEVICES, default="auto", help="auto: a GPU when CUDA is available, else the CPU")
    p.add_argument("--no-detect", action="store_true", help="do not look for faces: classify each whole image")
    p.add_argument("--grayscale", action=argparse.BooleanOptionalAction, default=None,
                   help="turn colour photos to grayscale first (default: as the model was trained: a minivit "
                   "run on grayscale faces such as FER2013 stores that, and its photos are turned gray)")
    p.add_argument("--max-pixels", type=integer(at_least=1, at_most=PIL_MAX_PIXELS), default=max_pixels,
                   help=f"largest image, in pixels, read from the header: larger ones (decompression bombs) are "
                        f"{refused} (1 to {PIL_MAX_PIXELS}; default {max_pixels})")


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m minivit.predict", description=(
        "Predict the facial expression of every face in images. Faces are found with OpenCV's Haar "
        "cascade (pip install 'minivit[faces]'); where none is found, detection is off or OpenCV is "
        "missing, the whole image is classified and the output says so. An image no larger than twice the "
        "model's input size in both sides (e.g. a 48x48 FER2013 face for a 48-pixel model) is taken as a face "
        "crop already and classified whole, as the evaluation does. Bad files are reported one "
        "line each on stderr, the others are still predicted, and the exit code is then 2. A video file "
        "is read frame by frame instead, each face followed with an id (see the video options)."))
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="image files, folders (searched recursively for image files) or quoted glob patterns; "
                        f"or one video file ({', '.join(video.VIDEO_SUFFIXES)})")
    p.add_argument("--checkpoint", required=True,
                   help="a training run folder (uses its best.safetensors), a minivit .safetensors, "
                        "or anything ViT.from_pretrained reads")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print JSON (a list, one object per image; for a video "
                     "one object with its timeline) instead of a table")
    fmt.add_argument("--csv", action="store_true", help="print CSV (one row per face; for a video one row per "
                     "face per frame) instead of a table")
    p.add_argument("--top-k", type=integer(at_least=1), default=3, help="how many of the most probable "
                   "expressions to list per face (an integer >= 1; default 3)")
    p.add_argument("--batch-size", type=integer(at_least=1), default=64,
                   help="faces classified per forward pass and files read per step (>= 1; default 64)")
    p.add_argument("--tta", action="store_true", help="average each face's logits with its mirror image's")
    add_image_options(p)
    p.add_argument("--annotate", metavar="OUT.png|OUT.mp4", help="with one input image: write a copy with each "
                   "face's box and expression drawn on it; with a video: an .mp4 of the frames read, each face's "
                   "box, id and expression drawn")
    p.add_argument("--overwrite", action="store_true", help="let --annotate and --plot replace an existing file")
    p.add_argument("--strict", action="store_true", help="stop at the first bad file (exit 2) instead of "
                   "reporting it and going on")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (shown for 10 or more files, "
                   f"or a video of {video.PROGRESS_MIN_FRAMES} frames or more)")
    clip = p.add_argument_group("videos", "a path with a video suffix is read as a video, on its own")
    rate = clip.add_mutually_exclusive_group()
    rate.add_argument("--every", type=integer(at_least=1), metavar="N",
                      help="predict every Nth frame (an integer >= 1; default: every frame)")
    rate.add_argument("--fps", type=number(above=0), metavar="F",
                      help="predict F frames a second of video (> 0; at most the video's own rate is used)")
    plot = clip.add_mutually_exclusive_group()
    plot.add_argument("--plot", metavar="OUT.png", help="write each face's class probabilities over time here "
                      "(default: <video name>_expressions.png in the current folder)")
    plot.add_argument("--no-plot", action="store_true", help="write no probability plot")
    return p


def _predict_files(predictor: Predictor, inputs, args) -> tuple[list[dict], dict, set]:
    """Records (one per input, an ``error`` one for a bad file), {file: decoded image} for --annotate,
    and the channel counts of the images read (1 grayscale, 3 colour)."""
    from tqdm.auto import tqdm

    records, kept, channels = [], {}, set()
    bar = tqdm(total=len(inputs), desc="predict", unit="img", disable=args.no_progress or len(inputs) < 10)
    for start in range(0, len(inputs), args.batch_size):
        chunk = inputs[start:start + args.batch_size]
        slots, images, names = [], [], []  # records in input order: errors in place, results filled in
        for name, error in chunk:
            try:
                if error:
                    raise UnreadableImage(f"{name}: {error}")
                images.append(read_image(name, max_pixels=args.max_pixels))
                channels.add(1 if images[-1].ndim == 2 else 3)
                names.append(name)
                slots.append(None)
            except UnreadableImage as e:
                if args.strict:
                    bar.close()
                    raise
                print(f"error: {e}", file=sys.stderr)
                slots.append({"source": name, "error": str(e)})
        results = iter(predictor.predict(images, names=names) if images else [])
        for i, slot in enumerate(slots):
            if slot is None:
                result = next(results)
                slots[i] = result.to_dict(args.top_k)
                if args.annotate:
                    kept[result.source] = (images[names.index(result.source)], result)
        records += slots
        bar.update(len(chunk))
    bar.close()
    return records, kept, channels


def _predict_video(args) -> int:
    """main for a video: the timeline on stdout, the probability plot, and with --annotate an .mp4
    with each face's box, id and expression (minivit.video)."""
    if len(args.paths) != 1:
        return fail(f"a video is predicted on its own, but the paths name {len(args.paths)}: {' '.join(args.paths)}")
    path = args.paths[0]
    plot = None if args.no_plot else args.plot or f"{Path(path).stem}_expressions.png"
    problem = ((args.annotate and output_file_problem("--annotate", args.annotate, suffix=".mp4",
                                                      overwrite=args.overwrite))
               or (plot and output_file_problem("--plot", plot, suffix=".png", overwrite=args.overwrite)))
    if args.annotate and Path(args.annotate).resolve() == Path(path).resolve():
        problem = f"--annotate {args.annotate}: is the video being read"
    if problem:
        return fail(problem)
    try:
        reader = video.VideoReader(path, every=args.every, fps=args.fps)  # a bad file fails before the model loads
    except video.UnreadableVideo as e:
        return fail(str(e))
    with reader:
        predictor = Predictor.from_checkpoint(args.checkpoint, device=args.device, tta=args.tta,
                                              detect_faces=False if args.no_detect else "auto",
                                              grayscale=args.grayscale, batch_size=args.batch_size)
        if predictor.detection == UNAVAILABLE:
            print(f"note: {faces.unavailable_reason()}; classifying whole frames", file=sys.stderr)
        note = kind_note(predictor.trained_on, {"synthetic": False, "channels": 3}, what="this video")
        if note:
            print(f"note: {note}", file=sys.stderr)
        timeline = video.predict_video(predictor, reader, annotate=args.annotate, progress=not args.no_progress)
    if args.json:
        print(json.dumps(timeline.to_dict(), indent=2))
    elif args.csv:
        print(timeline.to_csv())
    elif timeline.rows:
        print(timeline.to_table(args.top_k))
    if plot:
        print(f"plot: {timeline.plot_png(plot)}", file=sys.stderr)
    if args.annotate:
        print(f"annotated: {args.annotate} ({timeline.frames} frames at {reader.sample_rate:g} fps)", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if any(video.is_video(p) for p in args.paths):
        return _predict_video(args)
    video_only = next((o for o, v in (("--every", args.every), ("--fps", args.fps), ("--plot", args.plot),
                                      ("--no-plot", args.no_plot)) if v not in (None, False)), None)
    if video_only:
        return fail(f"{video_only} applies to a video ({', '.join(video.VIDEO_SUFFIXES)}), and no path names one")
    problem = args.annotate and output_file_problem("--annotate", args.annotate, overwrite=args.overwrite)
    if problem:
        return fail(problem)
    inputs = collect_inputs(args.paths)
    if args.annotate and len(inputs) != 1:
        return fail(f"--annotate draws on one image, but the paths name {len(inputs)}")
    predictor = Predictor.from_checkpoint(args.checkpoint, device=args.device, tta=args.tta,
                                          detect_faces=False if args.no_detect else "auto",
                                          grayscale=args.grayscale, batch_size=args.batch_size,
                                          max_pixels=args.max_pixels)
    if predictor.detection == UNAVAILABLE:
        print(f"note: {faces.unavailable_reason()}; classifying whole images", file=sys.stderr)
    records, kept, channels = _predict_files(predictor, inputs, args)
    # photos are real faces; "colour" if any of them is (a gray model turns it gray, which is worth a line)
    note = kind_note(predictor.trained_on, {"synthetic": False, "channels": max(channels, default=None)},
                     what="these images")
    if note:
        print(f"note: {note}", file=sys.stderr)
    if args.json:
        print(json.dumps(records, indent=2))
    elif args.csv:
        print(format_csv(records, args.top_k))
    elif any(r.get("predictions") for r in records):  # every file failed: no lone table header on stdout
        print(format_rows(records, args.top_k))
    for image, result in kept.values():
        print(f"annotated: {annotate(image, result, args.annotate)}", file=sys.stderr)
    return 2 if any(r.get("error") for r in records) else 0


if __name__ == "__main__":
    sys.exit(run(main))
