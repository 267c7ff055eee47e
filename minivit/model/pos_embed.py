"""Position embeddings for another patch grid: the one resampling rule of minivit.

A ViT learns one position embedding per patch of the grid it was trained on (14x14 for
ViT-B/16 at 224). For another input size the grid changes, and the table is resampled as an
image would be. minivit does it the same way everywhere -- in the forward pass for an input
of another size, in ``ViT.resize_image``, and when a checkpoint of any layout is loaded at
another ``image_size``:

    * the prefix (CLS) slot has no place on the grid: kept apart and put back unchanged;
    * the grid is interpolated **bicubic, antialiased**, with half-pixel centres
      (``align_corners=False``), the default of timm's ``resample_abs_pos_embed`` (what timm
      does for its own checkpoints at another size and for ``dynamic_img_size``);
    * in **float32** whatever the weights' dtype (bf16 interpolation visibly blurs the
      embeddings), then cast back.

Antialiasing matters when shrinking: a 14x14 grid taken to 3x3 (a 48x48 face with 16-pixel
patches) averages neighbours instead of sampling a few. Other code resamples differently, so
a model loaded at another size there computes slightly different numbers than here:

    * transformers' ``interpolate_pos_encoding``: bicubic, half-pixel, **no antialias**, in the
      weights' dtype;
    * timm loading a Google ``.npz``: **bilinear, no antialias**;
    * Google's own fine-tuning code: ``scipy.ndimage.zoom(order=1)`` (bilinear, corner-aligned).

minivit copies none of these per layout, so one function is computed whichever way a model
reaches a new size.

This module imports only torch and einops, so both the model and the checkpoint loader use it
without importing each other.

Example:
    >>> import torch
    >>> pe = torch.randn(1, 1 + 14 * 14, 8)
    >>> resample_pos_embed(pe, (3, 4), (14, 14), num_prefix=1).shape
    torch.Size([1, 13, 8])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange


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
