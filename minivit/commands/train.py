"""The training command line: ``minivit train``, or ``python -m minivit.train`` (examples/finetune_fer.py
calls the same).

With no arguments it runs the embedded default: a short from-scratch run on minivit's
procedurally drawn SYNTHETIC faces (not real data) that writes the full report -- metrics.json,
confusion_matrix.png, curves.png, attention_maps.png, checkpoints and config.json -- into
runs/synthetic-<timestamp>, in a few minutes on 2 CPU cores.

    minivit train                                                        # synthetic demo run
    minivit train --data ../shared/data/fer2013                          # FER2013 from scratch, the recipe for this machine
    minivit train --data ../shared/data/fer2013 --weights ViT-B_16 --image-size 224
    torchrun --nproc_per_node 4 -m minivit.train --data ../shared/data/fer2013 --weights ViT-B_16
    minivit train --resume runs/fer2013-...                              # continue an interrupted run
    minivit train --config runs/fer2013-.../config.json --out runs/again # repeat a run (flags override it)

Defaults are a profile's (minivit/train/profiles.py): --profile auto picks "synthetic" without --data (the
demo: TrainConfig's own defaults), "finetune" with --weights (the ViT paper's SGD transfer recipe), else
"gpu" where CUDA is available (the 100-epoch FER recipe of docs/training.md) and "cpu" where it is not;
then a --config file, then the options given on the command line, which always win. The run's first line
names the profile and why; --help lists every option, its valid range, and each profile's default. Every
run writes history.csv (one row per epoch); --tensorboard adds event files. Ctrl-C or SIGTERM stops a run
after the step it is in, saved, with the command that continues it (minivit/train/interrupt.py).
"""

from __future__ import annotations

import argparse
import signal

from ..checkpoints.run_folder import CONFIG, RunFolder
from ..common.cli import ArgumentParser, command_prog, integer
from ..common.console import write
from ..common.errors import ConfigError, MinivitError
from ..common.text import counted
from ..data.synthetic import SYNTHETIC
from ..model.config import IN_CHANS, STEMS
from ..train.config import CHOICES, PROFILE_NAMES, RANGES, TrainConfig
from ..train.config_file import read_config_file
from ..train.distributed import cleanup_distributed, world_from_env
from ..train.profiles import SIZE_FIELDS, choose_profile, default_of, epilog, help_default, profile_fields

# Flags that become ViTConfig overrides (with their valid values).
MODEL_FLAGS = ("patch_size", "dim", "depth", "heads", "mlp_dim", "stem", "stem_width", "in_chans")


def add_data_options(p) -> None:
    a, r = p.add_argument, RANGES
    a("--data", help="FER2013 csv, image folder (train/ [val/] [test/]), FER+ csv, RAF-DB root, or 'synthetic'")
    a("--ferplus-images", help="FER+ csv only: the original fer2013.csv (same row order) or a folder of its fer*.png images")
    a("--label-mode", choices=CHOICES["label_mode"], help="FER+ only: hard majority label or vote distribution")
    a("--on-bad-image", choices=CHOICES["on_bad_image"], help="an unreadable image or malformed row stops the run "
      "naming it (raise), or is skipped and counted (skip)")
    a("--val-split", choices=CHOICES["val_split"], help="what selects best.safetensors: auto = the dataset's val "
      "split, or where it has none (FER2013 folders, RAF-DB) --val-fraction of each class of train carved out; "
      "carve = carve even where there is a val split; test = the test split (optimistic: every report says so, "
      "and there is no separate test figure)")
    a("--val-fraction", type=r["val_fraction"], help="share of each class's training images carved out as the "
      "val split, in (0, 1); fixed seed, recorded in config.json")
    a("--synthetic-samples", type=r["synthetic_samples"], help="synthetic training set size, >= 7")
    a("--cache-dir", help="where image folders and RAF-DB are kept decoded at the training size, built at the first "
      "start and memory-mapped by later ones and by every process on the machine (default $MINIVIT_CACHE_DIR, "
      "else ~/.cache/minivit; a shared filesystem serves several nodes)")
    a("--no-cache", dest="cache", action="store_false", default=None,
      help="decode the images into every process's memory at every start instead (CSV datasets always are)")


def add_model_options(p) -> None:
    a, r = p.add_argument, RANGES
    a("--weights", help="Google .npz, .safetensors, manifest name (e.g. ViT-B_16) or 'none' = from scratch")
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
    a("--image-size", "--img-size", type=r["image_size"], help="training resolution")
    a("--drop-path", type=r["drop_path"], help="stochastic depth rate, in [0, 1)")


def add_optimisation_options(p) -> None:
    a, r = p.add_argument, RANGES
    a("--epochs", type=r["epochs"], help="passes over the training set, >= 1")
    a("--batch-size", type=r["batch_size"], help="per process and micro-step, >= 1")
    a("--accum-steps", type=r["accum_steps"], help="gradient accumulation micro-steps per optimiser step")
    a("--optimizer", choices=CHOICES["optimizer"], help="adamw, or sgd with momentum (the ViT paper's transfer recipe)")
    a("--lr", type=r["lr"], help="peak learning rate, > 0")
    a("--min-lr", type=r["min_lr"], help="the cosine decays to this, >= 0")
    a("--weight-decay", type=r["weight_decay"], help=">= 0")
    a("--momentum", type=r["momentum"], help="SGD momentum, in [0, 1)")
    a("--layer-decay", type=r["layer_decay"], help="layer-wise LR decay in (0, 1], e.g. 0.75; 1 = off")
    a("--warmup-epochs", type=r["warmup_epochs"], help="linear warmup, >= 0 epochs (fractions allowed)")
    a("--clip-grad", type=r["clip_grad"], help="max gradient norm, >= 0; 0 = off")
    a("--cutmix", type=r["cutmix"], help="CutMix Beta alpha, >= 0; 0 = off")
    a("--mixup", type=r["mixup"], help="MixUp Beta alpha, >= 0; 0 = off")
    a("--mix-prob", type=r["mix_prob"], help="probability in [0, 1] that a batch is mixed at all")
    a("--label-smoothing", type=r["label_smoothing"], help="in [0, 1)")
    a("--balance", choices=CHOICES["balance"], help="class balancing: none, sampler (class-balanced sampling), "
      "loss (loss weights N / (K n_c)) or sqrt (their square root: milder)")
    a("--ema", type=r["ema"], help="EMA decay of the weights, in [0, 1); 0 = off")


def add_run_options(p) -> None:
    a, r = p.add_argument, RANGES
    here = choose_profile("auto", "a dataset")[0]
    a("--profile", choices=("auto", *PROFILE_NAMES), help="the recipe the other options default to (each one's "
      "help says its default per profile; the list is at the end): auto (default) = synthetic without --data, "
      "finetune with --weights, else gpu where CUDA is "
      f"available and cpu where it is not (on this machine: {here}); config.json records the one applied, so "
      "--config repeats the run on any machine")
    a("--precision", choices=CHOICES["precision"], help="auto: bf16 on GPUs that have it, else fp16 with loss "
      "scaling; fp32 on CPU")
    a("--compile", nargs="?", const="yes", choices=CHOICES["compile"],
      help="torch.compile the model: auto (on CUDA only), yes, no")
    a("--device", choices=CHOICES["device"], help="auto: a GPU when CUDA is available, else the CPU")
    a("--data-on-device", choices=CHOICES["data_on_device"], help="keep the uint8 set on the GPU (auto: under 2 GiB)")
    a("--prefetch", type=r["prefetch"], help="batches a thread gathers ahead into pinned memory when the set is not "
      "on the GPU, 1..64")
    a("--out", help="run folder (default runs/<data>-<timestamp>); one holding a run is refused without --overwrite")
    a("--overwrite", action="store_true", default=None, help="replace the run already in --out")
    a("--resume", help="run folder (or its resume.safetensors) to continue; its config.json is reused")
    a("--eval-only", action="store_true", help="only evaluate: best.safetensors of --resume, or --weights")
    a("--tta", action=argparse.BooleanOptionalAction, default=None,
      help="horizontal-flip test-time augmentation in the final report")
    a("--best-metric", choices=CHOICES["best_metric"], help="which val metric picks best.safetensors")
    a("--eval-batch-size", type=r["eval_batch_size"], help="images per forward pass when validating and in the "
      "final report, >= 1")
    a("--seed", type=r["seed"], help="seeds the initialisation, the data order and the augmentation (a carved val "
      "split has its own fixed seed); an integer in [0, 2**31 - 1]")
    a("--ckpt-every", type=r["ckpt_every"], help="also write resume.safetensors every N steps; 0 = at the end of "
      "each epoch only")
    a("--save-every-minutes", type=r["save_every_minutes"], help="also write resume.safetensors after a step when "
      "this many minutes passed since the last one, so a crash or SIGKILL loses at most that much training; 0 = "
      "off. Ctrl-C and SIGTERM always save after the step in progress (a second Ctrl-C stops at once, unsaved)")
    a("--stop-after", type=r["stop_after"], help="stop after N optimiser steps (simulates an interrupted run)")
    a("--no-progress", dest="progress", action="store_false", default=None,
      help="no progress bars anywhere (data decoding included; there are none unless the output is a terminal): "
      "a line per epoch, and every --log-every seconds; the whole-run estimate still prints")
    a("--log-every", type=r["log_every"], help="seconds between progress lines when there is no bar")
    a("--tensorboard", action=argparse.BooleanOptionalAction, default=None,
      help="also write TensorBoard event files into <out>/tensorboard/: train loss and LR every 10 steps, every "
      "history.csv column each epoch, the report's PNGs at the end (pip install 'minivit[tensorboard]'); "
      "history.csv holds the same numbers and is always written, while event files in every small run, and a "
      "second to import TensorBoard, would surprise")
    a("--config", metavar="FILE", help="training options from a JSON or YAML file (.yaml/.yml: pip install "
      "'minivit[config]'): a run's config.json (or its folder) repeats that run, into --out or a new folder; or a "
      "flat mapping of TrainConfig fields (the keys of config.json's \"train\"). Options given here override "
      "the file; not with --resume")


def add_options(p: argparse.ArgumentParser) -> None:
    """Every option of the command: each numeric one's type= is its RANGES entry, each named one's
    choices= its CHOICES entry (minivit/train/config.py), so the CLI and TrainConfig.validate() agree; each
    one's default in --help is read from the profiles' table (help_default)."""
    add_data_options(p.add_argument_group("data"))
    add_model_options(p.add_argument_group("model"))
    add_optimisation_options(p.add_argument_group("optimisation"))
    add_run_options(p.add_argument_group("run"))
    for action in p._actions:
        if defaulted(action):
            action.help = f"{action.help} ({help_default(action.dest)})"


def defaulted(action: argparse.Action) -> bool:
    """Whether --help states this option's default: a TrainConfig field or a model size that takes a value
    (not a plain on/off flag), and that has one (not --out, --resume, ...)."""
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)) or action.dest in ("profile", "stem_width"):
        return False  # (their help says it)
    if action.dest not in TrainConfig.field_names() and action.dest not in MODEL_FLAGS:
        return False
    return any(default_of(profile, action.dest) is not None for profile in PROFILE_NAMES)


def build_parser(prog: str | None = None) -> ArgumentParser:
    p = ArgumentParser(prog=command_prog("train", prog), description=__doc__.split("\n\n")[0],
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog=epilog())
    add_options(p)
    return p


def parse_args(argv=None, prog: str | None = None) -> argparse.Namespace:
    return build_parser(prog).parse_args(argv)


def build_config(args: argparse.Namespace) -> tuple[TrainConfig, str]:
    """(TrainConfig, why its profile) from (the saved run config, or the profile's defaults then the --config
    file) + the options given explicitly: a flag always wins."""
    for option in ("config", "profile"):
        if getattr(args, option) and args.resume:
            raise ConfigError(f"--{option} does not apply with --resume: a resumed run continues with its own "
                              f"{CONFIG}")
    from_file = read_config_file(args.config) if args.config else {}
    data = args.data if args.data is not None else from_file.get("data", SYNTHETIC)
    weights = args.weights if args.weights is not None else from_file.get("weights", "none")
    given = [name for name in ("model", *MODEL_FLAGS) if getattr(args, name) is not None]
    if given and (args.resume or weights != "none"):  # would be silently ignored: say so instead
        raise ConfigError(f"--{given[0].replace('_', '-')} does not apply with --{'resume' if args.resume else 'weights'}: "
                          f"that model keeps its own architecture")
    fields, why = resumed_fields(args) if args.resume else new_run_fields(args, from_file, data, weights)
    overrides = dict(fields.get("model_overrides") or {})
    overrides.update({k: getattr(args, k) for k in MODEL_FLAGS if getattr(args, k) is not None})
    fields["model_overrides"] = overrides
    for name, value in vars(args).items():
        if name in MODEL_FLAGS or name in ("eval_only", "profile") or value is None or \
                name not in TrainConfig.field_names():
            continue
        if name in ("data", "weights", "val_split", "val_fraction") and args.resume:
            continue  # a resumed run keeps its data, its splits and its starting weights
        fields[name] = value
    return TrainConfig.from_dict(fields).validate(), why


def resumed_fields(args: argparse.Namespace) -> tuple[dict, str]:
    """The TrainConfig fields of the run --resume names (its config.json), and why its profile."""
    folder = RunFolder.of_resume(args.resume)
    fields = TrainConfig.from_run(folder).to_dict()
    fields["out"] = str(folder.path)
    # --overwrite is a decision about one command, never inherited: the run that created this
    # folder may have replaced an older one, its resumption must not replace another
    fields["overwrite"] = False
    return fields, "the resumed run's"


def new_run_fields(args: argparse.Namespace, from_file: dict, data: str, weights: str) -> tuple[dict, str]:
    """A new run's TrainConfig fields before the flags: its profile's (--profile, the --config file's, or the
    one auto picks for the data, the weights and this machine), then the --config file's; and why that profile."""
    from_file = dict(from_file)
    recorded = from_file.pop("profile", None)
    profile, why = choose_profile(args.profile or recorded or "auto", data, weights,
                                  args.device or from_file.get("device", "auto"))
    if not args.profile and recorded:
        why = f"--config {args.config}"
    fields = profile_fields(profile, data, weights, args.model or from_file.get("model"))
    fields["out"] = None  # unless --out is given: a new timestamped folder, named when the run starts
    fields.update(from_file)
    if args.model:  # a model named on the command line keeps its own size, whatever the file's model had
        fields["model_overrides"] = {k: v for k, v in (fields.get("model_overrides") or {}).items()
                                     if k not in SIZE_FIELDS}
    return fields, why


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


def stopped_line(result: dict, prog: str | None) -> str:
    """The last line of a run stopped early: where, and the command that continues it."""
    run_dir, saved = result["run_dir"], RunFolder(result["run_dir"]).resume_file.is_file()
    if result["stopped"] != "--stop-after":  # a signal: the loop saved the step it stopped after
        under = " (under torchrun, as before)" if world_from_env()[1] > 1 else ""
        return (f"interrupted at epoch {result['epoch']}, step {result['epoch_step']}: saved; continue with  "
                f"{command_prog('train', prog)} --resume {run_dir}{under}")
    # --stop-after simulates a crash: say where the run stands and how to continue it
    how = (f"continue with --resume {run_dir}" if saved else "no resume point was written yet (stopped before "
           "the first checkpoint): start the run again with --overwrite, or with another --out")
    return (f"stopped after {counted(result['step'], 'step')} (--stop-after) at "
            f"{result.get('train_img_per_s') or 0:.0f} img/s; {how}")


def main(argv=None, prog: str | None = None) -> int:
    """The command: parse, build the config, train (or evaluate); errors are MinivitError (see minivit.common.cli.run).
    Exits 130 or 143 when Ctrl-C or SIGTERM stopped the run (saved: the last line says how to continue)."""
    from ..train.loop import train

    args = parse_args(argv, prog)
    cfg, why = build_config(args)
    if args.eval_only:
        return evaluate_only(args, cfg)
    rank = world_from_env()[0]
    if rank == 0:
        write(f"profile {cfg.profile} ({why})")
    try:
        result = train(cfg)
    finally:
        cleanup_distributed()
    if rank == 0 and result["interrupted"]:
        write(stopped_line(result, prog))
    elif rank == 0 and result.get("val_accuracy") is not None:
        write(done_line(result))
    stopped = result["stopped"]  # exit like a shell's command killed by the signal: 130, 143
    return 128 + signal.Signals[stopped] if stopped in ("SIGINT", "SIGTERM") else 0
