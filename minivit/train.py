"""The training loop: one function, ``train(cfg)``, readable top to bottom.

What happens, in order (each piece is explained in docs/training.md):
  1. DDP set-up from torchrun's env vars (RANK, WORLD_SIZE, LOCAL_RANK); rank 0 logs and writes.
  2. Data: the whole dataset stays in memory as uint8 (N, C, H, W). Each step indexes a batch out
     of it, moves it to the device (pinned + non_blocking on CUDA, or the set lives on the GPU when
     it fits) and augments it there (minivit.augment: crop/flip/colour, CutMix/MixUp, smoothing).
  3. Model: from scratch (create_model) or from a checkpoint (ViT.from_pretrained) with a new head.
  4. Optimiser: AdamW (fused on CUDA) or SGD+momentum; weight decay by one rule (only 2-D+ weights,
     never pos_embed/cls_token); layer-wise LR decay; cosine schedule with linear warmup.
  5. Step: gradient accumulation, bf16 autocast (fp16 + GradScaler where bf16 is missing), grad-norm
     clipping, EMA of the weights.
  6. Checkpoints: safetensors, written atomically; ``resume.safetensors`` holds everything needed to
     continue bit-exactly (model, optimiser, scaler, EMA, RNG, epoch, step).

Randomness is a pure function of (seed, epoch) for the data order and of (seed, step, rank) for the
augmentation, so a resumed run replays exactly the batches the interrupted run would have seen.

Example (a tiny run on synthetic faces, a few seconds on a CPU):
    >>> from minivit.train import TrainConfig, train
    >>> cfg = TrainConfig(data="synthetic", synthetic_samples=64, img_size=16, epochs=1, batch_size=16,
    ...                   model_overrides=dict(patch_size=4, dim=32, depth=1, heads=2, mlp_dim=64),
    ...                   out="/tmp/minivit-doctest", progress=False, log=False)
    >>> result = train(cfg)  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import json
import math
import os
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from safetensors import safe_open
from tqdm.auto import tqdm

from .checkpoints.io import write_json, write_safetensors
from .checkpoints.loader import CONFIG_KEY
from .config import ViTConfig
from .errors import CheckpointError, ConfigError
from .evaluate import attention_report, evaluate, write_report
from .model import ViT, create_model
from .plots import curves_png


@dataclass
class TrainConfig:
    """Every knob of a run; saved as config.json beside its checkpoints."""

    # data
    data: str = "synthetic"  # a dataset path (see minivit.data.load_dataset) or "synthetic"
    ferplus_images: str | None = None  # FER+ labels: pixels from the original fer2013.csv or a folder of its fer*.png images
    label_mode: str = "majority"  # FER+ only: "majority" or "soft" (vote distribution as target)
    synthetic_samples: int = 2000  # size of the synthetic training set; its val set is a quarter of it
    # model
    model: str = "Ti/16"  # a preset name: "Ti/16", "ViT-B_16", "vit_small_patch16_224", ...
    model_overrides: dict = field(default_factory=dict)  # ViTConfig fields, e.g. {"patch_size": 4}
    weights: str = "none"  # "none" (from scratch), a .npz/.safetensors file or a manifest name
    img_size: int = 48  # training resolution; pretrained position embeddings are resampled to it
    drop_path: float = 0.0
    # optimisation
    optimizer: str = "adamw"  # "adamw" or "sgd" (momentum; the ViT paper's fine-tuning recipe)
    lr: float = 1e-3  # peak LR for a global batch of batch_size * accum_steps * world_size
    min_lr: float = 1e-6  # the cosine decays to this
    weight_decay: float = 0.05  # only 2-D+ weights; 0 for the SGD fine-tuning recipe
    momentum: float = 0.9
    betas: tuple = (0.9, 0.999)
    epochs: int = 10
    warmup_epochs: float = 1.0
    batch_size: int = 64  # per process and per micro-step
    accum_steps: int = 1  # micro-steps per optimiser step
    clip_grad: float = 1.0  # max global grad norm; 0 disables
    layer_decay: float = 1.0  # block i's LR is scaled by layer_decay ** (depth + 1 - (i + 1)); 1 = off
    # regularisation
    label_smoothing: float = 0.1
    cutmix: float = 0.0  # Beta(alpha, alpha) of CutMix; 0 = off
    mixup: float = 0.0  # Beta(alpha, alpha) of MixUp; 0 = off (both on: one or the other per batch)
    augment: dict = field(default_factory=dict)  # minivit.augment.AugmentConfig overrides, e.g. {"rotate_deg": 0}
    balance: str = "none"  # "none", "sampler" (class-balanced sampling) or "loss" (class weights)
    ema: float = 0.0  # EMA decay of the weights (e.g. 0.999); 0 = off. Validation then uses the EMA.
    # speed
    precision: str = "auto"  # "auto" (bf16 where supported, else fp16; fp32 on CPU), bf16, fp16, fp32
    compile: bool = False  # torch.compile the model (minutes of warm-up; pays off on long GPU runs)
    device: str = "auto"  # "auto", "cpu", "cuda"
    data_on_device: str = "auto"  # "auto": keep the uint8 set on the GPU when under 2 GiB; "yes", "no"
    # run
    out: str = "runs/default"
    resume: str | None = None  # a run folder or its resume.safetensors
    seed: int = 0
    ckpt_every: int = 0  # also write resume.safetensors every N optimiser steps; 0 = once per epoch
    stop_after: int = 0  # stop after N optimiser steps without a final checkpoint (a simulated crash)
    eval_batch_size: int = 256
    tta: bool = False  # final report: average the logits of each image and its mirror
    best_metric: str = "accuracy"  # "accuracy" or "macro_f1": which val metric picks best.safetensors
    progress: bool = True  # tqdm bars
    log: bool = True  # print per-epoch lines

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown TrainConfig fields: {', '.join(unknown)}")
        d = dict(d)
        if "betas" in d:
            d["betas"] = tuple(d["betas"])
        return cls(**d)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


CHOICES = {  # option -> allowed values; checked once, before anything is loaded
    "optimizer": ("adamw", "sgd"),
    "precision": ("auto", "bf16", "fp16", "fp32"),
    "balance": ("none", "sampler", "loss"),
    "best_metric": ("accuracy", "macro_f1"),
    "label_mode": ("majority", "soft"),
    "data_on_device": ("auto", "yes", "no"),
    "device": ("auto", "cpu", "cuda"),
}
# precision -> (autocast dtype or None, whether a GradScaler is needed). fp16's narrow exponent
# underflows small gradients, so its loss is scaled; bf16 has fp32's range and needs no scaler.
PRECISIONS = {"bf16": (torch.bfloat16, False), "fp16": (torch.float16, True), "fp32": (None, False)}


def check_config(cfg: TrainConfig) -> None:
    for name, allowed in CHOICES.items():
        if getattr(cfg, name) not in allowed:
            raise ConfigError(f"--{name.replace('_', '-')} must be one of {', '.join(allowed)}, "
                              f"not {getattr(cfg, name)!r}")
    for name in ("epochs", "batch_size", "accum_steps", "img_size"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, not {getattr(cfg, name)}")


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
    dtype, scaler = PRECISIONS[precision]
    return precision, dtype, scaler


# ---------------------------------------------------------------------------------------------
# optimiser: weight-decay rule, layer-wise LR decay, schedule


# Learned tokens and embeddings: their scale is what they encode, so weight decay would erase it.
NO_DECAY = ("pos_embed", "cls_token", "map_head.probe")


def layer_id(name: str, depth: int) -> int:
    """Depth of a parameter for layer-wise LR decay: embeddings 0, block i -> i + 1, norm/head depth + 1."""
    if name.startswith(("patch_embed", "pos_embed", "cls_token")):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return depth + 1


def param_groups(model: ViT, weight_decay: float, layer_decay: float = 1.0) -> list[dict]:
    """Parameter groups with ``weight_decay`` and ``lr_scale`` set.

    One rule for decay (as nanoGPT): decay matrices and conv kernels (2-D+); never biases, norm
    gains, pos_embed, cls_token or the MAP probe, whose scale is part of what they encode. With layer decay,
    earlier layers (general features from pre-training) move less than later ones.

    >>> from minivit import ViT, ViTConfig
    >>> m = ViT(ViTConfig(image_size=8, patch_size=4, dim=8, depth=2, heads=2, mlp_dim=16, num_classes=3))
    >>> [(g["layer"], g["weight_decay"], round(g["lr_scale"], 3)) for g in param_groups(m, 0.1, 0.5)][:3]
    [(0, 0.0, 0.125), (0, 0.1, 0.125), (1, 0.0, 0.25)]
    """
    depth = model.config.depth
    groups: dict[tuple[int, bool], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        decay = p.ndim >= 2 and name not in NO_DECAY
        layer = layer_id(name, depth) if layer_decay != 1.0 else 0
        group = groups.setdefault((layer, decay), dict(
            params=[], names=[], layer=layer, weight_decay=weight_decay if decay else 0.0,
            lr_scale=layer_decay ** (depth + 1 - layer) if layer_decay != 1.0 else 1.0))
        group["params"].append(p)
        group["names"].append(name)
    return [groups[k] for k in sorted(groups)]


def build_optimizer(model: ViT, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.weight_decay, cfg.layer_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    # The fused kernel updates all parameters in one launch: a free speed-up on CUDA.
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), fused=device.type == "cuda")


def lr_at(step: int, total_steps: int, warmup_steps: int, base_lr: float, min_lr: float) -> float:
    """Linear warmup to base_lr over warmup_steps, then cosine decay to min_lr at total_steps.

    >>> [round(lr_at(s, 10, 2, 1.0, 0.0), 3) for s in (0, 1, 2, 6, 10)]
    [0.5, 1.0, 1.0, 0.5, 0.0]
    """
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr + 0.5 * (base_lr - min_lr) * (1 + math.cos(math.pi * progress))


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, class_weights: torch.Tensor | None = None):
    """Cross-entropy against soft targets (B, K) (smoothed, mixed or FER+ vote distributions)."""
    loss = -targets * logits.float().log_softmax(-1)  # (B, K)
    if class_weights is not None:
        loss = loss * class_weights  # (B, K): rare classes count more
    return loss.sum(-1).mean()


class EMA:
    """Exponential moving average of a model's weights, kept in a frozen copy of the model.

    The decay is warmed up as min(decay, (1 + n) / (10 + n)) so short runs are not dominated
    by the random initial weights.
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay
        self.updates = 0

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        ema_params = list(self.module.parameters())
        torch._foreach_lerp_(ema_params, [p.detach() for p in model.parameters()], 1 - d)


# ---------------------------------------------------------------------------------------------
# checkpoints: safetensors only, atomic writes, no pickle anywhere


def save_weights(model: ViT, path, extra: dict | None = None) -> None:
    """Model weights + ``minivit_config`` metadata: the file ViT.from_pretrained reads back.

    Written atomically by the checkpoint layer (temp file + rename): a crash mid-write leaves
    the previous file intact.
    """
    metadata = {CONFIG_KEY: json.dumps(model.config.to_dict())}
    metadata.update({k: json.dumps(v) for k, v in (extra or {}).items()})
    write_safetensors(model.state_dict(), path, metadata)


def load_weights(path) -> tuple[ViTConfig, dict]:
    """(config, state_dict) of a file written by save_weights (or a resume.safetensors' model)."""
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # a missing, truncated or foreign file
        raise CheckpointError(f"{path}: cannot read safetensors file ({type(e).__name__}: {e})") from None
    if CONFIG_KEY not in meta:
        raise CheckpointError(f"{path}: no '{CONFIG_KEY}' metadata (not written by minivit)")
    if any(k.startswith("model.") for k in tensors):  # a resume file: take its model weights
        tensors = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    return ViTConfig.from_dict(json.loads(meta[CONFIG_KEY])), tensors


def _b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.cpu().numpy().tobytes()).decode()


def rng_state() -> dict:
    """Every RNG the run draws from (dropout, drop-path), as JSON-safe values."""
    np_state = np.random.get_state()
    state = {
        "torch": _b64(torch.get_rng_state()),
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
    }
    if torch.cuda.is_initialized():
        # this process's GPU only: get_rng_state_all() would touch every visible GPU, and a resume
        # with fewer GPUs visible could not restore it
        state["cuda"] = _b64(torch.cuda.get_rng_state())
    return state


def set_rng_state(state: dict) -> None:
    def tensor(s):
        return torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8)

    torch.set_rng_state(tensor(state["torch"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), *rest))
    if "cuda" in state and torch.cuda.is_available():
        saved = state["cuda"][0] if isinstance(state["cuda"], list) else state["cuda"]  # list: older files
        torch.cuda.set_rng_state(tensor(saved))


def save_resume(path, model, optimizer, scaler, ema, state: dict) -> None:
    """One safetensors file with all tensors (model.*, ema.*, optim.<i>.<name>) and a JSON of the rest."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    if ema is not None:
        tensors.update({f"ema.{k}": v for k, v in ema.module.state_dict().items()})
    osd = optimizer.state_dict()
    for idx, param_state in osd["state"].items():
        for name, value in param_state.items():
            if torch.is_tensor(value):
                tensors[f"optim.{idx}.{name}"] = value
    state = dict(state, optimizer_groups=osd["param_groups"], scaler=scaler.state_dict() if scaler.is_enabled()
                 else None, ema_updates=ema.updates if ema else 0, rng=rng_state())
    metadata = {CONFIG_KEY: json.dumps(model.config.to_dict()), "train_state": json.dumps(state)}
    write_safetensors(tensors, path, metadata)


def load_resume(path) -> tuple[ViTConfig, dict, dict]:
    """(model config, tensors, scalar state) of a resume.safetensors."""
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:
        raise CheckpointError(f"{path}: cannot read resume checkpoint ({type(e).__name__}: {e})") from None
    if "train_state" not in meta or CONFIG_KEY not in meta:
        raise CheckpointError(f"{path}: not a minivit resume checkpoint (no train_state metadata)")
    return ViTConfig.from_dict(json.loads(meta[CONFIG_KEY])), tensors, json.loads(meta["train_state"])


def restore(tensors: dict, state: dict, model, optimizer, scaler, ema) -> None:
    def part(prefix):
        return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}

    model.load_state_dict(part("model."))
    if ema is not None and any(k.startswith("ema.") for k in tensors):
        ema.module.load_state_dict(part("ema."))
        ema.updates = state["ema_updates"]
    optim_state: dict[int, dict] = {}
    for key, value in part("optim.").items():
        idx, name = key.split(".", 1)
        optim_state.setdefault(int(idx), {})[name] = value
    optimizer.load_state_dict({"state": optim_state, "param_groups": state["optimizer_groups"]})
    if state.get("scaler") and scaler.is_enabled():
        scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])


def find_resume(path: str) -> Path:
    p = Path(path)
    p = p / "resume.safetensors" if p.is_dir() else p
    if not p.is_file():
        raise CheckpointError(f"--resume {path}: no resume.safetensors there")
    return p


# ---------------------------------------------------------------------------------------------
# data: in-memory uint8, per-epoch index order, device-side augmentation


def load_data(cfg: TrainConfig):
    """(train, val) ImageSets for cfg.data."""
    from .data import load_dataset, synthetic_faces

    if cfg.data == "synthetic":
        train_set = synthetic_faces(cfg.synthetic_samples, image_size=cfg.img_size, seed=cfg.seed)
        val_set = synthetic_faces(max(cfg.synthetic_samples // 4, 64), image_size=cfg.img_size, seed=cfg.seed + 7919)
        return train_set, val_set
    kw = dict(label_mode=cfg.label_mode, ferplus_images=cfg.ferplus_images)
    return load_dataset(cfg.data, "train", **kw), load_dataset(cfg.data, "val", **kw)


def epoch_indices(n: int, count: int, epoch: int, seed: int, rank: int, world: int,
                  sample_weights: torch.Tensor | None = None) -> torch.Tensor:
    """This rank's ``count`` sample indices for an epoch: a DistributedSampler-style shard.

    The global order depends only on (seed, epoch), so every rank (and a resumed run) agrees on it;
    rank r takes every world-th index starting at r.
    """
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    if sample_weights is not None:  # class-balanced: draw with replacement, rare classes more often
        order = torch.multinomial(sample_weights, count * world, replacement=True, generator=g)
    else:
        order = torch.randperm(n, generator=g)
    return order[: count * world][rank::world]


def step_generators(seed: int, step: int, micro: int, rank: int, device: torch.device):
    """(device generator, CPU generator) for one micro-batch's augmentation: a pure function of its position."""
    s = (seed * 1_000_003 + step * 1009 + micro * 31 + rank) % (2**63)
    return torch.Generator(device=device).manual_seed(s), torch.Generator().manual_seed(s)


# ---------------------------------------------------------------------------------------------
# distributed


def setup_distributed(device_choice: str) -> tuple[int, int, torch.device]:
    """(rank, world_size, device). Under torchrun, joins the process group from its env vars."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device_choice == "auto" else device_choice == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available")
    device = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        # NCCL between GPUs, gloo on CPU; MASTER_ADDR/PORT, RANK and WORLD_SIZE come from the env.
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return rank, world, device


# ---------------------------------------------------------------------------------------------
# the loop


def train(cfg: TrainConfig, train_set=None, val_set=None) -> dict:
    """Train (or resume) a run and write its report into cfg.out; returns the final metrics.

    ``train_set``/``val_set`` (minivit.data.ImageSet) override ``cfg.data``.
    """
    from .augment import AugmentConfig, eval_transform, mix_batch, one_hot, train_transform

    check_config(cfg)
    t_start = time.time()
    rank, world, device = setup_distributed(cfg.device)
    main = rank == 0
    precision, amp_dtype, use_scaler = resolve_precision(cfg.precision, device)
    out = Path(cfg.out)

    def log(msg):
        if main and cfg.log:
            tqdm.write(msg)

    # Seed every RNG; ranks differ so their dropout masks differ.
    random.seed(cfg.seed + rank)
    np.random.seed(cfg.seed + rank)
    torch.manual_seed(cfg.seed + rank)

    if train_set is None:
        train_set, val_set = load_data(cfg)
    classes, num_classes = tuple(train_set.classes), len(train_set.classes)

    # -- model, optimiser, scaler, EMA (and their saved state when resuming)
    resume = load_resume(find_resume(cfg.resume)) if cfg.resume else None
    if resume:
        model = ViT(resume[0])
    elif cfg.weights and cfg.weights != "none":
        model = ViT.from_pretrained(cfg.weights, num_classes=num_classes, image_size=cfg.img_size,
                                    drop_path=cfg.drop_path)
    else:
        overrides = dict(image_size=cfg.img_size, num_classes=num_classes, drop_path=cfg.drop_path)
        model = create_model(cfg.model, **{**overrides, **cfg.model_overrides})
    model.to(device).train()
    optimizer = build_optimizer(model, cfg, device)
    scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)
    ema = EMA(model, cfg.ema) if cfg.ema else None
    state = dict(epoch=0, step=0, history=[], best=None, best_epoch=None, sums=[0.0, 0.0, 0.0])
    if resume:
        restore(resume[1], resume[2], model, optimizer, scaler, ema)
        state.update({k: resume[2][k] for k in state})
        if rank:  # only rank 0's RNG was saved; other ranks get a fresh stream per resume point
            torch.manual_seed(cfg.seed + rank + 1_000_003 * state["step"])

    # -- data on the device, sampling, loss weights
    images, targets = train_set.images, train_set.targets
    on_device = cfg.data_on_device == "yes" or (
        cfg.data_on_device == "auto" and device.type == "cuda" and images.numel() < 2**31)
    if on_device:  # the whole uint8 set on the GPU: a batch is one index op, no host transfer at all
        images, targets = images.to(device), targets.to(device)
    counts = train_set.class_counts().float()
    hard = targets.argmax(1).cpu() if targets.ndim == 2 else targets.cpu()
    sample_weights = (1.0 / counts.clamp(min=1))[hard] if cfg.balance == "sampler" else None
    class_weights = None
    if cfg.balance == "loss":  # w_c = N / (K * n_c): the mean weight over the data is 1
        class_weights = (counts.sum() / (num_classes * counts.clamp(min=1))).to(device)
    aug = AugmentConfig(image_size=cfg.img_size, **cfg.augment)
    micro_per_step = cfg.batch_size * cfg.accum_steps
    steps_per_epoch = max(1, len(train_set) // world // micro_per_step)
    if len(train_set) // world < micro_per_step:
        raise ConfigError(f"--batch-size {cfg.batch_size} x accum {cfg.accum_steps} x {world} processes is "
                          f"larger than the training set ({len(train_set)} images)")
    total_steps = steps_per_epoch * cfg.epochs
    warmup_steps = round(cfg.warmup_epochs * steps_per_epoch)
    if resume and resume[2].get("steps_per_epoch") != steps_per_epoch:
        raise ConfigError(f"--resume {cfg.resume}: batch size or dataset changed "
                          f"({resume[2].get('steps_per_epoch')} -> {steps_per_epoch} steps per epoch)")

    # -- the module that runs forward/backward: DDP averages gradients, compile fuses kernels
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                                        else None)
    if cfg.compile:
        net = torch.compile(net)
    autocast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else nullcontext()

    def eval_transform_fn(x):
        return eval_transform(x, aug)

    def validate(m):
        return evaluate(m, val_set, eval_transform_fn, batch_size=cfg.eval_batch_size, autocast_dtype=amp_dtype)

    if main:
        out.mkdir(parents=True, exist_ok=True)
        write_json({"train": cfg.to_dict(), "model": model.config.to_dict(),
                    "precision": precision, "world_size": world, "device": str(device),
                    "data": {"train": train_set.source, "val": val_set.source, "classes": list(classes),
                             "train_size": len(train_set), "val_size": len(val_set)}}, out / "config.json")
        log(f"run {out}: {model.num_params() / 1e6:.2f}M params, {precision}, {device} x{world}, "
            f"{len(train_set)} train / {len(val_set)} val images ({train_set.source}), "
            f"{steps_per_epoch} steps/epoch x {cfg.epochs} epochs, global batch {micro_per_step * world}")

    def checkpoint(epoch_next, step):
        if main:
            save_resume(out / "resume.safetensors", model, optimizer, scaler, ema,
                        dict(state, epoch=epoch_next, step=step, steps_per_epoch=steps_per_epoch))

    step, lr = state["step"], cfg.lr
    interrupted = False
    for epoch in range(state["epoch"], cfg.epochs):
        first = step - epoch * steps_per_epoch  # > 0 only when resuming mid-epoch
        if first == 0:
            state["sums"] = [0.0, 0.0, 0.0]
        order = epoch_indices(len(train_set), steps_per_epoch * micro_per_step, epoch, cfg.seed, rank, world,
                              sample_weights)
        if on_device:  # index on the GPU: a per-step idx.to(device) would be a blocking, syncing copy
            order = order.to(device)
        sums = torch.tensor(state["sums"], dtype=torch.float64, device=device)  # loss*n, correct, n
        bar = tqdm(range(first, steps_per_epoch), desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
                   disable=not (main and cfg.progress), initial=first, total=steps_per_epoch)
        t_log, seen_log, wait = time.perf_counter(), 0, 0.0
        net.train()
        for i in bar:
            for micro in range(cfg.accum_steps):
                t0 = time.perf_counter()
                idx = order[(i * cfg.accum_steps + micro) * cfg.batch_size:][: cfg.batch_size]
                xb, yb = images[idx], targets[idx]  # (B, C, h, w) uint8, gathered where the set lives
                if not on_device and device.type == "cuda":  # pinned host memory: the copy overlaps compute
                    xb, yb = xb.pin_memory(), yb.pin_memory()
                    xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
                wait += time.perf_counter() - t0
                gen, cpu_gen = step_generators(cfg.seed, step, micro, rank, device)
                x = train_transform(xb, aug, generator=gen)  # (B, 3, S, S) float, normalised
                y = one_hot(yb, num_classes, smoothing=cfg.label_smoothing)  # (B, K)
                x, y = mix_batch(x, y, mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, generator=cpu_gen)
                # DDP: all-reduce gradients only on the last micro-step of an accumulation.
                sync = net.no_sync() if world > 1 and micro < cfg.accum_steps - 1 else nullcontext()
                with sync:
                    with autocast:
                        logits = net(x)  # (B, K)
                        loss = soft_cross_entropy(logits, y, class_weights)
                    scaler.scale(loss / cfg.accum_steps).backward()
                with torch.no_grad():
                    truth = yb.argmax(1) if yb.ndim == 2 else yb
                    sums += torch.stack([loss.detach().double() * len(yb),
                                         (logits.argmax(1) == truth).sum().double(),
                                         loss.new_full((), len(yb), dtype=torch.float64)])  # no H2D copy
            lr = lr_at(step, total_steps, warmup_steps, cfg.lr, cfg.min_lr)
            for group in optimizer.param_groups:
                group["lr"] = lr * group["lr_scale"]
            if cfg.clip_grad > 0:
                scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            if ema is not None:
                ema.update(model)
            step += 1
            seen_log += micro_per_step * world
            if main and cfg.progress and (i % 10 == 9 or i == steps_per_epoch - 1):  # .item() syncs: not every step
                loss_sum, correct, n = sums.tolist()
                dt = time.perf_counter() - t_log
                bar.set_postfix(loss=f"{loss_sum / n:.3f}", acc=f"{correct / n:.3f}", lr=f"{lr:.2e}",
                                img_s=f"{seen_log / dt:.0f}", data_ms=f"{1000 * wait / max(1, seen_log // (micro_per_step * world)):.1f}")
                t_log, seen_log, wait = time.perf_counter(), 0, 0.0
            if cfg.ckpt_every and step % cfg.ckpt_every == 0 and i < steps_per_epoch - 1:
                state["sums"] = sums.tolist()
                checkpoint(epoch, step)
            if cfg.stop_after and step >= cfg.stop_after:
                interrupted = True
                break
        bar.close()
        if interrupted:
            break

        # -- end of epoch: reduce train stats over ranks, validate on rank 0, checkpoint
        if world > 1:
            dist.all_reduce(sums)
        loss_sum, correct, n = sums.tolist()
        row = dict(epoch=epoch + 1, step=step, lr=lr, train_loss=loss_sum / n, train_acc=correct / n,
                   seconds=round(time.time() - t_start, 1))
        if main:
            val = validate(model)
            row.update(val_loss=val["loss"], val_acc=val["accuracy"], val_macro_f1=val["macro_f1"])
            key = "accuracy" if cfg.best_metric == "accuracy" else "macro_f1"
            score, best_model = val[key], model
            if ema is not None:
                val_ema = validate(ema.module)
                row.update(val_ema_loss=val_ema["loss"], val_ema_acc=val_ema["accuracy"],
                           val_ema_macro_f1=val_ema["macro_f1"])
                score, best_model = val_ema[key], ema.module
            state["history"].append(row)
            if state["best"] is None or score > state["best"]:
                state["best"], state["best_epoch"] = score, epoch + 1
                save_weights(best_model, out / "best.safetensors", {"epoch": epoch + 1, f"val_{key}": score})
            save_weights(ema.module if ema else model, out / "last.safetensors", {"epoch": epoch + 1})
            state["sums"] = [0.0, 0.0, 0.0]
            checkpoint(epoch + 1, step)
            write_json(state["history"], out / "history.json")
            curves_png(state["history"], out / "curves.png")
            ema_part = f" ema {row['val_ema_acc']:.3f}" if ema else ""
            log(f"epoch {epoch + 1:3d}  train loss {row['train_loss']:.4f} acc {row['train_acc']:.3f}  "
                f"val loss {row['val_loss']:.4f} acc {row['val_acc']:.3f}{ema_part} F1 {row['val_macro_f1']:.3f}  "
                f"({row['seconds']:.0f}s)")
        if world > 1:
            dist.barrier()  # other ranks wait for rank 0's validation and checkpoint

    result = dict(run_dir=str(out), step=step, epochs_done=len(state["history"]), interrupted=interrupted,
                  best_epoch=state["best_epoch"], seconds=round(time.time() - t_start, 1), precision=precision)
    if main and not interrupted and (out / "best.safetensors").exists():
        # -- the report: the best checkpoint on the val set (optionally with flip TTA)
        best_cfg, best_sd = load_weights(out / "best.safetensors")
        best = ViT(best_cfg).to(device)
        best.load_state_dict(best_sd)
        metrics = evaluate(best, val_set, eval_transform_fn, batch_size=cfg.eval_batch_size,
                           autocast_dtype=amp_dtype, tta=cfg.tta)
        write_report(metrics, out, extra=dict(split="val", data=val_set.source, checkpoint="best.safetensors",
                                              best_epoch=state["best_epoch"], history=state["history"]))
        attention_report(best, val_set, eval_transform_fn, out / "attention_maps.png", autocast_dtype=amp_dtype,
                         title=f"Attention maps: best.safetensors (epoch {state['best_epoch']}) on the val set")
        result.update(val_accuracy=metrics["accuracy"], val_macro_f1=metrics["macro_f1"],
                      val_weighted_f1=metrics["weighted_f1"], val_loss=metrics["loss"])
        if state["history"]:
            result.update(train_loss=state["history"][-1]["train_loss"], train_acc=state["history"][-1]["train_acc"])
    if world > 1:
        dist.barrier()
    return result


def cleanup_distributed() -> None:
    """Leave the process group (call once at the end of a torchrun script)."""
    if dist.is_initialized():
        dist.destroy_process_group()


__all__ = ["TrainConfig", "train", "param_groups", "lr_at", "layer_id", "build_optimizer", "resolve_precision",
           "soft_cross_entropy", "EMA", "save_weights", "load_weights", "save_resume", "load_resume",
           "epoch_indices", "setup_distributed", "cleanup_distributed"]
