"""Draw the figures of docs/ from minivit's own code, as small PNGs under docs/img/.

    python docs/make_figures.py                                      # every figure, untrained model
    python docs/make_figures.py --checkpoint minivit-fer             # attention + position embeddings of the shipped model
    python docs/make_figures.py --only cutmix,lr_schedule            # just these

Each figure calls the library rather than re-deriving it: the token grid and token count come from
the model's config, the pixels each token is computed from from the gradient of the stem's output, the position-embedding similarity from ``model.pos_embed``, the augmented faces
from ``minivit.data.augment.train_transform``, the CutMix example from ``mix_batch``, the learning rate
from the training loop's ``lr_at`` under the "gpu" profile, the attention maps from
``model(x, attention=True)`` and ``minivit.evaluate.rollout``, and the shapes of the architecture diagram
(ViT-B/16 at 224 and the "gpu" profile's FER model) from hooks and the out dict of a forward
pass on the meta device. So a figure changes when the code does, and tests/test_make_figures.py
runs this script on a tiny model so it cannot rot.

Faces are PublicTest faces of FER2013 (``../shared/data/fer2013/test``) when that folder exists, else
minivit's synthetic faces. Everything is seeded: the same inputs give the same PNGs.
Figures are matplotlib ``Figure`` objects rendered by Agg (no pyplot), written with minivit.evaluate.plots.save_png.
"""

from __future__ import annotations

import copy
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from minivit.checkpoints import read_extra
from minivit.common.cli import ArgumentParser, integer, run
from minivit.common.errors import ConfigError
from minivit.common.files import atomic_write
from minivit.data import load_dataset, synthetic_faces
from minivit.data.augment import AugmentConfig, eval_transform, mix_batch, one_hot, train_transform
from minivit.data.labels import LABELS
from minivit.evaluate.plots import ATTENTION_CMAP, DPI
from minivit.evaluate.rollout import attention_rollout, last_layer_attention
from minivit.inference.predictor import resolve_checkpoint
from minivit.model.vit import ViT, create_model
from minivit.train.config import TrainConfig
from minivit.train.loop import lr_at
from minivit.train.profiles import PROFILES

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "fer2013"
DEFAULT_OUT = REPO / "docs" / "img"
FER2013_TRAIN_SIZE = 28709  # images in FER2013's Training split: sets the steps per epoch of the LR figure
SEED = 0
# Faces shown, in this order of classes (distinct expressions read better than six neutral faces).
SHOW_CLASSES = ("happy", "surprise", "angry", "sad", "neutral", "fear", "disgust")


@dataclass
class Inputs:
    """What the figures are drawn from: a model (trained or not) and some faces."""

    model: ViT
    about: str  # one line naming the model, e.g. "untrained S/4 (random init)"
    trained: bool
    faces: torch.Tensor  # uint8 (n, 1|3, h, w), one face per class where possible
    labels: list[str]  # the true class of each face
    source: str  # where the faces come from, for titles


# ------------------------------------------------------------------------------------------ inputs

def load_model(checkpoint: str | None) -> tuple[ViT, str, bool]:
    """(model in eval mode, a line describing it, trained?). No checkpoint: the "gpu" training
    profile's model, freshly initialised (seeded) -- and every title then says it is untrained."""
    if checkpoint:
        path = resolve_checkpoint(checkpoint)
        model = ViT.from_pretrained(path)
        cfg, extra = model.config, read_extra(path) if str(path).endswith(".safetensors") else {}
        when = f", epoch {extra['epoch']}" if "epoch" in extra else ""
        score = f", val acc {extra['val_accuracy']:.3f}" if "val_accuracy" in extra else ""
        about = (f"trained {cfg.stem}-stem ViT, {model.num_params() / 1e6:.2f}M params, {cfg.grid[0]}x{cfg.grid[1]} "
                 f"grid ({Path(checkpoint).name}{when}{score})")
        return model.eval(), about, True
    profile = PROFILES["gpu"]
    with torch.random.fork_rng():  # seeded init without touching the caller's RNG
        torch.manual_seed(SEED)
        model = create_model(profile["model"], image_size=profile["image_size"], num_classes=len(LABELS),
                             **profile["model_overrides"])
    about = f"UNTRAINED {profile['model']} {model.config.stem}-stem ViT (random init, gpu profile)"
    return model.eval(), about, False


def pick_faces(images: torch.Tensor, targets: torch.Tensor, classes, n: int, seed: int = SEED) -> list[int]:
    """Indices of n faces, one per class in SHOW_CLASSES order (seeded choice within a class);
    blank images (FER2013 has a dozen) are passed over."""
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    spread = images[order].float().flatten(1).std(1)  # (N,): ~0 for a blank image
    picked = []
    for name in SHOW_CLASSES:
        if name in classes and len(picked) < n:
            hits = order[(targets[order] == classes.index(name)) & (spread > 10)]
            picked += hits[:1].tolist()
    rest = [int(i) for i in order if int(i) not in picked]
    return (picked + rest)[:n]  # top up with any faces when classes are missing


def load_faces(data: str | None, n: int = 6) -> tuple[torch.Tensor, list[str], str]:
    """(uint8 (n, C, h, w) faces, their labels, a source line). data: a dataset path, "synthetic",
    or None for FER2013 PublicTest when ../shared/data/fer2013 exists, else synthetic faces."""
    if data is None:
        data = str(DEFAULT_DATA) if DEFAULT_DATA.is_dir() else "synthetic"
    if data == "synthetic":
        faces, source = synthetic_faces(14, image_size=48, seed=SEED), "synthetic faces (minivit.data.synthetic)"
    else:
        if not Path(data).exists():
            raise ConfigError(f"--data {data}: no such file or folder")
        faces, source = load_dataset(data, "test", progress=False), f"{Path(data).name} test split"
        if Path(data).resolve() == DEFAULT_DATA.resolve():
            source = "FER2013 PublicTest faces"  # ../shared's test/ folder holds the PublicTest images
    if faces.soft:
        raise ConfigError(f"--data {data}: soft (FER+ vote) labels are not supported here; give a folder or csv")
    idx = pick_faces(faces.images, faces.targets, list(faces.classes), n)
    return faces.images[idx], [faces.classes[int(faces.targets[i])] for i in idx], source


def gray(image: torch.Tensor) -> np.ndarray:
    """uint8 (1|3, h, w) -> (h, w) or (h, w, 3) numpy for imshow."""
    return image[0].numpy() if image.shape[0] == 1 else image.permute(1, 2, 0).numpy()


def show(ax, image, title: str = "", **kw) -> None:
    """An image on ax without ticks, pixels kept sharp."""
    ax.imshow(image, cmap="gray", vmin=kw.pop("vmin", 0), vmax=kw.pop("vmax", 255), interpolation="nearest", **kw)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)


def save_small(fig: Figure, path) -> str:
    """Render ``fig`` (Agg, DPI of minivit.evaluate.plots) and write it atomically as a 256-colour PNG: a third of
    the size of a true-colour one, and these figures need no more colours."""
    fig.set_dpi(DPI)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    rgb = Image.fromarray(np.asarray(canvas.buffer_rgba())).convert("RGB")  # (H, W, 3) pixels
    small = rgb.quantize(256)  # median-cut palette: deterministic
    atomic_write(Path(path), lambda tmp: small.save(tmp, format="png", optimize=True))
    return str(path)


def augment_config(model: ViT) -> AugmentConfig:
    """The preprocessing training and evaluation use for this model (CONTRACT: one function)."""
    return AugmentConfig(image_size=model.config.image_size, channels=model.config.in_chans)


def to_pixels(x: torch.Tensor, aug: AugmentConfig) -> np.ndarray:
    """A normalised model input (C, S, S) back to [0, 1] pixels (H, W) for display (first channel)."""
    if len(set(aug.mean)) != 1 or len(set(aug.std)) != 1:
        raise ConfigError("only per-channel-equal mean/std can be shown back as pixels")
    return (x[0] * aug.std[0] + aug.mean[0]).clamp(0, 1).numpy()  # (S, S)


# ----------------------------------------------------------------------------- (a) patches, tokens

def token_support(stem: torch.nn.Module, image_hw: tuple[int, int], in_chans: int, token: int) -> torch.Tensor:
    """(H, W) bool: the input pixels that token ``token`` of a stem's output (B, N, D) depends on -- its
    receptive field, read from the gradient of that token's features with respect to the image (a copy of
    the stem in eval mode and float64, a random image and a random read-out, so no pixel is missed)."""
    stem = copy.deepcopy(stem).double().eval()
    g = torch.Generator().manual_seed(SEED)
    x = torch.randn(1, in_chans, *image_hw, dtype=torch.float64, generator=g).requires_grad_()
    tokens = stem(x)  # (1, N, D)
    readout = torch.randn(tokens.shape[-1], dtype=torch.float64, generator=g)  # (D,)
    (tokens[0, token] @ readout).backward()
    return x.grad[0].abs().sum(0) > 0  # (H, W)


def both_stems(model: ViT) -> dict[str, ViT]:
    """{"patch": ..., "conv": ...}: ``model`` for its own stem, a seeded model of the same grid for the other."""
    cfg = model.config
    other = cfg.replace(stem="patch", stem_width=None) if cfg.stem == "conv" else cfg.replace(stem="conv")
    with torch.random.fork_rng():
        torch.manual_seed(SEED)
        twin = ViT(other).eval()
    return {cfg.stem: model, other.stem: twin}


def patches_figure(inputs: Inputs, path) -> dict:
    """A face; its token grid numbered in token order; and, for two tokens, the pixels each is computed from
    with a patch stem (its own p x p cell) and with a conv stem (a wider window: the 3x3 convs overlap).

    Returns {"grid": (gh, gw), "num_tokens": T, "patches": uint8 (N, p, p) the cells in token order,
    "face": (S, S), "tokens": the two tokens shown, "support": {(stem, token): (S, S) bool}, "texts"}.
    """
    cfg = inputs.model.config
    (gh, gw), p = cfg.grid, cfg.patch_size
    aug = AugmentConfig(image_size=cfg.image_size, channels=1)  # gray: one value per pixel to show
    face = eval_transform(inputs.faces[:1], aug)  # (1, 1, S, S): the face at the model's input size
    face = torch.from_numpy(to_pixels(face[0], aug) * 255).round().to(torch.uint8)  # (S, S)
    # Token order = the stems' rearrange "b d h w -> b (h w) d": row by row, left to right.
    patches = face.reshape(gh, p, gw, p).permute(0, 2, 1, 3).reshape(gh * gw, p, p)  # (N, p, p)
    tokens = [(gh // 3) * gw + gw // 3, (2 * gh // 3) * gw + gw // 2]  # two tokens inside the grid
    models = both_stems(inputs.model)
    support = {(stem, k): token_support(m.patch_embed, cfg.image_hw, cfg.in_chans, k)
               for stem, m in models.items() for k in tokens}
    fig = Figure(figsize=(8.6, 7.4), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[4.2, 2.6])
    a0, a1 = top.subplots(1, 2)
    show(a0, face.numpy(), f"a face from {inputs.source}: {face.shape[0]}x{face.shape[1]} pixels")
    show(a1, face.numpy(), f"{gh}x{gw} tokens, one per {p}x{p} cell, numbered in token order", alpha=0.6)
    for k in range(1, gh):
        a1.axhline(k * p - 0.5, color="tab:orange", lw=0.8)
    for k in range(1, gw):
        a1.axvline(k * p - 0.5, color="tab:orange", lw=0.8)
    for k in range(gh * gw):
        a1.text((k % gw + 0.5) * p - 0.5, (k // gw + 0.5) * p - 0.5, str(k + 1), ha="center", va="center",
                fontsize=8 if gh * gw <= 64 else 5.5)
    cls = "a CLS token, then " if cfg.num_prefix_tokens else ""
    titles = [f"this model has a {cfg.stem} stem: the encoder reads {cls}{gh * gw} tokens = {cfg.num_tokens} in all",
              f"the pixels one token is computed from (those with a nonzero gradient; its {p}x{p} cell in orange):\n"
              "a patch stem reads its cell only; a conv stem's overlapping 3x3 convs also see around it"]
    top.suptitle(titles[0], fontsize=9)
    axes = bottom.subplots(1, 2 * len(tokens))
    for ax, (stem, k) in zip(axes, [(stem, k) for k in tokens for stem in ("patch", "conv")]):
        mask = support[stem, k]
        rows, cols = mask.any(1).nonzero()[:, 0], mask.any(0).nonzero()[:, 0]
        show(ax, np.where(mask.numpy(), face.numpy(), face.numpy() // 4),
             f"token {k + 1}, {stem} stem:\n{len(rows)}x{len(cols)} pixels")
        r, c = divmod(k, gw)
        ax.add_patch(Rectangle((c * p - 0.5, r * p - 0.5), p, p, fill=False, ec="tab:orange", lw=1.2))
    bottom.suptitle(titles[1], fontsize=8)
    save_small(fig, path)
    texts = titles + [ax.get_title() for ax in [a0, a1, *axes]]
    return {"grid": (gh, gw), "num_tokens": cfg.num_tokens, "patches": patches, "face": face, "tokens": tokens,
            "support": support, "texts": texts}


# ------------------------------------------------------------------ (b) position-embedding similarity

def pos_embed_figure(inputs: Inputs, path) -> dict:
    """Cosine similarity of each patch position's embedding with every other (the ViT paper's Fig. 7):
    one small (gh, gw) map per position, laid out on the grid. Returns {"similarity": (N, N), "title"}."""
    model, cfg = inputs.model, inputs.model.config
    gh, gw = cfg.grid
    pe = model.pos_embed.detach()[0, cfg.num_prefix_tokens:].float()  # (N, D): the patch positions only
    unit = F.normalize(pe, dim=-1)  # (N, D)
    sim = unit @ unit.T  # (N, N): cosine similarity
    # Mosaic: map for position (i, j) in cell (i, j) of a (gh, gw) layout, one NaN pixel between maps.
    tiles = F.pad(sim.reshape(gh, gw, gh, gw), (0, 1, 0, 1), value=float("nan"))  # (gh, gw, gh+1, gw+1)
    mosaic = tiles.permute(0, 2, 1, 3).reshape(gh * (gh + 1), gw * (gw + 1))[:-1, :-1]  # (rows, cols)
    title = ("Position-embedding similarity, " + ("trained" if inputs.trained else "UNTRAINED (random init): "
                                                   "no structure expected"))
    fig = Figure(figsize=(5.6, 5.2), layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(mosaic.numpy(), cmap="viridis", vmin=-1, vmax=1, interpolation="nearest")
    ax.set_xticks([]), ax.set_yticks([])
    ax.set_xlabel(f"map (i, j): cosine similarity of position (i, j) with every position ({gh}x{gw} grid)", fontsize=8)
    fig.colorbar(im, ax=ax, shrink=0.8, label="cosine similarity")
    fig.suptitle(f"{title}\n{inputs.about}", fontsize=9)
    save_small(fig, path)
    return {"similarity": sim, "title": title}


# ------------------------------------------------------------------------------ (c) augmented faces

def augment_figure(inputs: Inputs, path, *, faces: int = 4, draws: int = 5) -> dict:
    """Rows: faces; columns: the model's evaluation input, then ``draws`` train_transform draws.
    Returns {"augmented": (draws, faces, C, S, S) normalised inputs}."""
    aug = augment_config(inputs.model)
    x = inputs.faces[:faces]  # (F, C, h, w) uint8
    g = torch.Generator().manual_seed(SEED)
    samples = torch.stack([train_transform(x, aug, g) for _ in range(draws)])  # (draws, F, C, S, S)
    clean = eval_transform(x, aug)  # (F, C, S, S)
    fig = Figure(figsize=(1.35 * (draws + 1), 1.4 * len(x) + 0.6), layout="constrained")
    axes = fig.subplots(len(x), draws + 1, squeeze=False)
    for r in range(len(x)):
        show(axes[r, 0], to_pixels(clean[r], aug), "evaluation" if r == 0 else "", vmin=0, vmax=1)
        for d in range(draws):
            show(axes[r, d + 1], to_pixels(samples[d, r], aug), f"draw {d + 1}" if r == 0 else "", vmin=0, vmax=1)
    fig.suptitle(f"train_transform: crop (area {aug.scale[0]:g}-{aug.scale[1]:g}), flip, rotate "
                 f"+-{aug.rotate_deg:g} deg, brightness/contrast +-{aug.brightness:g}", fontsize=9)
    save_small(fig, path)
    return {"augmented": samples}


# ------------------------------------------------------------------------------------- (d) CutMix

def cutmix_figure(inputs: Inputs, path, *, smoothing: float | None = None) -> dict:
    """Face A, face B, A with a box of B pasted (CutMix through mix_batch, as training calls it) and
    the mixed label as bars. Returns {"label": (K,), "classes", "box": (y0, y1, x0, x1), "pasted": float}."""
    smoothing = PROFILES["gpu"]["label_smoothing"] if smoothing is None else smoothing
    aug = augment_config(inputs.model)
    i, j = 0, 1  # two faces of different classes (pick_faces put one per class first)
    x = eval_transform(inputs.faces[[i, j]], aug)  # (2, C, S, S)
    classes = list(LABELS)
    y = one_hot(torch.tensor([classes.index(inputs.labels[i]), classes.index(inputs.labels[j])]),
                len(classes), smoothing)  # (2, K)
    for seed in range(100):  # the first seeded draw whose box is large enough to see (20-60% of the face)
        mixed, label = mix_batch(x, y, cutmix_alpha=1.0, generator=torch.Generator().manual_seed(seed))
        changed = (mixed[0] != x[0]).any(0)  # (S, S): where face B was pasted into face A
        if 0.2 <= changed.float().mean() <= 0.6:
            break
    rows, cols = changed.any(1).nonzero()[:, 0], changed.any(0).nonzero()[:, 0]
    box = (int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1)
    pasted = (box[1] - box[0]) * (box[3] - box[2]) / changed.numel()
    fig = Figure(figsize=(10.5, 2.9), layout="constrained")
    axes = fig.subplots(1, 4, width_ratios=[1, 1, 1, 2.2])
    show(axes[0], to_pixels(x[0], aug), f"A: {inputs.labels[i]}", vmin=0, vmax=1)
    show(axes[1], to_pixels(x[1], aug), f"B: {inputs.labels[j]}", vmin=0, vmax=1)
    show(axes[2], to_pixels(mixed[0], aug), f"A with a box of B ({pasted:.0%})", vmin=0, vmax=1)
    axes[2].add_patch(Rectangle((box[2] - 0.5, box[0] - 0.5), box[3] - box[2], box[1] - box[0], fill=False,
                                ec="tab:orange", lw=1.5))
    bars = axes[3].bar(range(len(classes)), label[0].numpy(), color="tab:blue")
    axes[3].bar_label(bars, fmt="%.2f", fontsize=7)
    axes[3].set_xticks(range(len(classes)), classes, fontsize=8, rotation=30)
    axes[3].set_ylim(0, 1.05)
    axes[3].set_title(f"its label: (1 - {pasted:.2f}) A + {pasted:.2f} B, smoothing {smoothing:g}", fontsize=9)
    save_small(fig, path)
    return {"label": label[0], "classes": classes, "box": box, "pasted": pasted}


# ----------------------------------------------------------------------------- (e) LR schedule

def lr_schedule_figure(inputs: Inputs | None, path, *, profile: dict | None = None,
                       train_size: int = FER2013_TRAIN_SIZE) -> dict:
    """The learning rate at every optimiser step of a run with the training profile ``profile``
    (default: "gpu"), computed by the loop's own lr_at. Returns {"epoch": (S,), "lr": (S,)}."""
    p = {**PROFILES["gpu"], **(profile or {})}
    defaults = TrainConfig()
    min_lr = p.get("min_lr", defaults.min_lr)
    steps_per_epoch = train_size // (p["batch_size"] * p.get("accum_steps", defaults.accum_steps))  # as TrainData
    total, warmup = steps_per_epoch * p["epochs"], round(p["warmup_epochs"] * steps_per_epoch)  # as setup_run
    lrs = np.array([lr_at(s, total, warmup, p["lr"], min_lr) for s in range(total)])  # (total,)
    epoch = np.arange(total) / steps_per_epoch  # (total,)
    fig = Figure(figsize=(6.4, 3.0), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(epoch, lrs, color="tab:blue")
    ax.axvline(p["warmup_epochs"], color="0.6", ls="--", lw=0.8)
    ax.text(p["warmup_epochs"], p["lr"] * 0.5, f" warmup ends\n (epoch {p['warmup_epochs']:g})", fontsize=8)
    ax.set_xlabel("epoch")
    ax.set_ylabel("learning rate")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    ax.set_title(f"warmup + cosine: peak {p['lr']:g}, floor {min_lr:g}, {p['epochs']} epochs x {steps_per_epoch} "
                 f"steps (batch {p['batch_size']}, {train_size} images)", fontsize=8)
    save_small(fig, path)
    return {"epoch": epoch, "lr": lrs}


# ---------------------------------------------------------------------------- (f) attention maps

@torch.no_grad()
def attention_of(model: ViT, faces: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Class probabilities (B, K) and {"rollout", "last": (B, gh, gw) maps in [0, 1], "attention": the
    per-block (B, heads, T, T) list} of uint8 faces (B, C, h, w), preprocessed as evaluation does."""
    cfg = model.config
    x = eval_transform(faces, augment_config(model))  # (B, C, S, S)
    logits, out = model(x, attention=True)  # out["attention"]: depth x (B, heads, T, T)
    args = (out["attention"], cfg.grid, cfg.num_prefix_tokens, out.get("map_attention"))
    maps = {"rollout": attention_rollout(*args), "last": last_layer_attention(*args),  # (B, gh, gw) each
            "attention": out["attention"]}
    return logits.float().softmax(-1), maps


def _overlay(ax, face: np.ndarray, heat: torch.Tensor, interpolation: str, title: str = "") -> None:
    """A (gh, gw) heat map stretched over the face (the same extent, so any grid fits any image)."""
    h, w = face.shape[:2]
    show(ax, face, title, extent=(0, w, h, 0))
    ax.imshow(heat.numpy(), cmap=ATTENTION_CMAP, vmin=0, vmax=1, alpha=0.5, extent=(0, w, h, 0),
              interpolation=interpolation)


def attention_figure(inputs: Inputs, path, *, faces: int = 4) -> dict:
    """Per face: the input; the rollout as the raw token grid; the rollout upsampled (bilinear) over the
    face; the last block's attention of the pooled token. Returns {"probs", "rollout", "last"}."""
    model, cfg = inputs.model, inputs.model.config
    probs, maps = attention_of(model, inputs.faces[:faces])  # (B, K), (B, gh, gw) maps
    names = LABELS if probs.shape[-1] == len(LABELS) else [f"class {k}" for k in range(probs.shape[-1])]
    pooled = {"token": "last layer: CLS row", "gap": "last layer: mean row", "map": "MAP probe"}[cfg.classifier]
    cols = ["input", f"rollout, raw {cfg.grid[0]}x{cfg.grid[1]} grid", "rollout, upsampled", pooled]
    fig = Figure(figsize=(6.8, 1.7 * len(probs) + 0.7), layout="constrained")
    axes = fig.subplots(len(probs), 4, squeeze=False)
    for r in range(len(probs)):
        face, k = gray(inputs.faces[r]), int(probs[r].argmax())
        show(axes[r, 0], face)
        axes[r, 0].set_ylabel(f"true {inputs.labels[r]}\npred {names[k]} {probs[r, k]:.2f}", fontsize=8)
        _overlay(axes[r, 1], face, maps["rollout"][r], "nearest")
        _overlay(axes[r, 2], face, maps["rollout"][r], "bilinear")
        _overlay(axes[r, 3], face, maps["last"][r], "bilinear")
    for ax, name in zip(axes[0], cols):
        ax.set_title(name, fontsize=9)
    fig.suptitle(f"{inputs.about}\n{inputs.source}; each map scaled to [0, 1] on its own", fontsize=8)
    save_small(fig, path)
    return {"probs": probs, "rollout": maps["rollout"], "last": maps["last"]}


def attention_heads_figure(inputs: Inputs, path) -> dict:
    """One face: the last block's attention of the pooled token for each head, then their average (what
    attention maps show) -- heads that look at different things are averaged away.
    Returns {"heads": (heads, gh, gw), "mean": (gh, gw)}."""
    model, cfg = inputs.model, inputs.model.config
    _, maps = attention_of(model, inputs.faces[:1])
    last = maps["attention"][-1]  # (1, heads, T, T)
    # last_layer_attention averages heads inside: give it one head at a time
    heads = torch.cat([last_layer_attention([last[:, h:h + 1]], cfg.grid, cfg.num_prefix_tokens)
                       for h in range(last.shape[1])])  # (heads, gh, gw)
    face = gray(inputs.faces[0])
    fig = Figure(figsize=(min(1.5 * (len(heads) + 2), 11), 2.2), layout="constrained")
    axes = fig.subplots(1, len(heads) + 2)
    show(axes[0], face, inputs.labels[0])
    for h, heat in enumerate(heads):
        _overlay(axes[h + 1], face, heat, "bilinear", f"head {h + 1}")
    _overlay(axes[-1], face, maps["last"][0], "bilinear", "heads averaged")
    row = "CLS row" if cfg.num_prefix_tokens else "mean row"
    fig.suptitle(f"last block, {row}, one map per head (each scaled to [0, 1]); {inputs.about}", fontsize=8)
    save_small(fig, path)
    return {"heads": heads, "mean": maps["last"][0]}


# ----------------------------------------------------------------------- (h) the architecture, shape by shape

# The stages drawn, in forward order: (key of stage_shapes, what happens there).
STAGES = (
    ("input", "input image"),
    ("grid", "stem: image -> grid of D-dim vectors"),
    ("tokens", "flatten the grid row by row: one token per cell"),
    ("embedded", "prepend [CLS] (if any), add position embeddings"),
    ("qkv", "LayerNorm, then one Linear makes q, k, v for all heads"),
    ("attention", "softmax(q k^T / sqrt(head_dim)) per head"),
    ("attended", "probs @ v, merge heads, proj"),
    ("mlp", "LayerNorm, fc1 + GELU (the MLP widens)"),
    ("block", "fc2: back to D"),
    ("encoded", "final LayerNorm over every token"),
    ("pooled", "pool: one vector per image"),
    ("logits", "head: one score per class"),
)
BLOCK_STAGES = ("qkv", "attention", "attended", "mlp", "block")  # inside one encoder block
# The block's two skip connections (Eq. 2 and 3 of the ViT paper): the stream entering the first stage of each
# pair bypasses the branch and is added to the output of the second stage.
SKIPS = (("qkv", "attended"), ("mlp", "block"))


@torch.no_grad()
def stage_shapes(model: ViT, batch: int = 2) -> dict:
    """{stage: shape} of a forward pass through ``model`` (keys of STAGES, plus "stem_convs" for a conv
    stem and "pre_logits" for a representation layer), read from the pass itself: forward hooks on the
    stem and on block 0's layers, and the model's out dict. Runs on a meta-device model (shapes only).
    Also {"depth": the number of blocks the pass went through}."""
    cfg = model.config
    device = next(model.parameters()).device
    x = torch.zeros(batch, cfg.in_chans, *cfg.image_hw, device=device)  # (B, C, H, W)
    seen: dict = {}

    def keep(name, pick=lambda out: out):
        return lambda module, args, out: seen.__setitem__(name, tuple(pick(out).shape))

    first = model.blocks[0]
    hooks = {"grid": model.patch_embed.proj, "tokens": model.patch_embed, "embedded": model.pos_drop,
             "qkv": first.attn.qkv, "mlp": first.mlp.fc1}
    handles = [module.register_forward_hook(keep(name)) for name, module in hooks.items()]
    handles.append(first.attn.register_forward_hook(keep("attended", lambda out: out[0])))  # (out, probs)
    if cfg.stem == "conv":
        handles.append(model.patch_embed.convs.register_forward_hook(keep("stem_convs")))
    training = model.training
    try:
        logits, out = model.eval()(x, attention=True)
    finally:
        model.train(training)
        for handle in handles:
            handle.remove()
    shapes = {"input": tuple(x.shape), **seen, "attention": tuple(out["attention"][0].shape),
              "block": tuple(out["tokens"][0].shape), "encoded": tuple(out["encoded"].shape),
              "pooled": tuple(out["pooled"].shape), "logits": tuple(logits.shape), "depth": len(out["tokens"])}
    if model.pre_logits is not None:
        shapes["pre_logits"] = tuple(out["pre_logits"].shape)
    return shapes


def shape_label(shape: tuple) -> str:
    """(2, 197, 768) -> "(B, 197, 768)": the batch axis by its name."""
    return "(" + ", ".join(["B", *map(str, shape[1:])]) + ")"


def stage_labels(model: ViT, shapes: dict) -> dict:
    """{stage: the text drawn beside it}: the shape, and for the stem and the pooling what this model does."""
    cfg = model.config
    labels = {name: shape_label(shapes[name]) for name, _ in STAGES}
    if cfg.stem == "conv":
        labels["grid"] += (f"\n{cfg.stem_depth} x (3x3 conv, BN, GELU) -> {shape_label(shapes['stem_convs'])}, "
                           "then 1x1 conv")
    else:
        labels["grid"] += f"\none {cfg.patch_size}x{cfg.patch_size} conv, stride {cfg.patch_size}"
    labels["block"] += f"\nrepeated: {shapes['depth']} blocks, same shape"
    labels["pooled"] += {"token": "\nthe [CLS] token", "gap": "\nmean of the patch tokens",
                         "map": "\nattention pooling (MAP head)"}[cfg.classifier]
    if "pre_logits" in shapes:
        labels["pooled"] += f", tanh(pre_logits) {shape_label(shapes['pre_logits'])}"
    return labels


def architecture_models() -> list[tuple[str, ViT]]:
    """ViT-B/16 at 224 (Google's ImageNet model) and the FER model of the "gpu" training profile,
    built on the meta device: their shapes without their weights."""
    profile = PROFILES["gpu"]
    with torch.device("meta"):
        b16 = create_model("ViT-B_16")
        fer = create_model(profile["model"], image_size=profile["image_size"], num_classes=len(LABELS),
                           **profile["model_overrides"])
    return [("ViT-B/16 @ 224, ImageNet (1000 classes)", b16),
            (f"FER: {profile['model']} {fer.config.stem} stem @ {profile['image_size']}, gray, {len(LABELS)} classes "
             "(gpu profile)", fer)]


def architecture_figure(inputs: Inputs | None, path, *, models: list[tuple[str, ViT]] | None = None) -> dict:
    """A block diagram of the ViT: one box per stage (encoder block internals in a frame repeated
    depth times, its two skip connections drawn as arrows into "+"), each model's shapes beside it, read
    by stage_shapes from a real forward pass. Returns {"shapes": [per model], "labels": [per model:
    {stage: text}], "texts": every string drawn, "skips": the (from, to) stages of each skip drawn}."""
    models = architecture_models() if models is None else models
    shapes = [stage_shapes(m) for _, m in models]
    labels = [stage_labels(m, s) for (_, m), s in zip(models, shapes)]
    rows = len(STAGES)
    row = {name: i for i, (name, _) in enumerate(STAGES)}
    fig = Figure(figsize=(11.0, 8.0), layout="constrained")
    ax = fig.add_subplot()
    ax.set_xlim(0.4, 11.6)
    ax.set_ylim(rows + 0.2, -1.4)
    ax.set_axis_off()
    top, bottom = row[BLOCK_STAGES[0]], row[BLOCK_STAGES[-1]]
    ax.add_patch(Rectangle((3.7, top - 0.5), 4.6, bottom - top + 1.12, fill=False, ls="--", ec="tab:blue"))
    ax.text(8.25, bottom + 0.5, "one encoder block (pre-norm)", ha="right", va="center", fontsize=7.5,
            color="tab:blue")
    left, right, mid = 4.0, 7.7, 5.85  # the boxes, and the main line through them
    adds = {row[to] + 0.5 for _, to in SKIPS}  # where a skip is added: just below its last stage
    for i, (name, what) in enumerate(STAGES):
        ax.add_patch(Rectangle((left, i - 0.32), right - left, 0.64,
                               fc="#dde8f4" if name in BLOCK_STAGES else "#eeeeee", ec="0.4", lw=0.8))
        ax.text(mid, i, what, ha="center", va="center", fontsize=7.5)
        if i:
            start = i - 0.5 + 0.12 if i - 0.5 in adds else i - 0.68  # from its "+", or from the box above
            ax.annotate("", xy=(mid, i - 0.32), xytext=(mid, start), arrowprops=dict(arrowstyle="->", lw=0.8))
        for (x, ha), label in zip(((3.6, "right"), (8.4, "left")), (lab[name] for lab in labels)):
            ax.text(x, i, label, ha=ha, va="center", fontsize=7.5, family="monospace")
    skips = []
    for (first, last), x in zip(SKIPS, (right + 0.35, left - 0.17)):  # the stream, around the branch, to a "+"
        y0, y1, side = row[first] - 0.5, row[last] + 0.5, 1 if x > mid else -1
        ax.plot([mid, x, x], [y0, y0, y1], color="tab:red", lw=1.0)
        ax.annotate("", xy=(mid + side * 0.12, y1), xytext=(x, y1),
                    arrowprops=dict(arrowstyle="->", color="tab:red", lw=1.0))
        ax.annotate("", xy=(mid, y1 - 0.12), xytext=(mid, row[last] + 0.32), arrowprops=dict(arrowstyle="->", lw=0.8))
        ax.plot(mid, y1, marker="o", ms=11, mfc="white", mec="0.2", mew=0.8, zorder=3)  # round in any aspect
        ax.text(mid, y1, "+", ha="center", va="center", fontsize=9, zorder=4)
        ax.text(x + 0.05, (y0 + y1) / 2, "skip", rotation=90, ha="left", va="center", fontsize=7, color="tab:red")
        skips.append((first, last))
    for (x, ha), (title, _) in zip(((3.6, "right"), (8.4, "left")), models):
        ax.text(x, -0.9, title, ha=ha, va="center", fontsize=8.5, weight="bold")
    fig.suptitle("The Vision Transformer, stage by stage: shapes of one batch of B images, read from a forward pass "
                 "of each model (docs/make_figures.py)", fontsize=9)
    save_small(fig, path)
    return {"shapes": shapes, "labels": labels, "texts": [t.get_text() for t in ax.texts], "skips": skips}


# ------------------------------------------------------------------------------------------ CLI

FIGURES = {  # name -> drawing function; the PNG is <out>/<name>.png
    "patches": patches_figure,
    "pos_embed": pos_embed_figure,
    "augment": augment_figure,
    "cutmix": cutmix_figure,
    "lr_schedule": lr_schedule_figure,
    "attention": attention_figure,
    "attention_heads": attention_heads_figure,
    "architecture": architecture_figure,
}


def figure_names(text: str) -> list[str]:
    """argparse type of --only: comma-separated names from FIGURES."""
    import argparse

    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in FIGURES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown figure {', '.join(unknown) or repr(text)}; "
                                         f"choose from {', '.join(FIGURES)}")
    return names


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python docs/make_figures.py", description=(
        "Draw the figures of docs/ from minivit's own code as small PNGs. OVERWRITES its own figures "
        f"(<out>/<name>.png for the names {', '.join(FIGURES)}) in --out: regenerating them is its job; "
        "no other file there is touched."))
    p.add_argument("--checkpoint", default=None, help="a trained model (a run folder or a .safetensors) for the "
                   "attention and position-embedding figures (default: an untrained model, said in the titles)")
    p.add_argument("--data", default=None, help="faces: a dataset folder or csv (its test split), or 'synthetic' "
                   f"(default: {DEFAULT_DATA} when it exists, else synthetic faces)")
    p.add_argument("--out", default=str(DEFAULT_OUT), help=f"folder for the PNGs (default: {DEFAULT_OUT})")
    p.add_argument("--only", type=figure_names, default=list(FIGURES), metavar="NAME,...",
                   help=f"draw only these (from: {', '.join(FIGURES)})")
    p.add_argument("--faces", type=integer(at_least=2, at_most=7), default=4,
                   help="faces in the attention figure, 2 to 7 (default 4)")
    return p


def make_figures(names: list[str], inputs: Inputs, out: Path, faces: int = 4) -> dict:
    """Draw each named figure into out/<name>.png; returns {name: what its drawing function returned}."""
    out.mkdir(parents=True, exist_ok=True)
    data = {}
    for name in names:
        kwargs = {"faces": faces} if name == "attention" else {}
        data[name] = FIGURES[name](inputs, out / f"{name}.png", **kwargs)
        print(out / f"{name}.png")
    return data


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {args.out}: exists and is not a folder")
    faces, labels, source = load_faces(args.data, n=max(6, args.faces))  # the cheaper check first
    model, about, trained = load_model(args.checkpoint)
    make_figures(args.only, Inputs(model, about, trained, faces, labels, source), out, args.faces)
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
