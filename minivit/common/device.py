"""Where a model runs and in which precision: the one place that decides both.

Training, evaluation, prediction and export all ask the same two questions -- which
device, and which autocast dtype -- and get the same answers from here.

Example:
    >>> import torch
    >>> from minivit.common.device import pick_device, resolve_precision
    >>> pick_device("cpu")
    device(type='cpu')
    >>> resolve_precision("auto", torch.device("cpu"))
    ('fp32', None, False)
"""

from __future__ import annotations

import torch

from .errors import ConfigError

DEVICES = ("auto", "cpu", "cuda")
# precision -> (autocast dtype or None, whether a GradScaler is needed). fp16's narrow exponent
# underflows small gradients, so its loss is scaled; bf16 has fp32's range and needs no scaler.
PRECISIONS = {"bf16": (torch.bfloat16, False), "fp16": (torch.float16, True), "fp32": (None, False)}


def pick_device(choice: str = "auto", local_rank: int = 0) -> torch.device:
    """``"auto"``: this process's GPU when CUDA is available, else the CPU; ``"cpu"``; ``"cuda"``.

    ``local_rank`` picks the GPU under torchrun (one process per GPU).
    """
    if choice not in DEVICES:
        raise ConfigError(f"--device must be one of {', '.join(DEVICES)}, not {choice!r}")
    use_cuda = torch.cuda.is_available() if choice == "auto" else choice == "cuda"
    if not use_cuda:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available")
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise ConfigError(f"process {local_rank} needs GPU cuda:{local_rank} but this machine has {count} GPU(s): "
                          f"start torchrun with --nproc_per_node {count} or fewer, or pass --device cpu")
    return torch.device(f"cuda:{local_rank}")


def cuda_has_bf16() -> bool:
    """Native bf16 on the current GPU (Ampere and newer, ROCm). torch >= 2.4's is_bf16_supported()
    also says yes to pre-Ampere GPUs (T4, V100) that only emulate bf16, slowly: those get fp16."""
    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # a torch without the argument (no emulation check either)
        return torch.cuda.is_bf16_supported()


def resolve_precision(precision: str, device: torch.device) -> tuple[str, torch.dtype | None, bool]:
    """("bf16"|"fp16"|"fp32", autocast dtype, needs GradScaler) for a --precision choice on a device."""
    if precision == "auto":
        if device.type == "cuda":
            precision = "bf16" if cuda_has_bf16() else "fp16"
        else:
            precision = "fp32"  # CPU autocast is slower than fp32 for these small matmuls
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision must be one of auto, {', '.join(PRECISIONS)}, not {precision!r}")
    dtype, scaler = PRECISIONS[precision]
    return precision, dtype, scaler
