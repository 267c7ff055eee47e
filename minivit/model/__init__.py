"""The model: a Vision Transformer read top to bottom, its configuration, and what it is built from.

    config.py      ViTConfig (every field that decides the parameters and the function), SIZES, and the
                   names people write a ViT by ("B/16", "ViT-B_16", timm's, transformers')
    pos_embed.py   the one rule for resampling position embeddings to another grid
    vit.py         the model itself: patches -> tokens -> blocks -> pooled vector -> head; ViT.from_pretrained
    speed.py       opt-in speed paths (a bf16 inference copy, attention kernels, torch.compile), each
                   checked against the plain model

This package's __init__ imports none of them. minivit.checkpoints needs config.py and pos_embed.py,
and ViT.from_pretrained (vit.py) needs minivit.checkpoints: if importing minivit.model.config ran
an __init__ that loaded vit.py, the two would import each other. So the model is reached as
``minivit.ViT`` (or ``from minivit.model.vit import ViT``), the config as ``minivit.ViTConfig``.
"""
