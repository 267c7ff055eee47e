"""The Vision Transformer, top to bottom.

An image is cut into patches, each patch becomes a token, the tokens talk to each other
through self-attention, and one vector summarising them is classified:

    image (B, C, H, W)
      -> PatchEmbed or ConvStem  (B, N, D)      N = (H/p) * (W/p) tokens, one per p x p patch
      -> [CLS] + pos_embed       (B, 1 + N, D)  a learned token to classify from; where each patch was
      -> Block x depth           (B, 1 + N, D)  pre-norm attention + MLP, with residuals
      -> norm, pool              (B, D)         the CLS token, the mean of the patch tokens, or attention pooling
      -> pre_logits, head        (B, num_classes)

There is one forward pass. ``model(x)`` returns the logits; ``model(x, return_out=True)``
also returns big_vision's ``out`` dict of intermediates (the tokens after every block, the
encoded tokens, the pooled vector), and ``model(x, attention=True)`` adds every block's
attention probabilities, computed by the explicit softmax path beside the fused kernel.

Shapes are written for ViT-B/16 at 224x224 in docs/architecture.md. The names of modules
and parameters here are minivit's checkpoint layout; minivit/checkpoints maps every other
layout (Google's .npz, transformers, timm) onto them.

Example:
    >>> import torch, minivit
    >>> model = minivit.create_model("Ti/16", image_size=48, patch_size=4, num_classes=7)
    >>> model(torch.randn(2, 3, 48, 48)).shape
    torch.Size([2, 7])
    >>> logits, out = model(torch.randn(2, 3, 48, 48), attention=True)
    >>> len(out["tokens"]), out["encoded"].shape, out["attention"][0].shape
    (12, torch.Size([2, 145, 192]), torch.Size([2, 3, 145, 145]))
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange
from torch.utils.checkpoint import checkpoint

from ..common.errors import CheckpointError, ConfigError
from .config import ViTConfig, config_from_name

# -- position embeddings for another patch grid: the one resampling rule of minivit --------------
#
# A ViT learns one position embedding per patch of the grid it was trained on (14x14 for
# ViT-B/16 at 224). For another input size the grid changes, and the table is resampled as an
# image would be. minivit does it the same way everywhere -- in the forward pass for an input
# of another size, in ``ViT.resize_image``, and when a checkpoint of any layout is loaded at
# another ``image_size``:
#
#     * the prefix (CLS) slot has no place on the grid: kept apart and put back unchanged;
#     * the grid is interpolated **bicubic, antialiased**, with half-pixel centres
#       (``align_corners=False``), the default of timm's ``resample_abs_pos_embed`` (what timm
#       does for its own checkpoints at another size and for ``dynamic_img_size``);
#     * in **float32** whatever the weights' dtype (bf16 interpolation visibly blurs the
#       embeddings), then cast back.
#
# Antialiasing matters when shrinking: a 14x14 grid taken to 3x3 (a 48x48 face with 16-pixel
# patches) averages neighbours instead of sampling a few. Other code resamples differently, so
# a model loaded at another size there computes slightly different numbers than here:
#
#     * transformers' ``interpolate_pos_encoding``: bicubic, half-pixel, **no antialias**, in the
#       weights' dtype;
#     * timm loading a Google ``.npz``: **bilinear, no antialias**;
#     * Google's own fine-tuning code: ``scipy.ndimage.zoom(order=1)`` (bilinear, corner-aligned).
#
# minivit copies none of these per layout, so one function is computed whichever way a model
# reaches a new size.


def resample_pos_embed(pos_embed: torch.Tensor, new_grid: tuple[int, int], old_grid: tuple[int, int],
                       num_prefix: int) -> torch.Tensor:
    """Resample (1, P + gh*gw, D) position embeddings from ``old_grid`` to ``new_grid`` (rule above).

    Differentiable: gradients flow back to ``pos_embed``. The same grid returns the input itself.

    Example:
        >>> pe = torch.randn(1, 1 + 4 * 4, 8)
        >>> out = resample_pos_embed(pe, (8, 6), (4, 4), num_prefix=1)
        >>> out.shape, torch.equal(out[:, 0], pe[:, 0])
        (torch.Size([1, 49, 8]), True)
    """
    if tuple(new_grid) == tuple(old_grid):
        return pos_embed
    prefix, grid = pos_embed[:, :num_prefix], pos_embed[:, num_prefix:]  # (1, P, D), (1, gh*gw, D)
    grid = rearrange(grid.float(), "1 (h w) d -> 1 d h w", h=old_grid[0], w=old_grid[1])  # (1, D, gh, gw)
    grid = F.interpolate(grid, size=tuple(new_grid), mode="bicubic", antialias=True, align_corners=False)  # (1, D, h, w)
    grid = rearrange(grid, "1 d h w -> 1 (h w) d").to(pos_embed.dtype)  # (1, h*w, D)
    return torch.cat([prefix, grid], dim=1)  # (1, P + h*w, D)


# -- the model ----------------------------------------------------------------------------------


def _trunc_normal(tensor: torch.Tensor, std: float) -> None:
    # torch's a/b bounds are absolute (default +-2), not in units of std: pass them scaled.
    nn.init.trunc_normal_(tensor, std=std, a=-2 * std, b=2 * std)


def _lecun_normal(weight: torch.Tensor) -> None:
    # flax's default for Conv/Dense: truncated normal with variance 1 / fan_in. (0.8796 is the
    # std of a unit normal truncated at 2 std; dividing by it restores the variance.)
    _trunc_normal(weight, std=math.sqrt(1.0 / weight[0].numel()) / 0.87962566)


class PatchEmbed(nn.Module):
    """Cut the image into p x p patches and project each to a D-dim token.

    A convolution with kernel = stride = p is exactly "flatten each patch, apply one
    Linear": it is written as a conv because that is one fast kernel.
    """

    def __init__(self, config: ViTConfig):
        super().__init__()
        self.proj = nn.Conv2d(config.in_chans, config.dim, kernel_size=config.patch_size, stride=config.patch_size)

    @torch.no_grad()
    def init_weights(self) -> None:
        _lecun_normal(self.proj.weight)  # it is a Linear on flattened patches: LeCun normal, as flax's Conv
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)  # (B, D, H/p, W/p)
        return rearrange(x, "b d h w -> b (h w) d")  # (B, N, D), patches in row-major order


class ConvBNGELU(nn.Module):
    """3x3 convolution (no bias: the BatchNorm after it has one), BatchNorm, GELU."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.norm(self.conv(x)))  # (B, c_out, H/stride, W/stride)


class ConvStem(nn.Module):
    """A small convolutional stem instead of the patchify conv (Xiao et al. 2021, "Early
    Convolutions Help Transformers See Better"; the ViT paper's hybrids are the same idea).

    For a patch size p = 2**k: one 3x3 stride-1 conv at full resolution, then k stages of
    (3x3 stride-2, 3x3 stride-1), each conv + BatchNorm + GELU; a 1x1 conv projects to D.
    Widths double each stage. By default they end at D/2: stage j of k has D / 2**(k + 1 - j)
    channels (at least 8), so p=4, D=384 runs 48 -> 96 -> 192 -> 384; ``stem_width=w`` sets the
    first instead (w * 2**j), to give the stem more of the compute than the tokens' width would.
    For a 48x48 gray face, p=4, D=384:

        (B, 1, 48, 48) -> conv s1 (B, 48, 48, 48) -> conv s2 (B, 96, 24, 24) -> conv s1 (B, 96, 24, 24)
                       -> conv s2 (B, 192, 12, 12) -> conv s1 (B, 192, 12, 12) -> 1x1 (B, 384, 12, 12)
                       -> tokens (B, 144, 384)

    Overlapping 3x3 kernels see across patch borders and BatchNorm keeps the early activations
    well scaled, which makes ViTs train faster and less sensitively to the optimiser on small
    datasets; the token grid, and everything after it, is the same as with patches.
    """

    def __init__(self, config: ViTConfig):
        super().__init__()
        k = config.patch_size.bit_length() - 1  # p = 2**k stages of stride 2
        if config.stem_width:
            width = lambda j: config.stem_width * 2 ** j  # noqa: E731 - stage j's channels
        else:
            width = lambda j: max(config.dim // 2 ** (k + 1 - j), 8)  # noqa: E731 - stage j's channels, D/2 at j = k
        layers = [ConvBNGELU(config.in_chans, width(0), stride=1)]
        for j in range(1, k + 1):
            layers += [ConvBNGELU(width(j - 1), width(j), stride=2), ConvBNGELU(width(j), width(j), stride=1)]
        self.convs = nn.Sequential(*layers)
        self.proj = nn.Conv2d(width(k), config.dim, kernel_size=1)

    @torch.no_grad()
    def init_weights(self) -> None:
        """He (kaiming) normal for the 3x3 convs, fan_out as torchvision's ResNets: each is followed by
        BatchNorm, which fixes the forward scale, so the init is chosen to keep the gradients' scale
        through the stack. The 1x1 projection feeds the residual stream directly, like the patchify
        conv, so it gets the same LeCun normal; BatchNorm starts as the identity (weight 1, bias 0)."""
        for layer in self.convs:
            nn.init.kaiming_normal_(layer.conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.ones_(layer.norm.weight)
            nn.init.zeros_(layer.norm.bias)
        _lecun_normal(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.convs(x)  # (B, C, H/p, W/p), C = D/2 or stem_width * p/2
        x = self.proj(x)  # (B, D, H/p, W/p)
        return rearrange(x, "b d h w -> b (h w) d")  # (B, N, D), row-major as PatchEmbed


class Attention(nn.Module):
    """Multi-head self-attention with one fused qkv projection.

    softmax(q k^T / sqrt(head_dim)) v for every head. The fast path is PyTorch's fused
    ``scaled_dot_product_attention`` (flash / memory-efficient kernels that never hold the
    (T, T) score matrix); with ``attention=True`` the same function is spelled out and the
    probabilities are returned too: the slow path is the documentation of the fast one, and
    what attention maps are drawn from. tests/test_model.py checks that both agree.
    """

    def __init__(self, config: ViTConfig):
        super().__init__()
        self.heads = config.heads
        self.attn_dropout = config.attn_dropout
        self.qkv = nn.Linear(config.dim, 3 * config.dim, bias=config.qkv_bias)
        self.proj = nn.Linear(config.dim, config.dim)
        self.proj_drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, attention: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, T, D) -> ((B, T, D), probabilities (B, heads, T, T) if ``attention`` else None)."""
        qkv = self.qkv(x)  # (B, T, 3D)
        q, k, v = rearrange(qkv, "b t (three h d) -> three b h t d", three=3, h=self.heads)  # 3 x (B, h, T, hd)
        dropout = self.attn_dropout if self.training else 0.0
        if attention:
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])  # (B, h, T, T)
            probs = scores.softmax(dim=-1)  # (B, h, T, T), each row sums to 1
            x = F.dropout(probs, dropout, self.training) @ v  # (B, h, T, hd)
        else:
            probs = None
            x = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)  # (B, h, T, hd)
        x = rearrange(x, "b h t d -> b t (h d)")  # (B, T, D)
        return self.proj_drop(self.proj(x)), probs


class MLP(nn.Module):
    def __init__(self, config: ViTConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.dim, config.mlp_dim)
        self.fc2 = nn.Linear(config.mlp_dim, config.dim)
        self.drop = nn.Dropout(config.dropout)
        self.gelu_approximate = "tanh" if config.gelu == "tanh" else "none"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.fc1(x), approximate=self.gelu_approximate)  # (B, T, mlp_dim)
        return self.drop(self.fc2(self.drop(x)))  # (B, T, D)


class MAPHead(nn.Module):
    """Multihead attention pooling (big_vision's MAPHead): a learned probe attends over the tokens.

    Instead of reading one token or averaging all of them, a single learned query (the
    probe) asks every head "which tokens matter?" and takes their weighted mean; an MLP with
    a residual, as in an encoder block, then refines that one vector. Queries come from the
    probe only, keys and values from the tokens, hence two projections: ``q`` (D -> D) and
    a fused ``kv`` (D -> 2D, rows [k; v], heads contiguous inside each, as timm's
    AttentionPoolLatent). As in big_vision, the tokens arrive already through the encoder's
    final norm, the probe is not normalised, and there is no dropout in the head.
    """

    def __init__(self, config: ViTConfig):
        super().__init__()
        self.heads = config.heads
        self.probe = nn.Parameter(torch.zeros(1, 1, config.dim))
        self.q = nn.Linear(config.dim, config.dim)  # always with bias: big_vision's and timm's pooling have one
        self.kv = nn.Linear(config.dim, 2 * config.dim)
        self.proj = nn.Linear(config.dim, config.dim)
        self.norm = nn.LayerNorm(config.dim, eps=config.norm_eps)
        self.mlp = MLP(config.replace(dropout=0.0))  # big_vision's MAPHead MLP has no dropout

    @torch.no_grad()
    def init_weights(self) -> None:
        """big_vision's init: xavier-uniform kernels and probe, zero biases."""
        # flax's xavier_uniform of a (1, 1, D) param sees fan_in 1, fan_out D; torch's would see D and D.
        bound = math.sqrt(6.0 / (1 + self.probe.shape[-1]))
        nn.init.uniform_(self.probe, -bound, bound)
        # k and v are separate (D, D) kernels in flax: initialise each half on its own fans.
        for w in (self.q.weight, *self.kv.weight.chunk(2), self.proj.weight):
            nn.init.xavier_uniform_(w)
        for b in (self.q.bias, self.kv.bias, self.proj.bias):
            nn.init.zeros_(b)

    def forward(self, x: torch.Tensor, attention: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Tokens (B, N, D) -> (pooled (B, D), the probe's attention (B, heads, 1, N) if ``attention``)."""
        B = x.shape[0]
        q = self.q(self.probe).expand(B, -1, -1)  # (B, 1, D): the same query for every image
        q = rearrange(q, "b t (h d) -> b h t d", h=self.heads)  # (B, h, 1, hd)
        k, v = rearrange(self.kv(x), "b n (two h d) -> two b h n d", two=2, h=self.heads)  # 2 x (B, h, N, hd)
        if attention:  # the explicit path, as in Attention
            probs = ((q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])).softmax(dim=-1)  # (B, h, 1, N)
            x = probs @ v  # (B, h, 1, hd)
        else:
            probs = None
            x = F.scaled_dot_product_attention(q, k, v)  # (B, h, 1, hd): per head, a weighted mean of the values
        x = self.proj(rearrange(x, "b h t d -> b t (h d)"))  # (B, 1, D)
        x = x + self.mlp(self.norm(x))  # (B, 1, D)
        return x[:, 0], probs  # (B, D)


class DropPath(nn.Module):
    """Stochastic depth: in training, skip a residual branch for a random subset of samples.

    The kept samples are scaled by 1/keep so the expected output is unchanged.
    """

    def __init__(self, rate: float):
        super().__init__()
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.rate == 0.0 or not self.training:
            return x
        keep = 1.0 - self.rate
        mask = x.new_empty(x.shape[0], *([1] * (x.ndim - 1))).bernoulli_(keep)  # (B, 1, 1)
        return x * mask / keep


class Block(nn.Module):
    """Pre-norm encoder block: x + attn(norm(x)), then x + mlp(norm(x)).

    Normalising before each branch (not after, as the original Transformer did) keeps the
    residual path an identity, so gradients reach the first block undiminished and deep stacks
    train stably. It makes the learning-rate warm-up less critical (post-norm Transformers
    diverge without one, Xiong et al. 2020), not unnecessary: ViT recipes, and every training
    profile of minivit (minivit/train/profiles.py), still warm up.
    """

    def __init__(self, config: ViTConfig, drop_path: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(config.dim, eps=config.norm_eps)
        self.attn = Attention(config)
        self.norm2 = nn.LayerNorm(config.dim, eps=config.norm_eps)
        self.mlp = MLP(config)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, attention: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, T, D) -> ((B, T, D), attention probabilities (B, heads, T, T) or None)."""
        attn_out, probs = self.attn(self.norm1(x), attention)  # (B, T, D)
        x = x + self.drop_path(attn_out)  # (B, T, D)
        return x + self.drop_path(self.mlp(self.norm2(x))), probs  # (B, T, D)


class ViT(nn.Module):
    """Vision Transformer (Dosovitskiy et al., 2021), faithful to Google's checkpoints.

    Example:
        >>> import torch
        >>> from minivit import ViT, ViTConfig
        >>> model = ViT(ViTConfig(image_size=32, patch_size=8, dim=64, depth=2, heads=4, mlp_dim=128, num_classes=7))
        >>> model(torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 7])
        >>> model(torch.randn(2, 3, 48, 64)).shape  # another size: position embeddings are resampled
        torch.Size([2, 7])
    """

    def __init__(self, config: ViTConfig):
        super().__init__()
        self.config = config
        self.patch_embed = PatchEmbed(config) if config.stem == "patch" else ConvStem(config)
        if config.classifier == "token":
            self.cls_token = nn.Parameter(torch.zeros(1, 1, config.dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, config.num_tokens, config.dim))
        self.pos_drop = nn.Dropout(config.dropout)
        # Stochastic depth grows linearly with depth: early blocks are almost always kept.
        rates = [config.drop_path * i / max(config.depth - 1, 1) for i in range(config.depth)]
        self.blocks = nn.ModuleList(Block(config, rate) for rate in rates)
        self.norm = nn.LayerNorm(config.dim, eps=config.norm_eps)
        self.map_head = MAPHead(config) if config.classifier == "map" else None
        self.pre_logits = nn.Linear(config.dim, config.representation_size) if config.representation_size else None
        self.head = self._zero_head(config.num_classes)
        self.grad_checkpointing = False
        self.init_weights()

    def _zero_head(self, num_classes: int) -> nn.Linear | None:
        """The classifier for ``num_classes`` (None for 0: the model returns its pooled features), at zero."""
        if not num_classes:
            return None
        head = nn.Linear(self.config.representation_size or self.config.dim, num_classes)
        # A zero head starts fine-tuning from uniform predictions instead of random ones.
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)
        return head

    @torch.no_grad()
    def init_weights(self):
        """Initialise as Google's vit_jax and timm do; deterministic under torch.manual_seed."""
        _trunc_normal(self.pos_embed, std=0.02)
        if self.config.classifier == "token":
            _trunc_normal(self.cls_token, std=0.02)
        self.patch_embed.init_weights()
        for module in self.modules():
            if isinstance(module, nn.Linear) and module is not self.head:
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        if self.map_head is not None:
            self.map_head.init_weights()  # after the loop above: its probe and split kv init differ

    # -- input size ----------------------------------------------------------------------

    def resize_image(self, new_size: int | tuple[int, int]) -> None:
        """Resample the position embedding once for a new input size (e.g. 224 -> 48).

        The same rule as the forward pass uses for an input of another size (resample_pos_embed),
        so a resized model computes exactly what the original computes on the new size.

        Example:
            >>> m = ViT(ViTConfig(image_size=32, patch_size=8, dim=16, depth=1, heads=2, mlp_dim=32))
            >>> m.resize_image(48); m.pos_embed.shape
            torch.Size([1, 37, 16])
        """
        old_grid = self.config.grid
        new_config = self.config.replace(image_size=new_size)  # validates divisibility
        prefix = new_config.num_prefix_tokens
        new = resample_pos_embed(self.pos_embed.data, new_config.grid, old_grid, prefix)  # (1, P + h*w, D)
        self.pos_embed = nn.Parameter(new)
        self.config = new_config

    # -- head ----------------------------------------------------------------------------

    def reset_head(self, num_classes: int, keep_representation: bool = False) -> None:
        """Replace the classifier with a zero-initialised one for a new task, by the one rule of
        ViTConfig.with_new_head: as in the ViT paper's fine-tuning, the pre-training representation
        layer (pre_logits) is dropped unless ``keep_representation``.
        """
        self.config = self.config.with_new_head(num_classes, keep_representation)
        if self.config.representation_size is None:
            self.pre_logits = None
        self.head = self._zero_head(num_classes)
        if self.head is not None:  # where and in what precision the rest of the model is (cuda, bf16, ...)
            self.head.to(device=self.pos_embed.device, dtype=self.pos_embed.dtype)

    # -- forward -------------------------------------------------------------------------

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        """Recompute block activations in the backward pass: less memory, ~30% more compute."""
        self.grad_checkpointing = enabled

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) -> tokens with position embeddings (B, T, D), T = prefix + patches.

        An input whose patch grid is not the config's gets the position embeddings resampled
        on the fly (differentiably, every call); ``resize_image`` does it once instead.
        """
        config = self.config
        if x.ndim != 4:  # batches only, as nanoGPT's model: one image is x[None], a (1, C, H, W) batch
            one = ": for one image pass x[None]" if x.ndim == 3 else ""
            raise ConfigError(f"input has shape {tuple(x.shape)} but the model expects a batch of images "
                              f"(B, C, H, W){one}")
        B, C, H, W = x.shape
        if C != config.in_chans:
            raise ConfigError(f"input has {C} channel{'s' if C != 1 else ''} but the model expects {config.in_chans} "
                              f"(in_chans={config.in_chans})")
        p = config.patch_size
        if H % p or W % p:
            raise ConfigError(f"input size {H}x{W} is not a multiple of the patch size {p}")
        x = self.patch_embed(x)  # (B, N, D)
        if config.classifier == "token":
            x = torch.cat([self.cls_token.expand(B, -1, -1), x], dim=1)  # (B, 1 + N, D)
        pos_embed = resample_pos_embed(self.pos_embed, (H // p, W // p), config.grid, config.num_prefix_tokens)  # (1, T, D)
        return self.pos_drop(x + pos_embed)  # (B, T, D)

    def forward(self, x: torch.Tensor, *, return_out: bool = False, attention: bool = False):
        """Images (B, C, H, W) -> logits (B, num_classes), or the pooled features without a head.
        Batches only: one (C, H, W) image is a ConfigError (pass ``x[None]``).

        ``return_out=True`` returns ``(logits, out)``, big_vision's dict of intermediates (collected only
        then: a plain call keeps no block's output beyond the next block):
        ``out["tokens"]`` the (B, T, D) tokens after each block, ``out["encoded"]`` after the
        final norm (before it with ``norm_after_pool``), ``out["pooled"]`` (B, D) the pooled vector
        (normed with ``norm_after_pool``), ``out["pre_logits"]`` what the head reads.
        ``attention=True`` (implies return_out) runs the explicit softmax path and adds
        ``out["attention"]``, one (B, heads, T, T) per block, and for a MAP head
        ``out["map_attention"]`` (B, heads, 1, N), the probe's weights over the tokens.
        """
        config = self.config
        out: dict = {"tokens": []}
        maps = []
        x = self.embed(x)  # (B, T, D)
        for block in self.blocks:
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x, probs = checkpoint(block, x, attention, use_reentrant=False)  # (B, T, D), (B, h, T, T) or None
            else:
                x, probs = block(x, attention)  # (B, T, D), (B, h, T, T) or None
            if return_out or attention:  # kept only when asked for: under no_grad each block's output is freed
                out["tokens"].append(x)
                maps.append(probs)
        x = out["encoded"] = x if config.norm_after_pool else self.norm(x)  # (B, T, D)
        if config.classifier == "token":
            x = x[:, 0]  # (B, D): the CLS token
        elif config.classifier == "map":
            x, map_probs = self.map_head(x, attention)  # (B, D), (B, h, 1, N) or None
            if attention:
                out["map_attention"] = map_probs
        else:
            x = x[:, config.num_prefix_tokens:].mean(dim=1)  # (B, D)
        x = out["pooled"] = self.norm(x) if config.norm_after_pool else x  # (B, D)
        if self.pre_logits is not None:
            x = torch.tanh(self.pre_logits(x))  # (B, rep)
        out["pre_logits"] = x
        logits = x if self.head is None else self.head(x)  # (B, num_classes)
        if attention:
            out["attention"] = maps
        return (logits, out) if return_out or attention else logits

    # -- construction --------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, source, *, num_classes: int | None = None,
                        image_size: int | tuple[int, int] | None = None, strict: bool = True,
                        keep_representation: bool = False, **overrides) -> "ViT":
        """Load a checkpoint in any supported layout; returns the model in eval mode.

        ``source``: a Google ``.npz`` (vit_jax, AugReg, big_vision), minivit's ``.safetensors``
        (``save_checkpoint``'s, a run's ``best.safetensors``, the model part of a
        ``resume.safetensors``), a transformers/timm folder, a name from weights/manifest.json
        (``"ViT-B_16"``) or a Hugging Face repo id. The checkpoint layer reads the file as it is
        (minivit.checkpoints.load_state); the model is built from it, and then adapted by its own
        methods, as timm does: ``num_classes`` other than the file's is ``reset_head`` (a zero head;
        the representation layer dropped unless ``keep_representation``), ``image_size`` is
        ``resize_image`` (the position embeddings resampled once). What was loaded, dropped and
        created is in ``model.load_report``. See docs/checkpoints.md.

        Example:
            >>> import os, tempfile, torch
            >>> from minivit.checkpoints import save_checkpoint
            >>> m = ViT(ViTConfig(image_size=16, patch_size=8, dim=16, depth=1, heads=2, mlp_dim=32, num_classes=3))
            >>> path = os.path.join(tempfile.mkdtemp(), "m.safetensors")
            >>> save_checkpoint(m, path)
            >>> x = torch.randn(1, 3, 16, 16)
            >>> torch.equal(ViT.from_pretrained(path)(x), m.eval()(x))
            True
        """
        # the one import that runs up a chapter: the checkpoint layer reads files, and imports only the
        # model's config (tests/test_layering.py)
        from ..checkpoints import load_state

        config, state, report = load_state(source, strict=strict, **overrides)
        model = cls(config)
        model.copy_checkpoint(state, report.source)
        if num_classes is not None and num_classes != config.num_classes:
            model.reset_head(num_classes, keep_representation)
            report.head_replaced(config, model.config)
        if image_size is not None:
            before = model.config
            try:
                model.resize_image(image_size)
            except ConfigError:
                raise CheckpointError(f"{report.source}: image_size={image_size} is not a multiple of the "
                                      f"checkpoint's patch size {config.patch_size} (or below it)") from None
            report.resampled(before, model.config)
        model.eval()
        model.load_report = report
        report.log()
        return model

    @torch.no_grad()
    def copy_checkpoint(self, state: dict, source: str) -> None:
        """Copy a checkpoint's tensors into this model. As nanoGPT: every name and every shape must fit
        before anything is copied (a CheckpointError naming ``source`` otherwise); copy_ casts float16 /
        float64 files to the model's dtype."""
        target = self.state_dict()
        for k, t in state.items():
            if k not in target or t.shape != target[k].shape:
                need = f"needs {tuple(target[k].shape)}" if k in target else "has no such tensor"
                raise CheckpointError(f"{source}: {k} has shape {tuple(t.shape)} in the checkpoint but the config {need}")
        for k, t in state.items():
            target[k].copy_(t)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def create_model(name: str, **overrides) -> ViT:
    """A randomly initialised ViT by name, e.g. ``create_model("B/16", num_classes=7)``.

    Example:
        >>> create_model("ViT-B_16").num_params()
        86567656
    """
    return ViT(config_from_name(name, **overrides))
