"""What each writable layout can hold of a model: the one rule export and the converter follow.

A file in another library's layout is only useful if that library -- and minivit reading it
back -- computes the same function. Some models cannot be written that way: an ``.npz`` states
no GELU variant and no LayerNorm eps (Google's code fixes them: tanh GELU, eps 1e-6), timm has
no representation layer, transformers pools only a CLS token. Such a model is refused before
anything is written, with one line naming the setting and the layout; ``allow_lossy=True``
(``--allow-lossy``) writes the nearest model the layout holds instead, and the converter
measures what that costs.

Two kinds of data, read by ``refusals`` and printed as the table of
docs/reference/checkpoint_layouts.md:

    SETTINGS    one row per thing a model can have (a ViTConfig value, or for one row its
                weights), with a small example, how to tell a model has it, and how to drop it
    Holds       one per writable layout: the conventions its files imply (``gelu``,
                ``norm_eps``; None: its config file states them) and ``cannot``, the settings
                it has no place for, each ``refused`` (allow_lossy drops it) or ``never``
                (nothing the layout's loader reads back comes close)

Every ViTConfig field is named by some setting, or is a training rate (dropout, attn_dropout,
drop_path: no effect on the function a file computes); tests/test_convert_table.py checks
that, and exports a model for every cell of the table.

Example:
    >>> from minivit import ViTConfig
    >>> config = ViTConfig(image_size=32, patch_size=8, dim=64, depth=2, heads=4, mlp_dim=128, norm_eps=1e-12)
    >>> [r.setting for r in refusals(VIT_JAX, config)]
    ["gelu='exact'", 'norm_eps=1e-12']
    >>> refusals(TRANSFORMERS, config)
    []
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..common.errors import CheckpointError
from ..model.config import ViTConfig

API_HINT = "pass allow_lossy=True to write it anyway"  # the converter says --allow-lossy instead
CONVENTIONS = ("gelu", "norm_eps")  # what a layout's files may imply instead of stating


def _value(name: str, value) -> str:
    """How a message names a setting: gelu='exact', norm_eps=1e-12."""
    return f"{name}={value:g}" if isinstance(value, float) else f"{name}={value!r}"


def _without(state: dict | None, prefix: str) -> dict | None:
    return None if state is None else {k: v for k, v in state.items() if not k.startswith(prefix)}


def _drop_representation(config: ViTConfig, state):
    # The head reads the representation (size representation_size); without that layer it reads
    # the pooled vector (size dim): only equal sizes leave a head that fits.
    if config.representation_size != config.dim:
        return None
    return config.replace(representation_size=None), _without(state, "pre_logits.")


def _zero_cls_position(config: ViTConfig, state):
    if state is None:
        return config, None
    pos = state["pos_embed"].clone()
    pos[:, 0] = 0  # (1, 1 + N, D): the CLS slot
    return config, {**state, "pos_embed": pos}


def _cls_position(config: ViTConfig, state) -> bool:
    return config.classifier == "token" and state is not None and bool(state["pos_embed"][:, 0].abs().max() > 0)


@dataclass(frozen=True)
class Setting:
    key: str  # what a layout's `cannot` calls it
    label: str  # the row of the docs table
    fields: tuple[str, ...]  # the ViTConfig fields it is about
    example: dict  # ViTConfig fields of a small model that has it (the tests build one per cell)
    has: Callable[[ViTConfig, dict | None], bool] = lambda config, state: False  # (config, state dict or None)
    name: str = ""  # how a refusal names it, formatted with the config's fields
    # (config, state) -> the nearest model without it, or None where none fits; None: cannot be dropped
    drop: Callable | None = None
    convention: tuple[str, object] | None = None  # (field, value): refused where a layout fixes field otherwise
    weights: bool = False  # a property of the weights, not the config: the example sets pos_embed[:, 0]


SETTINGS: tuple[Setting, ...] = (
    Setting("sizes", "any size: `patch_size`, `dim`, `depth`, `heads`", ("patch_size", "dim", "depth", "heads"),
            dict(patch_size=4, dim=24, depth=3, heads=2, mlp_dim=48), lambda c, s: True, "the sizes"),
    Setting("non_square", "`image_size` H x W with H != W", ("image_size",), dict(image_size=(16, 24)),
            lambda c, s: c.image_hw[0] != c.image_hw[1], "image_size={image_size}"),
    Setting("grayscale", "`in_chans=1`", ("in_chans",), dict(in_chans=1), lambda c, s: c.in_chans == 1, "in_chans=1"),
    Setting("no_head", "`num_classes=0` (no head: the pooled features)", ("num_classes",), dict(num_classes=0),
            lambda c, s: c.num_classes == 0, "num_classes=0"),
    Setting("no_qkv_bias", "`qkv_bias=False`", ("qkv_bias",), dict(qkv_bias=False), lambda c, s: not c.qkv_bias,
            "qkv_bias=False"),
    Setting("gap", "`classifier='gap'` (mean of the patch tokens)", ("classifier",), dict(classifier="gap"),
            lambda c, s: c.classifier == "gap", "classifier='gap'"),
    Setting("map", "`classifier='map'` (a MAP head)", ("classifier",), dict(classifier="map"),
            lambda c, s: c.classifier == "map", "classifier='map'",
            lambda c, s: (c.replace(classifier="gap"), _without(s, "map_head."))),
    Setting("norm_after_pool", "`norm_after_pool=True` with `gap` or `map` pooling", ("norm_after_pool",),
            dict(classifier="gap", norm_after_pool=True),
            lambda c, s: c.norm_after_pool and c.classifier != "token", "norm_after_pool=True",
            lambda c, s: (c.replace(norm_after_pool=False), s)),
    # LayerNorm is per token, so normalising every token and then taking the CLS token is the same
    # function as taking it first: every layout holds this as its ordinary final norm.
    Setting("token_norm_after_pool", "`norm_after_pool=True` with a CLS token (the same function as False)",
            ("norm_after_pool",), dict(norm_after_pool=True),
            lambda c, s: c.norm_after_pool and c.classifier == "token", "norm_after_pool=True"),
    Setting("representation", "`representation_size` (pre_logits) with a head", ("representation_size",),
            dict(representation_size=32), lambda c, s: bool(c.representation_size and c.num_classes),
            "representation_size={representation_size}", _drop_representation),
    Setting("headless_representation", "`representation_size` without a head (`num_classes=0`)",
            ("representation_size",), dict(representation_size=32, num_classes=0),
            lambda c, s: bool(c.representation_size and not c.num_classes),
            "representation_size={representation_size}", _drop_representation),
    Setting("odd_mlp_dim", "`mlp_dim` that int(dim * (mlp_dim / dim)) misses (dim=56, mlp_dim=61)", ("mlp_dim",),
            dict(dim=56, heads=4, mlp_dim=61), lambda c, s: int(c.dim * (c.mlp_dim / c.dim)) != c.mlp_dim,
            "mlp_dim={mlp_dim}"),
    Setting("conv_stem", "`stem='conv'` (a convolutional stem, any `stem_width`)", ("stem", "stem_width"), dict(stem="conv"),
            lambda c, s: c.stem == "conv", "stem='conv'"),
    Setting("cls_position", "a CLS token with a position embedding (`pos_embed[:, 0]` not zero)", (),
            dict(), _cls_position, "a CLS position embedding (pos_embed[:, 0] is not zero)", _zero_cls_position,
            weights=True),
    Setting("gelu_exact", "`gelu='exact'` (erf GELU)", ("gelu",), dict(gelu="exact"), convention=("gelu", "exact")),
    Setting("gelu_tanh", "`gelu='tanh'` (tanh approximation)", ("gelu",), dict(gelu="tanh"),
            convention=("gelu", "tanh")),
    Setting("norm_eps", "`norm_eps=1e-12` (any eps the layout does not fix)", ("norm_eps",), dict(norm_eps=1e-12),
            convention=("norm_eps", 1e-12)),
)


@dataclass(frozen=True)
class Cell:
    """Why a layout cannot hold a setting; ``lossy``: allow_lossy may drop it and write the rest."""

    why: str
    lossy: bool


def refused(why: str) -> Cell:
    """Refused; allow_lossy=True drops the setting and writes what the layout holds."""
    return Cell(why, True)


def never(why: str) -> Cell:
    """Refused even with allow_lossy: nothing this layout reads back comes close."""
    return Cell(why, False)


@dataclass(frozen=True)
class Holds:
    layout: str
    gelu: str | None = None  # the GELU its files imply; None: its config file states it
    norm_eps: float | None = None  # the LayerNorm eps its files imply; None: its config file states it
    cannot: dict[str, Cell] = field(default_factory=dict, hash=False)  # Setting.key -> why not


@dataclass(frozen=True)
class Refusal:
    setting: str  # as a message names it: gelu='exact'
    why: str
    drop: Callable | None  # (config, state) -> the nearest model the layout holds; None: cannot be written

    @property
    def lossy(self) -> bool:
        return self.drop is not None


_NEVER_OUTSIDE_MINIVIT = {"conv_stem": never("save it as minivit .safetensors")}
_NPZ_GRID = never("an .npz states the position grid only as a number of tokens, read back as a square grid")
_PRE_POOL_NORM = refused("Google's ViT normalises the tokens before pooling")

VIT_JAX = Holds("vit_jax", gelu="tanh", norm_eps=1e-6, cannot={
    **_NEVER_OUTSIDE_MINIVIT, "non_square": _NPZ_GRID, "norm_after_pool": _PRE_POOL_NORM,
    "map": refused("the vit_jax layout has no place for map_head.* (vision_transformer has no MAP head; "
                   "big_vision and timm have); the rest reads back as classifier='gap'"),
})
BIG_VISION = Holds("big_vision", gelu="tanh", norm_eps=1e-6, cannot={
    **_NEVER_OUTSIDE_MINIVIT, "non_square": _NPZ_GRID, "norm_after_pool": _PRE_POOL_NORM,
    "cls_position": refused("big_vision adds the position embeddings before it prepends the CLS token"),
})
_CLS_ONLY = never("transformers' ViT only pools the CLS token after the final norm")
TRANSFORMERS = Holds("transformers", cannot={
    **_NEVER_OUTSIDE_MINIVIT, "gap": _CLS_ONLY, "map": _CLS_ONLY, "norm_after_pool": _CLS_ONLY,
    "representation": refused("ViTForImageClassification has no representation layer before its classifier "
                              "(only the headless ViTModel has one, its pooler); allow_lossy drops it only where "
                              "representation_size equals dim"),
})
_TIMM_PRE_LOGITS = refused("timm's VisionTransformer has no representation (pre_logits) layer; "
                           "allow_lossy drops it only where representation_size equals dim")
TIMM = Holds("timm", norm_eps=1e-6, cannot={
    **_NEVER_OUTSIDE_MINIVIT, "representation": _TIMM_PRE_LOGITS, "headless_representation": _TIMM_PRE_LOGITS,
    "odd_mlp_dim": never("timm sizes the MLP as int(embed_dim * mlp_ratio), which cannot give this width"),
})
MINIVIT = Holds("minivit")  # minivit's own file states every ViTConfig field and holds every tensor


# -- applying the rule ---------------------------------------------------------------------------


def _convention_refusal(holds: Holds, name: str, config: ViTConfig) -> Refusal | None:
    fixed = getattr(holds, name)
    if fixed is None or getattr(config, name) == fixed:
        return None
    return Refusal(_value(name, getattr(config, name)), f"{holds.layout} files do not state {name} and are read back "
                   f"with {_value(name, fixed)}", lambda c, s: (c.replace(**{name: fixed}), s))


def refusals(holds: Holds, config: ViTConfig, state: dict | None = None) -> list[Refusal]:
    """What of this model (config, and state dict if given) the layout cannot hold; [] when it holds all."""
    found = [r for name in CONVENTIONS if (r := _convention_refusal(holds, name, config))]
    for setting in SETTINGS:
        cell = holds.cannot.get(setting.key)
        if cell is None or not setting.has(config, state):
            continue
        drop = setting.drop if cell.lossy and setting.drop and setting.drop(config, state) is not None else None
        found.append(Refusal(setting.name.format(**vars(config)), cell.why, drop))
    return found


def drop_refused(found: list[Refusal], config: ViTConfig, state: dict) -> tuple[ViTConfig, dict]:
    """The nearest model the layout holds: every refused setting dropped (each one is lossy)."""
    for r in found:
        config, state = r.drop(config, state)
    return config, state


def refusal_message(layout: str, found: list[Refusal], hint: str = API_HINT) -> str:
    """One line: the settings, the layout, why; the hint only when allow_lossy could write it.

    What nothing can write is named alone: dropping the rest would not help.
    """
    never_written = [r for r in found if not r.lossy]
    shown = never_written or found
    text = (f"{', '.join(r.setting for r in shown)} cannot be expressed in the {layout} layout; "
            + "; ".join(dict.fromkeys(r.why for r in shown)))
    return text if never_written else f"{text}; {hint}"


def refuse(holds: Holds, config: ViTConfig, state: dict | None = None) -> None:
    """A one-line CheckpointError for a model the layout cannot hold."""
    found = refusals(holds, config, state)
    if found:
        raise CheckpointError(refusal_message(holds.layout, found))


# -- the docs table ------------------------------------------------------------------------------


def cell(holds: Holds, setting: Setting) -> Cell | None:
    """The table's cell: None = kept, else why the layout cannot hold the setting's example."""
    if setting.convention:
        name, value = setting.convention
        fixed = getattr(holds, name)
        if fixed is None or fixed == value:
            return None
        return refused(f"{holds.layout} files do not state {name} and are read back with {_value(name, fixed)}")
    return holds.cannot.get(setting.key)


def table_markdown(layouts: list[Holds]) -> str:
    """Setting x layout -> kept / refused / never, then why for each refused cell."""
    word = lambda c: "kept" if c is None else ("refused" if c.lossy else "never")  # noqa: E731
    lines = ["| setting | " + " | ".join(h.layout for h in layouts) + " |", "|---" * (len(layouts) + 1) + "|"]
    lines += [f"| {s.label} | " + " | ".join(word(cell(h, s)) for h in layouts) + " |" for s in SETTINGS]
    lines += [""]
    lines += [f"* {h.layout}, {s.label}: {word(c)}: {c.why}" for h in layouts for s in SETTINGS if (c := cell(h, s))]
    return "\n".join(lines)
