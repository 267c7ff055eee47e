"""minivit: a readable, fast Vision Transformer in pure PyTorch.

Example:
    >>> import torch, minivit
    >>> model = minivit.create_model("ViT-Ti/16", image_size=48, patch_size=4, num_classes=7)
    >>> model(torch.zeros(1, 3, 48, 48)).shape
    torch.Size([1, 7])
"""

from .config import ViTConfig, config_from_name
from .errors import CheckpointError, ConfigError, DataError, DownloadError, MinivitError, OutputError
from .model import ViT, create_model
from .pos_embed import resample_pos_embed

__version__ = "0.1.0"

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
    # minivit.Predictor (minivit/predict.py) is imported on first use: `import minivit` stays light.
    if name == "Predictor":
        from .predict import Predictor

        return Predictor
    raise AttributeError(f"module 'minivit' has no attribute {name!r}")
