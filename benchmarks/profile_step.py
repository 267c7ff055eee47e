"""Where a training step's time goes: torch.profiler traces of the pure step and of the real loop.

    python benchmarks/profile_step.py --preset fer --out runs/profile/fer            # on the GPU: eager + compiled
    python benchmarks/profile_step.py --preset b16 --batch-size 64 --out runs/profile/b16
    python benchmarks/profile_step.py --model Ti/16 --patch-size 4 --image-size 32 --depth 2 --batch-size 8 \\
        --steps 2 --loop-steps 3 --out /tmp/prof                                        # seconds on a CPU

It writes chrome traces (open them in https://ui.perfetto.dev or chrome://tracing) into --out:
step-eager.json and step-compiled.json (the pure step: forward, cross-entropy, backward, AdamW, as in
throughput.py) and loop-eager.json (minivit.train.train for --loop-steps optimiser steps on synthetic
faces, set-up included), plus summary.json with everything printed:

  - the top ops by self time, and kernels (CUDA) / top-level aten ops per step;
  - launch gaps on CUDA: how long the GPU sits idle between consecutive kernels;
  - the ops the loop spends more time in per step than the pure step (augmentation, mixing, EMA, ...);
  - the SDPA backend actually chosen (from the kernel names in the trace) and which backends can run
    this shape at all (each tried alone with torch.nn.attention.sdpa_kernel);
  - graph breaks of the compiled model (torch._dynamo.explain);
  - host syncs in steady-state steps (torch.cuda.set_sync_debug_mode("warn"); not applicable on a CPU).
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
import warnings
from pathlib import Path

import torch
from torch.nn.attention import sdpa_kernel
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
import throughput as tp  # noqa: E402  (the same settings, presets and step as the throughput benchmark)
from minivit.common.files import ensure_folder, write_json  # noqa: E402
from minivit.common.cli import ArgumentParser, integer, run  # noqa: E402
from minivit.model.speed import ATTENTION_BACKENDS  # noqa: E402

# Op names in a trace -> the SDPA backend that produced them (longest names first: the CPU flash op
# contains the CUDA one's name).
SDPA_OPS = (
    ("_scaled_dot_product_flash_attention_for_cpu", "flash (CPU kernel)"),
    ("_scaled_dot_product_cudnn_attention", "cudnn"),
    ("_scaled_dot_product_flash_attention", "flash"),
    ("_scaled_dot_product_efficient_attention", "efficient"),
    ("_scaled_dot_product_attention_math", "math"),
)


def sdpa_backend_used(op_names) -> list[str]:
    """The SDPA backends whose forward ops appear among ``op_names``.

    >>> sdpa_backend_used(["aten::linear", "aten::_scaled_dot_product_flash_attention_for_cpu",
    ...                    "aten::_scaled_dot_product_flash_attention_for_cpu_backward"])
    ['flash (CPU kernel)']
    """
    found = []
    for name in op_names:
        if name.endswith("_backward"):
            continue
        for fragment, backend in SDPA_OPS:
            if fragment in name:
                found.append(backend)
                break
    return sorted(set(found))


def launch_gaps(kernels: list[tuple[float, float]]) -> dict | None:
    """Idle time between consecutive GPU kernels, from (start_us, end_us) pairs.

    >>> g = launch_gaps([(0, 10), (15, 20), (20, 30), (40, 50)])
    >>> g["busy_fraction"], g["gaps_over_5us"], g["largest_gap_us"]
    (0.7, 1, 10)
    """
    if not kernels:
        return None
    kernels = sorted(kernels)
    gaps, busy, end = [], 0.0, kernels[0][0]
    for start, stop in kernels:
        if start > end:
            gaps.append(start - end)
        busy += max(0.0, stop - max(start, end))  # overlapping kernels (streams) count once
        end = max(end, stop)
    window = end - kernels[0][0]
    gaps.sort()
    return dict(kernels=len(kernels), window_us=window, busy_fraction=round(busy / window, 4) if window else 1.0,
                median_gap_us=gaps[len(gaps) // 2] if gaps else 0.0, largest_gap_us=gaps[-1] if gaps else 0.0,
                gaps_over_5us=sum(g > 5 for g in gaps))


def summarise(prof, steps: int, device: torch.device, top: int) -> dict:
    """Top ops by self time, ops/kernels per step, launch gaps and the SDPA backend, from one profile."""
    cuda = device.type == "cuda"
    averages = prof.key_averages()
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    rows = sorted(averages, key=lambda a: getattr(a, key), reverse=True)
    events = prof.events()
    # ops dispatched from Python or the autograd engine (not ops called inside other aten ops): ~ launches
    top_level = [e for e in events if e.device_type.name == "CPU" and e.name.startswith("aten::")
                 and not (e.cpu_parent is not None and e.cpu_parent.name.startswith("aten::"))]
    kernels = [(e.time_range.start, e.time_range.end) for e in events if e.device_type.name == "CUDA"]
    return dict(
        top_ops=[dict(op=a.key, calls_per_step=a.count / steps, self_us_per_step=getattr(a, key) / steps)
                 for a in rows[:top]],
        self_us_per_step={a.key: getattr(a, key) / steps for a in averages},
        aten_ops_per_step=len(top_level) / steps,
        kernels_per_step=len(kernels) / steps if cuda else None,
        launch_gaps=launch_gaps(kernels) if cuda else None,
        sdpa_backend=sdpa_backend_used(a.key for a in averages),
    )


def profile_calls(fn, steps: int, device: torch.device, trace: Path):
    """Profile ``steps`` calls of ``fn`` and write the chrome trace."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            fn()
        tp.sync(device)
    prof.export_chrome_trace(str(trace))
    return prof


def host_syncs(fn, steps: int, device: torch.device) -> dict | str:
    """Synchronising CUDA calls made by ``steps`` calls of ``fn``, grouped by the Python line making them."""
    if device.type != "cuda":
        return "not applicable on a CPU (no device to wait for)"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for _ in range(steps):
                fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    where: dict[str, int] = {}
    for w in caught:
        if "synchroniz" in str(w.message):
            place = f"{w.filename}:{w.lineno}"
            where[place] = where.get(place, 0) + 1
    return dict(per_step=sum(where.values()) / steps, where=where)


def probe_sdpa(model, x, autocast) -> dict:
    """Which SDPA backends can run this model's attention, each tried alone (forward only)."""
    can_run = {}
    for name, backend in ATTENTION_BACKENDS.items():
        try:
            with sdpa_kernel([backend]), torch.no_grad(), autocast:
                model(x)
            can_run[name] = True
        except RuntimeError:  # "No available kernel": this backend does not support the shape/dtype/device
            can_run[name] = False
    return can_run


def graph_breaks(model, x) -> dict:
    """torch._dynamo.explain of the model's forward: graphs, breaks and their reasons."""
    import torch._dynamo

    torch._dynamo.reset()
    explanation = torch._dynamo.explain(model)(x)
    return dict(graphs=explanation.graph_count, graph_breaks=explanation.graph_break_count,
                reasons=[str(getattr(b, "reason", b)) for b in explanation.break_reasons])


def profile_pure_step(args, setup: tp.Setup, mode: str, out: Path) -> dict:
    """Profile the pure training step (throughput.py's) in one mode; its breaks, syncs and SDPA probe."""
    torch.manual_seed(0)
    s = setup
    model = tp.build("minivit", s.cfg).to(s.device).train()
    x = torch.randn(s.batch_size, s.cfg.in_chans, *s.cfg.image_hw, device=s.device)
    y = torch.randint(0, s.cfg.num_classes, (s.batch_size,), device=s.device)
    autocast = torch.autocast(s.device.type, dtype=s.dtype) if s.dtype != torch.float32 else contextlib.nullcontext()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=s.device.type == "cuda")
    runner = model
    if mode == "compiled":
        runner = (torch.compile(model, mode=s.compile_mode if s.compile_mode != "default" else None)
                  if s.compile_backend == "inductor" else torch.compile(model, backend=s.compile_backend))
    step = tp.train_step_fn(runner, model, opt, x, y, autocast)
    for _ in range(max(1, s.warmup)):  # compilation and allocator warm-up stay out of the trace
        step()
    tp.sync(s.device)
    trace = out / f"step-{mode}.json"
    summary = summarise(profile_calls(step, args.steps, s.device, trace), args.steps, s.device, args.top)
    summary.update(trace=str(trace), host_syncs=host_syncs(step, args.steps, s.device))
    if mode == "eager":
        summary["sdpa_can_run"] = probe_sdpa(model, x, autocast)
    else:
        summary["graph_breaks"] = graph_breaks(model, x)
    return summary


def profile_loop(args, setup: tp.Setup, out: Path) -> dict:
    """Profile minivit.train.train for --loop-steps optimiser steps (set-up and warm-up included)."""
    from minivit.data import synthetic_faces
    from minivit.train import train

    steps = args.loop_steps
    train_set = synthetic_faces(args.batch_size * steps, image_size=args.image_size, seed=0)
    val_set = synthetic_faces(64, image_size=args.image_size, seed=1)
    with tempfile.TemporaryDirectory(prefix="minivit-profile-") as tmp:
        def run_loop(name):
            cfg = tp.loop_train_config(args, "eager", steps, str(Path(tmp) / name))
            return train(cfg, train_set, val_set)

        trace = out / "loop-eager.json"
        summary = summarise(profile_calls(lambda: run_loop("profiled"), 1, setup.device, trace), steps,
                            setup.device, args.top)
        syncs = host_syncs(lambda: run_loop("syncs"), 1, setup.device)
    if isinstance(syncs, dict):  # counted over one whole run: per optimiser step
        syncs["per_step"] = syncs["per_step"] / steps
        syncs["note"] = "counted over the whole run (set-up included), divided by its optimiser steps"
    summary.update(trace=str(trace), host_syncs=syncs, note="the whole train() call (model build, "
                   "warm-up and set-up included), divided by its optimiser steps")
    return summary


def loop_extra(loop: dict, step: dict, top: int) -> list[dict]:
    """The ops on which the loop spends more time per step than the pure step: the loop's own cost.

    >>> loop_extra({"self_us_per_step": {"aten::mul": 50.0, "aten::mm": 100.0}},
    ...            {"self_us_per_step": {"aten::mm": 99.0}}, top=5)
    [{'op': 'aten::mul', 'extra_us_per_step': 50.0}, {'op': 'aten::mm', 'extra_us_per_step': 1.0}]
    """
    extra = {k: v - step["self_us_per_step"].get(k, 0.0) for k, v in loop["self_us_per_step"].items()}
    ranked = sorted(((k, v) for k, v in extra.items() if v > 0), key=lambda kv: kv[1], reverse=True)
    return [dict(op=k, extra_us_per_step=round(v, 3)) for k, v in ranked[:top]]


def print_summary(name: str, s: dict, top: int) -> None:
    print(f"\n== {name}: trace {s['trace']}")
    per_step = f"{s['aten_ops_per_step']:.0f} top-level aten ops per step"
    if s["kernels_per_step"] is not None:
        per_step += f", {s['kernels_per_step']:.0f} CUDA kernels per step"
    print(per_step)
    if s.get("launch_gaps"):
        g = s["launch_gaps"]
        print(f"GPU busy {100 * g['busy_fraction']:.1f}% of the kernel window; median gap {g['median_gap_us']:.1f} us, "
              f"largest {g['largest_gap_us']:.1f} us, {g['gaps_over_5us']} gaps over 5 us")
    print(f"SDPA backend used: {', '.join(s['sdpa_backend']) or 'none seen'}")
    if "sdpa_can_run" in s:
        print("SDPA backends that can run this shape alone: "
              + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in s["sdpa_can_run"].items()))
    if "graph_breaks" in s:
        b = s["graph_breaks"]
        print(f"torch.compile: {b['graphs']} graph(s), {b['graph_breaks']} graph break(s)"
              + "".join(f"\n  break: {r}" for r in b["reasons"]))
    syncs = s["host_syncs"]
    print(f"host syncs: {syncs}" if isinstance(syncs, str) else
          f"host syncs: {syncs['per_step']:.1f} per step" + "".join(f"\n  {k}: {v}" for k, v in syncs["where"].items()))
    print(f"top {top} ops by self time per step:")
    for row in s["top_ops"]:
        print(f"  {row['self_us_per_step']:>10.1f} us  {row['calls_per_step']:>6.1f} calls  {row['op']}")


def main(argv=None) -> int:
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    tp.add_setting_args(p)
    p.add_argument("--modes", help="comma-separated: eager, compiled (default both on CUDA, eager on a CPU)")
    p.add_argument("--compile-mode", default="default", choices=tp.speed.COMPILE_MODES)
    p.add_argument("--compile-backend", default="inductor", choices=["inductor", "aot_eager"],
                   help="aot_eager: trace without generating code (quick CPU checks)")
    p.add_argument("--steps", type=integer(at_least=1), help="profiled pure steps (default 10 on CUDA, 2 on a CPU)")
    p.add_argument("--loop-steps", type=integer(at_least=0),
                   help="optimiser steps of the profiled loop; 0 skips it (default 30 on CUDA, 3 on a CPU)")
    p.add_argument("--top", type=integer(at_least=1), default=15, help="ops listed per table")
    p.add_argument("--out", help="folder for the traces and summary.json (default runs/profile/<setting>)")
    args = p.parse_args(argv)
    device = tp.resolve_setting(args)
    cuda = device.type == "cuda"
    args.modes = [m.strip() for m in (args.modes or ("eager,compiled" if cuda else "eager")).split(",") if m.strip()]
    for mode in args.modes:
        if mode not in ("eager", "compiled"):
            p.error(f"argument --modes: unknown mode {mode!r} (choose from eager, compiled)")
    args.steps = args.steps or (10 if cuda else 2)
    args.loop_steps = args.loop_steps if args.loop_steps is not None else (30 if cuda else 3)
    out = Path(args.out or f"runs/profile/{args.setting}")
    if out.exists() and not out.is_dir():
        p.error(f"argument --out: {out} is a file, not a folder")
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        p.error(f"argument --out: {out} is not empty (pass --overwrite to replace its files)")
    ensure_folder(out)  # a one-line error where it cannot be created (no permission, a file on the way)

    if cuda:
        tp.speed.allow_tf32()
    cfg = tp.model_config(args)
    setup = tp.Setup(cfg=cfg, device=device, dtype={"bf16": torch.bfloat16, "fp16": torch.float16,
                                                    "fp32": torch.float32}[args.precision],
                     batch_size=args.batch_size, warmup=args.warmup, iters=args.steps, compile_mode=args.compile_mode,
                     compile_backend=args.compile_backend)
    print(f"{args.setting}: {tp.describe(cfg)}; batch {args.batch_size}, {args.precision}, on {device}", flush=True)
    report = {"meta": dict(setting=args.setting, architecture=tp.describe(cfg), config=cfg.to_dict(),
                           batch_size=args.batch_size, precision=args.precision, device=str(device),
                           torch=torch.__version__, steps=args.steps, loop_steps=args.loop_steps)}
    for mode in args.modes:
        report[f"step-{mode}"] = profile_pure_step(args, setup, mode, out)
        print_summary(f"pure training step, {mode}", report[f"step-{mode}"], args.top)
    if args.loop_steps:
        report["loop-eager"] = profile_loop(args, setup, out)
        print_summary("training loop (minivit.train.train), eager", report["loop-eager"], args.top)
        if "step-eager" in report:
            report["loop_extra_over_step"] = loop_extra(report["loop-eager"], report["step-eager"], args.top)
            print(f"\nops the loop spends more time in per step than the pure step (top {args.top}):")
            for row in report["loop_extra_over_step"]:
                print(f"  {row['extra_us_per_step']:>10.1f} us  {row['op']}")
    for part in report.values():  # the full per-op tables stay in the traces; keep the summary readable
        if isinstance(part, dict):
            part.pop("self_us_per_step", None)
    write_json(report, out / "summary.json")
    print(f"\nwrote {out / 'summary.json'} and the traces beside it")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
