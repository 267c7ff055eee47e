"""from_pretrained: any supported checkpoint -> a minivit ViT, with a report of every tensor.

The steps, each a small function below:

    resolve the source        local file/folder, else minivit.hub.resolve (manifest name, HF repo id)
    read the tensors          io.py (never unpickles; bad files -> one-line CheckpointError)
    detect the layout         layouts.py: the first table whose anchor name is in the file
    infer the config          from shapes (npz), config.json (transformers, timm), metadata (minivit)
    apply overrides           contradicting what the file states -> CheckpointError
    map the tensors           the layout's table, forwards
    adapt                     new head for another num_classes, pos_embed resampled for another image_size
    load and report           every file tensor used or reported, every parameter loaded or reported
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..config import ViTConfig, config_from_name
from ..errors import CheckpointError, ConfigError, MinivitError
from ..model import ViT, resample_pos_embed
from . import io
from .layouts import LAYOUTS, Layout, from_minivit, to_minivit

log = logging.getLogger("minivit.checkpoints")

CONFIG_KEY = "minivit_config"  # safetensors metadata key holding ViTConfig.to_dict() as JSON
NPZ_LAYOUTS = ("vit_jax", "big_vision")
TORCH_LAYOUTS = ("transformers", "transformers_v5", "timm")
# Training hyper-parameters: no checkpoint states them, so overriding them is always allowed.
FREE_FIELDS = {"dropout", "attn_dropout", "drop_path"}


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
                 f"rep={cfg.representation_size} gelu={cfg.gelu} eps={cfg.norm_eps:g}"]
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


# -- layout detection ----------------------------------------------------------------------------


def detect_layout(tensors: dict, names: tuple[str, ...], where) -> tuple[Layout, str]:
    """The first layout (and prefix) whose anchor tensor is in the file."""
    for name in names:
        layout = LAYOUTS[name]
        for prefix in sorted(layout.prefixes, key=len, reverse=True):
            if prefix + layout.anchor in tensors:
                return layout, prefix
    sample = ", ".join(sorted(tensors)[:3])
    raise CheckpointError(f"{where}: unknown checkpoint layout (expected one of {', '.join(names)}; first names: {sample})")


def unstack_scan(tensors: dict) -> tuple[dict, dict]:
    """big_vision's scan-over-layers checkpoints store `Transformer/encoderblock/...` with a
    leading depth axis; split them into `encoderblock_{i}` so one table serves both."""
    out, aliases = {}, {}
    for name, t in tensors.items():
        m = re.match(r"^(.*Transformer/)encoderblock/(.*)$", name)
        if not m:
            out[name] = t
            continue
        for i in range(t.shape[0]):
            derived = f"{m[1]}encoderblock_{i}/{m[2]}"
            out[derived], aliases[derived] = t[i], name
    return out, aliases


# -- config inference ----------------------------------------------------------------------------


def _square_grid(n: int, where, what: str) -> int:
    side = math.isqrt(n)
    if side * side != n:
        raise CheckpointError(f"{where}: {what} has {n} grid positions, not a square grid; cannot infer image_size")
    return side


def _make_config(fields: dict, where) -> ViTConfig:
    try:
        return ViTConfig(**fields)
    except (ConfigError, TypeError, ValueError) as e:
        raise CheckpointError(f"{where}: the checkpoint's configuration is invalid ({str(e).splitlines()[0]})") from None


def _shape(tensors: dict, name: str, ndim: int, where) -> tuple:
    if name not in tensors:
        raise CheckpointError(f"{where}: tensor {name} is missing")
    shape = tuple(tensors[name].shape)
    if len(shape) != ndim:
        raise CheckpointError(f"{where}: tensor {name} has shape {shape}, expected {ndim} dimensions")
    return shape


def _flax_classifier(tensors: dict, layout: Layout, p: str, token: bool, heads: int, where) -> str:
    """The classifier a flax npz implies: token with a `cls`, map with a MAPHead_0 (big_vision), else gap."""
    probe = next((r.theirs[0] for r in layout.rules if r.ours == "map_head.probe"), None)
    if probe is None or p + probe not in tensors:
        if any("MAPHead_0/" in k for k in tensors):
            raise CheckpointError(f"{where}: has MAPHead_0 tensors but no {p}{probe}" if probe else
                                  f"{where}: has a MAP head, which minivit reads only in the big_vision layout "
                                  f"(this file is {layout.name})")
        return "token" if token else "gap"
    if token:
        raise CheckpointError(f"{where}: has both a cls token and a MAP head; big_vision pools with one or the other")
    query = p + next(r.theirs[0] for r in layout.rules if r.ours == "map_head.q.weight")
    map_heads = _shape(tensors, query, 3, where)[1]
    if map_heads != heads:  # minivit's MAPHead uses the encoder's head count, as big_vision does
        raise CheckpointError(f"{where}: the MAP head has {map_heads} heads, the encoder {heads}; minivit needs them equal")
    return "map"


def infer_flax_config(tensors: dict, layout: Layout, prefix: str, where) -> tuple[ViTConfig, set]:
    """Everything from the shapes: kernel -> patch/in_chans/dim, (D, heads, hd) kernels -> heads, ..."""
    p = prefix
    rule = lambda ours: next(r for r in layout.rules if r.ours == ours)  # noqa: E731
    b0 = rule("blocks.{i}.attn.qkv.weight").theirs[0].format(i=0)  # block 0's query kernel (D, heads, hd)
    ph, pw, in_chans, dim = _shape(tensors, p + "embedding/kernel", 4, where)
    if ph != pw:
        raise CheckpointError(f"{where}: non-square patches {ph}x{pw} are not supported")
    _, heads, _ = _shape(tensors, p + b0, 3, where)
    depth = 1 + max(int(m[1]) for k in tensors if (m := re.match(re.escape(p) + r"Transformer/encoderblock_(\d+)/", k)))
    mlp_dim = _shape(tensors, p + rule("blocks.{i}.mlp.fc1.weight").theirs[0].format(i=0), 2, where)[1]
    token = p + "cls" in tensors
    classifier = _flax_classifier(tensors, layout, p, token, heads, where)
    n_pos = _shape(tensors, p + rule("pos_embed").theirs[0], 3, where)[1]
    side = _square_grid(n_pos - (1 if token and layout.pos_has_cls_slot else 0), where, "the position embedding")
    rep = tensors[p + "pre_logits/kernel"].shape[-1] if p + "pre_logits/kernel" in tensors else None
    classes = tensors[p + "head/kernel"].shape[-1] if p + "head/kernel" in tensors else 0
    fields = dict(image_size=side * ph, patch_size=ph, in_chans=in_chans, num_classes=classes, dim=dim, depth=depth,
                  heads=heads, mlp_dim=mlp_dim, classifier=classifier, norm_after_pool=False,
                  representation_size=rep, qkv_bias=p + b0.replace("/kernel", "/bias") in tensors)
    # gelu and norm_eps are the producing code's conventions, not stored in the file: overridable.
    return _make_config(dict(fields, gelu=layout.gelu, norm_eps=layout.norm_eps), where), set(fields)


HF_ACTIVATIONS = {"gelu": "exact", "gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu_fast": "tanh"}


def _pair(v, name, where) -> int | tuple[int, int]:
    if isinstance(v, (list, tuple)):
        if len(v) != 2:
            raise CheckpointError(f"{where}: {name}={v!r} is not an int or an (H, W) pair")
        return (int(v[0]), int(v[1]))
    return int(v)


def infer_hf_config(hf: dict, tensors: dict, layout: Layout, prefix: str, where) -> tuple[ViTConfig, set]:
    """transformers config.json -> ViTConfig (with transformers' own defaults where a key is absent)."""
    act = hf.get("hidden_act", "gelu")
    if act not in HF_ACTIVATIONS:
        raise CheckpointError(f"{where}: hidden_act={act!r} is not supported (expected one of {', '.join(HF_ACTIVATIONS)})")
    if hf.get("pooler_act", "tanh") != "tanh":
        raise CheckpointError(f"{where}: pooler_act={hf['pooler_act']!r} is not supported (only tanh)")
    patch = _pair(hf.get("patch_size", 16), "patch_size", where)
    if isinstance(patch, tuple):
        if patch[0] != patch[1]:
            raise CheckpointError(f"{where}: non-square patch_size={list(patch)} is not supported")
        patch = patch[0]
    pooler = prefix + "pooler.dense.weight"
    fields = dict(
        image_size=_pair(hf.get("image_size", 224), "image_size", where), patch_size=patch,
        in_chans=int(hf.get("num_channels", 3)), dim=int(hf.get("hidden_size", 768)),
        depth=int(hf.get("num_hidden_layers", 12)), heads=int(hf.get("num_attention_heads", 12)),
        mlp_dim=int(hf.get("intermediate_size", 3072)), classifier="token", norm_after_pool=False,
        # The tensors decide whether there is a head: ViTModel's config.json still lists 2 default labels.
        num_classes=tensors["classifier.weight"].shape[0] if "classifier.weight" in tensors else 0,
        representation_size=tensors[pooler].shape[0] if pooler in tensors else None,
        norm_eps=float(hf.get("layer_norm_eps", 1e-12)),  # transformers' default, not Google's 1e-6
        qkv_bias=bool(hf.get("qkv_bias", True)), gelu=HF_ACTIVATIONS[act],
    )
    return _make_config(fields, where), set(fields)


TIMM_FREE_ARGS = {"drop_rate", "pos_drop_rate", "proj_drop_rate", "attn_drop_rate", "drop_path_rate", "weight_init",
                  "dynamic_img_size", "dynamic_img_pad"}
TIMM_ACTIVATIONS = {None: "exact", "gelu": "exact", "gelu_tanh": "tanh"}
TIMM_POOLS = {"token": "token", "avg": "gap", "map": "map"}  # timm global_pool -> minivit classifier


def infer_timm_config(tc: dict, tensors: dict, where) -> tuple[ViTConfig, set]:
    """timm's save_for_hf config.json: sizes from the architecture name, then model_args on top."""
    args = dict(tc.get("model_args") or {})
    try:
        base = config_from_name(str(tc.get("architecture", ""))).to_dict()
    except ConfigError:
        # An architecture name minivit cannot size (e.g. a CLIP variant): model_args must give every size.
        needed = {"img_size", "patch_size", "embed_dim", "depth", "num_heads"} - set(args)
        if needed:
            raise CheckpointError(f"{where}: timm architecture {tc.get('architecture')!r} is unknown to minivit and "
                                  f"model_args lacks {', '.join(sorted(needed))}") from None
        base = ViTConfig().to_dict()
    simple = dict(img_size="image_size", patch_size="patch_size", in_chans="in_chans", embed_dim="dim", depth="depth",
                  num_heads="heads", qkv_bias="qkv_bias")
    fields = dict(base, num_classes=int(tc.get("num_classes", base["num_classes"])))
    for key, value in args.items():
        if key in simple:
            fields[simple[key]] = _pair(value, key, where) if key in ("img_size", "patch_size") else value
    if isinstance(fields["patch_size"], tuple):
        if fields["patch_size"][0] != fields["patch_size"][1]:
            raise CheckpointError(f"{where}: non-square patch_size is not supported")
        fields["patch_size"] = fields["patch_size"][0]
    if "embed_dim" in args or "mlp_ratio" in args:
        fields["mlp_dim"] = int(fields["dim"] * float(args.get("mlp_ratio", 4.0)))
    fields["num_classes"] = int(args.get("num_classes", fields["num_classes"]))
    pool = args.get("global_pool", tc.get("global_pool", "token"))
    class_token = bool(args.get("class_token", True))
    if pool not in TIMM_POOLS or (pool == "token") != class_token:
        raise CheckpointError(f"{where}: timm global_pool={pool!r} with class_token={class_token} is not supported "
                              "(supported: 'token' with a class token, 'avg' or 'map' without)")
    fields["classifier"] = TIMM_POOLS[pool]
    fc_norm = args.get("fc_norm")
    fields["norm_after_pool"] = bool(pool == "avg" if fc_norm is None else fc_norm)
    act = args.get("act_layer")
    if act not in TIMM_ACTIVATIONS:
        raise CheckpointError(f"{where}: timm act_layer={act!r} is not supported")
    fields.update(gelu=TIMM_ACTIVATIONS[act], norm_eps=1e-6, representation_size=None)
    unsupported = [k for k, v in args.items() if k not in simple and k not in TIMM_FREE_ARGS and k not in
                   ("mlp_ratio", "num_classes", "global_pool", "class_token", "fc_norm", "act_layer")
                   and v not in (None, False, 0, "")]
    if unsupported:
        raise CheckpointError(f"{where}: timm model_args not supported by minivit: {', '.join(sorted(unsupported))}")
    return _make_config(fields, where), set(fields) - FREE_FIELDS


def infer_minivit_config(meta: dict, where) -> tuple[ViTConfig, set]:
    try:
        d = json.loads(meta[CONFIG_KEY])
        cfg = ViTConfig.from_dict(d)
    except (ValueError, TypeError, MinivitError) as e:
        raise CheckpointError(f"{where}: bad {CONFIG_KEY} metadata ({str(e).splitlines()[0]})") from None
    return cfg, set(d) - FREE_FIELDS


# -- reading a source into a Checkpoint ---------------------------------------------------------


def _torch_checkpoint(path, tensors, cfg_json, where) -> Checkpoint:
    if cfg_json is None:
        raise CheckpointError(f"{where}: has neither {CONFIG_KEY} metadata nor a config.json beside it, "
                              "so heads and the rest of the config cannot be known")
    timm = "architecture" in cfg_json or "model_args" in cfg_json
    layout, prefix = detect_layout(tensors, ("timm",) if timm else ("transformers", "transformers_v5"), where)
    if timm:
        cfg, stated = infer_timm_config(cfg_json, tensors, where)
    else:
        cfg, stated = infer_hf_config(cfg_json, tensors, layout, prefix, where)
    return Checkpoint(path, tensors, layout, prefix, cfg, stated)


def read_checkpoint(source) -> Checkpoint:
    """Read any supported source (file, folder, manifest name, repo id) without building a model."""
    path = resolve_source(source)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise CheckpointError(f"{path}: folder has no config.json (expected a transformers or timm model folder)")
        tensors, meta, _ = io.read_weights_in_folder(path)
        return _torch_checkpoint(path, tensors, io.read_json(path / "config.json"), path)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        tensors, _ = io.read_npz(path)
        tensors, aliases = unstack_scan(tensors)
        layout, prefix = detect_layout(tensors, NPZ_LAYOUTS, path)
        cfg, stated = infer_flax_config(tensors, layout, prefix, path)
        return Checkpoint(path, tensors, layout, prefix, cfg, stated, aliases)
    if suffix in (".safetensors", ".bin", ".pt", ".pth"):
        tensors, meta = io.read_safetensors(path) if suffix == ".safetensors" else io.read_torch_bin(path)
        if CONFIG_KEY in meta:
            cfg, stated = infer_minivit_config(meta, path)
            layout, prefix = detect_layout(tensors, ("minivit",), path)
            return Checkpoint(path, tensors, layout, prefix, cfg, stated)
        beside = path.parent / "config.json"
        return _torch_checkpoint(path, tensors, io.read_json(beside) if beside.is_file() else None, path)
    raise CheckpointError(f"{path}: unknown checkpoint type {suffix or '(no suffix)'!r} "
                          "(expected .npz, .safetensors, .bin or a model folder)")


# -- overrides, adaptation, loading --------------------------------------------------------------


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


def _expected_shapes(cfg: ViTConfig) -> dict:
    """Parameter shapes of a model with this config, without allocating it."""
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in ViT(cfg).state_dict().items()}


def build_state(ckpt: Checkpoint, *, num_classes=None, image_size=None, strict=True, keep_representation=False,
                **overrides) -> tuple[ViTConfig, dict, LoadReport]:
    """Map, check and adapt a checkpoint: (final config, minivit state dict, report)."""
    notes: list[str] = []
    file_cfg = _apply_overrides(ckpt, overrides, notes)
    shapes = _expected_shapes(file_cfg)
    state, used, missing = to_minivit(ckpt.tensors, ckpt.layout, ckpt.prefix, file_cfg, shapes, where=ckpt.path)
    for k, t in state.items():
        if tuple(t.shape) != shapes[k]:
            raise CheckpointError(f"{ckpt.path}: {k} has shape {tuple(t.shape)} in the checkpoint but the config "
                                  f"needs {shapes[k]}")
    cfg = file_cfg
    report = LoadReport(str(ckpt.path), ckpt.layout.name, cfg, notes=notes)
    file_name = lambda name: ckpt.aliases.get(name, name)  # noqa: E731
    unused = sorted({file_name(k) for k in ckpt.tensors} - {file_name(k) for k in used})

    # Another number of classes: a new zero head; the representation layer goes too (ViT paper fine-tuning).
    if num_classes is not None and num_classes != cfg.num_classes:
        drop_rep = not keep_representation and cfg.representation_size is not None
        cfg = cfg.replace(num_classes=num_classes, representation_size=None if drop_rep else cfg.representation_size)
        for k in [k for k in state if k.startswith("head.") or (drop_rep and k.startswith("pre_logits."))]:
            why = (f"head for {file_cfg.num_classes} classes replaced by one for {num_classes}" if k.startswith("head.")
                   else "representation layer dropped for fine-tuning (keep_representation=True keeps it)")
            report.dropped[k] = why
            del state[k]
        if num_classes:
            report.new.update({"head.weight": "zero-initialised", "head.bias": "zero-initialised"})
    # Another image size: resample the position embeddings once, here.
    if image_size is not None:
        try:
            cfg = cfg.replace(image_size=image_size)
        except ConfigError as e:
            raise CheckpointError(f"{ckpt.path}: {str(e).splitlines()[0]}") from None
        if cfg.grid != file_cfg.grid and "pos_embed" in state:
            mode, antialias = ckpt.layout.resample
            state["pos_embed"] = resample_pos_embed(state["pos_embed"], cfg.grid, file_cfg.grid, cfg.num_prefix_tokens,
                                                    mode=mode, antialias=antialias)
            notes.append(f"pos_embed resampled {file_cfg.grid} -> {cfg.grid} grid ({mode}, antialias={antialias})")
    report.config = cfg
    report.loaded = sorted(state)
    report.unused = unused
    report.missing = missing
    if report.missing or report.unused:
        problem = "; ".join(filter(None, [
            f"{len(report.missing)} model parameter(s) not in the file: {', '.join(report.missing[:4])}" if report.missing else "",
            f"{len(report.unused)} file tensor(s) not used: {', '.join(report.unused[:4])}" if report.unused else ""]))
        if strict:
            raise CheckpointError(f"{ckpt.path}: {problem} (strict=False loads anyway)")
        log.warning("%s: %s", ckpt.path, problem)
        report.new.update({k: "not in the file: left at its initial value" for k in report.missing})
    return cfg, state, report


def load_into_model(cfg: ViTConfig, state: dict, report: LoadReport) -> ViT:
    model = ViT(cfg)
    target = model.state_dict()
    with torch.no_grad():
        for k, t in state.items():
            target[k].copy_(t)  # copy_ casts float16/float64 checkpoints to the model's dtype
    model.eval()
    model.load_report = report
    log.info("%s", report)
    return model


def from_pretrained(source, num_classes: int | None = None, image_size=None, strict: bool = True,
                    keep_representation: bool = False, **overrides) -> ViT:
    """Load a checkpoint in any supported layout; the model is returned in eval mode.

    ``source``: a Google ``.npz`` (vit_jax / AugReg / big_vision), a ``.safetensors`` file
    (minivit's own, or timm/transformers weights with a config.json beside), a transformers or
    timm model folder, a manifest name (``"ViT-B_16"``) or a Hugging Face repo id.
    ``num_classes`` other than the checkpoint's: new zero head (and no representation layer
    unless ``keep_representation``). ``image_size`` other than the checkpoint's: position
    embeddings resampled once. ``overrides``: ViTConfig fields; contradicting the file is an error.
    What was loaded is in ``model.load_report`` (also logged).

    Example:
        >>> import tempfile, os, torch
        >>> from minivit import ViT, ViTConfig
        >>> from minivit.checkpoints import save_checkpoint, from_pretrained
        >>> m = ViT(ViTConfig(image_size=32, patch_size=8, dim=32, depth=1, heads=2, mlp_dim=64, num_classes=5))
        >>> path = os.path.join(tempfile.mkdtemp(), "tiny.safetensors")
        >>> save_checkpoint(m, path)
        >>> m2 = from_pretrained(path, num_classes=3)
        >>> m2.config.num_classes, sorted(m2.load_report.new)
        (3, ['head.bias', 'head.weight'])
    """
    ckpt = read_checkpoint(source)
    cfg, state, report = build_state(ckpt, num_classes=num_classes, image_size=image_size, strict=strict,
                                     keep_representation=keep_representation, **overrides)
    return load_into_model(cfg, state, report)


# -- the transformers parity helper for tests/test_model.py --------------------------------------


def convert_transformers_state_dict(state_dict: dict, config) -> tuple[ViTConfig, dict]:
    """A transformers ViT state dict + its config -> (ViTConfig, minivit state dict).

    Works with on-disk names and with transformers 5's in-memory names, with or without the
    ``vit.`` prefix; ``config`` is a transformers ViTConfig or its dict.

    Example:
        >>> import transformers  # doctest: +SKIP
        >>> hf = transformers.ViTForImageClassification(transformers.ViTConfig(hidden_size=32, num_hidden_layers=1,
        ...     num_attention_heads=2, intermediate_size=64, image_size=16, patch_size=8))  # doctest: +SKIP
        >>> cfg, sd = convert_transformers_state_dict(hf.state_dict(), hf.config)  # doctest: +SKIP
        >>> ViT(cfg).load_state_dict(sd)  # doctest: +SKIP
    """
    hf = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    tensors = {k: v.detach() for k, v in state_dict.items()}
    ckpt = _torch_checkpoint(Path("<state_dict>"), tensors, hf, "<transformers state dict>")
    cfg, state, _ = build_state(ckpt)
    return cfg, state


# -- writing -------------------------------------------------------------------------------------


def save_checkpoint(model: ViT, path) -> None:
    """minivit's own format: a .safetensors with ViTConfig.to_dict() as JSON in metadata "minivit_config".

    Example:
        >>> import tempfile, os
        >>> from minivit import ViT, ViTConfig
        >>> m = ViT(ViTConfig(image_size=16, patch_size=8, dim=16, depth=1, heads=2, mlp_dim=32, num_classes=2))
        >>> save_checkpoint(m, os.path.join(tempfile.mkdtemp(), "m.safetensors"))
    """
    io.write_safetensors(model.state_dict(), path, {CONFIG_KEY: json.dumps(model.config.to_dict())})


def export_tensors(model: ViT, layout: str, prefix: str = "") -> dict:
    """The model's weights named and shaped as in another layout (the table read backwards)."""
    return from_minivit(model.state_dict(), LAYOUTS[layout], model.config, prefix)


def _cannot(layout: str, why: str):
    raise CheckpointError(f"cannot export to {layout}: {why}")


def transformers_config(cfg: ViTConfig) -> dict:
    """config.json for transformers' ViTForImageClassification (or ViTModel when headless)."""
    if cfg.classifier != "token" or cfg.norm_after_pool:
        _cannot("transformers", "transformers' ViT only pools the CLS token after the final norm")
    if cfg.num_classes and cfg.representation_size:
        _cannot("transformers", "ViTForImageClassification has no representation layer before the head "
                "(pass --num-classes to replace the head, or use --to minivit)")
    labels = {str(i): f"LABEL_{i}" for i in range(cfg.num_classes)}
    return {
        "architectures": ["ViTForImageClassification" if cfg.num_classes else "ViTModel"], "model_type": "vit",
        "hidden_size": cfg.dim, "num_hidden_layers": cfg.depth, "num_attention_heads": cfg.heads,
        "intermediate_size": cfg.mlp_dim, "hidden_act": "gelu" if cfg.gelu == "exact" else "gelu_pytorch_tanh",
        "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, "initializer_range": 0.02,
        "layer_norm_eps": cfg.norm_eps, "image_size": cfg.image_size if isinstance(cfg.image_size, int) else list(cfg.image_size),
        "patch_size": cfg.patch_size, "num_channels": cfg.in_chans, "qkv_bias": cfg.qkv_bias,
        "encoder_stride": cfg.patch_size, "pooler_output_size": cfg.representation_size or cfg.dim, "pooler_act": "tanh",
        **({"id2label": labels, "label2id": {v: int(k) for k, v in labels.items()}} if cfg.num_classes else {}),
    }


TIMM_ARCH = {(192, 12): "vit_tiny_patch16_224", (384, 12): "vit_small_patch16_224", (768, 12): "vit_base_patch16_224",
             (1024, 24): "vit_large_patch16_224", (1280, 32): "vit_huge_patch14_224"}


def timm_config(cfg: ViTConfig) -> dict:
    """config.json as timm.models.save_for_hf writes it (all sizes in model_args)."""
    if cfg.representation_size:
        _cannot("timm", "timm's VisionTransformer has no representation (pre_logits) layer")
    if cfg.norm_eps != 1e-6:
        _cannot("timm", f"timm's ViT uses LayerNorm eps 1e-6, this model {cfg.norm_eps:g}")
    h, w = cfg.image_hw
    pool = {v: k for k, v in TIMM_POOLS.items()}[cfg.classifier]
    args = dict(img_size=[h, w], patch_size=cfg.patch_size, embed_dim=cfg.dim, depth=cfg.depth, num_heads=cfg.heads,
                mlp_ratio=cfg.mlp_dim / cfg.dim, num_classes=cfg.num_classes, global_pool=pool,
                class_token=cfg.classifier == "token", in_chans=cfg.in_chans, qkv_bias=cfg.qkv_bias,
                fc_norm=cfg.norm_after_pool, **({"act_layer": "gelu_tanh"} if cfg.gelu == "tanh" else {}))
    return {"architecture": TIMM_ARCH.get((cfg.dim, cfg.depth), "vit_base_patch16_224"), "num_classes": cfg.num_classes,
            "num_features": cfg.dim, "global_pool": pool, "model_args": args,
            "pretrained_cfg": {"input_size": [cfg.in_chans, h, w], "fixed_input_size": True, "interpolation": "bicubic",
                               "mean": [0.5] * 3, "std": [0.5] * 3, "num_classes": cfg.num_classes,
                               "first_conv": "patch_embed.proj", "classifier": "head"}}


def save_folder(model: ViT, folder, to: str) -> Path:
    """A transformers or timm model folder (config.json + model.safetensors) those libraries load."""
    folder = Path(folder)
    if to == "transformers":
        config = transformers_config(model.config)
        tensors = export_tensors(model, "transformers", "vit." if model.config.num_classes else "")
    elif to == "timm":
        config, tensors = timm_config(model.config), export_tensors(model, "timm")
    else:
        raise CheckpointError(f"unknown export target {to!r} (expected transformers or timm)")
    io.write_safetensors(tensors, folder / "model.safetensors")
    io.write_json(config, folder / "config.json")
    return folder / "model.safetensors"


def save_npz(model: ViT, path, layout: str = "vit_jax", prefix: str = "") -> None:
    """A Google-layout .npz (vit_jax or big_vision names) of this model."""
    io.write_npz(export_tensors(model, layout, prefix), path)
