"""Checkpoint layouts as data: the registry ``LAYOUTS``, one table of key mappings per layout.

Each row of a table says where one minivit tensor lives in another layout and how the
tensor is transformed on the way:

    Rule("blocks.{i}.attn.qkv.weight",                                   # minivit name
         ("Transformer/encoderblock_{i}/MultiHeadDotProductAttention_1/query/kernel", ...key, ...value),
         "flax_qkv")                                                     # transform

``to_minivit`` reads a table left to right (loading), ``from_minivit`` right to left
(exporting). A transform is a pair of functions, forward and inverse, so the loader and
the converter cannot disagree. ``when`` names the condition on the config under which a
row applies (a CLS token, a head, a representation layer, a MAP head, ...).

Each ``Layout`` also owns how it is recognised (the kind of file, its config file, an
anchor tensor), how its config is read (``infer``, from configs.py), what config file
it is written with (``export``) and what a model written in it can have (``holds``, from
holds.py: the conventions its files imply and the settings it refuses). Everything else --
the loader's detection, the converter's ``--to`` choices, the error messages, the docs --
is derived from ``LAYOUTS``: adding a layout is one entry plus its tables.

Example:
    >>> from minivit.checkpoints.layouts import LAYOUTS
    >>> rule = LAYOUTS["vit_jax"].rules[0]
    >>> rule.ours, rule.theirs, rule.kind
    ('patch_embed.proj.weight', ('embedding/kernel',), 'conv')
    >>> [name for name, layout in LAYOUTS.items() if layout.writable]
    ['vit_jax', 'big_vision', 'transformers', 'timm', 'minivit']
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..common.errors import CheckpointError
from ..model.config import ViTConfig
from . import configs, holds
from .holds import Holds, refuse

# -- transforms: (forward: their tensors -> ours, inverse: ours -> their tensors) ---------------


def _flax_heads_in(ts, config):
    # flax DenseGeneral kernels (D, heads, hd) -> one torch Linear weight, rows [q; k; v] (or [k; v], or q).
    return torch.cat([t.reshape(t.shape[0], -1).T for t in ts], dim=0)  # (n*D, D)


def _flax_heads_in_inv(n):
    def inverse(t, config):
        return [w.T.reshape(config.dim, config.heads, config.dim // config.heads) for w in t.chunk(n, dim=0)]  # n x (D, h, hd)
    return inverse


def _flax_heads_bias(ts, config):
    return torch.cat([t.reshape(-1) for t in ts])  # (n*D,)


def _flax_heads_bias_inv(n):
    def inverse(t, config):
        return [b.reshape(config.heads, config.dim // config.heads) for b in t.chunk(n)]  # n x (h, hd)
    return inverse


def _flax_out(ts, config):
    (t,) = ts  # (heads, hd, D): the heads are merged on the input side
    return t.reshape(-1, t.shape[-1]).T  # (D, D) as torch (out, in)


def _flax_out_inv(t, config):
    return [t.T.reshape(config.heads, config.dim // config.heads, config.dim)]  # (h, hd, D)


def _posemb_cls_slot(ts, config):
    # big_vision adds pos_embedding to the patches and only then prepends the CLS token, so
    # the CLS token has no position embedding: a zero slot in minivit's pos_embed is the same.
    (t,) = ts  # (1, N, D)
    return torch.cat([t.new_zeros(1, 1, t.shape[-1]), t], dim=1)  # (1, 1 + N, D)


def _posemb_cls_slot_inv(t, config):
    if t[:, 0].abs().max() > 0:
        raise CheckpointError("big_vision layout has no position embedding for the CLS token, but pos_embed[:, 0] is not zero")
    return [t[:, 1:]]  # (1, N, D)


# name -> (forward, inverse, one-line description for the docs)
TRANSFORMS: dict[str, tuple[Callable, Callable, str]] = {
    "copy": (lambda ts, config: ts[0], lambda t, config: [t], "unchanged"),
    "dense": (lambda ts, config: ts[0].T, lambda t, config: [t.T], "flax Dense kernel (in, out) -> torch Linear weight (out, in): transpose"),
    "conv": (lambda ts, config: ts[0].permute(3, 2, 0, 1), lambda t, config: [t.permute(2, 3, 1, 0)],
             "flax Conv kernel HWIO (p, p, C, D) -> torch OIHW (D, C, p, p)"),
    "flax_qkv": (_flax_heads_in, _flax_heads_in_inv(3),
                 "3 x (D, heads, hd) -> reshape (D, D), transpose, concat rows [q; k; v] -> (3D, D)"),
    "flax_qkv_bias": (_flax_heads_bias, _flax_heads_bias_inv(3), "3 x (heads, hd) -> flatten, concat -> (3D,)"),
    "flax_kv": (_flax_heads_in, _flax_heads_in_inv(2),
                "2 x (D, heads, hd) -> reshape (D, D), transpose, concat rows [k; v] -> (2D, D)"),
    "flax_kv_bias": (_flax_heads_bias, _flax_heads_bias_inv(2), "2 x (heads, hd) -> flatten, concat -> (2D,)"),
    "flax_q": (_flax_heads_in, _flax_heads_in_inv(1), "(D, heads, hd) -> reshape (D, D), transpose"),
    "flax_q_bias": (_flax_heads_bias, _flax_heads_bias_inv(1), "(heads, hd) -> flatten -> (D,)"),
    "flax_out": (_flax_out, _flax_out_inv, "(heads, hd, D) -> reshape (D, D), transpose"),
    "cat": (lambda ts, config: torch.cat(ts, dim=0), lambda t, config: list(t.chunk(3, dim=0)),
            "3 separate q, k, v Linear -> concat along the output dim [q; k; v]"),
    "posemb_cls_slot": (_posemb_cls_slot, _posemb_cls_slot_inv, "(1, N, D) -> prepend a zero CLS slot -> (1, 1 + N, D)"),
}

# `when` conditions: the parts a config has, and which of two rows filling the same parameter applies.
CONDITIONS: dict[str, Callable[[ViTConfig], bool]] = {
    "token": lambda c: c.classifier == "token",  # a CLS token
    "no_token": lambda c: c.classifier != "token",  # gap or map: no CLS token
    "map": lambda c: c.classifier == "map",  # a MAP head
    "rep": lambda c: bool(c.representation_size),  # a representation layer (pre_logits)
    "head": lambda c: bool(c.num_classes),  # a classifier head
    "fc_norm": lambda c: c.norm_after_pool,
    "final_norm": lambda c: not c.norm_after_pool,
    "conv_stem": lambda c: c.stem == "conv",
    "qkv_bias": lambda c: c.qkv_bias,
}


@dataclass(frozen=True)
class Rule:
    ours: str  # minivit state-dict name; "{i}" = block index, "{j}" = conv stem layer index
    theirs: tuple[str, ...]  # name(s) in the other layout, without its prefix
    kind: str = "copy"  # key of TRANSFORMS
    when: str | None = None  # key of CONDITIONS, or None: always


@dataclass(frozen=True)
class Layout:
    name: str
    description: str
    rules: tuple[Rule, ...]
    kind: str  # "npz", "folder" (config.json + weights) or "minivit" (.safetensors with the config inside)
    infer: Callable  # (tensors, layout, prefix, config json / metadata, where) -> (ViTConfig, stated fields)
    export: Callable | None  # ViTConfig -> config file dict (None for npz); raises what it cannot express
    anchor: str  # a name (without prefix) present in every file of this layout
    prefixes: tuple[str, ...] = ("",)  # tried longest first; the first that finds `anchor` wins
    unprefixed: tuple[str, ...] = ()  # names that sit at the root even when the body has a prefix
    claims: Callable[[dict], bool] = lambda cfg_json: True  # folder layouts: does this config.json belong to it?
    export_prefix: Callable[[ViTConfig], str] = lambda config: ""
    writable: bool = True  # False: read only (an in-memory naming that is never written to disk)
    # What a model written in this layout can have, and the GELU / LayerNorm eps its files imply
    # (holds.py: one table for export, the converter and the docs). None: read only, never written.
    holds: Holds | None = None
    pos_has_cls_slot: bool = True  # does the stored pos_embed include the CLS slot?

    def theirs(self, ours: str, i: int = 0) -> str | None:
        """This layout's (first) name, without prefix, for a minivit name: ``theirs("cls_token") == "cls"``."""
        rule = next((r for r in self.rules if r.ours == ours), None)
        return None if rule is None else rule.theirs[0].format(i=i, j=i)

    def full_name(self, name: str, prefix: str) -> str:
        return name if name.startswith(self.unprefixed) else prefix + name

    def check_expressible(self, config: ViTConfig, state: dict | None = None) -> dict | None:
        """One-line CheckpointError for a model (config, and state dict if given) this layout cannot
        hold (holds.py); else its config file (None for an .npz)."""
        if self.holds is not None:
            refuse(self.holds, config, state)
        return self.export(config) if self.export else None


def row(ours: str, theirs: str | tuple[str, ...], kind: str = "copy", when: str | None = None) -> Rule:
    """One row of a table: a Rule, with a single name in the other layout written as a plain string."""
    return Rule(ours, (theirs,) if isinstance(theirs, str) else tuple(theirs), kind, when)


def _flax_rules(block: str, ln1: str, attn: str, ln2: str, mlp: str, pos: tuple[Rule, ...],
                pool: tuple[Rule, ...] = ()) -> tuple[Rule, ...]:
    b = f"{block}/"
    qkv = lambda leaf: tuple(f"{b}{attn}/{x}/{leaf}" for x in ("query", "key", "value"))  # noqa: E731
    return (
        row("patch_embed.proj.weight", "embedding/kernel", "conv"),
        row("patch_embed.proj.bias", "embedding/bias"),
        row("cls_token", "cls", when="token"),
        *pos,
        row("blocks.{i}.norm1.weight", f"{b}{ln1}/scale"),
        row("blocks.{i}.norm1.bias", f"{b}{ln1}/bias"),
        row("blocks.{i}.attn.qkv.weight", qkv("kernel"), "flax_qkv"),
        row("blocks.{i}.attn.qkv.bias", qkv("bias"), "flax_qkv_bias", when="qkv_bias"),
        row("blocks.{i}.attn.proj.weight", f"{b}{attn}/out/kernel", "flax_out"),
        row("blocks.{i}.attn.proj.bias", f"{b}{attn}/out/bias"),
        row("blocks.{i}.norm2.weight", f"{b}{ln2}/scale"),
        row("blocks.{i}.norm2.bias", f"{b}{ln2}/bias"),
        row("blocks.{i}.mlp.fc1.weight", f"{b}{mlp}/Dense_0/kernel", "dense"),
        row("blocks.{i}.mlp.fc1.bias", f"{b}{mlp}/Dense_0/bias"),
        row("blocks.{i}.mlp.fc2.weight", f"{b}{mlp}/Dense_1/kernel", "dense"),
        row("blocks.{i}.mlp.fc2.bias", f"{b}{mlp}/Dense_1/bias"),
        row("norm.weight", "Transformer/encoder_norm/scale"),
        row("norm.bias", "Transformer/encoder_norm/bias"),
        *pool,
        row("pre_logits.weight", "pre_logits/kernel", "dense", when="rep"),
        row("pre_logits.bias", "pre_logits/bias", when="rep"),
        row("head.weight", "head/kernel", "dense", when="head"),
        row("head.bias", "head/bias", when="head"),
    )


def _torch_rules(embed: dict[str, str], block: str, names: dict[str, str], final: tuple[Rule, ...]) -> tuple[Rule, ...]:
    b = f"{block}."
    qkv = lambda leaf: tuple(f"{b}{names[x]}.{leaf}" for x in ("q", "k", "v"))  # noqa: E731
    fused = "q" not in names  # timm: one qkv Linear already
    return (
        row("patch_embed.proj.weight", f"{embed['patch']}.weight"),
        row("patch_embed.proj.bias", f"{embed['patch']}.bias"),
        row("cls_token", embed["cls"], when="token"),
        row("pos_embed", embed["pos"]),
        row("blocks.{i}.norm1.weight", f"{b}{names['norm1']}.weight"),
        row("blocks.{i}.norm1.bias", f"{b}{names['norm1']}.bias"),
        row("blocks.{i}.attn.qkv.weight", f"{b}{names['qkv']}.weight") if fused else row("blocks.{i}.attn.qkv.weight", qkv("weight"), "cat"),
        row("blocks.{i}.attn.qkv.bias", f"{b}{names['qkv']}.bias", when="qkv_bias") if fused
        else row("blocks.{i}.attn.qkv.bias", qkv("bias"), "cat", when="qkv_bias"),
        row("blocks.{i}.attn.proj.weight", f"{b}{names['proj']}.weight"),
        row("blocks.{i}.attn.proj.bias", f"{b}{names['proj']}.bias"),
        row("blocks.{i}.norm2.weight", f"{b}{names['norm2']}.weight"),
        row("blocks.{i}.norm2.bias", f"{b}{names['norm2']}.bias"),
        row("blocks.{i}.mlp.fc1.weight", f"{b}{names['fc1']}.weight"),
        row("blocks.{i}.mlp.fc1.bias", f"{b}{names['fc1']}.bias"),
        row("blocks.{i}.mlp.fc2.weight", f"{b}{names['fc2']}.weight"),
        row("blocks.{i}.mlp.fc2.bias", f"{b}{names['fc2']}.bias"),
        *final,
    )


# The MAP head (classifier="map"): big_vision's MAPHead_0 holds flax kernels, timm's attn_pool
# (AttentionPoolLatent) torch Linears with the same fused [k; v] as minivit.
_BV_MHA = "MAPHead_0/MultiHeadDotProductAttention_0"
_BV_MAP = (
    row("map_head.probe", "MAPHead_0/probe", when="map"),
    row("map_head.q.weight", f"{_BV_MHA}/query/kernel", "flax_q", when="map"),
    row("map_head.q.bias", f"{_BV_MHA}/query/bias", "flax_q_bias", when="map"),
    row("map_head.kv.weight", (f"{_BV_MHA}/key/kernel", f"{_BV_MHA}/value/kernel"), "flax_kv", when="map"),
    row("map_head.kv.bias", (f"{_BV_MHA}/key/bias", f"{_BV_MHA}/value/bias"), "flax_kv_bias", when="map"),
    row("map_head.proj.weight", f"{_BV_MHA}/out/kernel", "flax_out", when="map"),
    row("map_head.proj.bias", f"{_BV_MHA}/out/bias", when="map"),
    row("map_head.norm.weight", "MAPHead_0/LayerNorm_0/scale", when="map"),
    row("map_head.norm.bias", "MAPHead_0/LayerNorm_0/bias", when="map"),
    row("map_head.mlp.fc1.weight", "MAPHead_0/MlpBlock_0/Dense_0/kernel", "dense", when="map"),
    row("map_head.mlp.fc1.bias", "MAPHead_0/MlpBlock_0/Dense_0/bias", when="map"),
    row("map_head.mlp.fc2.weight", "MAPHead_0/MlpBlock_0/Dense_1/kernel", "dense", when="map"),
    row("map_head.mlp.fc2.bias", "MAPHead_0/MlpBlock_0/Dense_1/bias", when="map"),
)
_TIMM_MAP = (
    row("map_head.probe", "attn_pool.latent", when="map"),
    *(row(f"map_head.{name}.{leaf}", f"attn_pool.{name}.{leaf}", when="map")
      for name in ("q", "kv", "proj", "norm", "mlp.fc1", "mlp.fc2") for leaf in ("weight", "bias")),
)

_HF_EMBED = dict(patch="embeddings.patch_embeddings.projection", cls="embeddings.cls_token", pos="embeddings.position_embeddings")
_HF_FINAL = (
    row("norm.weight", "layernorm.weight"),
    row("norm.bias", "layernorm.bias"),
    row("pre_logits.weight", "pooler.dense.weight", when="rep"),  # ViTModel's pooler: tanh(dense(CLS))
    row("pre_logits.bias", "pooler.dense.bias", when="rep"),
    row("head.weight", "classifier.weight", when="head"),
    row("head.bias", "classifier.bias", when="head"),
)
_TIMM_BLOCK = dict(norm1="norm1", qkv="attn.qkv", proj="attn.proj", norm2="norm2", fc1="mlp.fc1", fc2="mlp.fc2")
_TIMM_RULES = _torch_rules(dict(patch="patch_embed.proj", cls="cls_token", pos="pos_embed"), "blocks.{i}", _TIMM_BLOCK, (
    row("norm.weight", "norm.weight", when="final_norm"),
    row("norm.bias", "norm.bias", when="final_norm"),
    row("norm.weight", "fc_norm.weight", when="fc_norm"),  # timm's `norm` is Identity then
    row("norm.bias", "fc_norm.bias", when="fc_norm"),
    *_TIMM_MAP,
    row("head.weight", "head.weight", when="head"),
    row("head.bias", "head.bias", when="head"),
))
# The conv stem's layers (minivit.model.vit.ConvStem): only minivit's own layout can hold them.
_CONV_STEM = tuple(row(f"patch_embed.convs.{{j}}.{name}", f"patch_embed.convs.{{j}}.{name}", when="conv_stem")
                   for name in ("conv.weight", "norm.weight", "norm.bias", "norm.running_mean", "norm.running_var",
                                "norm.num_batches_tracked"))


def _identity(rules: tuple[Rule, ...]) -> tuple[Rule, ...]:
    return tuple(dict.fromkeys(row(r.ours, r.ours, when=r.when) for r in rules))


LAYOUTS: dict[str, Layout] = {
    "vit_jax": Layout(
        "vit_jax",
        "Google vision_transformer .npz (ViT-B_16.npz, AugReg); prefix '' or 'opt/target/'",
        _flax_rules("Transformer/encoderblock_{i}", "LayerNorm_0", "MultiHeadDotProductAttention_1", "LayerNorm_2", "MlpBlock_3",
                    (row("pos_embed", "Transformer/posembed_input/pos_embedding"),)),
        kind="npz", infer=configs.infer_flax, export=configs.export_flax(holds.VIT_JAX),
        anchor="Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel",
        prefixes=("opt/target/", ""),
        holds=holds.VIT_JAX,
    ),
    "big_vision": Layout(
        "big_vision",
        "Google big_vision .npz; prefix 'params/', 'params/img/' or ''; pos_embedding without a CLS slot",
        _flax_rules("Transformer/encoderblock_{i}", "LayerNorm_0", "MultiHeadDotProductAttention_0", "LayerNorm_1", "MlpBlock_0",
                    (row("pos_embed", "pos_embedding", when="no_token"),
                     row("pos_embed", "pos_embedding", "posemb_cls_slot", when="token")), _BV_MAP),
        kind="npz", infer=configs.infer_flax, export=configs.export_flax(holds.BIG_VISION),
        anchor="Transformer/encoderblock_0/MultiHeadDotProductAttention_0/query/kernel",
        prefixes=("params/img/", "params/", ""),
        holds=holds.BIG_VISION,
        pos_has_cls_slot=False,
    ),
    "transformers": Layout(
        "transformers",
        "transformers ViTModel / ViTForImageClassification on disk (save_pretrained); body prefix 'vit.' or ''",
        _torch_rules(_HF_EMBED, "encoder.layer.{i}",
                     dict(norm1="layernorm_before", q="attention.attention.query", k="attention.attention.key",
                          v="attention.attention.value", proj="attention.output.dense", norm2="layernorm_after",
                          fc1="intermediate.dense", fc2="output.dense"), _HF_FINAL),
        kind="folder", infer=configs.infer_transformers, export=configs.transformers_config,
        anchor="encoder.layer.0.attention.attention.query.weight",
        prefixes=("vit.", ""),
        unprefixed=("classifier.",),
        claims=lambda cfg_json: not configs.is_timm_config(cfg_json),
        export_prefix=lambda config: "vit." if config.num_classes else "",  # ViTForImageClassification's body
        holds=holds.TRANSFORMERS,
    ),
    "transformers_v5": Layout(
        "transformers_v5",
        "transformers >= 5 ViT in memory (model.state_dict()); body prefix 'vit.' or ''; read only",
        _torch_rules(_HF_EMBED, "layers.{i}",
                     dict(norm1="layernorm_before", q="attention.q_proj", k="attention.k_proj", v="attention.v_proj",
                          proj="attention.o_proj", norm2="layernorm_after", fc1="mlp.fc1", fc2="mlp.fc2"), _HF_FINAL),
        kind="folder", infer=configs.infer_transformers, export=None,
        anchor="layers.0.attention.q_proj.weight",
        prefixes=("vit.", ""),
        unprefixed=("classifier.",),
        claims=lambda cfg_json: not configs.is_timm_config(cfg_json),
        writable=False,
    ),
    "timm": Layout(
        "timm",
        "timm VisionTransformer (save_for_hf folder: config.json with architecture + model_args)",
        _TIMM_RULES,
        kind="folder", infer=configs.infer_timm, export=configs.timm_config,
        anchor="blocks.0.attn.qkv.weight",
        claims=configs.is_timm_config,
        holds=holds.TIMM,
    ),
    # minivit's own layout: every name maps to itself (timm's names, which minivit shares, plus the
    # representation layer and the conv stem, BatchNorm statistics included).
    "minivit": Layout(
        "minivit",
        "minivit .safetensors (ViTConfig as JSON in metadata 'minivit_config')",
        _identity(_CONV_STEM + _TIMM_RULES[:-2] + _HF_FINAL[2:4] + _TIMM_RULES[-2:]),
        kind="minivit", infer=configs.infer_minivit, export=configs.minivit_config,
        anchor="blocks.0.attn.qkv.weight",
        holds=holds.MINIVIT,
    ),
}


def layout_names(kind: str | None = None, writable: bool = False) -> list[str]:
    """Names of the registered layouts (of one kind, or the ones that can be written)."""
    return [n for n, lay in LAYOUTS.items() if (kind is None or lay.kind == kind) and (lay.writable or not writable)]


# -- applying a table --------------------------------------------------------------------------


def expand(layout: Layout, config: ViTConfig) -> list[tuple[str, tuple[str, ...], str]]:
    """Rows for this config: (our key, their keys with prefix-free names, transform), one per
    minivit tensor a model of this config has."""
    rows = []
    for rule in layout.rules:
        if rule.when and not CONDITIONS[rule.when](config):
            continue
        if "{i}" in rule.ours:
            indices = range(config.depth)  # blocks
        elif "{j}" in rule.ours:
            indices = range(config.stem_depth)  # conv stem layers
        else:
            indices = [0]
        for i in indices:
            ours = rule.ours.format(i=i, j=i)
            rows.append((ours, tuple(t.format(i=i, j=i) for t in rule.theirs), rule.kind))
    return rows


def to_minivit(tensors: dict, layout: Layout, prefix: str, config: ViTConfig, where: str = "checkpoint"):
    """Their tensors -> (minivit state dict, their names used, minivit names not found)."""
    state, used, missing = {}, set(), []
    for ours, theirs, kind in expand(layout, config):
        names = [layout.full_name(t, prefix) for t in theirs]
        if any(n not in tensors for n in names):
            missing.append(ours)
            continue
        try:
            state[ours] = TRANSFORMS[kind][0]([tensors[n] for n in names], config).contiguous()
        except RuntimeError as e:  # a reshape or concat of tensors with contradicting shapes
            shapes = ", ".join(f"{n} {tuple(tensors[n].shape)}" for n in names)
            raise CheckpointError(f"{where}: cannot map {shapes} to {ours} ({str(e).splitlines()[0]})") from None
        used.update(names)
    return state, used, missing


def from_minivit(state: dict, layout: Layout, config: ViTConfig, prefix: str = "") -> dict:
    """minivit state dict -> tensors named as in ``layout`` (the same table, read backwards).

    A model the layout cannot hold (holds.py) is a one-line CheckpointError.
    """
    layout.check_expressible(config, state)
    out, done = {}, set()
    for ours, theirs, kind in expand(layout, config):
        if ours not in state:
            continue
        for name, t in zip(theirs, TRANSFORMS[kind][1](state[ours], config)):
            out[layout.full_name(name, prefix)] = t.contiguous()
        done.add(ours)
    left = [k for k in state if k not in done]
    if left:  # a part no refusal in holds.py named (a read-only layout, or a table missing a row)
        raise CheckpointError(f"the {layout.name} layout has no place for {', '.join(left)}")
    return out


def table_markdown(name: str) -> str:
    """The mapping table of one layout as a markdown table (docs/reference/checkpoint_layouts.md prints
    these)."""
    layout = LAYOUTS[name]
    lines = ["| minivit | " + name + " | transform | when |", "|---|---|---|---|"]
    for r in layout.rules:
        theirs = "<br>".join(f"`{t}`" for t in r.theirs)
        lines.append(f"| `{r.ours}` | {theirs} | {r.kind} | {r.when or ''} |")
    return "\n".join(lines)


def holds_markdown() -> str:
    """What each writable layout can hold (holds.py) as the markdown table that
    docs/reference/checkpoint_layouts.md prints."""
    return holds.table_markdown([lay.holds for lay in LAYOUTS.values() if lay.writable])
