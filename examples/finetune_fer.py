"""Fine-tune (or train from scratch) a ViT for facial expression recognition.

With no arguments it runs the embedded default: a short from-scratch run on minivit's
procedurally drawn SYNTHETIC faces (not real data) that writes the full report -- metrics.json,
confusion_matrix.png, curves.png, attention_maps.png, checkpoints and config.json -- into
runs/<name>, in about a minute on 2 CPU cores.

    python examples/finetune_fer.py                                  # synthetic demo run
    python examples/finetune_fer.py --data ../shared/data/fer2013 --weights ViT-B_16 --img-size 224
    python examples/finetune_fer.py --data ../shared/data/fer2013 --model Ti/16 --patch-size 4
    torchrun --nproc_per_node 4 examples/finetune_fer.py --data ../shared/data/fer2013 --weights ViT-B_16
    python examples/finetune_fer.py --resume runs/fer2013-...        # continue an interrupted run

Defaults depend on the kind of run (a table, PROFILES, below): "synthetic" (the demo),
"finetune" (--weights given: the ViT paper's SGD transfer recipe) and "scratch" (a real dataset
and no weights: AdamW with strong augmentation). An option given on the command line always wins;
--help lists every option with each profile's default.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from minivit.errors import MinivitError  # noqa: E402
from minivit.train import TrainConfig  # noqa: E402

# Per-profile defaults (TrainConfig field -> value); fields not listed keep TrainConfig's default.
PROFILES = {
    # The no-argument demo: a ~90k-parameter ViT at 32x32 (patch 4: an 8x8 grid) on synthetic faces.
    "synthetic": dict(model="Ti/16", model_overrides=dict(patch_size=4, dim=64, depth=3, heads=4, mlp_dim=128),
                      img_size=32, synthetic_samples=2800, epochs=20, batch_size=64, lr=2e-3, weight_decay=0.05,
                      warmup_epochs=1, label_smoothing=0.1, ema=0.0),
    # Fine-tuning a pre-trained checkpoint: the ViT paper's recipe (SGD, momentum 0.9, no weight decay,
    # grad-norm clip 1, cosine with warmup) at the resolution the checkpoint was trained at.
    "finetune": dict(optimizer="sgd", lr=0.01, weight_decay=0.0, clip_grad=1.0, img_size=224, epochs=10,
                     batch_size=64, warmup_epochs=1, label_smoothing=0.1),
    # From scratch on ~28k 48x48 faces: small patches, AdamW, CutMix/MixUp, stochastic depth, EMA.
    "scratch": dict(model="Ti/16", model_overrides=dict(patch_size=4), img_size=48, epochs=100, batch_size=128,
                    lr=1e-3, weight_decay=0.05, warmup_epochs=5, drop_path=0.1, label_smoothing=0.1,
                    cutmix=1.0, mixup=0.8, ema=0.9998),
}
MODEL_FLAGS = ("patch_size", "dim", "depth", "heads", "mlp_dim")  # flags that become ViTConfig overrides


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Profile defaults:\n" + "\n".join(f"  {k}: {v}" for k, v in PROFILES.items()))
    a = p.add_argument
    a("--data", default="synthetic", help="FER2013 csv, image folder (train/ val|test/), FER+ csv, RAF-DB root, "
      "or 'synthetic' (default: synthetic)")
    a("--ferplus-images", help="FER+ csv only: the original fer2013.csv (same row order) or a folder of its fer*.png images")
    a("--label-mode", choices=("majority", "soft"), help="FER+ only: hard majority label or vote distribution")
    a("--weights", default="none", help="Google .npz, .safetensors, manifest name (e.g. ViT-B_16) or 'none' "
      "= from scratch (default: none)")
    a("--model", help="preset name, e.g. Ti/16, ViT-B_16, vit_small_patch16_224 (ignored with --weights)")
    a("--patch-size", type=int, help="override the preset's patch size (e.g. 4 for 48x48 from scratch)")
    a("--dim", type=int, help="override the preset's width")
    a("--depth", type=int, help="override the preset's number of blocks")
    a("--heads", type=int, help="override the preset's number of heads")
    a("--mlp-dim", type=int, help="override the preset's MLP width")
    a("--img-size", type=int, help="training resolution (profile: synthetic 32, finetune 224, scratch 48)")
    a("--epochs", type=int)
    a("--batch-size", type=int, help="per process and micro-step")
    a("--accum-steps", type=int, help="gradient accumulation micro-steps per optimiser step (default 1)")
    a("--optimizer", choices=("adamw", "sgd"))
    a("--lr", type=float, help="peak learning rate")
    a("--weight-decay", type=float)
    a("--layer-decay", type=float, help="layer-wise LR decay, e.g. 0.75 (default 1 = off)")
    a("--warmup-epochs", type=float)
    a("--drop-path", type=float)
    a("--clip-grad", type=float, help="max gradient norm, 0 = off (default 1)")
    a("--precision", choices=("auto", "bf16", "fp16", "fp32"), help="default auto: bf16 on GPUs that have it, "
      "else fp16 with loss scaling; fp32 on CPU")
    a("--cutmix", type=float, help="CutMix Beta alpha, 0 = off")
    a("--mixup", type=float, help="MixUp Beta alpha, 0 = off")
    a("--label-smoothing", type=float)
    a("--balance", choices=("none", "sampler", "loss"), help="class balancing (default none)")
    a("--ema", type=float, help="EMA decay of the weights, 0 = off")
    a("--compile", action="store_true", default=None, help="torch.compile the model")
    a("--device", choices=("auto", "cpu", "cuda"))
    a("--synthetic-samples", type=int, help="synthetic training set size (default 2800)")
    a("--out", help="run folder (default runs/<data>-<timestamp>)")
    a("--resume", help="run folder (or its resume.safetensors) to continue; its config.json is reused")
    a("--eval-only", action="store_true", help="only evaluate: best.safetensors of --resume, or --weights")
    a("--tta", action="store_true", default=None, help="horizontal-flip test-time augmentation in the report")
    a("--seed", type=int)
    a("--ckpt-every", type=int, help="also write resume.safetensors every N steps (default: once per epoch)")
    a("--stop-after", type=int, help="stop after N optimiser steps (simulates an interrupted run)")
    a("--no-progress", dest="progress", action="store_false", default=None, help="no tqdm bars")
    return p.parse_args(argv)


def build_config(args: argparse.Namespace) -> tuple[TrainConfig, str]:
    """TrainConfig from (saved run config or profile defaults) + the options given explicitly."""
    if args.resume:
        saved = Path(args.resume)
        saved = (saved if saved.is_dir() else saved.parent) / "config.json"
        if not saved.is_file():
            raise MinivitError(f"--resume {args.resume}: no config.json beside the checkpoint")
        fields, profile = json.loads(saved.read_text())["train"], "resumed"
        fields["out"] = str(saved.parent)
    else:
        profile = "synthetic" if args.data == "synthetic" else ("finetune" if args.weights != "none" else "scratch")
        fields = dict(PROFILES[profile], data=args.data, weights=args.weights)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        fields["out"] = str(Path("runs") / f"{Path(args.data).name or 'data'}-{stamp}")
    overrides = dict(fields.get("model_overrides") or {})
    for name in MODEL_FLAGS:
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    fields["model_overrides"] = overrides
    skip = set(MODEL_FLAGS) | {"eval_only"}
    for name, value in vars(args).items():
        if name not in skip and value is not None and name in TrainConfig.__dataclass_fields__:
            if name in ("data", "weights") and args.resume:
                continue  # a resumed run keeps its data and starting weights
            fields[name] = value
    return TrainConfig.from_dict(fields), profile


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        cfg, profile = build_config(args)
        if args.eval_only:
            from minivit.evaluate import evaluate_checkpoint

            checkpoint = args.resume or args.weights
            if not checkpoint or checkpoint == "none":
                raise MinivitError("--eval-only needs --resume RUN_DIR or --weights FILE")
            evaluate_checkpoint(checkpoint, cfg.data if args.data == "synthetic" and args.resume else args.data,
                                out=cfg.out, tta=bool(cfg.tta), device=cfg.device)
            return 0
        from minivit.train import cleanup_distributed, train

        if profile == "synthetic" and os.environ.get("RANK", "0") == "0":
            print("embedded default: a short from-scratch run on SYNTHETIC faces (drawn by "
                  "minivit.data.synthetic_faces, not real data); see --help for real datasets", flush=True)
        result = train(cfg)
        cleanup_distributed()
    except MinivitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if result.get("val_accuracy") is not None:
        print(f"done in {result['seconds']:.0f}s: val accuracy {result['val_accuracy']:.4f}, macro F1 "
              f"{result['val_macro_f1']:.4f} (best epoch {result['best_epoch']}); report in {result['run_dir']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
