"""Checkpoints: reading every supported layout into minivit, and writing minivit out again.

    layouts.py   one key-mapping table per layout (Google vit_jax / big_vision .npz,
                 transformers, timm, minivit), used forwards to load and backwards to export
    io.py        defensive readers (never unpickle) and atomic writers
    loader.py    from_pretrained, config inference, the load report, export

Example:
    >>> import os, tempfile, torch
    >>> from minivit import ViT, ViTConfig
    >>> from minivit.checkpoints import save_checkpoint, from_pretrained
    >>> m = ViT(ViTConfig(image_size=16, patch_size=8, dim=16, depth=1, heads=2, mlp_dim=32, num_classes=3))
    >>> path = os.path.join(tempfile.mkdtemp(), "m.safetensors")
    >>> save_checkpoint(m, path)
    >>> x = torch.randn(1, 3, 16, 16)
    >>> torch.equal(from_pretrained(path)(x), m.eval()(x))
    True
"""

from .layouts import LAYOUTS, Layout, Rule, from_minivit, table_markdown, to_minivit
from .loader import (
    CONFIG_KEY,
    Checkpoint,
    LoadReport,
    build_state,
    convert_transformers_state_dict,
    export_tensors,
    from_pretrained,
    read_checkpoint,
    save_checkpoint,
    save_folder,
    save_npz,
    timm_config,
    transformers_config,
)

__all__ = [
    "LAYOUTS", "Layout", "Rule", "from_minivit", "to_minivit", "table_markdown",
    "CONFIG_KEY", "Checkpoint", "LoadReport", "build_state", "convert_transformers_state_dict", "export_tensors",
    "from_pretrained", "read_checkpoint", "save_checkpoint", "save_folder", "save_npz", "timm_config",
    "transformers_config",
]
