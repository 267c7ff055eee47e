"""Speed tricks, one named function each, kept out of model.py so the model stays readable.

Every trick here changes *how* the same function is computed, never *what* is computed: each is
tested on the CPU against the plain path (tests/test_speed.py) at float32 tolerance, or at the bf16
tolerance stated beside it. What each one buys, and the measured before/after figures (or
"outstanding" where no GPU was available), are in docs/performance.md.

    trick                         what it buys                                           where it pays
    inference_copy(model)         bf16 weights: no per-step fp32->bf16 weight casts,     inference on GPUs
                                  half the weight bytes read per matmul
    sdpa_backends(...)            picks the attention kernel (cuDNN / flash on Hopper)   CUDA, long sequences
    compile_model(model, mode)    Inductor fusion; "reduce-overhead" adds CUDA graphs    every GPU run; CUDA graphs
                                  (one launch per step instead of ~hundreds)             for small, launch-bound models
    allow_tf32()                  TF32 tensor cores for the float32 matmuls left         Ampere and newer
    begin_step()                  tells CUDA-graph trees that a new step starts          with mode="reduce-overhead"
    channels_last(model)          the conv stem's weights in NHWC order: oneDNN's         training on a CPU
                                  convolutions skip their layout reorders (+15-30%)

Example (each trick is a one-liner around an unchanged model):
    >>> import torch, minivit
    >>> from minivit.model.speed import inference_copy, sdpa_backends
    >>> model = minivit.create_model("Ti/16", image_size=32, patch_size=8, depth=2, num_classes=7).eval()
    >>> fast = inference_copy(model)                       # a bf16 copy; ``model`` is left in float32
    >>> next(fast.parameters()).dtype, next(model.parameters()).dtype
    (torch.bfloat16, torch.float32)
    >>> with sdpa_backends(("flash", "math"), torch.device("cpu")), torch.no_grad():
    ...     fast(torch.randn(2, 3, 32, 32).to(torch.bfloat16)).shape
    torch.Size([2, 7])
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..common.errors import ConfigError

# bf16 keeps 8 bits of mantissa (relative step 2^-8 = 0.4%); through a dozen blocks the rounding
# adds up to about 1% of the logits' size. This is the tolerance the tests hold bf16 paths to:
# ||logits_bf16 - logits_fp32|| <= BF16_RTOL * ||logits_fp32|| (norms over the whole batch).
BF16_RTOL = 0.02

ATTENTION_BACKENDS = {
    "cudnn": SDPBackend.CUDNN_ATTENTION,  # cuDNN's fused attention: the fastest on Hopper in NVIDIA's figures
    "flash": SDPBackend.FLASH_ATTENTION,  # FlashAttention-2 (CUDA); also torch's fused CPU kernel
    "efficient": SDPBackend.EFFICIENT_ATTENTION,  # xFormers' memory-efficient kernel (CUDA)
    "math": SDPBackend.MATH,  # the plain matmul-softmax-matmul: works everywhere, the reference
}
# Attention kernels that exist on a CPU; the others would leave SDPA with no kernel at all.
CPU_BACKENDS = ("flash", "math")
# The order tried by the fast path on Hopper: cuDNN first, flash next, math as the last resort.
HOPPER_ORDER = ("cudnn", "flash", "efficient", "math")

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def inference_copy(model: nn.Module, dtype: torch.dtype = torch.bfloat16) -> nn.Module:
    """A frozen copy of ``model`` with its weights in ``dtype`` (bf16), for inference only.

    What it buys: under autocast every matmul first casts its fp32 weight to bf16, every step; a
    bf16 copy reads half the bytes and skips those casts. LayerNorm and softmax still accumulate in
    fp32 inside their kernels. Feed it inputs of the same dtype (``x.to(dtype)``); its logits match
    the fp32 model's within BF16_RTOL (tested). Never train this copy: bf16 weights lose small updates.

    >>> import minivit
    >>> m = minivit.create_model("Ti/16", image_size=16, patch_size=8, depth=1, num_classes=3)
    >>> fast = inference_copy(m)
    >>> fast.training, next(fast.parameters()).requires_grad
    (False, False)
    """
    if not dtype.is_floating_point:
        raise ConfigError(f"inference_copy: dtype must be a floating-point type, not {dtype}")
    return copy.deepcopy(model).eval().requires_grad_(False).to(dtype)


def sdpa_backends(order=HOPPER_ORDER, device: torch.device | None = None):
    """A context in which scaled_dot_product_attention tries the kernels in ``order``, first that fits.

    What it buys: PyTorch's default choice on an H100 is flash attention; cuDNN's fused attention is
    the other candidate, and which one wins at a given (batch, heads, tokens) is measured, not
    assumed (benchmarks/profile_step.py prints the kernel actually chosen). Under torch.compile the
    kernel is chosen when the graph is traced: enter this context before the first (compiling) call.

    On a CPU only "flash" (torch's fused CPU kernel) and "math" exist: the others are dropped from
    ``order`` and "math" is always kept as the last resort, so the context never leaves SDPA without
    a kernel. Results equal the plain path's at float32 tolerance (tested on CPU).

    >>> import torch
    >>> with sdpa_backends(("math",), torch.device("cpu")):
    ...     q = torch.randn(1, 2, 5, 8)
    ...     torch.nn.functional.scaled_dot_product_attention(q, q, q).shape
    torch.Size([1, 2, 5, 8])
    """
    unknown = [name for name in order if name not in ATTENTION_BACKENDS]
    if unknown or not order:
        raise ConfigError(f"attention backends must be some of {', '.join(ATTENTION_BACKENDS)}, not {list(order)}")
    names = list(dict.fromkeys(order))  # drop repeats, keep the order
    if device is None or device.type != "cuda":
        names = [n for n in names if n in CPU_BACKENDS]
    if "math" not in names:
        names.append("math")
    return sdpa_kernel([ATTENTION_BACKENDS[n] for n in names], set_priority=True)


def compile_model(model: nn.Module, mode: str = "default", *, backend: str = "inductor") -> nn.Module:
    """``torch.compile`` the model as one graph (``fullgraph=True``: a graph break is an error, not a
    silent slowdown).

    What each mode buys:
      "default"          Inductor fuses LayerNorm, GELU, bias, residual adds and dropout into a few
                         Triton kernels and GEMM epilogues: fewer launches, fewer memory round trips.
      "reduce-overhead"  the above plus CUDA graphs: the whole step is replayed with one launch. Pays
                         when the GPU waits for the CPU to launch kernels, as with the small FER model
                         (ViT-Ti/4 at 48x48) whose kernels each run for microseconds.
      "max-autotune"     also benchmarks several GEMM tilings per shape at compile time (minutes)
                         and uses CUDA graphs; "max-autotune-no-cudagraphs" without them.
    Call ``begin_step()`` at the top of every training step with the CUDA-graph modes.
    ``backend`` other than "inductor" (e.g. "aot_eager", what the CPU tests use) ignores ``mode``.

    >>> import torch, minivit
    >>> m = minivit.create_model("Ti/16", image_size=16, patch_size=8, depth=1, num_classes=3)
    >>> compile_model(m, "turbo")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    minivit.common.errors.ConfigError: compile mode must be one of default, reduce-overhead, ..., not 'turbo'
    """
    if mode not in COMPILE_MODES:
        raise ConfigError(f"compile mode must be one of {', '.join(COMPILE_MODES)}, not {mode!r}")
    if backend != "inductor":
        return torch.compile(model, backend=backend, fullgraph=True)
    return torch.compile(model, mode=mode, fullgraph=True)


def begin_step() -> None:
    """Mark the start of a training step for CUDA-graph trees (``mode="reduce-overhead"``).

    What it buys: correctness, not speed: a replayed graph writes its outputs into the same memory
    every step, and this tells PyTorch that the previous step's outputs are no longer needed, so it
    need not copy them out or fall back to eager. A no-op cost elsewhere.
    """
    torch.compiler.cudagraph_mark_step_begin()


def allow_tf32() -> None:
    """Let float32 matmuls and convolutions use TF32 tensor cores (Ampere and newer).

    What it buys: the matmuls that bf16 autocast leaves in float32 (none in a ViT's forward; the
    loss and any fp32 evaluation) run on tensor cores, at a 10-bit mantissa instead of 23 (cuDNN
    convolutions already default to TF32). Process-wide, so benchmarks set it for every library
    alike. No effect on a CPU.
    """
    torch.set_float32_matmul_precision("high")


def channels_last(model: nn.Module) -> nn.Module:
    """Store the model's 4-D weights (its convolutions) channels-last (NHWC), in place; returns it.

    What it buys: on a CPU, oneDNN's convolutions and BatchNorm run in NHWC; with NCHW weights each conv
    reorders its weights and activations on every call, forward and backward. For the conv-stem FER
    models on the 2-core CPU machine a training step ran 15-30% faster (docs/performance.md). Only the
    memory order changes: values, names and saved files are the same (checkpoints are written
    contiguous). The transformer's weights are 2-D and untouched; a patch-stem model has one conv and
    gains little.

    >>> import torch, minivit
    >>> m = channels_last(minivit.create_model("S/8", image_size=48, in_chans=1, stem="conv", dim=64, depth=1, heads=2))
    >>> m.patch_embed.proj.weight.is_contiguous(memory_format=torch.channels_last)
    True
    """
    return model.to(memory_format=torch.channels_last)


__all__ = ["channels_last", "inference_copy", "sdpa_backends", "compile_model", "begin_step", "allow_tf32",
           "ATTENTION_BACKENDS", "HOPPER_ORDER", "COMPILE_MODES", "BF16_RTOL"]
