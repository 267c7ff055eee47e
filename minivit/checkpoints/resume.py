"""The resume checkpoint: everything a training run needs to continue bit-exactly, in one safetensors file.

``resume.safetensors`` holds every tensor of the run -- ``model.*``, ``ema.*`` (the averaged copy,
buffers included) and ``optim.<i>.<name>`` (AdamW's moments and step counts, SGD's momentum) -- and,
in its metadata, the model's config (``minivit_config``, so ``ViT.from_pretrained`` reads the model
part) and ``train_state``: a JSON of everything else (epoch, step, history, the optimiser's param
groups, the GradScaler, the RNG states). Nothing is pickled; the file is written atomically.

Example:
    >>> import os, tempfile, torch
    >>> from minivit import ViT, ViTConfig
    >>> m = ViT(ViTConfig(image_size=8, patch_size=4, dim=8, depth=1, heads=2, mlp_dim=16, num_classes=2))
    >>> opt = torch.optim.AdamW(m.parameters())
    >>> path = os.path.join(tempfile.mkdtemp(), "resume.safetensors")
    >>> save_resume(path, m, opt, None, None, {"epoch": 1, "step": 5})
    >>> config, tensors, state = load_resume(path)
    >>> config.dim, state["step"], sorted(tensors)[0]
    (8, 5, 'model.blocks.0.attn.proj.bias')
"""

from __future__ import annotations

import base64
import json
import random

import numpy as np
import torch

from ..common.errors import CheckpointError
from ..model.config import ViTConfig
from .configs import CONFIG_KEY
from .writing import write_safetensors

def _b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.cpu().numpy().tobytes()).decode()


def _unb64(s: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8)


def rng_state() -> dict:
    """Every RNG the run draws from (dropout, drop-path), as JSON-safe values."""
    np_state = np.random.get_state()
    version, internal, gauss = random.getstate()
    state = {
        "torch": _b64(torch.get_rng_state()),
        "python": [version, list(internal), gauss],
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
    }
    if torch.cuda.is_initialized():
        # this process's GPU only: get_rng_state_all() would touch every visible GPU, and a resume
        # with fewer GPUs visible could not restore it
        state["cuda"] = _b64(torch.cuda.get_rng_state())
    return state


def set_rng_state(state: dict) -> None:
    """Restore what rng_state() saved."""
    torch.set_rng_state(_unb64(state["torch"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), *rest))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(_unb64(state["cuda"]))


def save_resume(path, model, optimizer, scaler, ema, state: dict) -> None:
    """One safetensors file with all tensors (model.*, ema.*, optim.<i>.<name>) and a JSON of the rest.

    ``scaler``: a torch.amp.GradScaler or None; ``ema``: an object with ``.module`` and ``.updates``
    (minivit.train.optim.EMA) or None; ``state``: JSON-safe run state (epoch, step, history, ...).
    """
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    if ema is not None:
        tensors.update({f"ema.{k}": v for k, v in ema.module.state_dict().items()})
    osd = optimizer.state_dict()
    for idx, param_state in osd["state"].items():
        for name, value in param_state.items():
            if torch.is_tensor(value):
                tensors[f"optim.{idx}.{name}"] = value
    state = dict(state, optimizer_groups=osd["param_groups"],
                 scaler=scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
                 ema_updates=ema.updates if ema is not None else 0, rng=rng_state())
    metadata = {CONFIG_KEY: json.dumps(model.config.to_dict()), "train_state": json.dumps(state)}
    write_safetensors(tensors, path, metadata)


def load_resume(path) -> tuple[ViTConfig, dict, dict]:
    """(model config, tensors, run state) of a resume.safetensors; CheckpointError naming the file otherwise."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # a missing, truncated or foreign file
        raise CheckpointError(f"{path}: cannot read resume checkpoint ({type(e).__name__}: {e})") from None
    if "train_state" not in meta or CONFIG_KEY not in meta:
        raise CheckpointError(f"{path}: not a minivit resume checkpoint (no train_state metadata)")
    try:
        return ViTConfig.from_dict(json.loads(meta[CONFIG_KEY])), tensors, json.loads(meta["train_state"])
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: bad resume metadata ({str(e).splitlines()[0]})") from None


def restore(tensors: dict, state: dict, model, optimizer, scaler, ema, where="resume checkpoint") -> None:
    """Put what load_resume read back into the model, optimiser, scaler, EMA and the RNGs.

    ``where`` (the file) names the error when the saved optimiser state does not fit ``optimizer``.
    """
    def part(prefix):
        return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}

    model.load_state_dict(part("model."))
    if ema is not None and any(k.startswith("ema.") for k in tensors):
        ema.module.load_state_dict(part("ema."))
        ema.updates = state["ema_updates"]
    optim_state: dict[int, dict] = {}
    for key, value in part("optim.").items():
        idx, name = key.split(".", 1)
        optim_state.setdefault(int(idx), {})[name] = value
    try:
        optimizer.load_state_dict({"state": optim_state, "param_groups": state["optimizer_groups"]})
    except (ValueError, KeyError, TypeError, RuntimeError) as e:  # another optimiser or param-group layout
        raise CheckpointError(f"{where}: the saved optimiser state does not fit this optimiser "
                              f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    if state.get("scaler") and scaler is not None and scaler.is_enabled():
        scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])
