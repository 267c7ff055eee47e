"""Training profiles: named sets of TrainConfig defaults for a kind of run on a kind of machine, shared by
Python and the shell.

    synthetic   no dataset: TrainConfig's own defaults, the demo -- a ~90k-parameter ViT at 32x32 on
                minivit's drawn SYNTHETIC faces (not real data), a few minutes on 2 CPU cores
    finetune    --weights given: the ViT paper's transfer recipe (SGD, momentum 0.9, no weight decay,
                grad-norm clip 1, cosine with warmup) at the resolution the checkpoint was trained at
    gpu         a real dataset, no weights, a GPU: the 100-epoch FER recipe of docs/training.md
    cpu         a real dataset, no weights, no GPU: the CPU recipe of docs/results.md

``--profile auto``, the default, picks one (``choose_profile``): synthetic without --data, finetune with
--weights, else gpu where CUDA is available and cpu where it is not (or with --device cpu). The run says
which and why, and its config.json records the profile applied: ``--config`` of that file repeats the
same run on any machine. Every option's --help shows each profile's default (``help_default``), read
from this table:

    >>> help_default("mix_prob"), help_default("momentum")
    ('default by profile: 0.5 (cpu, gpu), 1 (finetune, synthetic)', 'default 0.9')

``python -m minivit.train`` applies the chosen profile, then a --config file, then every option given on
the command line; from Python ``config_for(data, weights=..., profile=..., **fields)`` does the same,
and ``TrainConfig()`` is the synthetic profile, so ``train(TrainConfig())`` is the command's run.

    >>> config_for("../shared/data/fer2013", profile="gpu").model, config_for("x.csv", weights="ViT-B_16").optimizer
    ('S/4', 'sgd')
    >>> config_for("../shared/data/fer2013", device="cpu").profile
    'cpu'
    >>> config_for("synthetic") == TrainConfig()
    True
"""

from __future__ import annotations

import copy

import torch

from ..data.synthetic import SYNTHETIC
from ..model.config import config_from_name
from .config import PROFILE_NAMES, TrainConfig

# The fields the synthetic profile shows in --help: the ones the profiles set. Their values are
# TrainConfig's defaults, stated there once.
SYNTHETIC_FIELDS = ("model", "model_overrides", "image_size", "synthetic_samples", "epochs", "batch_size", "lr",
                    "weight_decay", "warmup_epochs", "label_smoothing", "ema")
# Per-profile defaults (TrainConfig field -> value); fields not listed keep TrainConfig's default.
PROFILES = {
    # The CPU recipe: the best of the search that fits 90 minutes of a 2-core CPU (docs/results.md): a ViT of
    # width 128 and 4 blocks on a conv stem 16 channels wide that takes the one gray channel to a 6x6 token
    # grid, batch 128, CutMix on half the batches, class loss weights by the square root (disgust recall).
    "cpu": dict(model="S/8", model_overrides=dict(stem="conv", in_chans=1, dim=128, depth=4, heads=4, mlp_dim=256,
                                                  stem_width=16),
                image_size=48, epochs=64, batch_size=128, optimizer="adamw", lr=2e-3, weight_decay=0.05,
                warmup_epochs=2, drop_path=0.1, label_smoothing=0.1, cutmix=1.0, mixup=0.0, mix_prob=0.5,
                balance="sqrt", ema=0.0, tta=True, compile="no", device="cpu"),
    # From scratch on ~28k 48x48 grayscale faces: the measured-best FER2013 reference of docs/results.md. A ViT-S
    # (dim 384, 6 heads, MLP 1536) cut to 8 blocks, on a convolutional stem that takes the one gray
    # channel to a 12x12 token grid; AdamW, CutMix on half the batches (mixing every batch underfits),
    # cosine with 5 warmup epochs, flip TTA in the final report. No EMA: the cosine already anneals the
    # weights to rest at the end, and a 0.9998 average lags the last ~5,000 of the ~11,000 steps.
    "gpu": dict(model="S/4", model_overrides=dict(stem="conv", in_chans=1, depth=8), image_size=48,
                epochs=100, batch_size=256, optimizer="adamw", lr=1e-3, weight_decay=0.05, warmup_epochs=5,
                drop_path=0.1, label_smoothing=0.1, cutmix=1.0, mixup=0.0, mix_prob=0.5, ema=0.0,
                tta=True, compile="auto"),
    # Fine-tuning a pre-trained checkpoint: the ViT paper's recipe at the resolution the checkpoint was
    # trained at. The checkpoint keeps its own architecture: no model_overrides.
    "finetune": dict(optimizer="sgd", lr=0.01, weight_decay=0.0, clip_grad=1.0, image_size=224, epochs=10,
                     batch_size=64, warmup_epochs=1, label_smoothing=0.1, model_overrides={}),
    "synthetic": {name: getattr(TrainConfig(), name) for name in SYNTHETIC_FIELDS},
}
assert tuple(PROFILES) == PROFILE_NAMES, "TrainConfig's CHOICES name the profiles of this table"
# The ViTConfig fields a profile sizes its model by: a model named by the user keeps its own.
SIZE_FIELDS = ("patch_size", "dim", "depth", "heads", "mlp_dim", "stem_width")


def choose_profile(profile: str, data: str, weights: str = "none", device: str = "auto") -> tuple[str, str]:
    """(the profile a new run applies, why) for ``--profile profile`` (``"auto"``: by the data, the
    weights and the machine: the module docstring)."""
    gpu_recipe = f"--profile gpu for the {PROFILES['gpu']['epochs']}-epoch GPU recipe"
    if profile != "auto":
        return profile, f"--profile {profile}"
    if data == SYNTHETIC:  # the demo data source
        return "synthetic", ("no --data: a short demo run on SYNTHETIC faces drawn by minivit.data.synthetic_faces, "
                             "not real data; --data for a real dataset")
    if weights not in ("none", "", None):
        return "finetune", "--weights given: the ViT paper's fine-tuning recipe"
    if device == "cpu":
        return "cpu", f"--device cpu; {gpu_recipe}"
    if device == "cuda" or torch.cuda.is_available():
        return "gpu", "a CUDA device; --profile cpu for the CPU recipe"
    return "cpu", f"no CUDA device; {gpu_recipe}"


def profile_fields(profile: str, data: str, weights: str = "none", model: str | None = None) -> dict:
    """The TrainConfig fields of a new run under ``profile``: its defaults, with its name (config.json
    records it), ``data`` and ``weights``; a ``model`` named here means what it says (no profile sizes on top of it)."""
    fields = dict(copy.deepcopy(PROFILES[profile]), profile=profile, data=data, weights=weights)
    if model is not None:
        fields["model"] = model
        fields["model_overrides"] = {k: v for k, v in fields.get("model_overrides", {}).items()
                                     if k not in SIZE_FIELDS}
    return fields


def config_for(data: str = SYNTHETIC, *, weights: str = "none", profile: str = "auto", **fields) -> TrainConfig:
    """The TrainConfig ``python -m minivit.train --data DATA [--weights W] [--profile P] [--field value ...]``
    builds: the profile for this kind of run on this machine (``choose_profile``), then ``fields``
    (TrainConfig fields). Validated."""
    name, _ = choose_profile(profile, data, weights, fields.get("device", "auto"))
    base = profile_fields(name, data, weights, fields.get("model"))
    return TrainConfig.from_dict({**base, **fields}).validate()


def default_of(profile: str, name: str):
    """The value of TrainConfig field ``name`` under ``profile``, or of the model's ViTConfig field ``name``
    (dim, depth, stem, ...): the profile's model with its overrides; the checkpoint's when fine-tuning."""
    if name not in TrainConfig.field_names() or (profile == "finetune" and name == "model"):
        if profile == "finetune":
            return "the checkpoint's"
        fields = {**TrainConfig().to_dict(), **PROFILES[profile]}
        return getattr(config_from_name(fields["model"], image_size=fields["image_size"],
                                        **fields["model_overrides"]), name)
    return PROFILES[profile].get(name, getattr(TrainConfig(), name))


def help_default(name: str) -> str:
    """What --help says of field ``name``'s default, read from the table: "default 0.9" where every profile
    has the same, else each value with the profiles that have it: "default by profile: 0.5 (cpu, gpu), 1
    (finetune, synthetic)"."""
    by_value: dict[str, list[str]] = {}
    for profile in PROFILES:
        by_value.setdefault(shown(default_of(profile, name)), []).append(profile)
    if len(by_value) == 1:
        return f"default {next(iter(by_value))}"
    return "default by profile: " + ", ".join(f"{value} ({', '.join(names)})" for value, names in by_value.items())


def shown(value) -> str:
    """A default as --help writes it: on/off, 0.001, none."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    return "none" if value is None else str(value)


def epilog() -> str:
    """The profiles in --help: what each sets."""
    return "Profile defaults:\n" + "\n".join(f"  {name}: {values}" for name, values in PROFILES.items())


__all__ = ["PROFILES", "SIZE_FIELDS", "choose_profile", "profile_fields", "config_for", "default_of", "help_default"]
