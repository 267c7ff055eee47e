"""load_state: any supported checkpoint -> (ViTConfig, minivit state dict, a report of every tensor).

The steps, each a small function below:

    resolve the source        local file/folder, else minivit.hub.resolve (manifest name, HF repo id)
    read the tensors          io.py (never unpickles; bad files -> one-line CheckpointError)
    detect the layout         the registry (layouts.LAYOUTS): the first layout of this kind of file
                              whose config file it claims and whose anchor tensor is in the file
    infer the config          the layout's own ``infer`` (configs.py): shapes, config.json or metadata
    apply overrides           contradicting what the file states -> CheckpointError
    map the tensors           the layout's table, forwards
    adapt                     new head for another num_classes, pos_embed resampled for another image_size
    report                    every file tensor used or reported, every parameter loaded or reported

``ViT.from_pretrained`` builds the model from the result and checks every shape: the checkpoint
layer never imports the model. Writing goes the other way: ``save_checkpoint`` (minivit's own
format, with JSON ``extra`` metadata that ``read_extra`` returns) and ``export`` (any writable layout,
refusing what the layout cannot hold by holds.py's table unless ``allow_lossy``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..config import ViTConfig
from ..errors import CheckpointError, ConfigError, MinivitError
from ..pos_embed import resample_pos_embed
from . import io
from .configs import CONFIG_KEY, FREE_FIELDS
from .holds import Refusal, drop_refused, refusal_message, refusals
from .layouts import LAYOUTS, Layout, from_minivit, layout_names, to_minivit

log = logging.getLogger("minivit.checkpoints")

RESUME_PREFIX = "model."  # a run's resume.safetensors holds the model as model.* beside ema.* and optim.*
EXTRA_KEY = "minivit_extra"  # safetensors metadata key of save_checkpoint's extra (JSON)
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


@dataclass
class LoadReport:
    """What happened to every tensor of the file and every parameter of the model."""

    source: str
    layout: str
    config: ViTConfig
    loaded: list[str] = field(default_factory=list)  # minivit parameters filled from the file
    new: dict[str, str] = field(default_factory=dict)  # minivit parameter -> why it is freshly initialised
    dropped: dict[str, str] = field(default_factory=dict)  # file tensor -> why it was not used
    unused: list[str] = field(default_factory=list)  # file tensors no table row reads (unexpected)
    missing: list[str] = field(default_factory=list)  # model parameters the file lacks (unexpected)
    notes: list[str] = field(default_factory=list)  # overrides, resampling, conventions applied

    @property
    def ok(self) -> bool:
        return not self.unused and not self.missing

    def __str__(self) -> str:
        cfg = self.config
        lines = [f"loaded {self.source} ({self.layout} layout): {len(self.loaded)} parameters from the file; "
                 f"dim={cfg.dim} depth={cfg.depth} heads={cfg.heads} mlp={cfg.mlp_dim} patch={cfg.patch_size} "
                 f"image={cfg.image_size} classes={cfg.num_classes} classifier={cfg.classifier} "
                 f"rep={cfg.representation_size} gelu={cfg.gelu} eps={cfg.norm_eps:g} stem={cfg.stem} in_chans={cfg.in_chans}"]
        lines += [f"  note: {n}" for n in self.notes]
        lines += [f"  new: {k} ({why})" for k, why in self.new.items()]
        lines += [f"  dropped: {k} ({why})" for k, why in self.dropped.items()]
        lines += [f"  UNUSED in file: {k}" for k in self.unused]
        lines += [f"  MISSING from file: {k}" for k in self.missing]
        return "\n".join(lines)


@dataclass
class Checkpoint:
    """A read checkpoint: tensors by their file names, the layout, the config it states."""

    path: Path
    tensors: dict
    layout: Layout
    prefix: str
    config: ViTConfig
    stated: set  # config fields the file states (overriding them differently is an error)
    aliases: dict = field(default_factory=dict)  # derived tensor name -> the file's name (scan-stacked npz)


# -- source -> file(s) ---------------------------------------------------------------------------


def resolve_source(source) -> Path:
    """A local path as is; anything else through minivit.hub (manifest names, Hugging Face repo ids)."""
    path = Path(str(source)).expanduser()
    if path.exists():
        return path
    try:
        from .. import hub
    except ImportError:
        raise CheckpointError(f"{source}: no such file or folder (and minivit.hub is not available to resolve names)") from None
    return Path(hub.resolve(str(source)))


# -- reading a source into a Checkpoint ---------------------------------------------------------


def detect_layout(tensors: dict, kind: str, stated: dict, where) -> tuple[Layout, str]:
    """The first registered layout of this kind of file that claims its config and finds its anchor."""
    candidates = [lay for lay in LAYOUTS.values() if lay.kind == kind and lay.claims(stated)]
    for layout in candidates:
        for prefix in sorted(layout.prefixes, key=len, reverse=True):
            if prefix + layout.anchor in tensors:
                return layout, prefix
    sample = ", ".join(sorted(tensors)[:3])
    names = ", ".join(lay.name for lay in candidates) or ", ".join(layout_names())
    raise CheckpointError(f"{where}: unknown checkpoint layout (expected one of {names}; first names: {sample})")


def _checkpoint(path, tensors: dict, kind: str, stated: dict, where, aliases=None) -> Checkpoint:
    layout, prefix = detect_layout(tensors, kind, stated, where)
    try:
        cfg, fields = layout.infer(tensors, layout, prefix, stated, where)
    except MinivitError:
        raise
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, OverflowError) as e:
        # a config value of the wrong type ("hidden_size": "big", "layer_norm_eps": null, a list
        # where a name belongs) or a tensor of an unexpected rank: one line naming the file
        detail = str(e).splitlines()[0] if str(e) else ""
        raise CheckpointError(f"{where}: bad config ({type(e).__name__}: {detail})") from None
    return Checkpoint(Path(path), tensors, layout, prefix, cfg, fields, aliases or {})


def _read_weights_file(path: Path) -> Checkpoint:
    tensors, meta = io.read_safetensors(path) if path.suffix.lower() == ".safetensors" else io.read_torch_bin(path)
    if CONFIG_KEY in meta:  # minivit's own: save_checkpoint's file, a run's best/last, or a resume file's model.*
        if any(k.startswith(RESUME_PREFIX) for k in tensors):
            tensors = {k[len(RESUME_PREFIX):]: t for k, t in tensors.items() if k.startswith(RESUME_PREFIX)}
        return _checkpoint(path, tensors, "minivit", meta, path)
    beside = path.parent / "config.json"
    if not beside.is_file():
        raise CheckpointError(f"{path}: has neither {CONFIG_KEY} metadata nor a config.json beside it, "
                              "so heads and the rest of the config cannot be known")
    return _checkpoint(path, tensors, "folder", io.read_json(beside), path)


def read_checkpoint(source) -> Checkpoint:
    """Read any supported source (file, folder, manifest name, repo id) without building a model."""
    path = resolve_source(source)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise CheckpointError(f"{path}: folder has no config.json (expected a transformers or timm model folder)")
        tensors, _, _ = io.read_weights_in_folder(path)
        return _checkpoint(path, tensors, "folder", io.read_json(path / "config.json"), path)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        tensors, _ = io.read_npz(path)
        tensors, aliases = unstack_scan(tensors, path)
        return _checkpoint(path, tensors, "npz", {}, path, aliases)
    if suffix in WEIGHT_SUFFIXES:
        return _read_weights_file(path)
    raise CheckpointError(f"{path}: unknown checkpoint type {suffix or '(no suffix)'!r} "
                          "(expected .npz, .safetensors, .bin or a model folder)")


def unstack_scan(tensors: dict, where="<npz>") -> tuple[dict, dict]:
    """big_vision's scan-over-layers checkpoints store `Transformer/encoderblock/...` with a
    leading depth axis; split them into `encoderblock_{i}` so one table serves both."""
    out, aliases = {}, {}
    for name, t in tensors.items():
        m = re.match(r"^(.*Transformer/)encoderblock/(.*)$", name)
        if not m:
            out[name] = t
            continue
        if t.ndim < 1:
            raise CheckpointError(f"{where}: {name} is scan-stacked (one slice per block) but is a 0-d array")
        for i in range(t.shape[0]):
            derived = f"{m[1]}encoderblock_{i}/{m[2]}"
            out[derived], aliases[derived] = t[i], name
    return out, aliases


# -- overrides, adaptation -----------------------------------------------------------------------


def _apply_overrides(ckpt: Checkpoint, overrides: dict, report_notes: list) -> ViTConfig:
    known = {f.name for f in dataclasses.fields(ViTConfig)}
    cfg = ckpt.config
    for key, value in overrides.items():
        if key not in known:
            raise CheckpointError(f"{ckpt.path}: unknown option {key}={value!r} (not a ViTConfig field)")
        have = getattr(cfg, key)
        if value == have:
            continue
        if key in ckpt.stated:
            raise CheckpointError(f"{ckpt.path}: {key}={value!r} contradicts the checkpoint, which has {key}={have!r}")
        report_notes.append(f"override {key}={value!r} (the {ckpt.layout.name} default is {have!r})")
    try:
        return cfg.replace(**overrides)
    except ConfigError as e:
        raise CheckpointError(f"{ckpt.path}: {str(e).splitlines()[0]}") from None


def _new_head(state: dict, report: LoadReport, cfg: ViTConfig, num_classes: int, keep_representation: bool) -> ViTConfig:
    """Another number of classes: a new zero head; the representation layer goes too (ViT paper fine-tuning)."""
    drop_rep = not keep_representation and cfg.representation_size is not None
    new = cfg.replace(num_classes=num_classes, representation_size=None if drop_rep else cfg.representation_size)
    for k in [k for k in state if k.startswith("head.") or (drop_rep and k.startswith("pre_logits."))]:
        report.dropped[k] = (f"head for {cfg.num_classes} classes replaced by one for {num_classes}" if k.startswith("head.")
                             else "representation layer dropped for fine-tuning (keep_representation=True keeps it)")
        del state[k]
    if num_classes:
        report.new.update({"head.weight": "zero-initialised", "head.bias": "zero-initialised"})
    return new


def _new_image_size(state: dict, report: LoadReport, cfg: ViTConfig, image_size, where) -> ViTConfig:
    """Another image size: resample the position embeddings once, here, by minivit.pos_embed's one rule."""
    try:
        new = cfg.replace(image_size=image_size)
    except ConfigError:
        raise CheckpointError(f"{where}: image_size={image_size} is not a multiple of the checkpoint's patch size "
                              f"{cfg.patch_size} (or below it)") from None
    if new.grid != cfg.grid and "pos_embed" in state:
        expected = (1, cfg.num_tokens, cfg.dim)
        if tuple(state["pos_embed"].shape) != expected:
            raise CheckpointError(f"{where}: pos_embed has shape {tuple(state['pos_embed'].shape)} in the checkpoint "
                                  f"but the config needs {expected}")
        state["pos_embed"] = resample_pos_embed(state["pos_embed"], new.grid, cfg.grid, cfg.num_prefix_tokens)
        report.notes.append(f"pos_embed resampled {cfg.grid} -> {new.grid} grid (bicubic, antialiased, float32)")
    return new


def build_state(ckpt: Checkpoint, *, num_classes=None, image_size=None, strict=True, keep_representation=False,
                **overrides) -> tuple[ViTConfig, dict, LoadReport]:
    """Map, check and adapt a checkpoint: (final config, minivit state dict, report)."""
    notes: list[str] = []
    file_cfg = _apply_overrides(ckpt, overrides, notes)
    state, used, missing = to_minivit(ckpt.tensors, ckpt.layout, ckpt.prefix, file_cfg, where=ckpt.path)
    report = LoadReport(str(ckpt.path), ckpt.layout.name, file_cfg, notes=notes, missing=missing)
    file_name = lambda name: ckpt.aliases.get(name, name)  # noqa: E731
    report.unused = sorted({file_name(k) for k in ckpt.tensors} - {file_name(k) for k in used})
    cfg = file_cfg
    if num_classes is not None and num_classes != cfg.num_classes:
        cfg = _new_head(state, report, cfg, num_classes, keep_representation)
    if image_size is not None:
        cfg = _new_image_size(state, report, cfg, image_size, ckpt.path)
    report.config = cfg
    report.loaded = sorted(state)
    if report.missing or report.unused:
        problem = "; ".join(filter(None, [
            f"{len(report.missing)} model parameter(s) not in the file: {', '.join(report.missing[:4])}" if report.missing else "",
            f"{len(report.unused)} file tensor(s) not used: {', '.join(report.unused[:4])}" if report.unused else ""]))
        if strict:
            raise CheckpointError(f"{ckpt.path}: {problem} (strict=False loads anyway)")
        log.warning("%s: %s", ckpt.path, problem)
        report.new.update({k: "not in the file: left at its initial value" for k in report.missing})
    return cfg, state, report


def load_state(source, *, num_classes: int | None = None, image_size=None, strict: bool = True,
               keep_representation: bool = False, **overrides) -> tuple[ViTConfig, dict, LoadReport]:
    """Read a checkpoint in any supported layout: (config, minivit state dict, LoadReport).

    ``ViT.from_pretrained(source, ...)`` is this plus building the model; the arguments are the
    same: ``num_classes`` other than the checkpoint's gives a new zero-initialised head (and no
    representation layer unless ``keep_representation``); ``image_size`` other than the
    checkpoint's resamples the position embeddings once; ``overrides`` are ViTConfig fields, and
    contradicting the file is an error.

    Example:
        >>> import os, tempfile
        >>> from minivit import ViT, ViTConfig
        >>> m = ViT(ViTConfig(image_size=32, patch_size=8, dim=32, depth=1, heads=2, mlp_dim=64, num_classes=5))
        >>> path = os.path.join(tempfile.mkdtemp(), "tiny.safetensors")
        >>> save_checkpoint(m, path)
        >>> cfg, state, report = load_state(path, num_classes=3)
        >>> cfg.num_classes, sorted(report.new), "head.weight" in state
        (3, ['head.bias', 'head.weight'], False)
    """
    ckpt = read_checkpoint(source)
    cfg, state, report = build_state(ckpt, num_classes=num_classes, image_size=image_size, strict=strict,
                                     keep_representation=keep_representation, **overrides)
    log.info("%s", report)
    return cfg, state, report


def convert_transformers_state_dict(state_dict: dict, config) -> tuple[ViTConfig, dict]:
    """A transformers ViT state dict + its config -> (ViTConfig, minivit state dict); for parity tests.

    Works with on-disk names and with transformers 5's in-memory names, with or without the
    ``vit.`` prefix; ``config`` is a transformers ViTConfig or its dict.
    """
    hf = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    tensors = {k: v.detach() for k, v in state_dict.items()}
    cfg, state, _ = build_state(_checkpoint("<state_dict>", tensors, "folder", hf, "<transformers state dict>"))
    return cfg, state


# -- writing -------------------------------------------------------------------------------------


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


def _write_minivit(state: dict, cfg: ViTConfig, path, extra: dict | None) -> None:
    metadata = LAYOUTS["minivit"].check_expressible(cfg, state)
    try:
        metadata[EXTRA_KEY] = json.dumps(extra or {}, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: extra metadata must be JSON values ({e})") from None
    io.write_safetensors(state, path, metadata)


def read_extra(path) -> dict:
    """The ``extra`` dict that ``save_checkpoint`` stored ({} if none)."""
    _, meta = io.read_safetensors(Path(path))
    try:
        extra = json.loads(meta.get(EXTRA_KEY, "{}"))
    except ValueError as e:
        raise CheckpointError(f"{path}: bad {EXTRA_KEY} metadata ({e})") from None
    if not isinstance(extra, dict):
        raise CheckpointError(f"{path}: bad {EXTRA_KEY} metadata (not a JSON object)")
    return extra


def export_tensors(model, layout: str, prefix: str = "") -> dict:
    """The model's weights named and shaped as in another layout (the table read backwards)."""
    return from_minivit(model.state_dict(), LAYOUTS[layout], model.config, prefix)


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
    cfg, state = model.config, model.state_dict()
    found = refusals(layout.holds, cfg, state)
    if found and not (allow_lossy and all(r.lossy for r in found)):
        raise CheckpointError(refusal_message(layout.name, found))
    return drop_refused(found, cfg, state)


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
        minivit.errors.CheckpointError: gelu='exact' cannot be expressed in the vit_jax layout; ...; pass allow_lossy=True ...
        >>> os.path.exists(out), export(m, out, "vit_jax", allow_lossy=True).name
        (False, 'm.npz')
        >>> ViT.from_pretrained(out).config.gelu
        'tanh'
    """
    layout = _writable(to)
    cfg, state = _holdable(model, layout, allow_lossy)
    out = Path(out)
    if layout.kind == "minivit":
        _write_minivit(state, cfg, out, {})
        return out
    config = layout.check_expressible(cfg, state)
    tensors = from_minivit(state, layout, cfg, layout.export_prefix(cfg))
    if layout.kind == "npz":
        io.write_npz(tensors, out)
        return out
    io.write_safetensors(tensors, out / "model.safetensors")
    io.write_json(config, out / "config.json")
    return out / "model.safetensors"


def save_folder(model, folder, to: str, allow_lossy: bool = False) -> Path:
    """A transformers or timm model folder (config.json + model.safetensors) those libraries load."""
    if to not in layout_names(kind="folder", writable=True):
        raise CheckpointError(f"unknown folder layout {to!r} (expected one of {', '.join(layout_names('folder', True))})")
    return export(model, folder, to, allow_lossy)


def save_npz(model, path, layout: str = "vit_jax", prefix: str = "", allow_lossy: bool = False) -> None:
    """A Google-layout .npz (vit_jax or big_vision names) of this model; refuses as ``export`` does."""
    cfg, state = _holdable(model, LAYOUTS[layout], allow_lossy)
    io.write_npz(from_minivit(state, LAYOUTS[layout], cfg, prefix), path)
