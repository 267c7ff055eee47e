"""Writing checkpoints: minivit's own format (save_checkpoint), and every other writable layout (export).

    save_checkpoint / read_extra   minivit's .safetensors: the weights, the ViTConfig in the metadata, and
                                   JSON ``extra`` (epoch, scores, class names) that read_extra returns
    export                         any writable layout (layouts.LAYOUTS), refusing what the layout cannot
                                   hold by holds.py's table unless ``allow_lossy``
    write_safetensors, write_npz   the tensor files themselves, written atomically (minivit.common.files)

Example:
    >>> import os, tempfile
    >>> from minivit import ViT, ViTConfig
    >>> m = ViT(ViTConfig(image_size=16, patch_size=8, dim=16, depth=1, heads=2, mlp_dim=32, num_classes=2))
    >>> folder = tempfile.mkdtemp()
    >>> export(m, os.path.join(folder, "hf"), "transformers").name, sorted(os.listdir(os.path.join(folder, "hf")))
    ('model.safetensors', ['config.json', 'model.safetensors'])
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..common.errors import CheckpointError
from ..common.files import atomic_write, write_json
from ..model.config import ViTConfig
from .holds import Refusal, drop_refused, refusal_message, refusals
from .layouts import LAYOUTS, Layout, from_minivit, layout_names
from .reading import read_safetensors

EXTRA_KEY = "minivit_extra"  # safetensors metadata key of save_checkpoint's extra (JSON)


def write_safetensors(tensors: dict, path, metadata: dict | None = None) -> None:
    """A .safetensors of ``tensors`` (detached, contiguous, on the CPU) with string ``metadata``, atomically."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt", **(metadata or {})}))


def write_npz(tensors: dict, path) -> None:
    """An .npz of ``tensors`` as numpy arrays, atomically (and under exactly ``path``: no .npz appended)."""
    arrays = {k: v.detach().cpu().numpy() for k, v in tensors.items()}

    def write(tmp):
        with open(tmp, "wb") as f:  # a file object: np.savez would append .npz to a name
            np.savez(f, **arrays)

    atomic_write(path, write)


def save_checkpoint(model, path, extra: dict | None = None) -> None:
    """minivit's own format, written atomically: a .safetensors of ``model.state_dict()`` (BatchNorm
    statistics included) with the ViTConfig as JSON in metadata "minivit_config" and ``extra``
    (JSON values: epoch, scores, ...) in "minivit_extra"; ``read_extra`` returns it.

    Example:
        >>> import tempfile, os
        >>> from minivit import ViT, ViTConfig
        >>> m = ViT(ViTConfig(image_size=16, patch_size=8, dim=16, depth=1, heads=2, mlp_dim=32, num_classes=2))
        >>> path = os.path.join(tempfile.mkdtemp(), "best.safetensors")
        >>> save_checkpoint(m, path, extra={"epoch": 3, "val_accuracy": 0.5})
        >>> read_extra(path)
        {'epoch': 3, 'val_accuracy': 0.5}
    """
    _write_minivit(model.state_dict(), model.config, path, extra)


def _write_minivit(state: dict, config: ViTConfig, path, extra: dict | None) -> None:
    metadata = LAYOUTS["minivit"].check_expressible(config, state)
    try:
        metadata[EXTRA_KEY] = json.dumps(extra or {}, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: extra metadata must be JSON values ({e})") from None
    write_safetensors(state, path, metadata)


def read_extra(path) -> dict:
    """The ``extra`` dict that ``save_checkpoint`` stored ({} if none)."""
    _, meta = read_safetensors(Path(path))
    try:
        extra = json.loads(meta.get(EXTRA_KEY, "{}"))
    except ValueError as e:
        raise CheckpointError(f"{path}: bad {EXTRA_KEY} metadata ({e})") from None
    if not isinstance(extra, dict):
        raise CheckpointError(f"{path}: bad {EXTRA_KEY} metadata (not a JSON object)")
    return extra


def _writable(to: str) -> Layout:
    layout = LAYOUTS.get(to)
    if layout is None or not layout.writable:
        raise CheckpointError(f"unknown export target {to!r} (expected one of {', '.join(layout_names(writable=True))})")
    return layout


def export_refusals(model, to: str) -> list[Refusal]:
    """What of ``model`` the ``to`` layout cannot hold (holds.py); [] when it holds all of it.

    Example:
        >>> from minivit import ViT, ViTConfig
        >>> m = ViT(ViTConfig(image_size=16, patch_size=8, dim=16, depth=1, heads=2, mlp_dim=32, norm_eps=1e-12))
        >>> [(r.setting, r.lossy) for r in export_refusals(m, "timm")], export_refusals(m, "transformers")
        ([('norm_eps=1e-12', True)], [])
    """
    return refusals(_writable(to).holds, model.config, model.state_dict())


def _holdable(model, layout: Layout, allow_lossy: bool) -> tuple[ViTConfig, dict]:
    """(config, state) to write: the model's own, or with allow_lossy the nearest model the layout holds."""
    config, state = model.config, model.state_dict()
    found = refusals(layout.holds, config, state)
    if found and not (allow_lossy and all(r.lossy for r in found)):
        raise CheckpointError(refusal_message(layout.name, found))
    return drop_refused(found, config, state)


def export(model, out, to: str, allow_lossy: bool = False) -> Path:
    """Write ``model`` in any writable layout; returns the weights file written.

    minivit: ``out`` is the .safetensors; npz layouts: ``out`` is the .npz; folder layouts
    (transformers, timm): ``out`` is a folder with config.json + model.safetensors that the
    library loads. A model the layout cannot hold (holds.py: exact GELU or another LayerNorm
    eps in an .npz, a conv stem outside minivit, a representation layer in timm, ...) is a
    one-line CheckpointError naming the setting and the layout, and nothing is written.
    ``allow_lossy=True`` writes the nearest model the layout holds instead (the settings it cannot
    hold dropped, its conventions applied), where there is one; ``export_refusals`` says what is lost.

    Example:
        >>> import os, tempfile
        >>> from minivit import ViT, ViTConfig
        >>> m = ViT(ViTConfig(image_size=16, patch_size=8, dim=16, depth=1, heads=2, mlp_dim=32))  # exact GELU
        >>> out = os.path.join(tempfile.mkdtemp(), "m.npz")
        >>> export(m, out, "vit_jax")
        Traceback (most recent call last):
        minivit.common.errors.CheckpointError: gelu='exact' cannot be expressed in the vit_jax layout; ...; pass allow_lossy=True ...
        >>> os.path.exists(out), export(m, out, "vit_jax", allow_lossy=True).name
        (False, 'm.npz')
        >>> ViT.from_pretrained(out).config.gelu
        'tanh'
    """
    layout = _writable(to)
    config, state = _holdable(model, layout, allow_lossy)
    out = Path(out)
    if layout.kind == "minivit":
        _write_minivit(state, config, out, {})
        return out
    config_file = layout.check_expressible(config, state)
    tensors = from_minivit(state, layout, config, layout.export_prefix(config))
    if layout.kind == "npz":
        write_npz(tensors, out)
        return out
    write_safetensors(tensors, out / "model.safetensors")
    write_json(config_file, out / "config.json")
    return out / "model.safetensors"
