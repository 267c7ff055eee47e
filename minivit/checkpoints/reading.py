"""Reading checkpoint files defensively: files nobody should trust are parsed without ever unpickling.

Every reader returns ``(tensors: dict[str, torch.Tensor], metadata: dict[str, str])`` and
turns any failure into a one-line ``CheckpointError`` naming the file. Nothing is ever
unpickled: ``np.load(allow_pickle=False)``, ``torch.load(weights_only=True)``. The files people
download by mistake (an HTML login page, a Git LFS pointer) are recognised before parsing.

Example:
    >>> import tempfile, torch, os
    >>> from minivit.checkpoints.writing import write_safetensors
    >>> path = os.path.join(tempfile.mkdtemp(), "t.safetensors")
    >>> write_safetensors({"w": torch.ones(2)}, path, {"note": "hi"})
    >>> read_safetensors(path)[1]["note"]
    'hi'
"""

from __future__ import annotations

import json
import os
import re
import struct
from pathlib import Path

import numpy as np
import torch

from ..common.errors import CheckpointError

MAX_HEADER = 100 * 1024 * 1024  # safetensors refuses headers above 100 MB too


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def looks_like_html(head: bytes) -> bool:
    """True for the first bytes of a web page (a login, quota or error page saved as a checkpoint).

    >>> looks_like_html(b"\\n <!DOCTYPE html><html>"), looks_like_html(b"PK\\x03\\x04")
    (True, False)
    """
    text = head.lstrip().lower()
    return text.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head")) or (text.startswith(b"<") and b"<html" in text)


def sniff(path: Path) -> None:
    """Recognise the files people download by mistake before trying to parse them."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot open ({_first_line(e)})") from None
    if not head:
        raise CheckpointError(f"{path}: file is empty")
    if head.startswith(b"version https://git-lfs"):
        raise CheckpointError(f"{path}: is a Git LFS pointer, not the weights (run `git lfs pull` or download the file itself)")
    if looks_like_html(head):
        raise CheckpointError(f"{path}: is an HTML page, not a checkpoint (a failed or login-walled download?)")


def _check_float(name: str, t: torch.Tensor, path: Path) -> torch.Tensor:
    # Weights are floats; the one integer a model holds is BatchNorm's step counter (conv stem).
    if not t.is_floating_point() and not (name.endswith("num_batches_tracked") and t.dtype == torch.int64):
        raise CheckpointError(f"{path}: tensor {name} has dtype {t.dtype}, expected floating point weights")
    return t


def read_npz(path: Path) -> tuple[dict, dict]:
    """A Google .npz (vit_jax, big_vision): '/'-separated names -> float tensors."""
    sniff(path)
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic.startswith(b"\x93NUMPY"):
        raise CheckpointError(f"{path}: is a single .npy array, not an .npz archive of named weights")
    if not magic.startswith(b"PK"):
        raise CheckpointError(f"{path}: is not an .npz (zip) archive")
    tensors = {}
    try:
        with np.load(path, allow_pickle=False) as z:
            for name in z.files:
                a = z[name]
                if a.dtype.kind != "f":
                    raise CheckpointError(f"{path}: array {name} has dtype {a.dtype}, expected floating point weights")
                # torch cannot wrap big-endian or read-only arrays; a copy in native order can.
                tensors[name] = torch.from_numpy(np.array(a, dtype=a.dtype.newbyteorder("="), copy=True))
    except CheckpointError:
        raise
    except ValueError as e:
        if "pickle" in str(e):
            raise CheckpointError(f"{path}: holds object arrays that need pickle, which minivit never unpickles") from None
        raise CheckpointError(f"{path}: corrupt .npz ({_first_line(e)})") from None
    except Exception as e:  # zipfile, zlib, EOF, OS errors: any failure to parse an untrusted file
        raise CheckpointError(f"{path}: truncated or corrupt .npz ({_first_line(e)})") from None
    if not tensors:
        raise CheckpointError(f"{path}: the .npz archive holds no arrays")
    return tensors, {}


def read_safetensors(path: Path) -> tuple[dict, dict]:
    """A .safetensors file -> (tensors, its string metadata)."""
    from safetensors.torch import load_file

    sniff(path)
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        raw = f.read(8)
        n = struct.unpack("<Q", raw)[0] if len(raw) == 8 else -1
        if n < 2 or n > min(size - 8, MAX_HEADER):
            raise CheckpointError(f"{path}: corrupted safetensors header (declared length {n}, file size {size})")
        try:
            header = json.loads(f.read(n))
            metadata = header.get("__metadata__") or {}
            if not isinstance(metadata, dict):
                raise ValueError("__metadata__ is not a mapping")
        except (ValueError, AttributeError) as e:
            raise CheckpointError(f"{path}: corrupted safetensors header ({_first_line(e)})") from None
    try:
        tensors = load_file(str(path))
    except Exception as e:  # SafetensorError for bad offsets, dtypes, truncation
        raise CheckpointError(f"{path}: corrupt safetensors file ({_first_line(e)})") from None
    for name, t in tensors.items():
        _check_float(name, t, path)
    return tensors, {str(k): str(v) for k, v in metadata.items()}


def read_torch_bin(path: Path) -> tuple[dict, dict]:
    """pytorch_model.bin, read only through torch.load(weights_only=True)."""
    sniff(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path}: cannot read as a weights-only torch file ({_first_line(e)})") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: is not a state dict of tensors")
    for name, t in obj.items():
        _check_float(name, t, path)
    return dict(obj), {}


def read_json(path: Path) -> dict:
    sniff(path)
    try:
        d = json.loads(Path(path).read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({_first_line(e)})") from None
    if not isinstance(d, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return d


# The weight files of a transformers / timm model folder (save_pretrained, timm's save_for_hf): one of
# these beside a config.json makes a folder a model folder (not a training run's folder: see run_folder.py).
# minivit reads the first three; sharded pickles (pytorch_model.bin.index.json) it does not.
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
READABLE_WEIGHT_FILES = WEIGHT_FILES[:3]


def read_weights_in_folder(folder: Path) -> tuple[dict, dict, Path]:
    """The weights of a transformers / timm folder: model.safetensors (or its shards) or pytorch_model.bin."""
    if (folder / "model.safetensors").is_file():
        return (*read_safetensors(folder / "model.safetensors"), folder / "model.safetensors")
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = read_json(index).get("weight_map")
        if not isinstance(weight_map, dict):
            raise CheckpointError(f"{index}: has no weight_map")
        tensors = {}
        for shard in sorted(set(weight_map.values())):
            if not re.fullmatch(r"[\w.-]+\.safetensors", str(shard)):
                raise CheckpointError(f"{index}: bad shard name {shard!r}")
            tensors.update(read_safetensors(folder / shard)[0])
        return tensors, {}, index
    if (folder / "pytorch_model.bin").is_file():
        return (*read_torch_bin(folder / "pytorch_model.bin"), folder / "pytorch_model.bin")
    if (folder / "pytorch_model.bin.index.json").is_file():
        raise CheckpointError(f"{folder}: holds sharded pytorch_model.bin files, which minivit does not read: "
                              f"save the model with safetensors (model.safetensors) instead")
    raise CheckpointError(f"{folder}: holds none of {', '.join(READABLE_WEIGHT_FILES)}")
