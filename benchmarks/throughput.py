"""Images per second, peak memory and model FLOPs utilisation: minivit vs timm vs transformers,
and the training loop against its own pure step.

Every library runs the same model (same size, same batch, same precision, same optimiser) in one
process, so the numbers can be compared side by side:

    python benchmarks/throughput.py --preset b16        # ViT-B/16 @ 224, batch 256, bf16 (the headline vs timm)
    python benchmarks/throughput.py --preset fer        # ViT-Ti/4 @ 48 (145 tokens), batch 256: the FER setting
    python benchmarks/throughput.py --preset fer-conv   # the default FER recipe's model: conv stem, 1 channel
    python benchmarks/throughput.py --preset fer --loop --steps 200   # the real training loop vs its pure step
    python benchmarks/throughput.py --model Ti/4 --image-size 48 --batch-size 8 --iters 2   # a quick CPU run

Rows: "minivit" (eager and compiled, the plain path), "minivit-fast" (the fastest documented path:
minivit.model.speed's tricks, listed in the JSON under "tricks"), "timm" and "transformers" (eager and
compiled; each only where installed, otherwise skipped with a note). Every row also gets its ratio
to timm compiled (minivit's speed goal: >= 1.2), printed and written to the JSON.

A training step is forward + cross-entropy + backward + AdamW step (fused on CUDA); inference is a
forward pass under torch.inference_mode. Weights stay fp32 under autocast, as in training (except
in minivit-fast's inference, which uses a bf16 copy of the weights: minivit.model.speed.inference_copy).

``--loop`` runs minivit's real training loop (minivit.train.train) on synthetic uint8 faces for
``--steps`` optimiser steps and compares its steady-state images/s with the pure step of the same
model and batch (goal >= 0.95), so nobody needs FER2013 to measure it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import minivit  # noqa: E402
from minivit.model import speed  # noqa: E402
from minivit.common.files import write_json  # noqa: E402
from minivit.common.cli import ArgumentParser, integer, run  # noqa: E402
from minivit.model.config import ViTConfig, config_from_name  # noqa: E402
from minivit.common.device import DEVICES, pick_device  # noqa: E402
from minivit.common.errors import ConfigError  # noqa: E402

# Dense bf16/fp16 tensor-core peaks (FLOP/s) from the vendors' data sheets, for MFU.
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12, "4090": 165e12}
LIBRARIES = ("minivit", "minivit-fast", "timm", "transformers")
REFERENCE = ("timm", "compiled")  # every row's ratio is taken against this one

# The settings performance is measured at (docs/performance.md), by name. Explicit flags override any of these.
# "fast_compile_mode": minivit-fast's torch.compile mode. The FER models run ~20-30 ms steps of
# hundreds of short kernels, so CPU launch overhead matters and CUDA graphs ("reduce-overhead") should
# pay; ViT-B/16's step is GEMM-bound, where graphs buy nothing. (--fast-compile-mode
# max-autotune-no-cudagraphs tunes its GEMMs too, at minutes of compile time.)
PRESETS = {
    "b16": dict(model="B/16", image_size=224, batch_size=256, num_classes=1000, fast_compile_mode="default"),
    "fer": dict(model="Ti/4", image_size=48, batch_size=256, num_classes=7,
                fast_compile_mode="reduce-overhead"),
    "fer128": dict(model="Ti/4", image_size=48, batch_size=128, num_classes=7,
                   fast_compile_mode="reduce-overhead"),
    # the default FER recipe's model (the gpu profile): conv stem on 1-channel input, 8 blocks of width 384
    "fer-conv": dict(model="S/4", stem="conv", in_chans=1, dim=384, depth=8, heads=6, mlp_dim=1536,
                     image_size=48, batch_size=256, num_classes=7, fast_compile_mode="reduce-overhead"),
}
LOOP_EPOCH_STEPS = 100  # --loop: optimiser steps per epoch of the synthetic set (see bench_loop)
# ViTConfig fields a flag may override (None: keep the named model's / preset's value)
ARCH_FLAGS = ("patch_size", "stem", "in_chans", "dim", "depth", "heads", "mlp_dim")


# ---------------------------------------------------------------------------------------------
# what is measured


def model_config(args) -> ViTConfig:
    """The ViTConfig named by --model, with --image-size, --num-classes and the architecture flags applied."""
    overrides = {k: getattr(args, k) for k in ARCH_FLAGS if getattr(args, k) is not None}
    return config_from_name(args.model, image_size=args.image_size, num_classes=args.num_classes, **overrides)


def describe(cfg: ViTConfig) -> str:
    """One line naming the architecture, e.g. 'dim 192, depth 12, heads 3, patch stem 4x4, 48x48x3, 145 tokens'."""
    h, w = cfg.image_hw
    stem = getattr(cfg, "stem", "patch")
    return (f"dim {cfg.dim}, depth {cfg.depth}, heads {cfg.heads}, mlp {cfg.mlp_dim}, {stem} stem "
            f"{cfg.patch_size}x{cfg.patch_size}, {h}x{w}x{cfg.in_chans}, {cfg.num_tokens} tokens")


def forward_flops(cfg: ViTConfig) -> float:
    """FLOPs of one image's forward pass (2 per multiply-add), counted by torch's FlopCounterMode on a
    meta-device model: whatever the stem, no arithmetic runs and no memory is used.

    Counts matmuls, convolutions and attention (35.1 GFLOPs for ViT-B/16 at 224), as MFU does.
    """
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = minivit.ViT(cfg)
        x = torch.empty(1, cfg.in_chans, *cfg.image_hw)
    with FlopCounterMode(display=False) as counter:
        model(x)
    return float(counter.get_total_flops())


def build(lib: str, cfg: ViTConfig) -> nn.Module:
    """The same ViT in each library, returning logits from an NCHW batch."""
    if lib in ("minivit", "minivit-fast"):
        return minivit.ViT(cfg)
    if lib == "timm":
        import timm

        return timm.models.vision_transformer.VisionTransformer(
            img_size=cfg.image_size, patch_size=cfg.patch_size, in_chans=cfg.in_chans, embed_dim=cfg.dim,
            depth=cfg.depth, num_heads=cfg.heads, mlp_ratio=cfg.mlp_dim / cfg.dim, num_classes=cfg.num_classes,
        )
    if lib == "transformers":
        from transformers import ViTConfig as HFConfig, ViTForImageClassification

        hf = ViTForImageClassification(HFConfig(
            hidden_size=cfg.dim, num_hidden_layers=cfg.depth, num_attention_heads=cfg.heads,
            intermediate_size=cfg.mlp_dim, image_size=cfg.image_size, patch_size=cfg.patch_size,
            num_channels=cfg.in_chans, num_labels=cfg.num_classes, attn_implementation="sdpa",
        ))

        class Logits(nn.Module):
            def __init__(self, inner):
                super().__init__()
                self.inner = inner

            def forward(self, x):
                return self.inner(pixel_values=x).logits

        return Logits(hf)
    raise ConfigError(f"--libs: unknown library {lib!r} (choose from {', '.join(LIBRARIES)})")


def skip_reason(lib: str, cfg: ViTConfig) -> str | None:
    """Why ``lib`` cannot run this config here (not installed, or no equivalent model), else None."""
    if lib in ("minivit", "minivit-fast"):
        return None
    try:
        __import__(lib)
    except ImportError:
        return f"{lib} is not installed, skipped"
    if getattr(cfg, "stem", "patch") != "patch":
        return f"{lib} has no model equal to minivit's {cfg.stem} stem, skipped"
    return None


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(step, device, warmup: int, iters: int) -> float:
    """Seconds per call of ``step``, after warm-up (which also triggers compilation)."""
    for _ in range(warmup):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(iters):
        step()
    sync(device)
    return (time.perf_counter() - start) / iters


@dataclasses.dataclass
class Setup:
    """What one measurement needs besides the library and mode."""

    cfg: ViTConfig
    device: torch.device
    dtype: torch.dtype  # autocast dtype (float32: no autocast)
    batch_size: int
    warmup: int
    iters: int
    compile_mode: str = "default"  # the plain "compiled" rows
    fast_compile_mode: str = "default"  # minivit-fast
    compile_backend: str = "inductor"  # "aot_eager" in the CPU tests: traces without code generation
    flops: float | None = None  # forward FLOPs per image


def train_step_fn(runner, model, opt, x, y, autocast, before=None):
    """One pure training step: forward, cross-entropy, backward, optimiser step."""

    def train_step():
        if before is not None:
            before()
        with autocast:
            loss = F.cross_entropy(runner(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return train_step


def bench_one(lib: str, mode: str, s: Setup, what=("train", "infer")) -> dict:
    """Train and/or inference images/s (and memory, MFU) of one library in one mode."""
    torch.manual_seed(0)
    model = build(lib, s.cfg).to(s.device)
    x = torch.randn(s.batch_size, s.cfg.in_chans, *s.cfg.image_hw, device=s.device)
    y = torch.randint(0, s.cfg.num_classes, (s.batch_size,), device=s.device)
    autocast = torch.autocast(s.device.type, dtype=s.dtype) if s.dtype != torch.float32 else contextlib.nullcontext()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=s.device.type == "cuda")
    result, tricks = {"lib": lib, "mode": mode}, []
    fast = lib == "minivit-fast"
    attention = speed.sdpa_backends(speed.HOPPER_ORDER, s.device) if fast else contextlib.nullcontext()
    if fast:
        tricks.append(f"sdpa_backends({', '.join(speed.HOPPER_ORDER)})" if s.device.type == "cuda"
                      else "sdpa_backends (CPU: flash, math)")
    peak = next((v for k, v in PEAK_FLOPS.items() if s.device.type == "cuda" and k in torch.cuda.get_device_name()),
                None)
    with attention:
        for name in what:
            step = make_step(name, lib, mode, s, model, opt, x, y, autocast, tricks)
            model.train(name == "train")
            if s.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            seconds = measure(step, s.device, s.warmup, s.iters)
            result[f"{name}_img_s"] = s.batch_size / seconds
            result[f"{name}_peak_mem_gib"] = (torch.cuda.max_memory_allocated() / 2**30
                                              if s.device.type == "cuda" else None)
            factor = 3.0 if name == "train" else 1.0  # backward costs about twice the forward
            result[f"{name}_mfu"] = factor * s.flops * s.batch_size / seconds / peak if peak and s.flops else None
    if fast:
        result["tricks"] = list(dict.fromkeys(tricks))
    return result  # the model and optimiser die with this frame, before the next library is built


def make_step(name: str, lib: str, mode: str, s: Setup, model, opt, x, y, autocast, tricks: list):
    """The callable timed for one row: plain eager, plain compiled, or minivit-fast's path."""
    if lib != "minivit-fast":
        runner = model
        if mode == "compiled":
            runner = (torch.compile(model, mode=s.compile_mode if s.compile_mode != "default" else None)
                      if s.compile_backend == "inductor" else torch.compile(model, backend=s.compile_backend))
        if name == "train":
            return train_step_fn(runner, model, opt, x, y, autocast)

        @torch.inference_mode()
        def infer_step():
            with autocast:
                runner(x)

        return infer_step
    # minivit-fast: compile with the fast mode (CUDA graphs need begin_step() every step)
    cudagraphs = s.device.type == "cuda" and s.fast_compile_mode in ("reduce-overhead", "max-autotune")
    tricks.append(f"compile_model(mode={s.fast_compile_mode!r})")
    if name == "train":
        runner = speed.compile_model(model, s.fast_compile_mode, backend=s.compile_backend)
        return train_step_fn(runner, model, opt, x, y, autocast, before=speed.begin_step if cudagraphs else None)
    if s.dtype != torch.float32:  # a low-precision copy of the weights replaces autocast
        tricks.append(f"inference_copy(dtype={str(s.dtype).removeprefix('torch.')})")
        infer_model, xi, ctx = speed.inference_copy(model, s.dtype), x.to(s.dtype), contextlib.nullcontext()
    else:
        infer_model, xi, ctx = model.eval(), x, autocast
    runner = speed.compile_model(infer_model, s.fast_compile_mode, backend=s.compile_backend)

    @torch.inference_mode()
    def fast_infer_step():
        if cudagraphs:
            speed.begin_step()
        with ctx:
            runner(xi)

    return fast_infer_step


def add_ratios(results: list[dict], reference=REFERENCE) -> dict | None:
    """Give every row ``train_vs_<lib>_<mode>`` / ``infer_vs_...``: its img/s over the reference row's.

    Returns the reference row, or None when it was not measured (then every ratio is None).

    >>> rows = [{"lib": "timm", "mode": "compiled", "train_img_s": 100.0, "infer_img_s": 400.0},
    ...         {"lib": "minivit", "mode": "eager", "train_img_s": 120.0, "infer_img_s": 300.0}]
    >>> _ = add_ratios(rows)
    >>> rows[1]["train_vs_timm_compiled"], rows[1]["infer_vs_timm_compiled"]
    (1.2, 0.75)
    """
    ref = next((r for r in results if (r["lib"], r["mode"]) == tuple(reference)), None)
    tag = f"vs_{reference[0]}_{reference[1]}"
    for r in results:
        for name in ("train", "infer"):
            mine, theirs = r.get(f"{name}_img_s"), ref.get(f"{name}_img_s") if ref else None
            r[f"{name}_{tag}"] = mine / theirs if mine is not None and theirs else None
    return ref


# ---------------------------------------------------------------------------------------------
# the training loop against its pure step


def loop_train_config(args, mode: str, steps: int, out_dir: str, epochs: int = 1):
    """The TrainConfig of a --loop run: the model and batch of the benchmark, ``steps`` optimiser steps.

    The loop keeps the regularisation of the training profile named by --loop-profile (augmentation,
    mixing, EMA, label smoothing: the per-step work whose cost is being measured). No LR warmup: the
    schedule does not change the cost of a step, and a short run would only warn about it.
    """
    from minivit.train import TrainConfig

    overrides = {k: getattr(args, k) for k in ARCH_FLAGS if getattr(args, k) is not None}
    profile = loop_profile(args.loop_profile)
    return TrainConfig.from_dict({**profile, **dict(
        data="synthetic", model=args.model, model_overrides=overrides, image_size=args.image_size,
        batch_size=args.batch_size, epochs=epochs, warmup_epochs=0, compile="yes" if mode == "compiled" else "no",
        precision=args.precision, device=args.device, out=out_dir, progress=False, log=False, stop_after=steps,
        seed=0)})


def loop_profile(name: str) -> dict:
    """The TrainConfig fields of a training profile (minivit.train's own table), minus run-specific ones."""
    if name == "none":
        return {}
    from minivit.train.profiles import PROFILES

    if name not in PROFILES:
        raise ConfigError(f"--loop-profile: no training profile {name!r} (choose from none, {', '.join(PROFILES)})")
    fields = dict(PROFILES[name])
    for run_specific in ("data", "model", "model_overrides", "image_size", "batch_size", "epochs", "out", "compile",
                         "tta", "synthetic_samples"):
        fields.pop(run_specific, None)
    return fields


def bench_loop(args, setup: Setup) -> list[dict]:
    """Loop img/s vs pure-step img/s for each --modes entry (eager, compiled)."""
    from minivit.data import synthetic_faces
    from minivit.train import train

    steps = args.steps
    # At most LOOP_EPOCH_STEPS batches of faces, run for as many epochs as the steps need: drawing
    # 300 x 256 faces would take minutes and gigabytes. The loop's timing leaves out the first
    # steps of each epoch and all validation, so the epoch boundaries do not count.
    per_epoch = min(steps, LOOP_EPOCH_STEPS)
    train_set = synthetic_faces(args.batch_size * per_epoch, image_size=args.image_size, seed=0)
    val_set = synthetic_faces(64, image_size=args.image_size, seed=1)
    rows = []
    for mode in args.modes:
        with tempfile.TemporaryDirectory(prefix="minivit-loop-") as tmp:
            cfg = loop_train_config(args, mode, steps, str(Path(tmp) / "run"),  # a folder that does not exist yet
                                    epochs=math.ceil(steps / per_epoch))
            result = train(cfg, train_set, val_set)
        loop_img_s = result.get("train_img_per_s")
        if loop_img_s is None:  # every step fell in the warm-up that the loop leaves out of its timing
            raise ConfigError(f"--steps {steps}: too few steps for the loop to time its steady state; use more")
        pure = bench_one("minivit", mode, setup, what=("train",))["train_img_s"]
        rows.append(dict(mode=mode, steps=steps, steps_run=result["step"], epochs=cfg.epochs, loop_img_s=loop_img_s,
                         pure_step_img_s=pure, loop_vs_pure=loop_img_s / pure, profile=args.loop_profile))
        print(f"{mode:<10}{loop_img_s:>14,.1f}{pure:>16,.1f}{loop_img_s / pure:>10.3f}", flush=True)
    return rows


# ---------------------------------------------------------------------------------------------
# command line


def add_setting_args(p: ArgumentParser) -> None:
    """The flags that choose the model, batch and precision (shared with profile_step.py)."""
    p.add_argument("--preset", choices=sorted(PRESETS), help="a named setting (flags below override its values)")
    p.add_argument("--model", help="model name, e.g. B/16, Ti/16, ViT-Ti_16, vit_small_patch16_224 (default B/16)")
    p.add_argument("--image-size", "--img-size", dest="image_size", type=integer(at_least=1), help="default 224")
    p.add_argument("--num-classes", type=integer(at_least=1), help="default 1000")
    p.add_argument("--patch-size", type=integer(at_least=1), help="override the model's patch size")
    p.add_argument("--stem", choices=["patch", "conv"], help="override the model's stem")
    p.add_argument("--in-chans", type=integer(at_least=1, at_most=3), choices=(1, 3), help="input channels (1 or 3)")
    p.add_argument("--dim", type=integer(at_least=1), help="override the token width")
    p.add_argument("--depth", type=integer(at_least=1), help="override the number of blocks")
    p.add_argument("--heads", type=integer(at_least=1), help="override the number of attention heads")
    p.add_argument("--mlp-dim", type=integer(at_least=1), help="override the MLP width")
    p.add_argument("--batch-size", type=integer(at_least=1), help="default 256 on CUDA, 4 on a CPU")
    p.add_argument("--precision", choices=["bf16", "fp16", "fp32"], help="autocast dtype (default bf16 on CUDA, "
                   "fp32 on a CPU); weights stay fp32 except in minivit-fast's inference")
    p.add_argument("--device", choices=DEVICES, default="auto", help="auto: a GPU when CUDA is available, else the CPU")
    p.add_argument("--fast-compile-mode", choices=speed.COMPILE_MODES,
                   help="torch.compile mode of minivit-fast (default: the preset's; else 'default')")
    p.add_argument("--warmup", type=integer(at_least=0), help="untimed steps first (default 10 on CUDA, 1 on a CPU)")
    p.add_argument("--loop-profile", default="gpu",
                   help="--loop: the training profile whose per-step work the loop runs ('none': TrainConfig defaults)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")


def resolve_setting(args) -> torch.device:
    """Fill every setting flag left out from --preset, then from the defaults; return the device."""
    device = pick_device(args.device)
    preset = PRESETS.get(args.preset, {})
    defaults = dict(model="B/16", image_size=224, num_classes=1000, batch_size=256 if device.type == "cuda" else 4,
                    precision="bf16" if device.type == "cuda" else "fp32", fast_compile_mode="default",
                    warmup=10 if device.type == "cuda" else 1)
    for key in ("model", "image_size", "num_classes", "batch_size", "fast_compile_mode", *ARCH_FLAGS):
        if getattr(args, key) is None and key in preset:
            setattr(args, key, preset[key])
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.setting = args.preset or args.model.replace("/", "")
    return device


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    add_setting_args(p)
    p.add_argument("--libs", default=",".join(LIBRARIES), help="comma-separated; missing ones are skipped")
    p.add_argument("--modes", default="eager,compiled", help="comma-separated: eager, compiled (minivit-fast "
                   "always runs its own compiled path)")
    p.add_argument("--compile-mode", default="default", choices=speed.COMPILE_MODES,
                   help="torch.compile mode of the plain 'compiled' rows (every library alike)")
    p.add_argument("--compile-backend", default="inductor", choices=["inductor", "aot_eager"],
                   help="aot_eager traces without generating code: for quick CPU checks, not for timing")
    p.add_argument("--reference", default="timm:compiled",
                   help="LIB:MODE of the row every ratio is taken against (minivit's speed goal is against timm:compiled)")
    p.add_argument("--iters", type=integer(at_least=1), help="timed steps (default 30 on CUDA, 3 on a CPU)")
    p.add_argument("--loop", action="store_true", help="measure minivit.train's loop against its pure step instead")
    p.add_argument("--steps", type=integer(at_least=5), default=200, help="--loop: optimiser steps of the loop")
    p.add_argument("--out", help="JSON file for all numbers (default runs/benchmarks/throughput-<setting>.json)")
    args = p.parse_args(argv)
    device = resolve_setting(args)
    if args.iters is None:
        args.iters = 30 if device.type == "cuda" else 3
    args.libs = [lib.strip() for lib in args.libs.split(",") if lib.strip()]
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for lib in args.libs:
        if lib not in LIBRARIES:
            p.error(f"argument --libs: unknown library {lib!r} (choose from {', '.join(LIBRARIES)})")
    for mode in args.modes:
        if mode not in ("eager", "compiled"):
            p.error(f"argument --modes: unknown mode {mode!r} (choose from eager, compiled)")
    args.reference = tuple(args.reference.split(":"))
    if len(args.reference) != 2 or args.reference[0] not in LIBRARIES or args.reference[1] not in (
            "eager", "compiled", "fast"):
        p.error(f"argument --reference: expected LIB:MODE such as timm:compiled, not {':'.join(args.reference)!r}")
    args.out = Path(args.out or f"runs/benchmarks/{'loop' if args.loop else 'throughput'}-{args.setting}.json")
    if args.out.exists() and not args.overwrite:
        p.error(f"argument --out: {args.out} exists (pass --overwrite to replace it)")
    return args, device


def print_table(results: list[dict], ref: dict | None, reference=REFERENCE) -> None:
    tag = f"vs_{reference[0]}_{reference[1]}"
    short = f"{reference[0]}-{reference[1][0]}"  # timm-c: timm compiled
    header = (f"{'library':<14}{'mode':<10}{'train img/s':>12}{'infer img/s':>12}{'train MFU':>10}"
              f"{'train GiB':>10}{'infer GiB':>10}{'train/' + short:>14}{'infer/' + short:>14}")
    print("\n" + header + "\n" + "-" * len(header))

    def fmt(v, spec):
        return format(v, spec) if v is not None else "-"

    for r in results:
        mfu = f"{100 * r['train_mfu']:.1f}%" if r.get("train_mfu") else "-"
        print(f"{r['lib']:<14}{r['mode']:<10}{fmt(r['train_img_s'], ',.1f'):>12}{fmt(r['infer_img_s'], ',.1f'):>12}"
              f"{mfu:>10}{fmt(r['train_peak_mem_gib'], '.1f'):>10}{fmt(r['infer_peak_mem_gib'], '.1f'):>10}"
              f"{fmt(r[f'train_{tag}'], '.3f'):>14}{fmt(r[f'infer_{tag}'], '.3f'):>14}")
    for r in results:
        if r.get("tricks"):
            print(f"minivit-fast: {'; '.join(r['tricks'])}")
    if ref is None:
        print(f"ratios: {reference[0]} {reference[1]} was not measured (not installed, or not in --libs/--modes), "
              "so they are '-'")


def main(argv=None) -> int:
    args, device = parse_args(argv)
    if device.type == "cuda":
        speed.allow_tf32()  # for every library alike
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.precision]
    cfg = model_config(args)
    setup = Setup(cfg=cfg, device=device, dtype=dtype, batch_size=args.batch_size, warmup=args.warmup,
                  iters=args.iters, compile_mode=args.compile_mode, fast_compile_mode=args.fast_compile_mode,
                  compile_backend=args.compile_backend, flops=forward_flops(cfg))
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "CPU"
    print(f"{args.preset or args.model}: {describe(cfg)}; batch {args.batch_size}, {args.precision}, "
          f"{setup.flops / 1e9:.2f} GFLOPs/img forward, on {device_name}", flush=True)
    meta = {"preset": args.preset, "model": args.model, "config": cfg.to_dict(), "architecture": describe(cfg),
            "batch_size": args.batch_size, "precision": args.precision, "device": device_name,
            "torch": torch.__version__, "forward_gflops_per_image": setup.flops / 1e9,
            "compile_mode": args.compile_mode, "fast_compile_mode": args.fast_compile_mode,
            "compile_backend": args.compile_backend, "warmup": args.warmup, "iters": args.iters,
            "command": "python benchmarks/throughput.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    if args.loop:
        print(f"\n{'mode':<10}{'loop img/s':>14}{'pure step img/s':>16}{'ratio':>10}")
        rows = bench_loop(args, setup)
        write_json({"meta": dict(meta, steps=args.steps, loop_profile=args.loop_profile), "loop": rows}, args.out)
        print(f"wrote {args.out}")
        return 0

    results = []
    for lib in args.libs:
        reason = skip_reason(lib, cfg)
        if reason:
            print(reason, flush=True)
            continue
        for mode in (["fast"] if lib == "minivit-fast" else args.modes):
            r = bench_one(lib, mode, setup)
            if device.type == "cuda":
                torch.cuda.empty_cache()
            results.append(r)
            print(f"  measured {lib} {mode}: train {r['train_img_s']:,.1f} img/s, infer {r['infer_img_s']:,.1f} img/s",
                  flush=True)
    ref = add_ratios(results, args.reference)
    print_table(results, ref, args.reference)
    write_json({"meta": meta, "reference": list(args.reference), "results": results}, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
