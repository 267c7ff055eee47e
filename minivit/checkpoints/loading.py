"""load_state: any supported checkpoint -> (ViTConfig, minivit state dict, a report of every tensor).

The steps, each a small function below:

    resolve the source        local file/folder, else hub.resolve (manifest name, HF repo id)
    read the tensors          reading.py (never unpickles; bad files -> one-line CheckpointError)
    detect the layout         the registry (layouts.LAYOUTS): the first layout of this kind of file
                              whose config file it claims and whose anchor tensor is in the file
    infer the config          the layout's own ``infer`` (configs.py): shapes, config.json or metadata
    apply overrides           contradicting what the file states -> CheckpointError
    map the tensors           the layout's table, forwards
    adapt                     new head for another num_classes, pos_embed resampled for another image_size
    report                    every file tensor used or reported, every parameter loaded or reported

``ViT.from_pretrained`` builds the model from the result and checks every shape: the checkpoint
layer never imports the model. Writing goes the other way, in writing.py.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..common.errors import CheckpointError, ConfigError, MinivitError
from ..model.config import ViTConfig
from ..model.pos_embed import resample_pos_embed
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


def _replace_head(state: dict, report: LoadReport, config: ViTConfig, num_classes: int, keep_representation: bool) -> ViTConfig:
    """Another number of classes, by the one rule of ViTConfig.with_new_head: the file's head (and its
    representation layer, unless keep_representation) is left out of the state, so the model built from
    the returned config starts them as ViT.reset_head does (a zero head)."""
    new = config.with_new_head(num_classes, keep_representation)
    drop_rep = config.representation_size is not None and new.representation_size is None
    for k in [k for k in state if k.startswith("head.") or (drop_rep and k.startswith("pre_logits."))]:
        report.dropped[k] = (f"head for {config.num_classes} classes replaced by one for {num_classes}" if k.startswith("head.")
                             else "representation layer dropped for fine-tuning (keep_representation=True keeps it)")
        del state[k]
    if num_classes:
        report.new.update({"head.weight": "zero-initialised", "head.bias": "zero-initialised"})
    return new


def _resample_to(state: dict, report: LoadReport, config: ViTConfig, image_size, where) -> ViTConfig:
    """Another image size: resample the position embeddings once, here, by minivit.model.pos_embed's one rule."""
    try:
        new = config.replace(image_size=image_size)
    except ConfigError:
        raise CheckpointError(f"{where}: image_size={image_size} is not a multiple of the checkpoint's patch size "
                              f"{config.patch_size} (or below it)") from None
    if new.grid != config.grid and "pos_embed" in state:
        expected = (1, config.num_tokens, config.dim)
        if tuple(state["pos_embed"].shape) != expected:
            raise CheckpointError(f"{where}: pos_embed has shape {tuple(state['pos_embed'].shape)} in the checkpoint "
                                  f"but the config needs {expected}")
        state["pos_embed"] = resample_pos_embed(state["pos_embed"], new.grid, config.grid, config.num_prefix_tokens)
        report.notes.append(f"pos_embed resampled {config.grid} -> {new.grid} grid (bicubic, antialiased, float32)")
    return new


def build_state(ckpt: Checkpoint, *, num_classes=None, image_size=None, strict=True, keep_representation=False,
                **overrides) -> tuple[ViTConfig, dict, LoadReport]:
    """Map, check and adapt a checkpoint: (final config, minivit state dict, report)."""
    notes: list[str] = []
    file_config = _apply_overrides(ckpt, overrides, notes)
    state, used, missing = to_minivit(ckpt.tensors, ckpt.layout, ckpt.prefix, file_config, where=ckpt.path)
    report = LoadReport(str(ckpt.path), ckpt.layout.name, file_config, notes=notes, missing=missing)
    file_name = lambda name: ckpt.aliases.get(name, name)  # noqa: E731
    report.unused = sorted({file_name(k) for k in ckpt.tensors} - {file_name(k) for k in used})
    config = file_config
    if num_classes is not None and num_classes != config.num_classes:
        config = _replace_head(state, report, config, num_classes, keep_representation)
    if image_size is not None:
        config = _resample_to(state, report, config, image_size, ckpt.path)
    report.config = config
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
        >>> from minivit.checkpoints import save_checkpoint
        >>> m = ViT(ViTConfig(image_size=32, patch_size=8, dim=32, depth=1, heads=2, mlp_dim=64, num_classes=5))
        >>> path = os.path.join(tempfile.mkdtemp(), "tiny.safetensors")
        >>> save_checkpoint(m, path)
        >>> config, state, report = load_state(path, num_classes=3)
        >>> config.num_classes, sorted(report.new), "head.weight" in state
        (3, ['head.bias', 'head.weight'], False)
    """
    ckpt = read_checkpoint(source)
    config, state, report = build_state(ckpt, num_classes=num_classes, image_size=image_size, strict=strict,
                                     keep_representation=keep_representation, **overrides)
    log.info("%s", report)
    return config, state, report
