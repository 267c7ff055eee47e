"""TrainConfig: every knob of a run, each with its valid range, checked in one place.

The same tables -- ``RANGES`` for numbers, ``CHOICES`` for names -- are the ``type=`` and ``choices=``
of every command-line option and the check ``TrainConfig.validate()`` runs for the Python API, so
``train(TrainConfig(lr=-1))`` and ``python -m minivit.train --lr -1`` stop with the same one-line error
before any work starts:

    >>> TrainConfig(lr=-1).validate()
    Traceback (most recent call last):
    minivit.common.errors.ConfigError: --lr must be a finite number > 0, not '-1'

The defaults are the no-argument demo run (the "synthetic" profile, minivit/train/profiles.py), so
``train(TrainConfig())`` trains what ``python -m minivit.train`` trains.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field

from ..common.cli import integer, number
from ..common.device import DEVICES, PRECISIONS
from ..common.errors import ConfigError
from ..data.ferplus import LABEL_MODES
from ..data.splits import VAL_SPLITS
from ..data.synthetic import SYNTHETIC
from .board import tensorboard_missing

# The training profiles (minivit/train/profiles.py, which holds their values): the names a run records.
PROFILE_NAMES = ("cpu", "gpu", "finetune", "synthetic")


@dataclass
class TrainConfig:
    """Every knob of a run; saved as config.json beside its checkpoints. The defaults are the demo run:
    a ~90k-parameter ViT at 32x32 (patch 4: an 8x8 grid) on minivit's synthetic faces."""

    # the profile whose defaults the run started from (minivit/train/profiles.py); config.json records it
    profile: str = "synthetic"
    # data
    data: str = SYNTHETIC  # a dataset path (see minivit.data.load_dataset) or "synthetic"
    ferplus_images: str | None = None  # FER+ labels: pixels from the original fer2013.csv or a folder of its fer*.png images
    label_mode: str = "majority"  # FER+ only: "majority" or "soft" (vote distribution as target)
    synthetic_samples: int = 2800  # size of the synthetic training set; its val set is a quarter of it
    on_bad_image: str = "raise"  # "raise" (stop, naming the file) or "skip" (skip unreadable images, count them)
    # what selects best.safetensors (minivit.data.splits): "auto" = the dataset's val split, else val_fraction
    # of train carved out; "carve" = carve even where there is a val split; "test" = the test split (optimistic)
    val_split: str = "auto"
    val_fraction: float = 0.1  # share of each class's training images held out when a val split is carved
    # model
    model: str = "Ti/16"  # a preset name: "Ti/16", "S/4", "ViT-B_16", "vit_small_patch16_224", ...
    # ViTConfig fields on top of the named model, e.g. {"patch_size": 4, "stem": "conv"}
    model_overrides: dict = field(default_factory=lambda: dict(patch_size=4, dim=64, depth=3, heads=4, mlp_dim=128))
    weights: str = "none"  # "none" (from scratch), a .npz/.safetensors file or a manifest name
    image_size: int = 32  # training resolution; pretrained position embeddings are resampled to it
    drop_path: float = 0.0
    # optimisation
    optimizer: str = "adamw"  # "adamw" or "sgd" (momentum; the ViT paper's fine-tuning recipe)
    lr: float = 2e-3  # peak LR for a global batch of batch_size * accum_steps * world_size
    min_lr: float = 1e-6  # the cosine decays to this
    weight_decay: float = 0.05  # only 2-D+ weights; 0 for the SGD fine-tuning recipe
    momentum: float = 0.9
    betas: tuple = (0.9, 0.999)
    epochs: int = 20
    warmup_epochs: float = 1.0
    batch_size: int = 64  # per process and per micro-step
    accum_steps: int = 1  # micro-steps per optimiser step
    clip_grad: float = 1.0  # max global grad norm; 0 disables
    layer_decay: float = 1.0  # block i's LR is scaled by layer_decay ** (depth + 1 - (i + 1)); 1 = off
    # regularisation
    label_smoothing: float = 0.1
    cutmix: float = 0.0  # Beta(alpha, alpha) of CutMix; 0 = off
    mixup: float = 0.0  # Beta(alpha, alpha) of MixUp; 0 = off (both on: one or the other per batch)
    mix_prob: float = 1.0  # probability that a batch is mixed at all (CutMix/MixUp on every batch underfits)
    augment: dict = field(default_factory=dict)  # minivit.data.augment.AugmentConfig overrides, e.g. {"rotate_deg": 0}
    # "none", "sampler" (class-balanced sampling), "loss" (class weights N / (K n_c)) or "sqrt" (their square
    # root: rare classes count more, without trading away as much of the common ones)
    balance: str = "none"
    ema: float = 0.0  # EMA decay of the weights (e.g. 0.999); 0 = off. Validation then uses the EMA.
    # speed
    precision: str = "auto"  # "auto" (bf16 where supported, else fp16; fp32 on CPU), bf16, fp16, fp32
    compile: str = "auto"  # torch.compile the model: "auto" (on CUDA only), "yes", "no"
    device: str = "auto"  # "auto", "cpu", "cuda"
    data_on_device: str = "auto"  # "auto": keep the uint8 set on the GPU when under 2 GiB; "yes", "no"
    # image folders and RAF-DB decoded once into an on-disk cache and memory-mapped (minivit.data.cache);
    # False: decoded into every process's memory at every start. CSVs hold their pixels: always in memory.
    cache: bool = True
    cache_dir: str | None = None  # where the cache lives; None: $MINIVIT_CACHE_DIR or ~/.cache/minivit
    prefetch: int = 4  # batches gathered ahead by a thread when the set is not on the GPU
    # run
    out: str | None = None  # run folder; None: runs/<data>-<timestamp>, never an existing one
    overwrite: bool = False  # replace a run already in `out` (otherwise that is refused)
    resume: str | None = None  # a run folder or its resume.safetensors
    seed: int = 0
    ckpt_every: int = 0  # also write resume.safetensors every N optimiser steps; 0 = once per epoch
    # also write resume.safetensors after a step when this many minutes passed since the last one (a SIGKILL
    # loses at most that much); 0 = off. Ctrl-C and SIGTERM always save (minivit/train/interrupt.py)
    save_every_minutes: float = 10.0
    stop_after: int = 0  # stop after N optimiser steps without a final checkpoint (a simulated crash)
    eval_batch_size: int = 256
    tta: bool = False  # final report: average the logits of each image and its mirror
    best_metric: str = "accuracy"  # "accuracy" or "macro_f1": which val metric picks best.safetensors
    progress: bool = True  # tqdm bars (on a terminal); off: a line per epoch and every log_every seconds
    log_every: float = 30.0  # seconds between progress lines within an epoch when there is no bar
    log: bool = True  # print the header and per-epoch lines
    tensorboard: bool = False  # also write TensorBoard event files into <out>/tensorboard/ (the tensorboard extra)

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}

    @classmethod
    def from_dict(cls, d: dict, where: str = "TrainConfig") -> "TrainConfig":
        """A TrainConfig from a dict (a run's config.json "train", a --config file); unknown fields are an
        error naming ``where``."""
        d = dict(d)
        unknown = sorted(set(d) - cls.field_names())
        if unknown:
            raise ConfigError(f"{where}: unknown TrainConfig fields: {', '.join(unknown)}")
        if "betas" in d and isinstance(d["betas"], (list, tuple)):
            d["betas"] = tuple(d["betas"])
        return cls(**d)

    @classmethod
    def from_run(cls, run) -> "TrainConfig":
        """The TrainConfig a run folder (minivit.checkpoints.RunFolder) was started with, checked: one line
        naming its config.json otherwise."""
        fields, where = run.train_fields, str(run.config_file)
        missing = sorted(cls.field_names() - set(fields))
        if missing:
            raise ConfigError(f"{where}: missing TrainConfig fields: {', '.join(missing)}")
        try:
            return cls.from_dict(fields, where=where).validate()
        except (ConfigError, TypeError) as e:
            message = str(e).splitlines()[0]
            raise ConfigError(message if message.startswith(where) else f"{where}: {message}") from None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self) -> "TrainConfig":
        """Check every option against CHOICES and RANGES; ConfigError naming the first bad one."""
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{flag(name)} must be one of {', '.join(allowed)}, not {getattr(self, name)!r}")
        for name, parse in RANGES.items():
            value = getattr(self, name)
            try:
                if isinstance(value, bool):
                    raise argparse.ArgumentTypeError(f"must be a number, not {value!r}")
                parse(str(value))
            except argparse.ArgumentTypeError as e:
                raise ConfigError(f"{flag(name)} {e}") from None
        if self.min_lr > self.lr:
            raise ConfigError(f"--min-lr {self.min_lr:g} is above --lr {self.lr:g}: the cosine decays from lr to min_lr")
        if len(self.betas) != 2 or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in self.betas):
            raise ConfigError(f"betas must be two numbers in [0, 1), not {self.betas!r}")
        if not isinstance(self.model_overrides, dict) or not isinstance(self.augment, dict):
            raise ConfigError("model_overrides and augment must be dicts of field -> value")
        if self.tensorboard and (missing := tensorboard_missing()):
            raise ConfigError(missing)  # now, not after the data is decoded
        return self


def flag(name: str) -> str:
    """The command-line spelling of a TrainConfig field: batch_size -> --batch-size."""
    return "--" + name.replace("_", "-")


def check_resume_options(cfg: TrainConfig, saved: dict) -> None:
    """Refuse optimiser options that differ from the resumed run's ``saved`` TrainConfig fields: the saved
    optimiser state was built for them (another optimiser or layer decay does not load; a new weight decay,
    momentum or betas would be silently replaced by the saved param groups), and the batch shapes the data
    order."""
    fixed = ["optimizer", "layer_decay", "weight_decay", "batch_size", "accum_steps"]
    fixed.append("momentum" if saved.get("optimizer") == "sgd" else "betas")  # the one the optimiser uses
    for name in fixed:
        if name not in saved:
            continue
        was, now = saved[name], getattr(cfg, name)
        if name == "betas":
            was, now = list(was), list(now)
        if was != now:
            raise ConfigError(f"{flag(name)} cannot change on --resume (the run used {was})")


# option -> allowed values; the CLI's choices= and validate()'s check, before anything is loaded
CHOICES = {
    "profile": PROFILE_NAMES,
    "optimizer": ("adamw", "sgd"),
    "precision": ("auto", *PRECISIONS),
    "balance": ("none", "sampler", "loss", "sqrt"),
    "best_metric": ("accuracy", "macro_f1"),
    "label_mode": LABEL_MODES,
    "data_on_device": ("auto", "yes", "no"),
    "device": DEVICES,
    "compile": ("auto", "yes", "no"),
    "on_bad_image": ("raise", "skip"),
    "val_split": VAL_SPLITS,
}

# option -> its valid range, stated once: the CLI's argparse type= and validate()'s check.
RANGES = {
    "synthetic_samples": integer(at_least=7),  # one face per class at least
    "val_fraction": number(above=0, below=1),
    "image_size": integer(at_least=1),
    "drop_path": number(at_least=0, below=1),
    "lr": number(above=0),
    "min_lr": number(at_least=0),
    "weight_decay": number(at_least=0),
    "momentum": number(at_least=0, below=1),
    "epochs": integer(at_least=1),
    "warmup_epochs": number(at_least=0),
    "batch_size": integer(at_least=1),
    "accum_steps": integer(at_least=1),
    "clip_grad": number(at_least=0),
    "layer_decay": number(above=0, at_most=1),
    "label_smoothing": number(at_least=0, below=1),
    "cutmix": number(at_least=0),
    "mixup": number(at_least=0),
    "mix_prob": number(at_least=0, at_most=1),
    "ema": number(at_least=0, below=1),
    "seed": integer(at_least=0, at_most=2**31 - 1),  # numpy's and every library's seed range
    "ckpt_every": integer(at_least=0),
    "save_every_minutes": number(at_least=0),
    "stop_after": integer(at_least=0),
    "eval_batch_size": integer(at_least=1),
    "log_every": number(above=0),
    "prefetch": integer(at_least=1, at_most=64),  # each batch ahead is pinned host memory: bounded
}
