"""Using a trained model: ``Predictor`` takes images (files, uploads, arrays) and gives plain data back.

Each photo goes through face detection (faces.py, the ``faces`` extra): one prediction per face
found, with its box. Where no face is found, detection is off or OpenCV is not installed, the whole
image is classified and the result says which (``ImageResult.detection``). An image no larger than
twice the model's input side (both sides; a 48x48 FER2013 face) is a face crop already: it is
classified whole without detection. Preprocessing is the evaluation's: images decode to uint8 as
minivit.data decodes them (grayscale files stay 1-channel), then ``eval_transform(x, AugmentConfig(
image_size, channels=in_chans))`` resizes and normalises, so predictions on FER2013 images equal
``minivit.evaluate.predict``'s.

Example:
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
import sys
import threading
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..checkpoints.hub import SHIPPED_MODEL, could_be_repo_id, looks_like_a_path, manifest_entry, shipped_file
from ..checkpoints.run_folder import RunFolder
from ..common.cli import integer
from ..common.device import DEVICES, pick_device, resolve_precision
from ..common.errors import CheckpointError, ConfigError
from ..data.augment import AugmentConfig, eval_transform
from ..data.provenance import read_trained_on
from . import faces
from .images import MAX_PIXELS, PIL_MAX_PIXELS, read_image, to_image_tensor

# What happened to face detection for one image (ImageResult.detection).
DETECTED = "faces"          # one prediction per face found
NO_FACE = "no face found"   # detection ran, found nothing: the whole image was classified
FACE_SIZED = "face-sized"   # the image is no larger than FACE_SIZED_FACTOR x the model's input: already a face crop
OFF = "off"                 # detect_faces=False / --no-detect: the whole image was classified
UNAVAILABLE = "unavailable"  # OpenCV is not installed: the whole image was classified
# An image at most this many times the model's input side (both sides) is taken as a face crop
# already (FER2013's 48x48 faces, RAF-DB's aligned 100x100 ones) and classified whole: the Haar
# cascade finds "faces" inside such crops (an eye and a nostril), and re-cropping them would make
# predictions differ from the evaluation's on the very images the model was trained on.
FACE_SIZED_FACTOR = 2


# -- loading a model -----------------------------------------------------------------------------


def default_classes(num_classes: int) -> tuple[str, ...]:
    """minivit.data.LABELS for a 7-class model, else class_0, class_1, ..."""
    from ..data.labels import LABELS

    return LABELS if num_classes == len(LABELS) else tuple(f"class_{i}" for i in range(num_classes))


def resolve_checkpoint(checkpoint) -> Path | str:
    """A run folder -> its best.safetensors (minivit.checkpoints.RunFolder: what a run folder means); an existing
    file or folder as is (``~`` expanded); a manifest name or Hugging Face repo id as given
    (ViT.from_pretrained resolves it); a missing local path is an error here. minivit.checkpoints.hub
    decides what counts as a path or a repo id (one rule for both).

    >>> resolve_checkpoint("google/vit-base-patch16-224")
    'google/vit-base-patch16-224'
    >>> resolve_checkpoint("no/such/run.safetensors")
    Traceback (most recent call last):
    minivit.common.errors.CheckpointError: no/such/run.safetensors: no such file or folder
    """
    source = str(checkpoint)
    entry = manifest_entry(source)
    if entry is not None and entry.get("shipped") and not Path(source).expanduser().exists():
        return shipped_file(entry)  # the model in weights/: a local file, its stored classes and provenance read too
    weights, _ = RunFolder.of_checkpoint(checkpoint)
    path = Path(weights).expanduser()
    if path.exists():
        return path
    if entry is None and not could_be_repo_id(source) and looks_like_a_path(source):
        raise CheckpointError(f"{checkpoint}: no such file or folder")
    return source


def load_model(checkpoint):
    """(model in eval mode on the CPU, class names, resolved checkpoint) from a run folder, a minivit
    .safetensors or anything ViT.from_pretrained reads. Class names come from the checkpoint's
    stored extra ("classes") when present, else default_classes."""
    from ..model.vit import ViT

    source = resolve_checkpoint(checkpoint)
    model = ViT.from_pretrained(str(source)).eval()
    classes = None
    if isinstance(source, Path) and source.suffix == ".safetensors" and source.is_file():
        from ..checkpoints.writing import read_extra

        extra = read_extra(source) or {}
        classes = next((extra[k] for k in ("classes", "class_names", "labels") if isinstance(extra.get(k), list)), None)
    n = model.config.num_classes
    if classes is not None and len(classes) != n:
        raise CheckpointError(f"{checkpoint}: stores {len(classes)} class names for a {n}-class head")
    return model, tuple(str(c) for c in classes) if classes else default_classes(n), source


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

    ``Predictor()`` with no model uses the model minivit ships (``"minivit-fer"``, weights/README.md);
    ``Predictor.from_checkpoint(path)`` another one. ``source``: the file the model was read from
    (load_model's third value): what it says the model was trained on is used (``grayscale`` follows it).

    ``detect_faces``: True (needs the ``faces`` extra), False (classify whole images) or "auto"
    (detect when OpenCV is installed). An image no larger than FACE_SIZED_FACTOR (2) times the
    model's input side, in both sides, is a face crop already (a 48x48 FER2013 face for a 48-pixel
    model) and is classified whole without detection (``detection == "face-sized"``), so that
    predictions on dataset crops equal the evaluation's. ``tta`` averages the logits of each crop
    and its mirror. ``grayscale`` turns colour photos to luminance first (closer to grayscale
    training data such as FER2013; 1-channel models do this anyway). Precision is the evaluation's:
    minivit.common.device.resolve_precision("auto", device) (bf16/fp16 autocast on a GPU, fp32 on the CPU).
    Thread-safe: the model runs under a lock.
    """

    def __init__(self, model=None, classes=None, *, device="auto", detect_faces="auto", tta: bool = False,
                 grayscale: bool | None = None, batch_size: int = 64, max_pixels: int = MAX_PIXELS, source=None):
        if model is None:  # the model minivit ships (weights/README.md): Predictor() works with no training
            model, classes, source = load_model(SHIPPED_MODEL)
        # what the checkpoint says it was trained on, for provenance notes (None without a minivit checkpoint)
        self.trained_on = read_trained_on(source) if source is not None else None
        if grayscale is None:  # not chosen: do what the training data did
            grayscale = (self.trained_on or {}).get("channels") == 1
        config = model.config
        if not config.num_classes:
            raise ConfigError("this model has no classifier head (num_classes=0): nothing to predict")
        self.classes = tuple(classes) if classes else default_classes(config.num_classes)
        if len(self.classes) != config.num_classes:
            raise ConfigError(f"{len(self.classes)} class names for a {config.num_classes}-class model")
        if detect_faces not in (True, False, "auto"):
            raise ConfigError(f"detect_faces must be True, False or 'auto', not {detect_faces!r}")
        reason = faces.unavailable_reason() if detect_faces is not False else None
        if detect_faces is True and reason:
            raise ConfigError(f"face detection unavailable: {reason}")
        self.detection = OFF if detect_faces is False else UNAVAILABLE if reason else DETECTED
        self.device = device if isinstance(device, torch.device) else pick_device(device)
        self.model = model.to(self.device).eval()
        self.aug = AugmentConfig(image_size=config.image_size, channels=config.in_chans)
        _, self.autocast_dtype, _ = resolve_precision("auto", self.device)  # as evaluate_checkpoint does
        self.tta, self.grayscale, self.batch_size, self.max_pixels = tta, grayscale, batch_size, max_pixels
        self._lock = threading.Lock()

    @classmethod
    def from_checkpoint(cls, checkpoint, **kwargs) -> "Predictor":
        """A Predictor for a run folder, a minivit .safetensors or anything ViT.from_pretrained reads.

        Keyword arguments are Predictor's (device, detect_faces, tta, grayscale, batch_size, max_pixels).
        """
        model, classes, source = load_model(checkpoint)
        return cls(model, classes, source=source, **kwargs)

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

    def channels_seen(self, channels: int | None) -> int | None:
        """The channels of images as the model gets them, for ``channels`` read (1 gray, 3 colour): colour
        turned gray where this predictor turns it gray (``grayscale``, by default what the training data was)."""
        return 1 if channels == 3 and self.grayscale else channels

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


def add_checkpoint_option(p) -> None:
    """--checkpoint, shared by every command that uses a trained model (predict, attention, serve, export):
    without it, the model minivit ships."""
    p.add_argument("--checkpoint", default=None,
                   help="a training run folder (its best.safetensors), a minivit .safetensors, or anything "
                        f"ViT.from_pretrained reads (default: {SHIPPED_MODEL}, the FER model shipped in weights/; "
                        "weights/README.md)")


def checkpoint_or_shipped(checkpoint: str | None) -> str:
    """The --checkpoint given, or the shipped model's name after one line on stderr saying that it is the one used."""
    if checkpoint is not None:
        return checkpoint
    print(shipped_model_line(), file=sys.stderr, flush=True)
    return SHIPPED_MODEL


def shipped_model_line() -> str:
    """One line naming the shipped model and what it is, from its manifest entry."""
    entry = manifest_entry(SHIPPED_MODEL)
    return f"model: {entry['name']}, shipped with minivit: {entry['summary']} (weights/README.md; --checkpoint for another)"


def add_image_options(p, *, max_pixels: int = MAX_PIXELS, refused: str = "refused before decoding") -> None:
    """The options of a Predictor on the command line, shared by every command that reads photos for a
    model (predict, attention, serve): --device, --no-detect, --grayscale, --max-pixels, with one wording
    and one range each; predictor_options turns them into Predictor's keyword arguments."""
    p.add_argument("--device", choices=DEVICES, default="auto", help="auto: a GPU when CUDA is available, else the CPU")
    p.add_argument("--no-detect", action="store_true", help="do not look for faces: classify each whole image")
    p.add_argument("--grayscale", action=argparse.BooleanOptionalAction, default=None,
                   help="turn colour photos to grayscale first (default: as the model was trained: a minivit "
                   "run on grayscale faces such as FER2013 stores that, and its photos are turned gray)")
    p.add_argument("--max-pixels", type=integer(at_least=1, at_most=PIL_MAX_PIXELS), default=max_pixels,
                   help=f"largest image, in pixels, read from the header: larger ones (decompression bombs) are "
                        f"{refused} (1 to {PIL_MAX_PIXELS}; default {max_pixels})")


def predictor_options(args) -> dict:
    """Predictor's keyword arguments from the options add_image_options added."""
    return dict(device=args.device, detect_faces=False if args.no_detect else "auto", grayscale=args.grayscale,
                max_pixels=args.max_pixels)


__all__ = ["add_checkpoint_option", "checkpoint_or_shipped", "shipped_model_line", "add_image_options",
           "predictor_options", "Predictor", "FacePrediction", "ImageResult", "load_model", "resolve_checkpoint",
           "default_classes", "DETECTED", "NO_FACE", "FACE_SIZED", "OFF", "UNAVAILABLE",
           "FACE_SIZED_FACTOR"]
