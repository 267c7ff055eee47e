"""Attention rollout and last-layer attention: which image patches a ViT's prediction draws on.

Both functions take what ``model(x, attention=True)`` returns, ``out["attention"]`` (a list of
per-block probabilities, each (B, heads, T, T)) and ``out.get("map_attention")`` (the MAP probe's
(B, heads, 1, N), for ``classifier="map"``), and give one float32 (B, gh, gw) map per image,
scaled to [0, 1] (min to max; a flat map is all zeros).

Attention rollout (Abnar & Zuidema, "Quantifying Attention Flow in Transformers", 2020): each
block mixes tokens by its attention A (heads averaged) *plus* the residual connection, so one block
moves information by ``0.5 * A + 0.5 * I`` (rows renormalised to sum to 1); the blocks compose by
matrix product, last block on the left: ``R = A'_L ... A'_1``. Row i of R says how much of token
i's final state came from each input token. Which row the classifier reads depends on the pooling:

* a CLS token (``num_prefix_tokens > 0``): the CLS row;
* global average pooling: the mean of the rows (the pooled vector is the mean of the final tokens);
* attention pooling (MAP): the probe's attention over the final tokens times R.

Rollout is a heuristic: it ignores the MLPs and the values' norms, and the 0.5 residual weight is a
choice. It shows where information *can* flow from, not a causal explanation (docs/attention.md).

Example (two tokens, one CLS and one patch, on a 1 x 1 grid):
    >>> import torch
    >>> a = torch.tensor([[[[0.0, 1.0], [0.0, 1.0]]]])  # (B=1, h=1, T=2, T): all attend to the patch
    >>> attention_rollout([a, a], grid=(1, 1), num_prefix_tokens=1).shape
    torch.Size([1, 1, 1])
"""

from __future__ import annotations

import torch

from ..common.errors import ConfigError


def _check(attentions, grid: tuple[int, int], num_prefix_tokens: int) -> None:
    if not attentions:
        raise ConfigError("no attention maps given (call the model with attention=True)")
    for i, a in enumerate(attentions):
        if a.ndim != 4 or a.shape[-1] != a.shape[-2]:
            raise ConfigError(f"attention map {i} has shape {tuple(a.shape)}; expected (B, heads, T, T)")
    tokens, (gh, gw) = attentions[0].shape[-1], grid
    if tokens != num_prefix_tokens + gh * gw:
        raise ConfigError(f"attention over {tokens} tokens does not fit a {gh}x{gw} grid with "
                          f"{num_prefix_tokens} prefix token(s) ({num_prefix_tokens + gh * gw} tokens)")


def rollout_matrix(attentions) -> torch.Tensor:
    """The rollout R = A'_L ... A'_1 of a batch, float32 (B, T, T) whose rows sum to 1.

    Per block: heads averaged, the residual added as 0.5 * identity, rows renormalised (which also
    repairs the rows of bf16/fp16 maps that do not quite sum to 1).

    >>> a = torch.tensor([[[[0.0, 1.0], [0.0, 1.0]]]])  # one head: both tokens attend to token 1
    >>> rollout_matrix([a])[0].tolist()
    [[0.5, 0.5], [0.0, 1.0]]
    """
    rollout = None
    for a in attentions:
        a = a.float().mean(1)  # (B, T, T): heads averaged
        a = 0.5 * a + 0.5 * torch.eye(a.shape[-1], device=a.device)  # (B, T, T): + residual path
        a = a / a.sum(-1, keepdim=True)  # (B, T, T): rows sum to 1
        rollout = a if rollout is None else a @ rollout  # (B, T, T): later block on the left
    return rollout


def _pooled_row(matrix: torch.Tensor, num_prefix_tokens: int, map_attention) -> torch.Tensor:
    """The weights over input tokens of what the classifier reads, (B, T), from a (B, T, T) token
    mixing matrix (the rollout, or one block's attention)."""
    if map_attention is not None:
        probe = map_attention.float().mean(1)[:, 0].to(matrix.device)  # (B, N): heads averaged, one query
        rows = matrix if probe.shape[-1] == matrix.shape[-1] else matrix[:, num_prefix_tokens:]  # (B, N, T)
        if probe.shape[-1] != rows.shape[1]:
            raise ConfigError(f"map_attention over {probe.shape[-1]} tokens does not fit attention over "
                              f"{matrix.shape[-1]} tokens")
        return (probe[:, None] @ rows)[:, 0]  # (B, T)
    if num_prefix_tokens:
        return matrix[:, 0]  # (B, T): the CLS token's row
    return matrix.mean(1)  # (B, T): global average pooling reads the mean of the final tokens


def _to_grid(row: torch.Tensor, grid: tuple[int, int], num_prefix_tokens: int) -> torch.Tensor:
    """Patch weights (B, T) -> (B, gh, gw) scaled to [0, 1] per image (a flat map becomes 0)."""
    patches = row[:, num_prefix_tokens:].reshape(row.shape[0], *grid)  # (B, gh, gw): row-major patches
    low = patches.amin((1, 2), keepdim=True)  # (B, 1, 1)
    span = patches.amax((1, 2), keepdim=True) - low  # (B, 1, 1)
    return ((patches - low) / span.clamp_min(1e-12)).float()  # (B, gh, gw)


def attention_rollout(attentions, grid: tuple[int, int], num_prefix_tokens: int,
                      map_attention: torch.Tensor | None = None) -> torch.Tensor:
    """Attention rollout over all blocks, as float32 (B, gh, gw) maps in [0, 1].

    attentions: list of (B, heads, T, T) (``out["attention"]``); grid: (gh, gw) patches
    (``model.config.grid``, not necessarily square); num_prefix_tokens: 1 for a CLS token, 0 for
    GAP / MAP; map_attention: ``out.get("map_attention")``, (B, heads, 1, N) for MAP models.

    >>> eye = [torch.eye(7).expand(2, 3, 7, 7)] * 4  # no mixing at all: B=2, 3 heads, 1 + 2x3 tokens
    >>> attention_rollout(eye, (2, 3), 1).abs().sum().item()  # the CLS row holds nothing of the patches
    0.0
    """
    _check(attentions, grid, num_prefix_tokens)
    return _to_grid(_pooled_row(rollout_matrix(attentions), num_prefix_tokens, map_attention), grid,
                    num_prefix_tokens)


def last_layer_attention(attentions, grid: tuple[int, int], num_prefix_tokens: int,
                         map_attention: torch.Tensor | None = None) -> torch.Tensor:
    """What the pooled token attends to in the last block, heads averaged: float32 (B, gh, gw) in [0, 1].

    The CLS token's attention row for token models, the mean row for GAP; for MAP models the probe's
    own attention (the last attention before the classifier). Same arguments as attention_rollout.

    >>> a = torch.zeros(1, 2, 7, 7); a[..., 4] = 1.0  # every token attends to patch 3 = row 1, col 0
    >>> last_layer_attention([a], (2, 3), 1)[0].tolist()
    [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]
    """
    _check(attentions, grid, num_prefix_tokens)
    if map_attention is not None:
        probe = map_attention.float().mean(1)[:, 0]  # (B, N)
        tokens = attentions[-1].shape[-1]
        row = probe if probe.shape[-1] == tokens else torch.nn.functional.pad(probe, (num_prefix_tokens, 0))  # (B, T)
        return _to_grid(row, grid, num_prefix_tokens)
    last = attentions[-1].float().mean(1)  # (B, T, T): heads averaged
    return _to_grid(_pooled_row(last, num_prefix_tokens, None), grid, num_prefix_tokens)


__all__ = ["attention_rollout", "last_layer_attention", "rollout_matrix"]
