"""The model: a Vision Transformer read top to bottom, its configuration, and what it is built from.

    config.py      ViTConfig (every field that decides the parameters and the function), SIZES, and the
                   names people write a ViT by ("B/16", "ViT-B_16", timm's, transformers')
    vit.py         the model itself: patches -> tokens -> blocks -> pooled vector -> head; the one rule for
                   resampling position embeddings to another grid (resample_pos_embed); ViT.from_pretrained,
                   reset_head and resize_image (the model owns its shape)
    speed.py       opt-in speed paths (a bf16 inference copy, attention kernels, torch.compile), each
                   checked against the plain model

minivit.checkpoints reads files and imports only config.py from here; ViT.from_pretrained calls it
(minivit.checkpoints.load_state) and adapts what it built with its own methods.

Example:
    >>> from minivit.model import ViT, ViTConfig
    >>> ViT(ViTConfig(image_size=16, patch_size=8, dim=16, depth=1, heads=2, mlp_dim=32)).config.grid
    (2, 2)
"""

from .config import ViTConfig, config_from_name
from .vit import ViT, create_model, resample_pos_embed

__all__ = ["ViT", "ViTConfig", "create_model", "config_from_name", "resample_pos_embed"]
