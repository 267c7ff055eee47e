"""The training command line: ``minivit train``, or ``python -m minivit.train`` (examples/finetune_fer.py
calls the same).

With no arguments it runs the embedded default: a short from-scratch run on minivit's
procedurally drawn SYNTHETIC faces (not real data) that writes the full report -- metrics.json,
confusion_matrix.png, curves.png, attention_maps.png, checkpoints and config.json -- into
runs/synthetic-<timestamp>, in a few minutes on 2 CPU cores.

    minivit train                                                        # synthetic demo run
    minivit train --data ../shared/data/fer2013                          # the FER2013 from-scratch recipe
    minivit train --data ../shared/data/fer2013 --weights ViT-B_16 --image-size 224
    torchrun --nproc_per_node 4 -m minivit.train --data ../shared/data/fer2013 --weights ViT-B_16
    minivit train --resume runs/fer2013-...                              # continue an interrupted run
    minivit train --config runs/fer2013-.../config.json --out runs/again # repeat a run (flags override it)

Defaults depend on the kind of run (minivit/train/profiles.py): "synthetic" (the demo: TrainConfig's
own defaults), "finetune" (--weights given: the ViT paper's SGD transfer recipe) and "scratch" (a real
dataset and no weights: the FER recipe of docs/training.md), then a --config file, then the options
given on the command line, which always win; --help lists every option, its valid range, and each
profile's defaults. Every run writes history.csv (one row per epoch); --tensorboard adds event files.
"""

from __future__ import annotations

import argparse

from ..checkpoints.run_folder import CONFIG, RunFolder
from ..common.cli import ArgumentParser, command_prog, integer
from ..common.errors import ConfigError, MinivitError
from ..data.synthetic import SYNTHETIC
from ..model.config import IN_CHANS, STEMS
from ..train.config import CHOICES, RANGES, TrainConfig
from ..train.distributed import cleanup_distributed, world_from_env
from ..train.config_file import read_config_file
from ..train.profiles import SIZE_FIELDS, epilog, profile_fields

# Flags that become ViTConfig overrides (with their valid values).
MODEL_FLAGS = ("patch_size", "dim", "depth", "heads", "mlp_dim", "stem", "stem_width", "in_chans")


def add_data_options(p) -> None:
    a, r = p.add_argument, RANGES
    a("--data", help="FER2013 csv, image folder (train/ [val/] [test/]), FER+ csv, "
      "RAF-DB root, or 'synthetic' (default: synthetic)")
    a("--ferplus-images", help="FER+ csv only: the original fer2013.csv (same row order) or a folder of its fer*.png images")
    a("--label-mode", choices=CHOICES["label_mode"], help="FER+ only: hard majority label or vote distribution")
    a("--on-bad-image", choices=CHOICES["on_bad_image"], help="an unreadable image stops the run (raise, default) "
      "or is skipped and counted (skip)")
    a("--val-split", choices=CHOICES["val_split"], help="what selects best.safetensors: auto (default) = the "
      "dataset's val split, or where it has none (FER2013 folders, RAF-DB) --val-fraction of each class of train "
      "carved out; carve = carve even where there is a val split; test = the test split (optimistic: every report "
      "says so, and there is no separate test figure)")
    a("--val-fraction", type=r["val_fraction"], help="share of each class's training images carved out as the "
      "val split, in (0, 1) (default 0.1; fixed seed, recorded in config.json)")
    a("--synthetic-samples", type=r["synthetic_samples"], help="synthetic training set size, >= 7 (default 2800)")
    a("--cache-dir", help="where image folders and RAF-DB are kept decoded at the training size, built at the first "
      "start and memory-mapped by later ones and by every process on the machine (default $MINIVIT_CACHE_DIR, "
      "else ~/.cache/minivit; a shared filesystem serves several nodes)")
    a("--no-cache", dest="cache", action="store_false", default=None,
      help="decode the images into every process's memory at every start instead (CSV datasets always are)")


def add_model_options(p) -> None:
    a, r = p.add_argument, RANGES
    a("--weights", help="Google .npz, .safetensors, manifest name (e.g. ViT-B_16) or 'none' "
      "= from scratch (default: none)")
    a("--model", help="model name, e.g. Ti/16, S/4, ViT-B_16, vit_small_patch16_224; a model named here keeps "
      "its own patch size and width unless the flags below are given (not with --weights or --resume)")
    a("--patch-size", type=integer(at_least=1), help="override the model's patch size (the token grid's cell)")
    a("--dim", type=integer(at_least=1), help="override the model's width")
    a("--depth", type=integer(at_least=1), help="override the model's number of blocks")
    a("--heads", type=integer(at_least=1), help="override the model's number of heads")
    a("--mlp-dim", type=integer(at_least=1), help="override the model's MLP width")
    a("--stem", choices=STEMS, help="patch: one patchify convolution (Google's ViT); conv: a stack of "
      "3x3 convolutions down to the token grid (Xiao et al. 2021)")
    a("--stem-width", type=integer(at_least=1), help="conv stem only: channels of its full-resolution layer, doubled "
      "by each stride-2 stage (default: the stages widen to dim / 2)")
    a("--in-chans", type=integer(at_least=min(IN_CHANS), at_most=max(IN_CHANS)), choices=IN_CHANS,
      help="input channels: 1 for grayscale faces, 3 for RGB (2 is neither)")
    a("--image-size", "--img-size", type=r["image_size"],
      help="training resolution (profile: synthetic 32, finetune 224, scratch 48)")
    a("--drop-path", type=r["drop_path"], help="stochastic depth rate, in [0, 1)")


def add_optimisation_options(p) -> None:
    a, r = p.add_argument, RANGES
    a("--epochs", type=r["epochs"], help="passes over the training set, >= 1 (profile: synthetic 20, finetune 10, "
      "scratch 100)")
    a("--batch-size", type=r["batch_size"], help="per process and micro-step, >= 1")
    a("--accum-steps", type=r["accum_steps"], help="gradient accumulation micro-steps per optimiser step (default 1)")
    a("--optimizer", choices=CHOICES["optimizer"], help="adamw (default; from scratch) or sgd with momentum (the "
      "finetune profile: the ViT paper's transfer recipe)")
    a("--lr", type=r["lr"], help="peak learning rate, > 0")
    a("--min-lr", type=r["min_lr"], help="the cosine decays to this, >= 0 (default 1e-6)")
    a("--weight-decay", type=r["weight_decay"], help=">= 0")
    a("--momentum", type=r["momentum"], help="SGD momentum, in [0, 1) (default 0.9)")
    a("--layer-decay", type=r["layer_decay"], help="layer-wise LR decay in (0, 1], e.g. 0.75 (default 1 = off)")
    a("--warmup-epochs", type=r["warmup_epochs"], help="linear warmup, >= 0 epochs (fractions allowed)")
    a("--clip-grad", type=r["clip_grad"], help="max gradient norm, >= 0; 0 = off (default 1)")
    a("--cutmix", type=r["cutmix"], help="CutMix Beta alpha, >= 0; 0 = off")
    a("--mixup", type=r["mixup"], help="MixUp Beta alpha, >= 0; 0 = off")
    a("--mix-prob", type=r["mix_prob"], help="probability in [0, 1] that a batch is mixed at all (default 1)")
    a("--label-smoothing", type=r["label_smoothing"], help="in [0, 1)")
    a("--balance", choices=CHOICES["balance"], help="class balancing: none (default), sampler (class-balanced "
      "sampling), loss (loss weights N / (K n_c)) or sqrt (their square root: milder)")
    a("--ema", type=r["ema"], help="EMA decay of the weights, in [0, 1); 0 = off")


def add_run_options(p) -> None:
    a, r = p.add_argument, RANGES
    a("--precision", choices=CHOICES["precision"], help="default auto: bf16 on GPUs that have it, "
      "else fp16 with loss scaling; fp32 on CPU")
    a("--compile", nargs="?", const="yes", choices=CHOICES["compile"],
      help="torch.compile the model: auto (default: on CUDA only), yes, no")
    a("--device", choices=CHOICES["device"], help="auto (default): a GPU when CUDA is available, else the CPU")
    a("--data-on-device", choices=CHOICES["data_on_device"], help="keep the uint8 set on the GPU (auto: under 2 GiB)")
    a("--prefetch", type=r["prefetch"], help="batches a thread gathers ahead into pinned memory when the set is not "
      "on the GPU, 1..64 (default 4)")
    a("--out", help="run folder (default runs/<data>-<timestamp>); one holding a run is refused without --overwrite")
    a("--overwrite", action="store_true", default=None, help="replace the run already in --out")
    a("--resume", help="run folder (or its resume.safetensors) to continue; its config.json is reused")
    a("--eval-only", action="store_true", help="only evaluate: best.safetensors of --resume, or --weights")
    a("--tta", action=argparse.BooleanOptionalAction, default=None,
      help="horizontal-flip test-time augmentation in the final report")
    a("--best-metric", choices=CHOICES["best_metric"], help="which val metric picks best.safetensors")
    a("--eval-batch-size", type=r["eval_batch_size"], help="images per forward pass when validating and in the "
      "final report, >= 1 (default 256)")
    a("--seed", type=r["seed"], help="seeds the initialisation, the data order and the augmentation (a carved val "
      "split has its own fixed seed); an integer in [0, 2**31 - 1] (default 0)")
    a("--ckpt-every", type=r["ckpt_every"], help="also write resume.safetensors every N steps (default: once per epoch)")
    a("--stop-after", type=r["stop_after"], help="stop after N optimiser steps (simulates an interrupted run)")
    a("--no-progress", dest="progress", action="store_false", default=None,
      help="no progress bars anywhere (data decoding included): a line per epoch, and every --log-every seconds")
    a("--log-every", type=r["log_every"], help="seconds between progress lines when there is no bar (default 30)")
    a("--tensorboard", action=argparse.BooleanOptionalAction, default=None,
      help="also write TensorBoard event files into <out>/tensorboard/: train loss and LR every 10 steps, every "
      "history.csv column each epoch, the report's PNGs at the end (pip install 'minivit[tensorboard]'). Off by "
      "default: event files in every small run, and a second to import TensorBoard, would surprise; history.csv "
      "is always written")
    a("--config", metavar="FILE", help="training options from a JSON or YAML file (.yaml/.yml: pip install "
      "'minivit[config]'): a run's config.json (or its folder) repeats that run, into --out or a new folder; or a "
      "flat mapping of TrainConfig fields (the keys of config.json's \"train\"). Options given here override "
      "the file; not with --resume")


def add_options(p: argparse.ArgumentParser) -> None:
    """Every option of the command: each numeric one's type= is its RANGES entry, each named one's
    choices= its CHOICES entry (minivit/train/config.py), so the CLI and TrainConfig.validate() agree."""
    add_data_options(p.add_argument_group("data"))
    add_model_options(p.add_argument_group("model"))
    add_optimisation_options(p.add_argument_group("optimisation"))
    add_run_options(p.add_argument_group("run"))


def build_parser(prog: str | None = None) -> ArgumentParser:
    p = ArgumentParser(prog=command_prog("train", prog), description=__doc__.split("\n\n")[0],
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog=epilog())
    add_options(p)
    return p


def parse_args(argv=None, prog: str | None = None) -> argparse.Namespace:
    return build_parser(prog).parse_args(argv)


def build_config(args: argparse.Namespace) -> tuple[TrainConfig, str]:
    """TrainConfig from (the saved run config, or the profile defaults then the --config file) + the options
    given explicitly: a flag always wins."""
    if args.config and args.resume:
        raise ConfigError(f"--config does not apply with --resume: a resumed run continues with its own {CONFIG}")
    from_file = read_config_file(args.config) if args.config else {}
    data = args.data if args.data is not None else from_file.get("data", SYNTHETIC)
    weights = args.weights if args.weights is not None else from_file.get("weights", "none")
    given = [name for name in ("model", *MODEL_FLAGS) if getattr(args, name) is not None]
    if given and (args.resume or weights != "none"):  # would be silently ignored: say so instead
        raise ConfigError(f"--{given[0].replace('_', '-')} does not apply with --{'resume' if args.resume else 'weights'}: "
                          f"that model keeps its own architecture")
    if args.resume:
        folder = RunFolder.of_resume(args.resume)
        fields, profile = TrainConfig.from_run(folder).to_dict(), "resumed"
        fields["out"] = str(folder.path)
        # --overwrite is a decision about one command, never inherited: the run that created this
        # folder may have replaced an older one, its resumption must not replace another
        fields["overwrite"] = False
    else:
        fields, profile = profile_fields(data, weights, args.model or from_file.get("model"))
        fields["out"] = None  # unless --out is given: a new timestamped folder, named when the run starts
        fields.update(from_file)
        if args.model:  # a model named on the command line keeps its own size, whatever the file's model had
            fields["model_overrides"] = {k: v for k, v in (fields.get("model_overrides") or {}).items()
                                         if k not in SIZE_FIELDS}
    overrides = dict(fields.get("model_overrides") or {})
    overrides.update({k: getattr(args, k) for k in MODEL_FLAGS if getattr(args, k) is not None})
    fields["model_overrides"] = overrides
    for name, value in vars(args).items():
        if name in MODEL_FLAGS or name == "eval_only" or value is None or name not in TrainConfig.field_names():
            continue
        if name in ("data", "weights", "val_split", "val_fraction") and args.resume:
            continue  # a resumed run keeps its data, its splits and its starting weights
        fields[name] = value
    return TrainConfig.from_dict(fields).validate(), profile


def evaluate_only(args: argparse.Namespace, cfg: TrainConfig) -> int:
    from ..evaluate import evaluate_checkpoint

    checkpoint = args.resume or cfg.weights
    if not checkpoint or checkpoint == "none":
        raise MinivitError("--eval-only needs --resume RUN_DIR or --weights FILE")
    data = args.data if args.resume else cfg.data  # with --resume, None: the run's own data
    evaluate_checkpoint(checkpoint, data, out=args.out, tta=bool(cfg.tta), device=cfg.device, progress=cfg.progress,
                        on_error=cfg.on_bad_image, overwrite=bool(cfg.overwrite), batch_size=cfg.eval_batch_size,
                        ferplus_images=cfg.ferplus_images, label_mode=cfg.label_mode)
    return 0


def done_line(result: dict) -> str:
    """The last line of a finished run: both figures of best.safetensors, each naming its split."""
    line = (f"done in {result['seconds']:.0f}s (best epoch {result['best_epoch']}): val accuracy "
            f"{result['val_accuracy']:.4f}, macro F1 {result['val_macro_f1']:.4f} [{result['val_split_label']}]")
    if result.get("test_accuracy") is not None:
        line += (f"; test accuracy {result['test_accuracy']:.4f}, macro F1 {result['test_macro_f1']:.4f} "
                 f"[{result['test_split_label']}]")
    return f"{line}; report in {result['run_dir']}"


def main(argv=None, prog: str | None = None) -> int:
    """The command: parse, build the config, train (or evaluate); errors are MinivitError (see minivit.common.cli.run)."""
    from ..train.loop import train

    args = parse_args(argv, prog)
    cfg, profile = build_config(args)
    if args.eval_only:
        return evaluate_only(args, cfg)
    rank = world_from_env()[0]
    if profile == "synthetic" and not args.config and rank == 0:
        print("embedded default: a short from-scratch run on SYNTHETIC faces (drawn by "
              "minivit.data.synthetic_faces, not real data); see --help for real datasets", flush=True)
    try:
        result = train(cfg)
    finally:
        cleanup_distributed()
    if rank == 0 and result.get("interrupted"):
        # --stop-after simulates a crash: say where the run stands and how to continue it
        run_dir = result["run_dir"]
        how = (f"continue with --resume {run_dir}" if RunFolder(run_dir).resume_file.is_file() else
               "no resume point was written yet (stopped before the first checkpoint): start the run again")
        print(f"stopped after {result['step']} steps (--stop-after) at {result.get('train_img_per_s') or 0:.0f} img/s; "
              f"{how}", flush=True)
    elif rank == 0 and result.get("val_accuracy") is not None:
        print(done_line(result), flush=True)
    return 0

