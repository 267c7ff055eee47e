"""Setting up a run: processes and device, data, model, optimiser, EMA, and the saved state when resuming.

``setup_run(cfg)`` returns a ``Run``: everything the loop needs, in one object, so that the loop
itself (minivit/train/loop.py) reads as the training algorithm and nothing else. It goes in the order a
failure should be found: ``plan_run`` checks the run folder, the resume point, the model and the
augmentation before any process waits for another or the data is decoded; then the processes and the
device, the data, the model (seeded), DDP, the optimiser and the EMA, and a new run's folder name.
"""

from __future__ import annotations

import dataclasses
import random
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from ..checkpoints.hub import source_problem
from ..checkpoints.run_folder import RunFolder, restore
from ..common.console import forwarded
from ..common.device import resolve_precision
from ..common.errors import ConfigError
from ..data.augment import AugmentConfig, augment_config
from ..data.provenance import trained_on
from ..model.config import ViTConfig, config_from_name
from ..model.speed import channels_last
from ..model.vit import ViT
from .config import TrainConfig, check_resume_options
from .data import TrainData, run_splits
from .distributed import broadcast_string, machine_prefix, setup_distributed, wrap_ddp
from .optim import EMA, build_optimizer
from .report import Clock, Forecast


@dataclass
class Run:
    """One training run: its settings, processes, data, model and optimiser, and its progress."""

    cfg: TrainConfig
    rank: int
    world: int
    device: torch.device
    folder: RunFolder  # where the run writes: config.json, the weights, the resume point, the report
    precision: str
    amp_dtype: torch.dtype | None
    train_set: object
    val_set: object  # selects best.safetensors
    test_set: object  # scored once with best.safetensors at the end; None without one (or when it selects)
    split_rule: dict  # how the three were chosen (minivit.data.splits.split_rule): config.json, checkpoints, reports
    trained_on: dict  # provenance (minivit.data.provenance.trained_on): config.json and every checkpoint
    data: TrainData
    aug: AugmentConfig
    model: ViT  # the model itself: what is saved, validated and averaged by the EMA
    net: torch.nn.Module  # what forward/backward run through: the model, DDP-wrapped and/or compiled
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    ema: EMA | None
    total_steps: int
    warmup_steps: int
    # what resume.safetensors saves: epoch, step, history, best score and epoch, partial epoch sums
    state: dict = field(default_factory=lambda: dict(epoch=0, step=0, history=[], best=None, best_epoch=None,
                                                     sums=[0.0, 0.0]))
    lr: float = 0.0
    stopped: str | None = None  # why the run stopped early: "SIGINT", "SIGTERM" or "--stop-after"
    interrupt: object = None  # the loop's watch over signals and the save timer (minivit/train/interrupt.py)
    t_start: float = field(default_factory=time.time)
    curves_drawn_at: float = 0.0  # when curves.png was last drawn (time.time())
    clock: Clock = field(default_factory=Clock)  # training time: this epoch's (history.csv) and the steady state's
    board: object = None  # the TensorBoard writer (minivit/train/board.py): rank 0, with --tensorboard

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def interrupted(self) -> bool:
        return self.stopped is not None

    @cached_property
    def forecast(self) -> Forecast:
        """How long the run has left (minivit/train/report.py)."""
        return Forecast(self)

    @property
    def step(self) -> int:
        return self.state["step"]

    @property
    def out(self) -> Path:
        return self.folder.path


def seed_everything(seed: int) -> None:
    """Seed every RNG the model draws from (init, dropout, drop-path); ranks pass different seeds."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # numpy takes 32 bits; seed + rank may pass them
    torch.manual_seed(seed)


def plan_run(cfg: TrainConfig) -> tuple[RunFolder | None, tuple | None, ViTConfig | None, AugmentConfig]:
    """What a run will be, checked before any process waits for another (so that a refusal ends every rank
    at once) and before the data is decoded: (its folder, the resume point it continues from, the model's
    config as far as it is known now, the augmentation).

    The folder is --resume's run (its resume point read, its optimiser options unchanged) or --out, which
    must hold no run unless --overwrite; None for a new run without --out, whose name is chosen when the
    processes are up (setup_run). The model's config is the resume point's, or the named model with
    cfg.model_overrides (its head follows the data's classes later); None for --weights, where the
    checkpoint decides and here it is only checked that it can be found. The augmentation's channels are
    the model's, set once it is built.
    """
    aug = augment_config(cfg.image_size, 3, cfg.augment)
    if cfg.resume:
        folder = RunFolder.of_resume(cfg.resume)
        resume = folder.load_resume()  # its one-line error now, not after the dataset has been decoded
        if cfg.out is not None and not folder.is_at(cfg.out):
            raise ConfigError(f"--out {cfg.out}: a resumed run continues in its own folder {folder.path}; "
                              "--out and --overwrite do not apply with --resume")
        if folder.config_file.is_file():  # a resume file outside its run folder: restore() still refuses a misfit
            check_resume_options(cfg, folder.train_fields)
        return folder, resume, resume[0], aug
    folder = RunFolder(cfg.out) if cfg.out is not None else None
    if folder is not None:
        folder.check_new_run(overwrite=cfg.overwrite)
    if cfg.weights not in ("none", "", None):
        problem = source_problem(cfg.weights)  # fetched when the model is built: found now, or one line
        if problem:
            raise ConfigError(f"--weights {problem}")
        return folder, None, None, aug
    planned = config_from_name(cfg.model, **{"image_size": cfg.image_size, "drop_path": cfg.drop_path,
                                             **cfg.model_overrides})
    return folder, None, planned, aug


def build_model(cfg: TrainConfig, num_classes: int, planned: ViTConfig | None, resumed: bool = False) -> ViT:
    """The model: the resumed run's, a checkpoint with a new head, or the planned one from scratch.

    ``cfg.model_overrides`` (patch size, width, stem, in_chans, ...) apply to the named model; a
    pretrained checkpoint keeps its own architecture and only gets a new head and resolution.
    """
    if resumed:
        return ViT(planned)
    if planned is None:
        return ViT.from_pretrained(cfg.weights, num_classes=num_classes, image_size=cfg.image_size,
                                   drop_path=cfg.drop_path)
    return ViT(planned.replace(num_classes=num_classes))


def compile_wanted(cfg: TrainConfig, device: torch.device) -> bool:
    """--compile auto: on CUDA only, where fused kernels pay back the compile time; never on the CPU."""
    return cfg.compile == "yes" or (cfg.compile == "auto" and device.type == "cuda")


def setup_run(cfg: TrainConfig, train_set=None, val_set=None, test_set=None) -> Run:
    """Everything a run needs, restored from cfg.resume when given, for a validated ``cfg``. The run folder,
    the model's config and the augmentation are checked first, before the data is decoded."""
    folder, resume, planned, aug = plan_run(cfg)
    rank, world, device = setup_distributed(cfg.device)
    precision, amp_dtype, use_scaler = resolve_precision(cfg.precision, device)
    # the data chapter's lines (a decoded cache built, and why; skipped images) as the run's own, once a machine
    with forwarded("minivit.data", prefix=machine_prefix(), info=cfg.log):
        splits = run_splits(cfg, folder, rank == 0, train_set, val_set, test_set)
    provenance = trained_on(splits.train, cfg.data if splits.rule["val"] != "given" else splits.train.source,
                            splits.rule)
    data = TrainData(splits.train, cfg, device, world)
    seed_everything(cfg.seed + rank)  # the initial weights and every dropout mask; ranks differ in their masks
    model = build_model(cfg, len(splits.train.classes), planned, resumed=resume is not None).to(device).train()
    if device.type == "cpu" and model.config.stem == "conv":
        channels_last(model)  # oneDNN's convolutions run NHWC: measured faster on the CPU (minivit/model/speed.py)
    aug = dataclasses.replace(aug, channels=model.config.in_chans)  # the channels pick the normalisation
    net = wrap_ddp(model, device, world)  # from here every rank holds rank 0's initial weights
    optimizer = build_optimizer(model, cfg, device)
    ema = EMA(model, cfg.ema) if cfg.ema else None
    if folder is None:  # a new run without --out: rank 0 names its timestamped folder, every rank takes that name
        folder = RunFolder(broadcast_string(str(RunFolder.new(cfg.data).path), device))
    run = Run(cfg=cfg, rank=rank, world=world, device=device, folder=folder, precision=precision,
              amp_dtype=amp_dtype, train_set=splits.train, val_set=splits.val, test_set=splits.test,
              split_rule=splits.rule, trained_on=provenance, data=data, aug=aug, model=model,
              net=torch.compile(net) if compile_wanted(cfg, device) else net, optimizer=optimizer,
              scaler=torch.amp.GradScaler(device.type, enabled=use_scaler), ema=ema,
              total_steps=data.steps_per_epoch * cfg.epochs,
              warmup_steps=round(cfg.warmup_epochs * data.steps_per_epoch), lr=cfg.lr)
    if resume:
        restore_run(run, *resume[1:])
    return run


def restore_run(run: Run, tensors: dict, state: dict) -> None:
    """Load a resume checkpoint's tensors and state into the run; refuse one that no longer fits."""
    if state.get("steps_per_epoch") != run.data.steps_per_epoch:
        raise ConfigError(f"--resume {run.cfg.resume}: batch size or dataset changed "
                          f"({state.get('steps_per_epoch')} -> {run.data.steps_per_epoch} steps per epoch)")
    restore(tensors, state, run.model, run.optimizer, run.scaler, run.ema, where=run.folder.resume_file)
    run.state.update({k: state[k] for k in run.state})
    if run.rank:  # only rank 0's RNG was saved; other ranks get a fresh stream per resume point
        torch.manual_seed(run.cfg.seed + run.rank + 1_000_003 * run.step)
