"""Training: ``train(TrainConfig(...))`` from Python, ``python -m minivit.train`` from the shell.

Where each concern lives (read them in this order; docs/training.md explains each piece):

    loop.py         train(): set up the run, then per epoch train_one_epoch + end_of_epoch; the step with its
                    warmup + cosine schedule; the weights and resume point it saves (through the run's RunFolder)
    config.py       TrainConfig: every knob, its valid range, validate()
    setup.py        the Run: its folder (minivit.checkpoints.RunFolder: never overwrite a run, timestamped
                    names, the resume point), processes, device, data, model, optimiser, EMA
    data.py         the run's splits (minivit.data.splits), its uint8 set (in memory or mapped from the decoded
                    cache), index order, batches (on the device, or prefetched by a thread)
    optim.py        weight-decay rule, layer-wise LR decay, EMA
    distributed.py  DDP: joining torchrun's process group, no_sync, all-reduce, barrier
    report.py       the header, progress, the clock, per-epoch lines, history/curves, warnings, the final report
    profiles.py     the named presets (cpu / gpu / finetune / synthetic) that Python and the command line share,
                    and the one --profile auto picks for the data and the machine
    config_file.py  --config FILE: a run's config.json or a flat JSON / YAML mapping, checked key by key
    board.py        TensorBoard event files (--tensorboard)

The command line, every option checked by config.py's tables, is minivit/commands/train.py.

Example (a tiny run on synthetic faces, a few seconds on a CPU):
    >>> import tempfile
    >>> from minivit.train import TrainConfig, train
    >>> cfg = TrainConfig(data="synthetic", synthetic_samples=64, image_size=16, epochs=1, batch_size=16,
    ...                   model_overrides=dict(patch_size=4, dim=32, depth=1, heads=2, mlp_dim=64),
    ...                   out=tempfile.mkdtemp(), progress=False, log=False)
    >>> result = train(cfg)  # doctest: +SKIP
"""

from .config import CHOICES, RANGES, TrainConfig
from .data import TrainData, epoch_indices, load_data
from .distributed import cleanup_distributed, setup_distributed
from .loop import (accumulate, end_of_epoch, lr_at, set_lr, soft_cross_entropy, step_generators, train,
                   train_one_epoch, train_step)
from .optim import EMA, build_optimizer, layer_id, param_groups
from .profiles import PROFILES, choose_profile, config_for

__all__ = ["TrainConfig", "CHOICES", "RANGES", "train", "train_one_epoch", "train_step", "end_of_epoch",
           "soft_cross_entropy", "accumulate", "param_groups", "lr_at", "set_lr", "layer_id", "build_optimizer",
           "EMA", "TrainData", "epoch_indices", "load_data", "step_generators", "setup_distributed",
           "cleanup_distributed", "PROFILES", "config_for", "choose_profile"]
