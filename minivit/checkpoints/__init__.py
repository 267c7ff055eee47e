"""Checkpoints: reading every supported layout into minivit, writing minivit out again, and the files a run keeps.

    layouts.py     the registry LAYOUTS: one key-mapping table per layout (Google vit_jax /
                   big_vision .npz, transformers, timm, minivit), used forwards to load and
                   backwards to export, with how each layout is detected, read and written
    configs.py     each layout's config: inferred from its files (bad values: one-line CheckpointError),
                   and written for its library
    holds.py       what each writable layout can hold of a model (the GELU and LayerNorm eps its files
                   imply, the settings it has no place for): the one rule by which export and the
                   converter refuse before writing, and allow_lossy writes the nearest model instead
    reading.py     defensive readers (never unpickle), HTML and Git LFS sniffing, a model folder's weight files
    loading.py     load_state (file -> config + state + report), read_checkpoint, build_state
    writing.py     save_checkpoint / read_extra (minivit's own format), export to any writable layout
    run_folder.py  RunFolder: a training run's folder, its files, its state (empty, started, resumable,
                   finished), the weights it means; the one reader of a run's config.json; and the
                   format of its resume.safetensors (model, EMA, optimiser state, RNGs and run state)
    hub.py         where checkpoints come from: the manifest, resumable downloads, the Hugging Face cache

This package never imports the model: ``ViT.from_pretrained`` (minivit/model/vit.py) calls
``load_state`` and builds the model from what it returns, then adapts it with the model's own methods.
It takes nothing from minivit.model but its config (model/config.py).

Example (ViT.from_pretrained is load_state plus building the model; this package never builds one):
    >>> import os, tempfile, torch
    >>> from minivit import ViT, ViTConfig
    >>> from minivit.checkpoints import load_state, read_extra, save_checkpoint
    >>> m = ViT(ViTConfig(image_size=16, patch_size=8, dim=16, depth=1, heads=2, mlp_dim=32, num_classes=3))
    >>> path = os.path.join(tempfile.mkdtemp(), "m.safetensors")
    >>> save_checkpoint(m, path, extra={"epoch": 3})
    >>> config, state, report = load_state(path)
    >>> config == m.config, all(torch.equal(state[k], v) for k, v in m.state_dict().items()), read_extra(path)
    (True, True, {'epoch': 3})
"""

from .configs import CONFIG_KEY, timm_config, transformers_config
from .holds import SETTINGS, Holds, Refusal, Setting
from .layouts import LAYOUTS, Layout, Rule, from_minivit, holds_markdown, layout_names, table_markdown, to_minivit
from .run_folder import RunFolder
from .loading import Checkpoint, LoadReport, build_state, load_state, read_checkpoint
from .writing import EXTRA_KEY, export, export_refusals, read_extra, save_checkpoint

__all__ = [
    "LAYOUTS", "Layout", "Rule", "from_minivit", "to_minivit", "layout_names", "table_markdown",
    "SETTINGS", "Setting", "Holds", "Refusal", "holds_markdown",
    "CONFIG_KEY", "EXTRA_KEY", "Checkpoint", "LoadReport", "build_state", "export", "export_refusals", "load_state",
    "read_checkpoint", "read_extra", "save_checkpoint", "timm_config", "transformers_config", "RunFolder",
]
