"""What each layout's files say about the model, read in and written out.

Every layout in ``layouts.LAYOUTS`` names two functions from here:

    infer   (tensors, layout, prefix, stated config, where) -> (ViTConfig, fields the file states)
            Google .npz: everything from tensor shapes, found through the layout's own table;
            transformers / timm: their config.json; minivit: the metadata.
    export  ViTConfig -> the config file the target library reads (None for an .npz, which has
            none); refuses, with a one-line CheckpointError, what the layout cannot express --
            by holds.py's table, the one rule for every writer.

Nothing here imports the model: the checkpoint layer maps tensors and configs only.

Example (the architecture name only names the size; model_args overrides its patch size, 16, with 4):
    >>> from minivit import ViTConfig
    >>> tc = timm_config(ViTConfig(image_size=48, patch_size=4, dim=192, depth=12, heads=3, mlp_dim=768, in_chans=1))
    >>> tc["architecture"], tc["model_args"]["patch_size"]
    ('vit_tiny_patch16_224', 4)
"""

from __future__ import annotations

import json
import math
import re

from ..common.errors import CheckpointError, ConfigError, MinivitError
from ..model.config import SIZES, TIMM_SIZE_NAMES, ViTConfig, config_from_name
from . import holds
from .holds import refuse

CONFIG_KEY = "minivit_config"  # safetensors metadata key holding ViTConfig.to_dict() as JSON
# Training hyper-parameters: no checkpoint states them, so overriding them is always allowed.
FREE_FIELDS = {"dropout", "attn_dropout", "drop_path"}


def make_config(fields: dict, where) -> ViTConfig:
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


def _pair(v, name, where) -> int | tuple[int, int]:
    if isinstance(v, (list, tuple)):
        if len(v) != 2:
            raise CheckpointError(f"{where}: {name}={v!r} is not an int or an (H, W) pair")
        return (int(v[0]), int(v[1]))
    return int(v)


def _square_patch(patch, where) -> int:
    if isinstance(patch, tuple):
        if patch[0] != patch[1]:
            raise CheckpointError(f"{where}: non-square patch_size={list(patch)} is not supported")
        return patch[0]
    return patch


# -- Google .npz (vit_jax, big_vision): the config is in the shapes --------------------------------


def _flax_classifier(tensors: dict, layout, p: str, token: bool, heads: int, where) -> str:
    """The classifier a flax npz implies: token with a `cls`, map with a MAPHead_0 (big_vision), else gap."""
    probe = layout.theirs("map_head.probe")
    if probe is None or p + probe not in tensors:
        if any("MAPHead_0/" in k for k in tensors):
            raise CheckpointError(f"{where}: has MAPHead_0 tensors but no {p}{probe}" if probe else
                                  f"{where}: has a MAP head, which minivit reads only in the big_vision layout "
                                  f"(this file is {layout.name})")
        return "token" if token else "gap"
    if token:
        raise CheckpointError(f"{where}: has both a cls token and a MAP head; big_vision pools with one or the other")
    map_heads = _shape(tensors, p + layout.theirs("map_head.q.weight"), 3, where)[1]
    if map_heads != heads:  # minivit's MAPHead uses the encoder's head count, as big_vision does
        raise CheckpointError(f"{where}: the MAP head has {map_heads} heads, the encoder {heads}; minivit needs them equal")
    return "map"


def infer_flax(tensors: dict, layout, prefix: str, stated: dict | None, where) -> tuple[ViTConfig, set]:
    """Everything from the shapes: kernel -> patch/in_chans/dim, (D, heads, hd) kernels -> heads, ..."""
    name = lambda ours, i=0: prefix + layout.theirs(ours, i)  # noqa: E731 - the file's name of a minivit tensor
    ph, pw, in_chans, dim = _shape(tensors, name("patch_embed.proj.weight"), 4, where)
    if ph != pw:
        raise CheckpointError(f"{where}: non-square patches {ph}x{pw} are not supported")
    query = name("blocks.{i}.attn.qkv.weight")  # block 0's query kernel (D, heads, hd)
    _, heads, _ = _shape(tensors, query, 3, where)
    block = re.escape(name("blocks.{i}.norm1.weight")).replace("_0/", r"_(\d+)/", 1)
    blocks = [int(m[1]) for k in tensors if (m := re.match(block, k))]
    if not blocks:
        raise CheckpointError(f"{where}: tensor {name('blocks.{i}.norm1.weight')} is missing (no encoder block found)")
    depth = 1 + max(blocks)
    mlp_dim = _shape(tensors, name("blocks.{i}.mlp.fc1.weight"), 2, where)[1]
    token = name("cls_token") in tensors
    classifier = _flax_classifier(tensors, layout, prefix, token, heads, where)
    n_pos = _shape(tensors, name("pos_embed"), 3, where)[1]
    grid = n_pos - (1 if token and layout.pos_has_cls_slot else 0)
    side = math.isqrt(grid)
    if side * side != grid:
        raise CheckpointError(f"{where}: the position embedding has {grid} grid positions, not a square grid; "
                              "cannot infer image_size")
    rep, head = name("pre_logits.weight"), name("head.weight")
    fields = dict(image_size=side * ph, patch_size=ph, in_chans=in_chans, dim=dim, depth=depth, heads=heads,
                  mlp_dim=mlp_dim, classifier=classifier, norm_after_pool=False, stem="patch",
                  representation_size=tensors[rep].shape[-1] if rep in tensors else None,
                  num_classes=tensors[head].shape[-1] if head in tensors else 0,
                  qkv_bias=prefix + layout.theirs("blocks.{i}.attn.qkv.bias") in tensors)
    # gelu and norm_eps are the producing code's conventions, not stored in the file: overridable.
    conventions = dict(gelu=layout.holds.gelu, norm_eps=layout.holds.norm_eps)
    return make_config(dict(fields, **conventions), where), set(fields)


def export_flax(layout_holds: holds.Holds):
    """An .npz has no config file (its shapes say it all): only what the layout cannot hold is refused."""
    def export(config: ViTConfig) -> None:
        refuse(layout_holds, config)
        return None

    return export


# -- transformers: config.json ---------------------------------------------------------------------

HF_ACTIVATIONS = {"gelu": "exact", "gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu_fast": "tanh"}


def infer_transformers(tensors: dict, layout, prefix: str, hf: dict, where) -> tuple[ViTConfig, set]:
    """transformers config.json -> ViTConfig (with transformers' own defaults where a key is absent)."""
    act = hf.get("hidden_act", "gelu")
    if act not in HF_ACTIVATIONS:
        raise CheckpointError(f"{where}: hidden_act={act!r} is not supported (expected one of {', '.join(HF_ACTIVATIONS)})")
    if hf.get("pooler_act", "tanh") != "tanh":
        raise CheckpointError(f"{where}: pooler_act={hf['pooler_act']!r} is not supported (only tanh)")
    pooler, head = prefix + layout.theirs("pre_logits.weight"), layout.full_name(layout.theirs("head.weight"), prefix)
    fields = dict(
        image_size=_pair(hf.get("image_size", 224), "image_size", where),
        patch_size=_square_patch(_pair(hf.get("patch_size", 16), "patch_size", where), where),
        in_chans=int(hf.get("num_channels", 3)), dim=int(hf.get("hidden_size", 768)),
        depth=int(hf.get("num_hidden_layers", 12)), heads=int(hf.get("num_attention_heads", 12)),
        mlp_dim=int(hf.get("intermediate_size", 3072)), classifier="token", norm_after_pool=False, stem="patch",
        # The tensors decide whether there is a head: ViTModel's config.json still lists 2 default labels.
        num_classes=tensors[head].shape[0] if head in tensors else 0,
        representation_size=tensors[pooler].shape[0] if pooler in tensors else None,
        norm_eps=float(hf.get("layer_norm_eps", 1e-12)),  # transformers' default, not Google's 1e-6
        qkv_bias=bool(hf.get("qkv_bias", True)), gelu=HF_ACTIVATIONS[act],
    )
    return make_config(fields, where), set(fields)


def transformers_config(config: ViTConfig) -> dict:
    """config.json for transformers' ViTForImageClassification (or ViTModel when headless)."""
    refuse(holds.TRANSFORMERS, config)
    labels = {str(i): f"LABEL_{i}" for i in range(config.num_classes)}
    return {
        "architectures": ["ViTForImageClassification" if config.num_classes else "ViTModel"], "model_type": "vit",
        "hidden_size": config.dim, "num_hidden_layers": config.depth, "num_attention_heads": config.heads,
        "intermediate_size": config.mlp_dim, "hidden_act": "gelu" if config.gelu == "exact" else "gelu_pytorch_tanh",
        "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, "initializer_range": 0.02,
        "layer_norm_eps": config.norm_eps, "image_size": config.image_size if isinstance(config.image_size, int) else list(config.image_size),
        "patch_size": config.patch_size, "num_channels": config.in_chans, "qkv_bias": config.qkv_bias,
        "encoder_stride": config.patch_size, "pooler_output_size": config.representation_size or config.dim, "pooler_act": "tanh",
        **({"id2label": labels, "label2id": {v: int(k) for k, v in labels.items()}} if config.num_classes else {}),
    }


def is_timm_config(cfg_json: dict) -> bool:
    """timm's save_for_hf writes `architecture` and `model_args`; transformers writes neither."""
    return "architecture" in cfg_json or "model_args" in cfg_json


# -- timm: config.json with architecture + model_args ----------------------------------------------

TIMM_FREE_ARGS = {"drop_rate", "pos_drop_rate", "proj_drop_rate", "attn_drop_rate", "drop_path_rate", "weight_init",
                  "dynamic_img_size", "dynamic_img_pad"}
TIMM_ACTIVATIONS = {None: "exact", "gelu": "exact", "gelu_tanh": "tanh"}
TIMM_POOLS = {"token": "token", "avg": "gap", "map": "map"}  # timm global_pool -> minivit classifier
TIMM_SIMPLE_ARGS = dict(img_size="image_size", patch_size="patch_size", in_chans="in_chans", embed_dim="dim",
                        depth="depth", num_heads="heads", qkv_bias="qkv_bias")
TIMM_READ_ARGS = {"mlp_ratio", "num_classes", "global_pool", "class_token", "fc_norm", "act_layer"}


def _timm_base(tc: dict, args: dict, where) -> dict:
    """The sizes of the architecture name, or a neutral base when model_args give every size."""
    try:
        return config_from_name(str(tc.get("architecture", ""))).to_dict()
    except ConfigError:
        # An architecture name minivit cannot size (e.g. a CLIP variant): model_args must give every size.
        needed = {"img_size", "patch_size", "embed_dim", "depth", "num_heads"} - set(args)
        if needed:
            raise CheckpointError(f"{where}: timm architecture {tc.get('architecture')!r} is unknown to minivit and "
                                  f"model_args lacks {', '.join(sorted(needed))}") from None
        return ViTConfig().to_dict()


def infer_timm(tensors: dict, layout, prefix: str, tc: dict, where) -> tuple[ViTConfig, set]:
    """timm's save_for_hf config.json: sizes from the architecture name, then model_args on top."""
    args = dict(tc.get("model_args") or {})
    base = _timm_base(tc, args, where)
    fields = dict(base, num_classes=int(tc.get("num_classes", base["num_classes"])))
    for key, value in args.items():
        if key in TIMM_SIMPLE_ARGS:
            fields[TIMM_SIMPLE_ARGS[key]] = _pair(value, key, where) if key in ("img_size", "patch_size") else value
    fields["patch_size"] = _square_patch(fields["patch_size"], where)
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
    fields.update(gelu=TIMM_ACTIVATIONS[act], norm_eps=layout.holds.norm_eps, representation_size=None, stem="patch")
    unsupported = [k for k, v in args.items() if k not in TIMM_SIMPLE_ARGS and k not in TIMM_FREE_ARGS
                   and k not in TIMM_READ_ARGS and v not in (None, False, 0, "")]
    if unsupported:
        raise CheckpointError(f"{where}: timm model_args not supported by minivit: {', '.join(sorted(unsupported))}")
    return make_config(fields, where), set(fields) - FREE_FIELDS


def timm_architecture(config: ViTConfig) -> str:
    """timm's name for the size (from config.SIZES; model_args carry the exact shape anyway)."""
    size = next((s for s, f in SIZES.items() if (f["dim"], f["depth"]) == (config.dim, config.depth)), "B")
    word = {v: k for k, v in TIMM_SIZE_NAMES.items()}[size]
    return f"vit_{word}_patch{16 if size != 'H' else 14}_224"


def timm_config(config: ViTConfig) -> dict:
    """config.json as timm.models.save_for_hf writes it (all sizes in model_args)."""
    refuse(holds.TIMM, config)
    h, w = config.image_hw
    pool = {v: k for k, v in TIMM_POOLS.items()}[config.classifier]
    args = dict(img_size=[h, w], patch_size=config.patch_size, embed_dim=config.dim, depth=config.depth, num_heads=config.heads,
                mlp_ratio=config.mlp_dim / config.dim, num_classes=config.num_classes, global_pool=pool,
                class_token=config.classifier == "token", in_chans=config.in_chans, qkv_bias=config.qkv_bias,
                fc_norm=config.norm_after_pool, **({"act_layer": "gelu_tanh"} if config.gelu == "tanh" else {}))
    return {"architecture": timm_architecture(config), "num_classes": config.num_classes,
            "num_features": config.dim, "global_pool": pool, "model_args": args,
            "pretrained_cfg": {"input_size": [config.in_chans, h, w], "fixed_input_size": True, "interpolation": "bicubic",
                               "mean": [0.5] * config.in_chans, "std": [0.5] * config.in_chans,
                               "num_classes": config.num_classes, "first_conv": "patch_embed.proj", "classifier": "head"}}


# -- minivit: the config as JSON in the safetensors metadata ---------------------------------------


def infer_minivit(tensors: dict, layout, prefix: str, meta: dict, where) -> tuple[ViTConfig, set]:
    try:
        d = json.loads(meta[CONFIG_KEY])
        config = ViTConfig.from_dict(d)
    except (ValueError, TypeError, KeyError, MinivitError) as e:
        raise CheckpointError(f"{where}: bad {CONFIG_KEY} metadata ({str(e).splitlines()[0]})") from None
    return config, set(d) - FREE_FIELDS


def minivit_config(config: ViTConfig) -> dict:
    """The metadata of minivit's .safetensors: every ViTConfig field, so nothing is inferred on load."""
    refuse(holds.MINIVIT, config)  # holds everything: here so that every writer follows the one table
    return {CONFIG_KEY: json.dumps(config.to_dict())}
