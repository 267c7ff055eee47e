"""Training profiles: named sets of TrainConfig defaults for a kind of run, shared by Python and the shell.

    synthetic   no dataset: TrainConfig's own defaults, the demo -- a ~90k-parameter ViT at 32x32 on
                minivit's drawn SYNTHETIC faces (not real data), a few minutes on 2 CPU cores
    finetune    --weights given: the ViT paper's transfer recipe (SGD, momentum 0.9, no weight decay,
                grad-norm clip 1, cosine with warmup) at the resolution the checkpoint was trained at
    scratch     a real dataset and no weights: the FER recipe of docs/training.md

``python -m minivit.train`` applies the profile that ``profile_for(data, weights)`` names, then every
option given on the command line; from Python ``config_for(data, weights=..., **fields)`` does the same,
and ``TrainConfig()`` is the synthetic profile, so ``train(TrainConfig())`` is the command's run.

    >>> config_for("../shared/data/fer2013").model, config_for("x.csv", weights="ViT-B_16").optimizer
    ('S/4', 'sgd')
    >>> config_for("synthetic") == TrainConfig()
    True
"""

from __future__ import annotations

import copy

from ..data.synthetic import SYNTHETIC
from .config import TrainConfig

# The fields the synthetic profile shows in --help: the ones the profiles set. Their values are
# TrainConfig's defaults, stated there once.
SYNTHETIC_FIELDS = ("model", "model_overrides", "image_size", "synthetic_samples", "epochs", "batch_size", "lr",
                    "weight_decay", "warmup_epochs", "label_smoothing", "ema")
# Per-profile defaults (TrainConfig field -> value); fields not listed keep TrainConfig's default.
PROFILES = {
    "synthetic": {name: getattr(TrainConfig(), name) for name in SYNTHETIC_FIELDS},
    # Fine-tuning a pre-trained checkpoint: the ViT paper's recipe at the resolution the checkpoint was
    # trained at. The checkpoint keeps its own architecture: no model_overrides.
    "finetune": dict(optimizer="sgd", lr=0.01, weight_decay=0.0, clip_grad=1.0, image_size=224, epochs=10,
                     batch_size=64, warmup_epochs=1, label_smoothing=0.1, model_overrides={}),
    # From scratch on ~28k 48x48 grayscale faces: the measured-best FER2013 reference of docs/results.md. A ViT-S
    # (dim 384, 6 heads, MLP 1536) cut to 8 blocks, on a convolutional stem that takes the one gray
    # channel to a 12x12 token grid; AdamW, CutMix on half the batches (mixing every batch underfits),
    # cosine with 5 warmup epochs, flip TTA in the final report. No EMA: the cosine already anneals the
    # weights to rest at the end, and a 0.9998 average lags the last ~5,000 of the ~11,000 steps.
    "scratch": dict(model="S/4", model_overrides=dict(stem="conv", in_chans=1, depth=8), image_size=48,
                    epochs=100, batch_size=256, optimizer="adamw", lr=1e-3, weight_decay=0.05, warmup_epochs=5,
                    drop_path=0.1, label_smoothing=0.1, cutmix=1.0, mixup=0.0, mix_prob=0.5, ema=0.0,
                    tta=True, compile="auto"),
}
# The ViTConfig fields a profile sizes its model by: a model named by the user keeps its own.
SIZE_FIELDS = ("patch_size", "dim", "depth", "heads", "mlp_dim", "stem_width")


def profile_for(data: str, weights: str = "none") -> str:
    """The profile of a new run: "synthetic" without a dataset, "finetune" with --weights, else "scratch"."""
    if data == SYNTHETIC:  # the demo data source
        return "synthetic"
    return "finetune" if weights not in ("none", "", None) else "scratch"


def profile_fields(data: str, weights: str = "none", model: str | None = None) -> tuple[dict, str]:
    """(TrainConfig fields, profile name) for a new run on ``data``: the profile's defaults, with ``data``
    and ``weights``; a ``model`` named here means what it says (no profile sizes on top of it)."""
    profile = profile_for(data, weights)
    fields = dict(copy.deepcopy(PROFILES[profile]), data=data, weights=weights)
    if model is not None:
        fields["model"] = model
        fields["model_overrides"] = {k: v for k, v in fields.get("model_overrides", {}).items()
                                     if k not in SIZE_FIELDS}
    return fields, profile


def config_for(data: str = SYNTHETIC, *, weights: str = "none", **fields) -> TrainConfig:
    """The TrainConfig ``python -m minivit.train --data DATA [--weights W] [--field value ...]`` builds: the
    profile for this kind of run, then ``fields`` (TrainConfig fields). Validated."""
    base, _ = profile_fields(data, weights, fields.get("model"))
    return TrainConfig.from_dict({**base, **fields}).validate()


def epilog() -> str:
    """The profiles in --help: what each sets."""
    return "Profile defaults:\n" + "\n".join(f"  {name}: {values}" for name, values in PROFILES.items())


__all__ = ["PROFILES", "SIZE_FIELDS", "profile_for", "profile_fields", "config_for"]
