"""The training data: its splits, a per-epoch index order, and batches on the device.

The images are a uint8 set, in memory or memory-mapped from the decoded cache (minivit.data.cache), and
reach the loop by one of two paths: the whole set on the GPU when it fits (a batch is one index op
there), else a background thread gathering the next batches of this rank's shard into pinned memory
(minivit.data.prefetch). Randomness is a pure function of (seed, epoch) for the data order and of (seed,
step, micro-step, rank) for the augmentation, so either path, and a resumed run, trains on exactly the
batches an uninterrupted run sees.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import torch

from ..common.errors import ConfigError
from ..data.prefetch import Prefetcher, gather
from .distributed import local_leader_first, local_world_size, world_from_env

# A folder: each rank appends the ids of the images it trains on, one line per micro-batch ("<epoch>
# <micro-batch> <id> <id> ..." to rank<r>.txt), so a test (or a suspicious user) can check that the ranks
# of a run see every image once per epoch. Unset in normal runs: then nothing is written.
SAMPLE_LOG_ENV = "MINIVIT_SAMPLE_LOG"
RESIDENT_CHUNK = 1024  # images per host-to-device copy when a mapped set is moved onto the GPU whole


def run_splits(cfg, folder, main: bool, train_set=None, val_set=None, test_set=None):
    """The run's DataSplits: load_data, or the ImageSets passed to train() as given. A resumed run must
    hold out the images it held out before (the split rule its RunFolder recorded: check_carve)."""
    from ..data.splits import check_carve

    recorded = folder.split_rule if cfg.resume else None
    if train_set is None:
        return load_data(cfg, progress=cfg.progress and main, recorded=recorded)
    splits = given_data(cfg, train_set, val_set, test_set)
    if recorded:
        check_carve(cfg.data, recorded, splits.rule.get("val_hash"), cfg.resume)
    return splits


def load_data(cfg, progress: bool = True, recorded: dict | None = None):
    """The run's DataSplits for cfg.data (minivit.data.splits.load_splits): train (with a carved validation
    split taken out of it), val (selects best.safetensors), test (scored once at the end, or None) and the
    rule that chose them, by ``cfg.val_split`` and ``cfg.val_fraction``; ``recorded``: the rule of the run
    being resumed, whose carve must be the same (minivit.data.splits.check_carve).

    Image folders of mixed sizes are resized on decode to the training size; unreadable images
    stop the run naming the file, or are skipped and counted with ``on_bad_image="skip"``. Image folders
    and RAF-DB are decoded once into the cache (cache_plan) and memory-mapped; under torchrun each
    machine's first process builds it while the others wait, then they map the same file. Synthetic
    faces are drawn at the training size from ``cfg.synthetic_samples`` and ``cfg.seed``.
    """
    from ..data import load_splits

    plan = cache_plan(cfg)
    if plan is not None:  # a build's bar shows on the process that builds: each machine's first
        progress = cfg.progress and world_from_env()[2] == 0

    def load():
        return load_splits(cfg.data, cfg.val_split, cfg.val_fraction, label_mode=cfg.label_mode,
                           ferplus_images=cfg.ferplus_images, resize_mixed_to=cfg.image_size,
                           on_error=cfg.on_bad_image, progress=progress, cache=plan, recorded=recorded,
                           resumed=cfg.resume or "",
                           synthetic=dict(samples=cfg.synthetic_samples, image_size=cfg.image_size, seed=cfg.seed))

    return load() if plan is None else local_leader_first(load)


def cache_plan(cfg):
    """Where the run keeps the decoded images (minivit.data.cache.CachePlan), or None with ``--no-cache``."""
    from ..data.cache import CachePlan

    if not cfg.cache:
        return None
    return CachePlan(Path(cfg.cache_dir).expanduser() if cfg.cache_dir else None, processes=local_world_size())


def given_data(cfg, train_set, val_set, test_set=None):
    """DataSplits for ImageSets passed to train() in Python: used as given, the rule says so."""
    from ..data.splits import DataSplits, split_rule

    return DataSplits(train_set, val_set, test_set, split_rule(cfg.val_split, "given", val_set, test_set))


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


class TrainData:
    """The training set placed for the loop: on the GPU when it fits (a batch is then one index op),
    else on the host -- in memory or a memory map -- with the next batches gathered ahead by a thread
    (Prefetcher, ``cfg.prefetch`` deep) into pinned memory and copied while the GPU computes; plus the
    class-balance weights."""

    def __init__(self, train_set, cfg, device: torch.device, world: int):
        self.source, self.size = train_set.source or "the training set", len(train_set)
        self.batch_size, self.accum_steps = cfg.batch_size, cfg.accum_steps
        self.images_per_step = cfg.batch_size * cfg.accum_steps  # per process
        if self.size // world < self.images_per_step:
            raise ConfigError(
                f"{self.source} has {self.size} training images, fewer than one optimiser step needs: "
                f"--batch-size {cfg.batch_size} x --accum-steps {cfg.accum_steps} x {world} process(es) = "
                f"{self.images_per_step * world}; use a larger dataset or a smaller batch")
        self.steps_per_epoch = self.size // world // self.images_per_step
        self.device, self.prefetch, self.ids = device, cfg.prefetch, train_set.ids
        images, targets = train_set.images, train_set.targets
        self.on_device = cfg.data_on_device == "yes" or (
            cfg.data_on_device == "auto" and device.type == "cuda" and images.numel() < 2**31)
        if self.on_device:  # the whole uint8 set on the GPU: no host transfer per step at all
            images, targets = resident(images, device), targets.to(device)
        self.images, self.targets = images, targets
        self.sample_weights, self.class_weights = balance_weights(train_set, cfg.balance, device)

    def epoch_order(self, epoch: int, seed: int, rank: int, world: int) -> torch.Tensor:
        """This rank's sample indices for an epoch, where the images live (a per-step idx.to(device)
        would be a blocking copy)."""
        order = epoch_indices(self.size, self.steps_per_epoch * self.images_per_step, epoch, seed, rank, world,
                              self.sample_weights)
        return order.to(self.device) if self.on_device else order

    @contextmanager
    def epoch(self, epoch: int, seed: int, rank: int, world: int, start: int = 0):
        """An iterator over this rank's micro-batches of ``epoch`` from number ``start`` on (a resumed run
        starts mid-epoch): uint8 (B, C, h, w) and targets, on the device. Leaving the block stops the
        prefetching thread, also when the epoch is cut short (``--stop-after``)."""
        order = self.epoch_order(epoch, seed, rank, world)
        picks = [order[m * self.batch_size:][: self.batch_size] for m in range(start, len(order) // self.batch_size)]
        if self.on_device:
            batches, prefetcher = ((self.images[idx], self.targets[idx]) for idx in picks), None
        else:
            prefetcher = Prefetcher(self.images, self.targets, picks, depth=self.prefetch,
                                    pin=self.device.type == "cuda")
            batches = ((x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True))
                       for x, y in prefetcher)
        try:
            yield self._logged(batches, picks, epoch, rank, start) if os.environ.get(SAMPLE_LOG_ENV) else batches
        finally:
            if prefetcher is not None:
                prefetcher.close()

    def _logged(self, batches, picks, epoch: int, rank: int, start: int):
        """``batches``, writing each one's image ids to the sample log as it is taken (SAMPLE_LOG_ENV)."""
        folder = Path(os.environ[SAMPLE_LOG_ENV])
        folder.mkdir(parents=True, exist_ok=True)
        ids = self.ids or tuple(f"#{i}" for i in range(self.size))
        for m, (batch, idx) in enumerate(zip(batches, picks), start=start):
            with open(folder / f"rank{rank}.txt", "a") as f:
                f.write(f"{epoch} {m} {' '.join(ids[i] for i in idx.tolist())}\n")
            yield batch


def resident(images, device: torch.device) -> torch.Tensor:
    """The whole uint8 set in ``device`` memory, copied a chunk at a time from memory, a memory map or a
    RowView of one: never a second whole copy on the host."""
    if isinstance(images, torch.Tensor):
        return images.to(device)
    out = torch.empty(tuple(images.shape), dtype=images.dtype, device=device)  # (N, C, H, W)
    for a in range(0, len(images), RESIDENT_CHUNK):
        rows = torch.arange(a, min(a + RESIDENT_CHUNK, len(images)))
        out[a:a + len(rows)] = gather(images, rows, pin=False).to(device)
    return out


def balance_weights(train_set, balance: str, device: torch.device):
    """(per-sample weights for the sampler or None, per-class loss weights on the device or None).

    "sampler": draw each image with probability proportional to 1 / its class count; "loss": weight
    class c's loss by N / (K n_c), so the mean weight over the data is 1; "sqrt": by the square root of
    that, rescaled to mean 1 (FER2013: disgust x3.1 instead of x9.4, happy x0.75 instead of x0.57).
    """
    counts = train_set.class_counts().float()
    if balance == "sampler":
        targets = train_set.targets
        hard = targets.argmax(1) if targets.ndim == 2 else targets
        return (1.0 / counts.clamp(min=1))[hard], None
    if balance in ("loss", "sqrt"):
        weights = counts.sum() / (len(counts) * counts.clamp(min=1))  # (K,): N / (K n_c), mean 1 over the data
        if balance == "sqrt":  # the square root, scaled again so the mean weight over the data stays 1
            weights = weights.sqrt()
            weights = weights * counts.sum() / (weights * counts).sum()
        return None, weights.to(device)
    return None, None
