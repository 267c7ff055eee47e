"""Where a trained model looks in one image: attention rollout and the last layer's attention, as maps.

Two maps, each scaled to [0, 1], over the image as the model saw it (the face crop, resized and
normalised by the evaluation's preprocessing, shown back in pixels):

- attention rollout (Abnar & Zuidema 2020): every block's attention, heads averaged, with the
  residual added, multiplied through the depth: how much each patch reaches the pooled token;
- the last block's attention of what the classifier reads: the CLS token's row (token pooling),
  the mean row (GAP), or the MAP head's probe attention.

The maps come from ``model(x, attention=True)`` (the explicit softmax path) and
minivit.evaluate.rollout. One image runs at a time in float32 without gradients, so memory stays
bounded: for ViT-B/16 at 224 the maps are 12 blocks x 12 heads x 197 x 197 floats, about 22 MB.
``python -m minivit.attention`` draws them (minivit/commands/attention.py).
"""

from __future__ import annotations

import torch

from ..evaluate.rollout import attention_rollout, last_layer_attention
from .predictor import Predictor


def model_view(predictor: Predictor, x: torch.Tensor) -> torch.Tensor:
    """The model's input (1, C, S, S) shown back as a uint8 (C, S, S) image (normalisation undone)."""
    mean = torch.tensor(predictor.aug.mean[: x.shape[1]], device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(predictor.aug.std[: x.shape[1]], device=x.device).view(1, -1, 1, 1)
    return ((x * std + mean).clamp(0, 1) * 255).round().to(torch.uint8)[0].cpu()  # (C, S, S)


def pooled_name(classifier: str) -> str:
    return {"token": "last layer: CLS token attention", "gap": "last layer: mean attention (GAP)",
            "map": "attention pooling: probe attention (MAP)"}[classifier]


@torch.no_grad()
def attention_maps(predictor: Predictor, crop: torch.Tensor) -> tuple[torch.Tensor, dict, torch.Tensor]:
    """(model input as uint8 (C, S, S), {name: (gh, gw) map in [0, 1]}, probabilities (K,)) for one
    image (C, h, w)."""
    model, config = predictor.model, predictor.model.config
    x = predictor.preprocess(crop).float()  # (1, C, S, S)
    logits, out = model(x, attention=True)  # out["attention"]: depth x (1, heads, T, T)
    args = (out["attention"], config.grid, config.num_prefix_tokens, out.get("map_attention"))
    maps = {"attention rollout": attention_rollout(*args)[0].cpu(),  # (gh, gw)
            pooled_name(config.classifier): last_layer_attention(*args)[0].cpu()}  # (gh, gw)
    return model_view(predictor, x), maps, logits.float().softmax(-1)[0].cpu()


__all__ = ["attention_maps", "model_view", "pooled_name"]
