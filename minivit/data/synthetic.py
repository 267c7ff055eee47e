"""Synthetic grayscale "faces" whose drawn expression encodes the class: a stand-in dataset for
tests, docs and smoke runs. It is labelled synthetic everywhere (ImageSet.source == SYNTHETIC)
and says nothing about performance on real faces.

It is a data source like the files minivit reads (minivit/data/formats.py): the dataset path
``"synthetic"`` names it, and ``load_synthetic`` is its reader, drawing a run's faces from the run's
samples, image size and seed (``synthetic=dict(samples=, image_size=, seed=)``).

Each face is an ellipse with two eyes, two brows and a mouth. The expression is a row of the
EXPRESSIONS table (brow slant and height, eye opening, mouth curve / opening / tilt); every
sample then gets random jitter of those shapes, of position, size, tilt, brightness, contrast and
pixel noise, so a model has to read the features rather than memorise pixels. Drawing is
vectorised torch (soft-edged masks from distance fields): n=3000 at 48x48 takes ~0.2 s on 2 idle cores.
"""

import math

import torch

from ..common.errors import ConfigError
from .imageset import ImageSet
from .labels import LABELS

SYNTHETIC = "synthetic"  # the dataset path that names these faces, and the source of their ImageSets

# Face-local units: the face ellipse has radii (0.62, 0.80); y points down.
# brow_in / brow_out: vertical offset of the inner / outer brow end (negative = raised);
# eye_open: eye half-height; curve: mouth centre drop (+ smile, - frown); open: mouth half-height
# (0 = a drawn line); width: mouth half-width; tilt: mouth slope (asymmetric, disgust).
EXPRESSION_FIELDS = ("brow_in", "brow_out", "eye_open", "curve", "open", "width", "tilt")
EXPRESSIONS = {
    #            brow_in brow_out eye_open curve   open  width  tilt
    "angry":    (+0.10,  -0.06,   0.045,  -0.03,  0.00, 0.17,  0.00),
    "disgust":  (+0.05,  +0.00,   0.035,  -0.05,  0.00, 0.22,  0.30),
    "fear":     (-0.12,  -0.02,   0.100,   0.00,  0.06, 0.26,  0.00),
    "happy":    (+0.00,  +0.00,   0.055,  +0.18,  0.00, 0.30,  0.00),
    "sad":      (-0.10,  +0.06,   0.060,  -0.15,  0.00, 0.22,  0.00),
    "surprise": (-0.14,  -0.14,   0.120,   0.00,  0.15, 0.12,  0.00),
    "neutral":  (+0.00,  +0.00,   0.070,   0.00,  0.00, 0.22,  0.00),
}
SHAPE_JITTER = (0.025, 0.025, 0.012, 0.025, 0.0, 0.025, 0.05)  # std of per-sample noise, per field
# ("open" gets multiplicative jitter instead, so a closed mouth stays closed.)


def _soft(signed_dist: torch.Tensor, edge: float) -> torch.Tensor:
    """Mask in [0, 1] from a signed distance (positive inside), antialiased over ~one pixel."""
    return torch.sigmoid(signed_dist / edge)


def _segment_dist(x, y, x0, y0, x1, y1):
    """Distance from points (x, y) to segments (x0, y0)-(x1, y1); all broadcastable."""
    dx, dy = x1 - x0, y1 - y0
    t = (((x - x0) * dx + (y - y0) * dy) / (dx * dx + dy * dy)).clamp(0, 1)
    return torch.hypot(x - x0 - t * dx, y - y0 - t * dy)


def _draw(p: dict, size: int) -> torch.Tensor:
    """Render faces from per-sample parameters p[name]: (n, 1, 1) -> float (n, size, size) in [0, 1]."""
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1  # pixel centres in [-1, 1]
    v, u = torch.meshgrid(coords, coords, indexing="ij")  # (S, S) each
    # Image coordinates -> face-local coordinates: undo position, scale and tilt.
    cos, sin = torch.cos(p["angle"]), torch.sin(p["angle"])
    x = ((u - p["cx"]) * cos + (v - p["cy"]) * sin) / p["scale"]  # (n, S, S)
    y = (-(u - p["cx"]) * sin + (v - p["cy"]) * cos) / p["scale"]
    edge = 1.2 / size / p["scale"]  # about one pixel in local units

    # Ellipse "distances" 1 - r are in units of the radius, so their edge is widened to stay ~1 px.
    face = _soft(1 - torch.hypot(x / 0.62, y / 0.80), edge * 1.5)
    eyes = _soft(1 - torch.hypot((x.abs() - 0.26) / 0.11, (y + 0.12) / p["eye_open"]), edge * 4)
    brow_y = -0.34
    brows = _soft(0.045 - _segment_dist(x.abs(), y, 0.08, brow_y + p["brow_in"], 0.40, brow_y + p["brow_out"]), edge)
    # Mouth: a filled ellipse when open, otherwise a thick parabola y = my + curve*(1 - (x/w)^2) + tilt*x.
    my, w = 0.42, p["width"]
    line_y = my + p["curve"] * (1 - (x / w) ** 2) + p["tilt"] * x
    slope = -2 * p["curve"] * x / w**2 + p["tilt"]
    line = _soft(0.05 - (y - line_y).abs() / torch.sqrt(1 + slope**2), edge) * _soft(w - x.abs(), edge)
    hole = _soft(1 - torch.hypot(x / w, (y - my) / p["open"].clamp_min(1e-3)), edge * 4)
    mouth = torch.where(p["open"] > 0, hole, line)

    features = torch.maximum(torch.maximum(eyes, brows), mouth)
    img = torch.lerp(p["background"].expand_as(face), p["skin"].expand_as(face), face)
    img = torch.lerp(img, p["ink"].expand_as(img), features * face)
    return img  # (n, S, S)


def synthetic_faces(n: int, image_size: int = 48, seed: int = 0) -> ImageSet:
    """n synthetic 1-channel faces, classes balanced over LABELS, deterministic per seed.

    >>> s = synthetic_faces(14, image_size=32, seed=1)
    >>> s.images.shape, s.images.dtype, s.class_counts().tolist(), s.source
    (torch.Size([14, 1, 32, 32]), torch.uint8, [2, 2, 2, 2, 2, 2, 2], 'synthetic')
    """
    g = torch.Generator().manual_seed(seed)

    def uniform(lo, hi):
        return lo + (hi - lo) * torch.rand(n, 1, 1, generator=g)

    targets = torch.arange(n) % len(LABELS)
    targets = targets[torch.randperm(n, generator=g)]
    table = torch.tensor([EXPRESSIONS[name] for name in LABELS])  # (7, F)
    shapes = table[targets] + torch.randn(n, len(EXPRESSION_FIELDS), generator=g) * torch.tensor(SHAPE_JITTER)
    p = {name: shapes[:, i, None, None] for i, name in enumerate(EXPRESSION_FIELDS)}  # each (n, 1, 1)
    p["eye_open"] = p["eye_open"].clamp_min(0.02)
    p["width"] = p["width"].clamp_min(0.08)
    p["open"] = p["open"] * uniform(0.75, 1.25)
    p.update(cx=uniform(-0.1, 0.1), cy=uniform(-0.1, 0.1), scale=uniform(0.8, 1.1),
             angle=uniform(-1, 1) * math.radians(12))
    p["background"] = uniform(0.0, 0.45)
    p["skin"] = (p["background"] + uniform(0.3, 0.6)).clamp_max(1.0)
    p["ink"] = p["skin"] * uniform(0.0, 0.45)
    noise_std = uniform(0.0, 0.08)

    chunks = []
    for start in range(0, n, 1024):  # bound memory: a few (1024, S, S) float maps at a time
        chunk = {k: t[start:start + 1024] for k, t in p.items()}
        chunks.append(_draw(chunk, image_size))
    img = torch.cat(chunks) if chunks else torch.zeros(0, image_size, image_size)
    img = img + noise_std * torch.randn(img.shape, generator=g)  # (n, S, S)
    images = (img.clamp(0, 1) * 255).round().to(torch.uint8)[:, None]  # (n, 1, S, S)
    return ImageSet(images, targets, source=SYNTHETIC)


SEED_STEP = 7919  # seed offset between the train, val and test draws of one synthetic run


def synthetic_split(samples: int, image_size: int = 48, seed: int = 0) -> tuple[ImageSet, ImageSet]:
    """(train, val) synthetic faces: ``samples`` training faces and a disjoint val set a quarter
    that size (at least 64), drawn from another seed. What a ``--data synthetic`` run trains and
    validates on, and what evaluating such a run re-draws.

    >>> train, val = synthetic_split(64, image_size=16)
    >>> len(train), len(val)
    (64, 64)
    """
    train = synthetic_faces(samples, image_size=image_size, seed=seed)
    val = synthetic_faces(max(samples // 4, 64), image_size=image_size, seed=seed + SEED_STEP)
    return train, val


def synthetic_test_set(samples: int, image_size: int = 48, seed: int = 0) -> ImageSet:
    """The test faces of a synthetic run: as many as its val set, from a third seed. A run scores its
    best checkpoint on them once, at the end; they never pick a checkpoint.

    >>> len(synthetic_test_set(64, image_size=16))
    64
    """
    return synthetic_faces(max(samples // 4, 64), image_size=image_size, seed=seed + 2 * SEED_STEP)


def load_synthetic(split: str, synthetic: dict | None = None) -> ImageSet:
    """One split of a synthetic run, as the run drew it (train and val: synthetic_split; test:
    synthetic_test_set), from ``synthetic`` = dict(samples=, image_size=, seed=).

    >>> len(load_synthetic("test", dict(samples=64, image_size=16, seed=0)))
    64
    """
    if synthetic is None:
        raise ConfigError("the synthetic faces are drawn again from the run that trained on them: give that run's "
                          "folder as --checkpoint (from Python: synthetic=dict(samples=, image_size=, seed=))")
    if split == "test":
        return synthetic_test_set(**synthetic)
    train, val = synthetic_split(**synthetic)
    return train if split == "train" else val
