"""Model configuration: one dataclass, one table of sizes, names parsed from it.

A ViT is named by its size and patch, e.g. ``"B/16"``. People write that name in
four dialects, and all of them work here:

    Google's vit_jax files    "ViT-B_16", "ViT-B_16-384"
    big_vision / the paper    "B/16", "ViT-B/16"
    timm                      "vit_base_patch16_224", "vit_base_patch16_384.augreg_in21k",
                              "timm/vit_base_patch16_224" (its Hugging Face repo)
    transformers              "google/vit-base-patch16-224", "vit-large-patch32-384",
                              "vit-huge-patch14-224-in21k" (the Hugging Face repo, owner optional)

Example:
    >>> from minivit.model.config import config_from_name
    >>> config = config_from_name("ViT-B_16", num_classes=7)
    >>> config.dim, config.depth, config.heads, config.grid
    (768, 12, 12, (14, 14))
"""

from __future__ import annotations

import dataclasses
import numbers
import re
from dataclasses import dataclass

from ..common.cli import is_number
from ..common.errors import ConfigError

# Width, depth, heads and MLP width of each size, from the ViT paper (Table 1) and
# "How to train your ViT" (AugReg) for Ti and S. The only table of sizes in minivit.
SIZES: dict[str, dict[str, int]] = {
    "Ti": dict(dim=192, depth=12, heads=3, mlp_dim=768),
    "S": dict(dim=384, depth=12, heads=6, mlp_dim=1536),
    "B": dict(dim=768, depth=12, heads=12, mlp_dim=3072),
    "L": dict(dim=1024, depth=24, heads=16, mlp_dim=4096),
    "H": dict(dim=1280, depth=32, heads=16, mlp_dim=5120),
}
# timm spells the sizes out.
TIMM_SIZE_NAMES = {"tiny": "Ti", "small": "S", "base": "B", "large": "L", "huge": "H"}
# The patch sizes of published checkpoints. Google's and timm's names use only these; the paper
# dialect ("Ti/4", "S/2") also takes any power of two, as from-scratch models on small images do.
PATCH_SIZES = (8, 14, 16, 32)
# How the tokens are pooled into one vector: CLS token, mean, or multihead attention pooling.
CLASSIFIERS = ("token", "gap", "map")
# How the image becomes tokens: one patchify conv, or a small convolutional stem (see minivit.model.vit.ConvStem).
STEMS = ("patch", "conv")
IN_CHANS = (1, 3)  # grayscale or RGB


def is_power_of_two(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


def _is_int(v) -> bool:
    """An integer, numpy's included; not a bool (True is no size)."""
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


@dataclass
class ViTConfig:
    """Everything that decides a ViT's parameters and its function.

    Example:
        >>> config = ViTConfig(image_size=48, patch_size=4, dim=192, depth=12, heads=3, mlp_dim=768, num_classes=7)
        >>> config.grid, config.num_tokens
        ((12, 12), 145)
    """

    image_size: int | tuple[int, int] = 224  # (H, W) when not square
    patch_size: int = 16  # side of the square patch; with stem="conv", the stem's total stride (a power of 2)
    in_chans: int = 3  # 3: RGB (every published checkpoint); 1: grayscale, e.g. FER2013 trained from scratch
    num_classes: int = 1000  # 0: no head; the model returns the pooled features
    dim: int = 768
    depth: int = 12
    heads: int = 12
    mlp_dim: int = 3072
    # "token": prepend a learned CLS token and classify from it (the ViT paper);
    # "gap": no CLS token, classify from the mean of the patch tokens (big_vision, AugReg "gap");
    # "map": no CLS token, a learned probe attends over the patch tokens ("multihead attention
    # pooling": big_vision pool_type="map", SigLIP; timm global_pool="map").
    classifier: str = "token"
    # timm's fc_norm: the final LayerNorm is applied to the pooled vector instead of every token.
    norm_after_pool: bool = False
    # Dense + tanh before the head, as in the ImageNet-21k vit_jax checkpoints ("pre_logits")
    # and transformers' ViT pooler. None: no such layer.
    representation_size: int | None = None
    dropout: float = 0.0
    attn_dropout: float = 0.0
    drop_path: float = 0.0  # stochastic depth rate of the last block; linear from 0 at the first
    norm_eps: float = 1e-6  # Google's and timm's value; transformers defaults to 1e-12
    qkv_bias: bool = True
    # flax's nn.gelu is the tanh approximation, so Google's checkpoints need "tanh";
    # PyTorch-trained ones (timm, transformers) use the exact erf form.
    gelu: str = "exact"
    # "patch": Google's patchify conv (kernel = stride = patch_size), what every checkpoint has.
    # "conv": 3x3 conv + BatchNorm + GELU layers downsampling to the same grid, then a 1x1
    # projection (Xiao et al. 2021, "Early Convolutions Help Transformers See Better").
    stem: str = "patch"
    # The conv stem's channels at full resolution, doubled by each stride-2 stage (16 with patch 8:
    # 16 -> 32 -> 64 -> 128). None: the stages widen to dim / 2 (ConvStem's docstring).
    stem_width: int | None = None

    def __post_init__(self):
        problems = self._range_problems()
        if not problems:  # the sizes are sane ints: now how they fit together
            h, w = self.image_hw
            if self.stem == "conv" and not is_power_of_two(self.patch_size):
                problems.append(f"stem='conv' needs a power-of-two patch_size (each stage halves the grid), "
                                f"not {self.patch_size}")
            if self.stem_width is not None and self.stem != "conv":
                problems.append(f"stem_width={self.stem_width} needs stem='conv' (the patch stem has no conv stages)")
            if self.dim % self.heads:
                problems.append(f"dim={self.dim} is not divisible by heads={self.heads}")
            if h % self.patch_size or w % self.patch_size:
                problems.append(f"image_size={self.image_size} is not a multiple of patch_size={self.patch_size}")
        if problems:
            raise ConfigError("invalid ViT config: " + "; ".join(problems))

    def _range_problems(self) -> list[str]:
        """Each field's own type and range (a checkpoint's JSON can hold anything); normalises image_size."""
        problems = []
        size = self.image_size
        if isinstance(size, (list, tuple)) and len(size) == 2 and all(_is_int(s) for s in size):
            self.image_size = size = (int(size[0]), int(size[1])) if size[0] != size[1] else int(size[0])
        if not ((_is_int(size) and size >= 1) or (isinstance(size, tuple) and min(size) >= 1)):
            problems.append(f"image_size must be a positive int or an (H, W) pair of them, not {size!r}")
        for name in ("dim", "depth", "heads", "mlp_dim", "patch_size"):
            if not (_is_int(getattr(self, name)) and getattr(self, name) >= 1):
                problems.append(f"{name} must be an integer >= 1, not {getattr(self, name)!r}")
        if not (_is_int(self.num_classes) and self.num_classes >= 0):
            problems.append(f"num_classes must be an integer >= 0, not {self.num_classes!r}")
        if self.stem_width is not None and not (_is_int(self.stem_width) and self.stem_width >= 1):
            problems.append(f"stem_width must be None or an integer >= 1, not {self.stem_width!r}")
        if self.representation_size is not None and not (_is_int(self.representation_size)
                                                         and self.representation_size >= 1):
            problems.append(f"representation_size must be None or an integer >= 1, not {self.representation_size!r}")
        for name in ("dropout", "attn_dropout", "drop_path"):
            if not (is_number(getattr(self, name)) and 0 <= getattr(self, name) < 1):
                problems.append(f"{name} must be a number in [0, 1), not {getattr(self, name)!r}")
        if not (is_number(self.norm_eps) and self.norm_eps > 0):
            problems.append(f"norm_eps must be a number > 0, not {self.norm_eps!r}")
        if self.classifier not in CLASSIFIERS:
            problems.append(f"classifier must be one of {', '.join(map(repr, CLASSIFIERS))}, not {self.classifier!r}")
        if self.gelu not in ("exact", "tanh"):
            problems.append(f"gelu must be 'exact' or 'tanh', not {self.gelu!r}")
        if self.stem not in STEMS:
            problems.append(f"stem must be one of {', '.join(map(repr, STEMS))}, not {self.stem!r}")
        if self.in_chans not in IN_CHANS or isinstance(self.in_chans, bool):
            problems.append(f"in_chans must be 1 (grayscale) or 3 (RGB), not {self.in_chans!r}")
        return problems

    @property
    def image_hw(self) -> tuple[int, int]:
        s = self.image_size
        return (s, s) if isinstance(s, int) else tuple(s)

    @property
    def grid(self) -> tuple[int, int]:
        """Patches along height and width."""
        h, w = self.image_hw
        return h // self.patch_size, w // self.patch_size

    @property
    def num_prefix_tokens(self) -> int:
        return 1 if self.classifier == "token" else 0

    @property
    def num_tokens(self) -> int:
        gh, gw = self.grid
        return self.num_prefix_tokens + gh * gw

    @property
    def stem_depth(self) -> int:
        """3x3 conv layers of the conv stem: one at full resolution, then two per halving (0 for "patch")."""
        return 1 + 2 * (self.patch_size.bit_length() - 1) if self.stem == "conv" else 0

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        if isinstance(d["image_size"], tuple):
            d["image_size"] = list(d["image_size"])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ViTConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown ViTConfig fields: {', '.join(unknown)}")
        return cls(**d)

    def replace(self, **changes) -> "ViTConfig":
        return dataclasses.replace(self, **changes)

    def with_new_head(self, num_classes: int, keep_representation: bool = False) -> "ViTConfig":
        """The config of this model with a new classifier for ``num_classes`` (0: no head): the one rule
        of a new head, as in the ViT paper's fine-tuning. The pre-training representation layer
        (pre_logits) goes too, unless ``keep_representation``; the new head starts at zero (the model
        builds it: ViT.reset_head, and ViT.from_pretrained's model for a loaded checkpoint).

        >>> config = ViTConfig(representation_size=768, num_classes=21843)
        >>> config.with_new_head(7).representation_size, config.with_new_head(7, keep_representation=True).num_classes
        (None, 7)
        """
        representation = self.representation_size if keep_representation else None
        return self.replace(num_classes=num_classes, representation_size=representation)


# (dialect, pattern): the paper's dialect is the one people write for new models ("Ti/4").
_NAME_PATTERNS = [
    # Google's file names: ViT-B_16, ViT-B_16-384, B_16-i21k-300ep-... (AugReg)
    ("google", re.compile(r"^(?:vit-)?(?P<size>ti|s|b|l|h)_(?P<patch>\d+)(?:-(?P<res>\d{3}))?(?:\b|-|$)", re.I)),
    # The paper's and big_vision's: B/16, ViT-B/16, ViT-B/16-384, Ti/4
    ("paper", re.compile(r"^(?:vit-)?(?P<size>ti|s|b|l|h)/(?P<patch>\d+)(?:-(?P<res>\d{2,4}))?$", re.I)),
    # timm's: vit_base_patch16_224, vit_tiny_patch16_384.augreg_in21k, timm/vit_base_patch16_224 (its hub repo)
    ("timm", re.compile(r"^(?:timm/)?vit_(?P<size>tiny|small|base|large|huge)_patch(?P<patch>\d+)"
                        r"(?:_(?P<res>\d{3})(?:[._].*)?|\..*)?$", re.I)),
    # transformers' (Google's Hugging Face repos): google/vit-base-patch16-224, vit-huge-patch14-224-in21k
    ("transformers", re.compile(r"^(?:google/)?vit-(?P<size>tiny|small|base|large|huge)-patch(?P<patch>\d+)"
                                r"(?:-(?P<res>\d{3}))?(?:-in21k)?$", re.I)),
]


def parse_name(name: str) -> tuple[str, int, int]:
    """Split a model name into (size, patch, image_size).

    Google's, timm's and transformers' names only come with the published patch sizes 8/14/16/32;
    the paper dialect also takes any power of two ("Ti/4" for 48x48 faces).

    >>> parse_name("vit_large_patch32_384")
    ('L', 32, 384)
    >>> parse_name("google/vit-huge-patch14-224-in21k")
    ('H', 14, 224)
    >>> parse_name("Ti/4")
    ('Ti', 4, 224)
    """
    for dialect, pattern in _NAME_PATTERNS:
        m = pattern.match(name.strip())
        if m:
            size = m["size"].lower()
            size = TIMM_SIZE_NAMES.get(size) or {"ti": "Ti"}.get(size, size.upper())
            patch, res = int(m["patch"]), int(m["res"] or 224)
            if patch not in PATCH_SIZES and not (dialect == "paper" and is_power_of_two(patch)):
                break
            return size, patch, res
    raise ConfigError(
        f"unknown model name {name!r}: expected a name in one of these dialects: Google's 'ViT-B_16' or "
        "'ViT-B_16-384', the paper's 'B/16' or 'Ti/4', timm's 'vit_base_patch16_224', transformers' "
        "'google/vit-base-patch16-224' or 'vit-huge-patch14-224-in21k'; with size "
        f"{'/'.join(SIZES)} ({'/'.join(TIMM_SIZE_NAMES)}) and patch {'/'.join(map(str, PATCH_SIZES))} "
        "(or any power of two in the 'S/4' form)"
    )


def config_from_name(name: str, **overrides) -> ViTConfig:
    """The config of a named ViT, with any field overridden.

    >>> config_from_name("S/16", image_size=48, patch_size=4, num_classes=7).grid
    (12, 12)
    """
    size, patch, res = parse_name(name)
    fields = dict(SIZES[size], patch_size=patch, image_size=res)
    unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(ViTConfig)})
    if unknown:
        raise ConfigError(f"unknown option(s) for model {name!r}: {', '.join(unknown)}")
    fields.update(overrides)
    return ViTConfig(**fields)
