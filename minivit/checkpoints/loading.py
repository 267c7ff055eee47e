"""load_state: any supported checkpoint -> (the file's ViTConfig, minivit state dict, a report of every tensor).

The steps, each a small function below:

    resolve the source        local file/folder, else hub.resolve (manifest name, HF repo id)
    read the tensors          reading.py (never unpickles; bad files -> one-line CheckpointError)
    detect the layout         the registry (layouts.LAYOUTS): the first layout of this kind of file
                              whose config file it claims and whose anchor tensor is in the file
    infer the config          the layout's own ``infer`` (configs.py): shapes, config.json or metadata
    apply overrides           contradicting what the file states -> CheckpointError
    map the tensors           the layout's table, forwards
    report                    every file tensor used or reported, every parameter loaded or reported

What comes back is the file as it is. ``ViT.from_pretrained`` builds the model from it, checks every
shape, and then adapts the model with its own methods (``reset_head`` for another number of classes,
``resize_image`` for another input size), recording what they did in the report (``head_replaced``,
``resampled``): the checkpoint layer never imports the model, and the model's shape has one owner.
Writing goes the other way, in writing.py.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..common.errors import CheckpointError, ConfigError, MinivitError
from ..model.config import ViTConfig
from . import reading
from .configs import CONFIG_KEY
from .layouts import LAYOUTS, Layout, layout_names, to_minivit

log = logging.getLogger("minivit.checkpoints")

RESUME_PREFIX = "model."  # a run's resume.safetensors holds the model as model.* beside ema.* and optim.*
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

    def head_replaced(self, before: ViTConfig, after: ViTConfig) -> None:
        """Record ViT.reset_head: the file's head (and its representation layer, if the new config has none)
        dropped, a zero head for ``after.num_classes`` new."""
        drop_rep = before.representation_size is not None and after.representation_size is None
        for k in [k for k in self.loaded if k.startswith("head.") or (drop_rep and k.startswith("pre_logits."))]:
            self.dropped[k] = (f"head for {before.num_classes} classes replaced by one for {after.num_classes}"
                               if k.startswith("head.") else
                               "representation layer dropped for fine-tuning (keep_representation=True keeps it)")
            self.loaded.remove(k)
        if after.num_classes:
            self.new.update({"head.weight": "zero-initialised", "head.bias": "zero-initialised"})
        self.config = after

    def log(self) -> None:
        """The report at INFO on the ``minivit.checkpoints`` logger (ViT.from_pretrained calls it, last)."""
        log.info("%s", self)

    def resampled(self, before: ViTConfig, after: ViTConfig) -> None:
        """Record ViT.resize_image: the position embeddings resampled to another grid (resample_pos_embed)."""
        if after.grid != before.grid:
            self.notes.append(f"pos_embed resampled {before.grid} -> {after.grid} grid (bicubic, antialiased, float32)")
        self.config = after

    def __str__(self) -> str:
        config = self.config
        lines = [f"loaded {self.source} ({self.layout} layout): {len(self.loaded)} parameters from the file; "
                 f"dim={config.dim} depth={config.depth} heads={config.heads} mlp={config.mlp_dim} patch={config.patch_size} "
                 f"image={config.image_size} classes={config.num_classes} classifier={config.classifier} "
                 f"rep={config.representation_size} gelu={config.gelu} eps={config.norm_eps:g} stem={config.stem} in_chans={config.in_chans}"]
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
    """A local path as is; anything else through hub.resolve (manifest names, Hugging Face repo ids)."""
    from .hub import resolve  # lazy: the manifest and huggingface_hub only when a name needs them

    path = Path(str(source)).expanduser()
    return path if path.exists() else Path(resolve(str(source)))


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
        config, fields = layout.infer(tensors, layout, prefix, stated, where)
    except MinivitError:
        raise
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, OverflowError) as e:
        # a config value of the wrong type ("hidden_size": "big", "layer_norm_eps": null, a list
        # where a name belongs) or a tensor of an unexpected rank: one line naming the file
        detail = str(e).splitlines()[0] if str(e) else ""
        raise CheckpointError(f"{where}: bad config ({type(e).__name__}: {detail})") from None
    return Checkpoint(Path(path), tensors, layout, prefix, config, fields, aliases or {})


def _read_weights_file(path: Path) -> Checkpoint:
    tensors, meta = reading.read_safetensors(path) if path.suffix.lower() == ".safetensors" else reading.read_torch_bin(path)
    if CONFIG_KEY in meta:  # minivit's own: save_checkpoint's file, a run's best/last, or a resume file's model.*
        if any(k.startswith(RESUME_PREFIX) for k in tensors):
            tensors = {k[len(RESUME_PREFIX):]: t for k, t in tensors.items() if k.startswith(RESUME_PREFIX)}
        return _checkpoint(path, tensors, "minivit", meta, path)
    beside = path.parent / "config.json"
    if not beside.is_file():
        raise CheckpointError(f"{path}: has neither {CONFIG_KEY} metadata nor a config.json beside it, "
                              "so heads and the rest of the config cannot be known")
    return _checkpoint(path, tensors, "folder", reading.read_json(beside), path)


def read_checkpoint(source) -> Checkpoint:
    """Read any supported source (file, folder, manifest name, repo id) without building a model."""
    path = resolve_source(source)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise CheckpointError(f"{path}: folder has no config.json (expected a transformers or timm model folder)")
        tensors, _, _ = reading.read_weights_in_folder(path)
        return _checkpoint(path, tensors, "folder", reading.read_json(path / "config.json"), path)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        tensors, _ = reading.read_npz(path)
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
    config = ckpt.config
    for key, value in overrides.items():
        if key not in known:
            raise CheckpointError(f"{ckpt.path}: unknown option {key}={value!r} (not a ViTConfig field)")
        have = getattr(config, key)
        if value == have:
            continue
        if key in ckpt.stated:
            raise CheckpointError(f"{ckpt.path}: {key}={value!r} contradicts the checkpoint, which has {key}={have!r}")
        report_notes.append(f"override {key}={value!r} (the {ckpt.layout.name} default is {have!r})")
    try:
        return config.replace(**overrides)
    except ConfigError as e:
        raise CheckpointError(f"{ckpt.path}: {str(e).splitlines()[0]}") from None


def build_state(ckpt: Checkpoint, *, strict=True, **overrides) -> tuple[ViTConfig, dict, LoadReport]:
    """Map and check a checkpoint: (its config with ``overrides``, minivit state dict, report)."""
    notes: list[str] = []
    config = _apply_overrides(ckpt, overrides, notes)
    state, used, missing = to_minivit(ckpt.tensors, ckpt.layout, ckpt.prefix, config, where=ckpt.path)
    report = LoadReport(str(ckpt.path), ckpt.layout.name, config, notes=notes, missing=missing)
    file_name = lambda name: ckpt.aliases.get(name, name)  # noqa: E731
    report.unused = sorted({file_name(k) for k in ckpt.tensors} - {file_name(k) for k in used})
    report.loaded = sorted(state)
    if report.missing or report.unused:
        problem = "; ".join(filter(None, [
            f"{len(report.missing)} model parameter(s) not in the file: {', '.join(report.missing[:4])}" if report.missing else "",
            f"{len(report.unused)} file tensor(s) not used: {', '.join(report.unused[:4])}" if report.unused else ""]))
        if strict:
            raise CheckpointError(f"{ckpt.path}: {problem} (strict=False loads anyway)")
        log.warning("%s: %s", ckpt.path, problem)
        report.new.update({k: "not in the file: left at its initial value" for k in report.missing})
    return config, state, report


def load_state(source, *, strict: bool = True, **overrides) -> tuple[ViTConfig, dict, LoadReport]:
    """Read a checkpoint in any supported layout as it is: (its config, minivit state dict, LoadReport).

    ``overrides`` are ViTConfig fields the file does not state (dropout rates; an .npz's gelu and
    norm_eps); contradicting the file is an error. ``strict=False`` loads a file with tensors missing or
    unused, listing them in the report. A new head or another input size is the model's business:
    ``ViT.from_pretrained(source, num_classes=..., image_size=...)``.

    Example:
        >>> import os, tempfile
        >>> from minivit import ViT, ViTConfig
        >>> from minivit.checkpoints import save_checkpoint
        >>> m = ViT(ViTConfig(image_size=32, patch_size=8, dim=32, depth=1, heads=2, mlp_dim=64, num_classes=5))
        >>> path = os.path.join(tempfile.mkdtemp(), "tiny.safetensors")
        >>> save_checkpoint(m, path)
        >>> config, state, report = load_state(path, dropout=0.1)
        >>> config.num_classes, config.dropout, state["head.weight"].shape, report.layout
        (5, 0.1, torch.Size([5, 32]), 'minivit')
    """
    return build_state(read_checkpoint(source), strict=strict, **overrides)
