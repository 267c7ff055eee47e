"""minivit: a readable, fast Vision Transformer in pure PyTorch.

Example:
    >>> import torch, minivit
    >>> model = minivit.create_model("ViT-Ti/16", image_size=48, patch_size=4, num_classes=7)
    >>> model(torch.zeros(1, 3, 48, 48)).shape
    torch.Size([1, 7])

The package reads in chapters (docs/index.md has the map): common, model, checkpoints, data,
evaluate, train, inference; then the commands people type, minivit/commands/ (``minivit train``,
``evaluate``, ``predict``, ``attention``, ``serve``, ``export``, ``convert``, ``hub``, each also
``python -m minivit.<command>`` through a two-line entry; the rule is minivit/commands/__init__.py).
"""

from .common.errors import CheckpointError, ConfigError, DataError, DownloadError, MinivitError, OutputError
from .common.version import __version__
from .model.config import ViTConfig, config_from_name
from .model.vit import ViT, create_model, resample_pos_embed

__all__ = [
    "ViT",
    "ViTConfig",
    "create_model",
    "config_from_name",
    "resample_pos_embed",
    "MinivitError",
    "ConfigError",
    "CheckpointError",
    "DownloadError",
    "DataError",
    "OutputError",
    "Predictor",
]


def __getattr__(name: str):
    # minivit.Predictor (minivit/inference/predictor.py) is imported on first use: `import minivit` stays light.
    if name == "Predictor":
        from .inference.predictor import Predictor

        return Predictor
    raise AttributeError(f"module 'minivit' has no attribute {name!r}")
