"""Images per second, peak memory and model FLOPs utilisation: minivit vs timm vs transformers.

Every library runs the same model (same size, same batch, same precision, same optimiser) in
one process, eager and compiled, so the numbers can be compared side by side:

    python benchmarks/throughput.py                      # ViT-B/16, bf16 autocast, batch 256 on CUDA
    python benchmarks/throughput.py --model Ti/16 --batch-size 8 --image-size 96   # a quick CPU run
    python benchmarks/throughput.py --libs minivit --modes compiled --compile-mode max-autotune

A training step is forward + cross-entropy + backward + AdamW step (fused on CUDA); inference is
a forward pass under torch.inference_mode. Weights stay fp32 under autocast, as in training.
timm and transformers are measured only where installed. The table goes to stdout and every
number to a JSON file (--out).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import minivit  # noqa: E402
from minivit.config import ViTConfig, config_from_name  # noqa: E402

# Dense bf16/fp16 tensor-core peaks (FLOP/s) from the vendors' data sheets, for MFU.
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12, "4090": 165e12}


def forward_flops(cfg: ViTConfig) -> float:
    """FLOPs of one image's forward pass (2 per multiply-add), attention included."""
    gh, gw = cfg.grid
    n, t, d = gh * gw, cfg.num_tokens, cfg.dim
    patch = n * d * cfg.in_chans * cfg.patch_size**2
    per_block = t * (4 * d * d + 2 * d * cfg.mlp_dim) + 2 * t * t * d  # qkv+proj, fc1+fc2, QK^T and PV
    head = (cfg.representation_size or d) * max(cfg.num_classes, 0)
    return 2.0 * (patch + cfg.depth * per_block + head)


def build(lib: str, cfg: ViTConfig) -> nn.Module:
    """The same ViT in each library, returning logits from an NCHW batch."""
    if lib == "minivit":
        return minivit.ViT(cfg)
    if lib == "timm":
        import timm

        return timm.models.vision_transformer.VisionTransformer(
            img_size=cfg.image_size, patch_size=cfg.patch_size, embed_dim=cfg.dim, depth=cfg.depth,
            num_heads=cfg.heads, mlp_ratio=cfg.mlp_dim / cfg.dim, num_classes=cfg.num_classes,
        )
    if lib == "transformers":
        from transformers import ViTConfig as HFConfig, ViTForImageClassification

        hf = ViTForImageClassification(HFConfig(
            hidden_size=cfg.dim, num_hidden_layers=cfg.depth, num_attention_heads=cfg.heads,
            intermediate_size=cfg.mlp_dim, image_size=cfg.image_size, patch_size=cfg.patch_size,
            num_labels=cfg.num_classes, attn_implementation="sdpa",
        ))

        class Logits(nn.Module):
            def __init__(self, inner):
                super().__init__()
                self.inner = inner

            def forward(self, x):
                return self.inner(pixel_values=x).logits

        return Logits(hf)
    raise ValueError(lib)


def available(lib: str) -> bool:
    if lib == "minivit":
        return True
    try:
        __import__(lib)
        return True
    except ImportError:
        return False


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


def bench_one(lib, mode, cfg, args, device, dtype):
    torch.manual_seed(0)
    model = build(lib, cfg).to(device)
    runner = torch.compile(model, mode=args.compile_mode) if mode == "compiled" else model
    x = torch.randn(args.batch_size, 3, *cfg.image_hw, device=device)
    y = torch.randint(0, cfg.num_classes, (args.batch_size,), device=device)
    autocast = torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    result = {"lib": lib, "mode": mode}

    def train_step():
        with autocast:
            loss = F.cross_entropy(runner(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    @torch.inference_mode()
    def infer_step():
        with autocast:
            runner(x)

    flops = forward_flops(cfg) * args.batch_size
    peak = next((v for k, v in PEAK_FLOPS.items() if device.type == "cuda" and k in torch.cuda.get_device_name()), None)
    for name, step, factor in (("train", train_step, 3.0), ("infer", infer_step, 1.0)):
        model.train(name == "train")
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        seconds = measure(step, device, args.warmup, args.iters)
        result[f"{name}_img_s"] = args.batch_size / seconds
        result[f"{name}_peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
        result[f"{name}_mfu"] = factor * flops / seconds / peak if peak else None
    return result  # the model and optimiser die with this frame, before the next library is built


def main(argv=None):
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="B/16", help="model name, e.g. B/16, ViT-Ti_16, vit_small_patch16_224")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=256 if cuda else 4)
    p.add_argument("--precision", choices=["bf16", "fp16", "fp32"], default="bf16" if cuda else "fp32",
                   help="autocast dtype; weights stay fp32")
    p.add_argument("--libs", default="minivit,timm,transformers", help="comma-separated; missing ones are skipped")
    p.add_argument("--modes", default="eager,compiled", help="comma-separated: eager, compiled")
    p.add_argument("--compile-mode", default=None, help="torch.compile mode, e.g. max-autotune")
    p.add_argument("--warmup", type=int, default=10 if cuda else 2)
    p.add_argument("--iters", type=int, default=30 if cuda else 3)
    p.add_argument("--out", default="benchmarks/throughput.json", help="JSON file for all numbers")
    args = p.parse_args(argv)

    device = torch.device("cuda" if cuda else "cpu")
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.precision]
    cfg = config_from_name(args.model, image_size=args.image_size, num_classes=args.num_classes)
    print(f"{args.model} @ {args.image_size}, batch {args.batch_size}, {args.precision}, "
          f"{forward_flops(cfg) / 1e9:.1f} GFLOPs/img forward, on "
          f"{torch.cuda.get_device_name() if cuda else platform.processor() or 'CPU'}")

    results = []
    header = f"{'library':<13}{'mode':<10}{'train img/s':>12}{'infer img/s':>12}{'train MFU':>10}{'train GiB':>10}{'infer GiB':>10}"
    print(header + "\n" + "-" * len(header))
    for lib in args.libs.split(","):
        if not available(lib):
            print(f"{lib:<13}not installed, skipped")
            continue
        for mode in args.modes.split(","):
            r = bench_one(lib, mode, cfg, args, device, dtype)
            if cuda:
                torch.cuda.empty_cache()
            results.append(r)
            mfu = f"{100 * r['train_mfu']:.1f}%" if r["train_mfu"] else "-"
            mem = [f"{r[k]:.1f}" if r[k] is not None else "-" for k in ("train_peak_mem_gib", "infer_peak_mem_gib")]
            print(f"{lib:<13}{mode:<10}{r['train_img_s']:>12,.1f}{r['infer_img_s']:>12,.1f}"
                  f"{mfu:>10}{mem[0]:>10}{mem[1]:>10}", flush=True)

    meta = {"model": args.model, "image_size": args.image_size, "batch_size": args.batch_size,
            "precision": args.precision, "device": torch.cuda.get_device_name() if cuda else "cpu",
            "torch": torch.__version__, "forward_gflops_per_image": forward_flops(cfg) / 1e9}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
