"""What a model was trained on, and the one line that says when other data differs from it in kind.

A run records ``trained_on`` in its config.json ("data" section) and in the extra metadata of
best.safetensors and last.safetensors:

    data          the dataset path as given, or "synthetic"
    synthetic     True for minivit's drawn faces (minivit.data.synthetic_faces): never a real face
    image_size    [H, W] of the training images as stored (the model's input size is in its config)
    channels      1 (grayscale) or 3 (colour)
    classes       the class names, in the order of the model's outputs
    class_counts  training images per class
    split         how train, val and test were chosen (minivit.data.splits.split_rule)

``python -m minivit.evaluate`` and ``python -m minivit.predict`` compare it with the data in front of
them and say one line (kind_note) when the kind differs: synthetic vs real, grayscale vs colour, another
class list. A 13% accuracy of a synthetic-faces model on FER2013 then reads as what it is.

    >>> kind_note({"synthetic": True, "channels": 1}, {"synthetic": False, "channels": 3})
    'the model was trained on synthetic faces (never a real one), grayscale images; this data: real faces, colour images'
    >>> kind_note({"synthetic": False, "channels": 1}, {"synthetic": False, "channels": 1}) is None
    True
"""

from __future__ import annotations

from pathlib import Path

from .imageset import ImageSet
from .synthetic import SYNTHETIC


def class_count_list(s: ImageSet) -> list:
    """Images per class as JSON numbers: ints, or for soft labels the summed probability mass (3 decimals)."""
    return [round(float(c), 3) if s.soft else int(c) for c in s.class_counts().tolist()]


def trained_on(train: ImageSet, data: str, rule: dict) -> dict:
    """The provenance record of a run that trained on ``train`` (see the module docstring)."""
    return {"data": str(data), "synthetic": train.source == SYNTHETIC, "image_size": list(train.images.shape[2:]),
            "channels": int(train.images.shape[1]), "classes": list(train.classes),
            "class_counts": class_count_list(train), "split": rule}


def data_kind(image_set: ImageSet) -> dict:
    """The kind of a dataset, in trained_on's terms: synthetic or not, channels, classes."""
    return {"synthetic": image_set.source == SYNTHETIC, "channels": int(image_set.images.shape[1]),
            "classes": list(image_set.classes)}


def from_checkpoint_extra(extra: dict) -> dict | None:
    """A checkpoint's trained_on; for minivit checkpoints written before it, what their extra tells
    (classes, grayscale_data); None when the checkpoint says nothing about its training data."""
    if isinstance(extra.get("trained_on"), dict):
        return extra["trained_on"]
    partial = {}
    if isinstance(extra.get("classes"), list):
        partial["classes"] = extra["classes"]
    if isinstance(extra.get("grayscale_data"), bool):
        partial["channels"] = 1 if extra["grayscale_data"] else 3
    return partial or None


def read_trained_on(path) -> dict | None:
    """What a minivit .safetensors checkpoint says it was trained on (from_checkpoint_extra); None for
    anything else (a .npz, a Hub id, a checkpoint with unreadable metadata: nothing to compare)."""
    from ..checkpoints import read_extra
    from ..common.errors import CheckpointError

    path = Path(str(path))
    if path.suffix != ".safetensors" or not path.is_file():
        return None
    try:
        return from_checkpoint_extra(read_extra(path) or {})
    except CheckpointError:
        return None


def kind_note(trained: dict | None, here: dict, what: str = "this data") -> str | None:
    """One line when ``here`` (data_kind, or any subset of its keys) differs in kind from ``trained``
    (trained_on): synthetic vs real, grayscale vs colour, another class list. None when it does not,
    or when either side does not say."""
    if not trained:
        return None
    was, now = [], []
    t, h = trained.get("synthetic"), here.get("synthetic")
    if t is not None and h is not None and t != h:
        was.append("synthetic faces (never a real one)" if t else "real faces")
        now.append("real faces" if t else "synthetic faces")
    t, h = trained.get("channels"), here.get("channels")
    if t and h and t != h:
        was.append("grayscale images" if t == 1 else "colour images")
        now.append("grayscale images" if h == 1 else "colour images")
    t, h = trained.get("classes"), here.get("classes")
    if t and h and list(t) != list(h):
        was.append(f"classes {', '.join(t)}")
        now.append(f"classes {', '.join(h)}")
    return f"the model was trained on {', '.join(was)}; {what}: {', '.join(now)}" if was else None


__all__ = ["class_count_list", "trained_on", "data_kind", "from_checkpoint_extra", "read_trained_on", "kind_note"]
