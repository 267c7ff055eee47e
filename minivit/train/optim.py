"""The optimiser side of training: which weights decay, layer-wise LR decay, the EMA. (The LR schedule
is part of the step: minivit/train/loop.py.)"""

from __future__ import annotations

import copy

import torch

# Learned tokens and embeddings: their scale is what they encode, so weight decay would erase it.
NO_DECAY = ("pos_embed", "cls_token", "map_head.probe")
# Parameters after the last block (final norm, pooling, representation layer, head): the top layer.
# (timm's fc_norm is minivit's `norm` applied after pooling: there is no separate module to name.)
TOP = ("norm", "map_head", "pre_logits", "head")


def layer_id(name: str, depth: int) -> int:
    """Depth of a parameter for layer-wise LR decay: the embedding side (patch or conv stem,
    pos_embed, cls_token) 0, block i -> i + 1, everything after the blocks depth + 1.

    >>> layer_id("cls_token", 12), layer_id("blocks.3.mlp.fc1.weight", 12), layer_id("head.weight", 12)
    (0, 4, 13)
    """
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    if name.split(".")[0] in TOP:
        return depth + 1
    return 0


def param_groups(model: torch.nn.Module, weight_decay: float, layer_decay: float = 1.0) -> list[dict]:
    """Parameter groups with ``weight_decay`` and ``lr_scale`` set.

    One rule for decay (as nanoGPT): decay matrices and conv kernels (2-D+); never biases, norm
    gains, pos_embed, cls_token or the MAP probe, whose scale is part of what they encode. With layer decay,
    earlier layers (general features from pre-training) move less than later ones.

    >>> from minivit import ViT, ViTConfig
    >>> m = ViT(ViTConfig(image_size=8, patch_size=4, dim=8, depth=2, heads=2, mlp_dim=16, num_classes=3))
    >>> [(g["layer"], g["weight_decay"], round(g["lr_scale"], 3)) for g in param_groups(m, 0.1, 0.5)][:3]
    [(0, 0.0, 0.125), (0, 0.1, 0.125), (1, 0.0, 0.25)]
    """
    depth = model.config.depth
    groups: dict[tuple[int, bool], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        decay = p.ndim >= 2 and name not in NO_DECAY
        layer = layer_id(name, depth) if layer_decay != 1.0 else 0
        group = groups.setdefault((layer, decay), dict(
            params=[], names=[], layer=layer, weight_decay=weight_decay if decay else 0.0,
            lr_scale=layer_decay ** (depth + 1 - layer) if layer_decay != 1.0 else 1.0))
        group["params"].append(p)
        group["names"].append(name)
    return [groups[k] for k in sorted(groups)]


def build_optimizer(model: torch.nn.Module, cfg, device: torch.device) -> torch.optim.Optimizer:
    """AdamW (fused on CUDA) or SGD with momentum, over param_groups(model)."""
    groups = param_groups(model, cfg.weight_decay, cfg.layer_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    # The fused kernel updates all parameters in one launch: a free speed-up on CUDA.
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), fused=device.type == "cuda")


class EMA:
    """Exponential moving average of a model's weights, kept in a frozen copy of the model.

    Parameters are averaged; buffers (BatchNorm running statistics of a conv stem) are copied, as
    they are already running averages of the current weights' activations. The decay is warmed up
    as min(decay, (1 + n) / (10 + n)) so short runs are not dominated by the random initial weights.
    Both updates are single _foreach kernels over all tensors, not one small kernel per tensor.

    >>> m = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    >>> ema = EMA(m, decay=0.5)
    >>> m[1].running_mean.fill_(3.0); ema.update(m)
    tensor([3., 3.])
    >>> ema.module[1].running_mean.tolist()
    [3.0, 3.0]
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay
        self.updates = 0

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        torch._foreach_lerp_(list(self.module.parameters()), [p.detach() for p in model.parameters()], 1 - d)
        buffers = list(self.module.buffers())
        if buffers:
            torch._foreach_copy_(buffers, list(model.buffers()))
