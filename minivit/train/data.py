"""The training data: the whole set in memory as uint8, a per-epoch index order, batches on the device.

Randomness is a pure function of (seed, epoch) for the data order and of (seed, step, micro-step,
rank) for the augmentation, so a resumed run replays exactly the batches the interrupted run saw.
"""

from __future__ import annotations

import torch

from ..common.errors import ConfigError


def load_data(cfg, progress: bool = True):
    """The run's DataSplits for cfg.data (minivit.data.splits.load_splits): train (with a carved validation
    split taken out of it), val (selects best.safetensors), test (scored once at the end, or None) and the
    rule that chose them, by ``cfg.val_split`` and ``cfg.val_fraction``.

    Image folders of mixed sizes are resized on decode to the training size; unreadable images
    stop the run naming the file, or are skipped and counted with ``on_bad_image="skip"``.
    """
    from ..data import load_splits

    if cfg.data == "synthetic":
        synthetic = dict(samples=cfg.synthetic_samples, image_size=cfg.image_size, seed=cfg.seed)
        return load_splits("synthetic", cfg.val_split, cfg.val_fraction, synthetic=synthetic)
    return load_splits(cfg.data, cfg.val_split, cfg.val_fraction, label_mode=cfg.label_mode,
                       ferplus_images=cfg.ferplus_images, resize_mixed_to=cfg.image_size, on_error=cfg.on_bad_image,
                       progress=progress)


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


def step_generators(seed: int, step: int, micro: int, rank: int, device: torch.device):
    """(device generator, CPU generator) for one micro-batch's augmentation: a pure function of its position.

    Seeding a generator is host-side work: no kernel, no sync.
    """
    s = (seed * 1_000_003 + step * 1009 + micro * 31 + rank) % (2**63)
    return torch.Generator(device=device).manual_seed(s), torch.Generator().manual_seed(s)


class TrainData:
    """The training set placed for the loop: on the GPU when it fits (a batch is then one index op),
    else on the host and copied per batch through pinned memory; plus the class-balance weights."""

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
        self.device = device
        images, targets = train_set.images, train_set.targets
        self.on_device = cfg.data_on_device == "yes" or (
            cfg.data_on_device == "auto" and device.type == "cuda" and images.numel() < 2**31)
        if self.on_device:  # the whole uint8 set on the GPU: no host transfer per step at all
            images, targets = images.to(device), targets.to(device)
        self.images, self.targets = images, targets
        self.sample_weights, self.class_weights = balance_weights(train_set, cfg.balance, device)

    def epoch_order(self, epoch: int, seed: int, rank: int, world: int) -> torch.Tensor:
        """This rank's sample indices for an epoch, where the images live (a per-step idx.to(device)
        would be a blocking copy)."""
        order = epoch_indices(self.size, self.steps_per_epoch * self.images_per_step, epoch, seed, rank, world,
                              self.sample_weights)
        return order.to(self.device) if self.on_device else order

    def batch(self, order: torch.Tensor, micro_index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Micro-batch number ``micro_index`` of the epoch: uint8 (B, C, h, w) and targets, on the device."""
        idx = order[micro_index * self.batch_size:][: self.batch_size]
        xb, yb = self.images[idx], self.targets[idx]  # (B, C, h, w) uint8, gathered where the set lives
        if not self.on_device and self.device.type == "cuda":  # pinned host memory: the copy overlaps compute
            xb, yb = xb.pin_memory().to(self.device, non_blocking=True), yb.pin_memory().to(self.device, non_blocking=True)
        return xb, yb


def balance_weights(train_set, balance: str, device: torch.device):
    """(per-sample weights for the sampler or None, per-class loss weights on the device or None).

    "sampler": draw each image with probability proportional to 1 / its class count; "loss": weight
    class c's loss by N / (K n_c), so the mean weight over the data is 1.
    """
    counts = train_set.class_counts().float()
    if balance == "sampler":
        targets = train_set.targets
        hard = targets.argmax(1) if targets.ndim == 2 else targets
        return (1.0 / counts.clamp(min=1))[hard], None
    if balance == "loss":
        return None, (counts.sum() / (len(counts) * counts.clamp(min=1))).to(device)
    return None, None
