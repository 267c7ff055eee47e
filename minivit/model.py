"""The Vision Transformer, top to bottom.

An image is cut into patches, each patch becomes a token, the tokens talk to each other
through self-attention, and one vector summarising them is classified:

    image (B, C, H, W)
      -> PatchEmbed            (B, N, D)      N = (H/p) * (W/p) patches of p x p pixels
      -> [CLS] + pos_embed     (B, 1 + N, D)  a learned token to classify from; where each patch was
      -> Block x depth         (B, 1 + N, D)  pre-norm attention + MLP, with residuals
      -> norm, pool            (B, D)         the CLS token, the mean of the patch tokens, or attention pooling
      -> pre_logits, head      (B, num_classes)

Shapes are written for ViT-B/16 at 224x224 in docs/architecture.md. The names of modules
and parameters here are minivit's checkpoint layout; minivit/checkpoints maps every other
layout (Google's .npz, transformers, timm) onto them.

Example:
    >>> import torch, minivit
    >>> model = minivit.create_model("Ti/16", image_size=48, patch_size=4, num_classes=7)
    >>> model(torch.randn(2, 3, 48, 48)).shape
    torch.Size([2, 7])
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange
from torch.utils.checkpoint import checkpoint

from .config import ViTConfig, config_from_name
from .errors import ConfigError


def resample_pos_embed(
    pos_embed: torch.Tensor,
    new_grid: tuple[int, int],
    old_grid: tuple[int, int],
    num_prefix: int,
    mode: str = "bicubic",
    antialias: bool = True,
) -> torch.Tensor:
    """Resample position embeddings learned on one patch grid to another.

    The CLS slot has no place on the grid, so it is kept apart and put back unchanged.
    The grid is interpolated in float32 whatever the model's dtype (bf16 interpolation
    visibly blurs the embeddings), and antialiased so that shrinking a 14x14 grid to a
    3x3 one (a 48x48 face with 16x16 patches) averages neighbours instead of sampling a few.

    Example:
        >>> pe = torch.randn(1, 1 + 14 * 14, 8)
        >>> resample_pos_embed(pe, (3, 4), (14, 14), num_prefix=1).shape
        torch.Size([1, 13, 8])
    """
    if tuple(new_grid) == tuple(old_grid):
        return pos_embed
    prefix, grid = pos_embed[:, :num_prefix], pos_embed[:, num_prefix:]  # (1, P, D), (1, gh*gw, D)
    grid = rearrange(grid.float(), "1 (h w) d -> 1 d h w", h=old_grid[0], w=old_grid[1])  # (1, D, gh, gw)
    grid = F.interpolate(grid, size=tuple(new_grid), mode=mode, antialias=antialias, align_corners=False)
    grid = rearrange(grid, "1 d h w -> 1 (h w) d").to(pos_embed.dtype)  # (1, h*w, D)
    return torch.cat([prefix, grid], dim=1)  # (1, P + h*w, D)


def _trunc_normal(tensor: torch.Tensor, std: float) -> None:
    # torch's a/b bounds are absolute (default +-2), not in units of std: pass them scaled.
    nn.init.trunc_normal_(tensor, std=std, a=-2 * std, b=2 * std)


class PatchEmbed(nn.Module):
    """Cut the image into p x p patches and project each to a D-dim token.

    A convolution with kernel = stride = p is exactly "flatten each patch, apply one
    Linear": it is written as a conv because that is one fast kernel.
    """

    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.patch_size = cfg.patch_size
        self.proj = nn.Conv2d(cfg.in_chans, cfg.dim, kernel_size=cfg.patch_size, stride=cfg.patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)  # (B, D, H/p, W/p)
        return rearrange(x, "b d h w -> b (h w) d")  # (B, N, D), patches in row-major order


class Attention(nn.Module):
    """Multi-head self-attention with one fused qkv projection.

    ``forward`` uses PyTorch's fused scaled_dot_product_attention (flash / memory-efficient
    kernels). ``forward_explicit`` spells the same function out and also returns the
    attention probabilities: it is the documentation of the fast path, and what attention
    maps are drawn from. tests/test_model.py checks that both agree.
    """

    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.heads = cfg.heads
        self.attn_dropout = cfg.attn_dropout
        self.qkv = nn.Linear(cfg.dim, 3 * cfg.dim, bias=cfg.qkv_bias)
        self.proj = nn.Linear(cfg.dim, cfg.dim)
        self.proj_drop = nn.Dropout(cfg.dropout)

    def _split_heads(self, x: torch.Tensor):
        qkv = self.qkv(x)  # (B, T, 3D)
        return rearrange(qkv, "b t (three h d) -> three b h t d", three=3, h=self.heads)  # 3 x (B, h, T, hd)

    def _merge_heads(self, x: torch.Tensor) -> torch.Tensor:
        x = rearrange(x, "b h t d -> b t (h d)")  # (B, T, D)
        return self.proj_drop(self.proj(x))  # (B, T, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self._split_heads(x)
        dropout = self.attn_dropout if self.training else 0.0
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)  # (B, h, T, hd)
        return self._merge_heads(x)

    def forward_explicit(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q, k, v = self._split_heads(x)
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])  # (B, h, T, T)
        probs = scores.softmax(dim=-1)  # (B, h, T, T), each row sums to 1
        x = F.dropout(probs, self.attn_dropout, self.training) @ v  # (B, h, T, hd)
        return self._merge_heads(x), probs


class MLP(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.fc1 = nn.Linear(cfg.dim, cfg.mlp_dim)
        self.fc2 = nn.Linear(cfg.mlp_dim, cfg.dim)
        self.drop = nn.Dropout(cfg.dropout)
        self.gelu_approximate = "tanh" if cfg.gelu == "tanh" else "none"

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

    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.heads = cfg.heads
        self.probe = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.q = nn.Linear(cfg.dim, cfg.dim)  # always with bias: big_vision's and timm's pooling have one
        self.kv = nn.Linear(cfg.dim, 2 * cfg.dim)
        self.proj = nn.Linear(cfg.dim, cfg.dim)
        self.norm = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)
        self.mlp = MLP(cfg.replace(dropout=0.0))  # big_vision's MAPHead MLP has no dropout

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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B = x.shape[0]
        q = self.q(self.probe).expand(B, -1, -1)  # (B, 1, D): the same query for every image
        q = rearrange(q, "b t (h d) -> b h t d", h=self.heads)  # (B, h, 1, hd)
        k, v = rearrange(self.kv(x), "b n (two h d) -> two b h n d", two=2, h=self.heads)  # 2 x (B, h, N, hd)
        x = F.scaled_dot_product_attention(q, k, v)  # (B, h, 1, hd): per head, a weighted mean of the values
        x = self.proj(rearrange(x, "b h t d -> b t (h d)"))  # (B, 1, D)
        x = x + self.mlp(self.norm(x))  # (B, 1, D)
        return x[:, 0]  # (B, D)


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
    residual path an identity, which is what lets deep ViTs train without warm-up tricks.
    """

    def __init__(self, cfg: ViTConfig, drop_path: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)
        self.attn = Attention(cfg)
        self.norm2 = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)
        self.mlp = MLP(cfg)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))  # (B, T, D)
        return x + self.drop_path(self.mlp(self.norm2(x)))  # (B, T, D)

    def forward_with_attention(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        attn_out, probs = self.attn.forward_explicit(self.norm1(x))
        x = x + self.drop_path(attn_out)  # (B, T, D)
        return x + self.drop_path(self.mlp(self.norm2(x))), probs


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
        self.config = cfg = config
        self.patch_embed = PatchEmbed(cfg)
        if cfg.classifier == "token":
            self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_tokens, cfg.dim))
        self.pos_drop = nn.Dropout(cfg.dropout)
        # Stochastic depth grows linearly with depth: early blocks are almost always kept.
        rates = [cfg.drop_path * i / max(cfg.depth - 1, 1) for i in range(cfg.depth)]
        self.blocks = nn.ModuleList(Block(cfg, rate) for rate in rates)
        self.norm = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)
        self.map_head = MAPHead(cfg) if cfg.classifier == "map" else None
        self.pre_logits = nn.Linear(cfg.dim, cfg.representation_size) if cfg.representation_size else None
        self.head = self._new_head(cfg.num_classes)
        self.grad_checkpointing = False
        self._pos_cache: dict = {}
        self.init_weights()

    def _new_head(self, num_classes: int) -> nn.Linear | None:
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
        # The patch projection is a Linear on flattened patches: LeCun normal, as flax's Conv.
        # (0.8796 is the std of a unit normal truncated at 2 std; dividing restores the variance.)
        w = self.patch_embed.proj.weight
        _trunc_normal(w, std=math.sqrt(1.0 / w[0].numel()) / 0.87962566)
        nn.init.zeros_(self.patch_embed.proj.bias)
        for module in self.modules():
            if isinstance(module, nn.Linear) and module is not self.head:
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        if self.map_head is not None:
            self.map_head.init_weights()  # after the loop above: its probe and split kv init differ

    # -- position embeddings -------------------------------------------------------------

    def _pos_embed_for(self, grid: tuple[int, int]) -> torch.Tensor:
        """The position embedding for a patch grid, resampled if the grid is not the trained one.

        In inference the resampled table is cached per grid size (and dropped when the
        weights change); in training it is recomputed so that gradients reach pos_embed.
        """
        cfg = self.config
        if grid == cfg.grid:
            return self.pos_embed
        resample = lambda: resample_pos_embed(self.pos_embed, grid, cfg.grid, cfg.num_prefix_tokens)  # noqa: E731
        if torch.compiler.is_compiling() or (torch.is_grad_enabled() and self.pos_embed.requires_grad):
            return resample()
        p = self.pos_embed
        key = (p._version, p.device, p.dtype, p.data_ptr())
        cached = self._pos_cache.get(grid)
        if cached is None or cached[0] != key:
            cached = self._pos_cache[grid] = (key, resample().detach())
        return cached[1]

    def resize_image(self, new_size: int | tuple[int, int]) -> None:
        """Resample the position embedding once for a new input size (e.g. 224 -> 48).

        Example:
            >>> m = ViT(ViTConfig(image_size=32, patch_size=8, dim=16, depth=1, heads=2, mlp_dim=32))
            >>> m.resize_image(48); m.pos_embed.shape
            torch.Size([1, 37, 16])
        """
        old_grid = self.config.grid
        new_config = self.config.replace(image_size=new_size)  # validates divisibility
        new = resample_pos_embed(self.pos_embed.data, new_config.grid, old_grid, new_config.num_prefix_tokens)
        self.pos_embed = nn.Parameter(new)
        self.config = new_config
        self._pos_cache.clear()

    # -- head ----------------------------------------------------------------------------

    def reset_head(self, num_classes: int, keep_representation: bool = False) -> None:
        """Replace the classifier with a zero-initialised one for a new task.

        As in the ViT paper's fine-tuning, the pre-training representation layer
        (pre_logits) is dropped unless ``keep_representation``.
        """
        if not keep_representation:
            self.pre_logits = None
            self.config = self.config.replace(representation_size=None)
        self.config = self.config.replace(num_classes=num_classes)
        device = self.pos_embed.device
        self.head = self._new_head(num_classes)
        if self.head is not None:
            self.head.to(device)

    # -- forward -------------------------------------------------------------------------

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        """Recompute block activations in the backward pass: less memory, ~30% more compute."""
        self.grad_checkpointing = enabled

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        B, _, H, W = x.shape
        p = self.config.patch_size
        if H % p or W % p:
            raise ConfigError(f"input size {H}x{W} is not a multiple of the patch size {p}")
        x = self.patch_embed(x)  # (B, N, D)
        if self.config.classifier == "token":
            x = torch.cat([self.cls_token.expand(B, -1, -1), x], dim=1)  # (B, 1 + N, D)
        x = x + self._pos_embed_for((H // p, W // p))  # (B, T, D)
        return self.pos_drop(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Image batch (B, C, H, W) -> encoded tokens (B, T, D), T = prefix + patches.

        The tokens are layer-normed, except with ``norm_after_pool`` where the norm
        belongs to the pooled vector (see ``forward_head``).
        """
        x = self._embed(x)  # (B, T, D)
        for block in self.blocks:
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)  # (B, T, D)
        return x if self.config.norm_after_pool else self.norm(x)

    def forward_head(self, tokens: torch.Tensor) -> torch.Tensor:
        """Encoded tokens (B, T, D) -> logits (B, num_classes), or features if there is no head."""
        if self.config.classifier == "token":
            x = tokens[:, 0]  # (B, D)
        elif self.config.classifier == "map":
            x = self.map_head(tokens)  # (B, D)
        else:
            x = tokens[:, self.config.num_prefix_tokens :].mean(dim=1)  # (B, D)
        if self.config.norm_after_pool:
            x = self.norm(x)
        if self.pre_logits is not None:
            x = torch.tanh(self.pre_logits(x))  # (B, rep)
        return x if self.head is None else self.head(x)  # (B, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_with_attention(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits and every layer's attention probabilities (B, heads, T, T), by the explicit path.

        Only the encoder's maps: a MAP head's pooling attention is not among them.
        """
        x = self._embed(x)  # (B, T, D)
        maps = []
        for block in self.blocks:
            x, probs = block.forward_with_attention(x)
            maps.append(probs)
        if not self.config.norm_after_pool:
            x = self.norm(x)
        return self.forward_head(x), maps

    # -- construction --------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, source: str, *, num_classes: int | None = None,
                        image_size: int | tuple[int, int] | None = None, strict: bool = True,
                        keep_representation: bool = False, **overrides) -> "ViT":
        """Load a checkpoint in any supported layout; returns the model in eval mode.

        ``source``: a Google ``.npz`` (vit_jax, AugReg, big_vision), a ``.safetensors`` file,
        a transformers/timm folder, a name from weights/manifest.json (``"ViT-B_16"``) or a
        Hugging Face repo id. ``num_classes`` gives a new zero-initialised head; ``image_size``
        resamples the position embeddings once. See docs/checkpoints.md.

        Example:
            >>> model = ViT.from_pretrained("ViT-B_16.npz", num_classes=7, image_size=112)  # doctest: +SKIP
        """
        from .checkpoints import from_pretrained

        return from_pretrained(source, num_classes=num_classes, image_size=image_size, strict=strict,
                               keep_representation=keep_representation, **overrides)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def create_model(name: str, **overrides) -> ViT:
    """A randomly initialised ViT by name, e.g. ``create_model("B/16", num_classes=7)``.

    Example:
        >>> create_model("ViT-B_16").num_params()
        86567656
    """
    return ViT(config_from_name(name, **overrides))
