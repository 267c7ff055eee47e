"""PNG figures with matplotlib: confusion matrix, training curves, attention overlays.

matplotlib chooses the ticks, lays out the labels and draws the text, so a 300-epoch curve stays
as readable as a 3-epoch one. Figures are built as ``matplotlib.figure.Figure`` objects rendered
by the Agg canvas: no pyplot, so no global figure state and no GUI backend, which matters inside a
training loop or a web server. Each ``*_png`` function writes one small PNG (100 dpi) atomically
(temp file + os.replace) and returns its path; ``*_figure`` functions return the Figure itself
(for notebooks, or to add to it).

Small files, at the same legibility (a run's report stays under 150 KB a picture): every PNG is
written with Pillow's optimised deflate, and one that would still take more than PALETTE_ABOVE
bytes -- the photos of the attention maps -- with a 256-colour palette instead; an attention overlay
is blended at the image's own resolution (the pixels the model saw) and enlarged without
smoothing, which both shows the model's input as it is and compresses three times better.

Example:
    >>> import tempfile, os
    >>> from PIL import Image
    >>> p = confusion_matrix_png([[5, 1], [2, 7]], ["cat", "dog"], os.path.join(tempfile.mkdtemp(), "cm.png"))
    >>> Image.open(p).size
    (400, 360)
"""

from __future__ import annotations

import io
import textwrap
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image

from ..common.files import atomic_write

DPI = 100  # small files: a report holds a few of them per run
# A PNG larger than this (bytes) with its exact colours is written with a 256-colour palette (median cut):
# charts stay exact, the photos of the attention maps shrink ~3x with no visible change but slight banding.
PALETTE_ABOVE = 100_000
MATRIX_CMAP = "Blues"  # light = rare, dark = frequent; counts stay legible on both ends
ATTENTION_CMAP = "turbo"  # a rainbow map with even lightness steps (jet without its false edges)
# One colour per series in the training curves (matplotlib's default cycle, named).
SERIES_COLORS = {"train": "tab:blue", "val": "tab:orange", "val_ema": "tab:green"}


def save_png(fig: Figure, path) -> str:
    """Render ``fig`` with Agg and write it to ``path`` atomically, small (see the module docstring);
    returns the path as a string."""
    FigureCanvasAgg(fig)  # attach the Agg canvas: rendering needs no display and no pyplot
    rendered = io.BytesIO()
    fig.savefig(rendered, format="png", dpi=DPI)
    with Image.open(rendered) as image:
        image = image.convert("RGB")  # the figure is opaque: its alpha channel is all 255
    exact = io.BytesIO()
    image.save(exact, format="PNG", optimize=True)
    if exact.tell() > PALETTE_ABOVE:
        small = io.BytesIO()
        image.quantize(256, method=Image.Quantize.MEDIANCUT).save(small, format="PNG", optimize=True)
        exact = small
    atomic_write(Path(path), lambda tmp: Path(tmp).write_bytes(exact.getvalue()))
    return str(path)


def _array(x) -> np.ndarray:
    """A torch tensor, array or PIL image as a numpy array (on the CPU, float32 for floats)."""
    if hasattr(x, "detach"):
        x = x.detach().float().cpu() if x.is_floating_point() else x.detach().cpu()
    return np.asarray(x)


def _image(image) -> np.ndarray:
    """uint8 image (C, H, W) / (H, W, C) / (H, W) tensor or array, or a PIL image -> (H, W) or (H, W, 3)."""
    arr = _array(image)
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = arr.transpose(1, 2, 0)  # (H, W, C)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]  # (H, W)
    return arr.astype(np.uint8)


def _color(c):
    """A matplotlib colour; (r, g, b) in 0..255 (Pillow style) is scaled to 0..1."""
    if isinstance(c, (tuple, list)) and any(v > 1 for v in c):
        return tuple(v / 255 for v in c)
    return c


# -------------------------------------------------------------------------------- confusion matrix

def _with_subtitle(title: str, subtitle: str, inches: float) -> str:
    """The title, then the subtitle wrapped to the figure's width: what the figure measured (the split,
    its source and size, "synthetic faces") has to be readable in the picture itself."""
    if not subtitle:
        return title
    return title + "\n" + textwrap.fill(subtitle, width=max(30, int(inches * 13)))  # ~13 characters an inch at 9 pt


def confusion_matrix_figure(cm, classes, *, show_rates: bool = True, title: str = "Confusion matrix",
                            subtitle: str = "") -> Figure:
    """Rows: true class, columns: predicted. Colours are the row-normalised rate (recall per cell), so
    a rare class reads as clearly as a common one, whatever ``show_rates``; each cell shows its count
    and, with ``show_rates``, that rate in % below it. ``subtitle`` (e.g. which split of which data, how
    many images) goes under the title in smaller type."""
    cm = np.asarray(_array(cm), dtype=np.int64)
    k = cm.shape[0]
    rates = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)  # (K, K): rows sum to 1
    side = max(4.0, 0.7 * k + 2.2)  # inches: cells of ~0.7 in plus room for the labels
    fig = Figure(figsize=(side, side * 0.9), layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(rates, cmap=MATRIX_CMAP, vmin=0, vmax=1)
    font = 9 if k <= 8 else 7
    for i in range(k):
        for j in range(k):
            text = f"{cm[i, j]}\n{100 * rates[i, j]:.0f}%" if show_rates else f"{cm[i, j]}"
            ax.text(j, i, text, ha="center", va="center", fontsize=font,
                    color="white" if rates[i, j] > 0.5 else "black")  # dark cells get light text
    ax.set_xticks(range(k), labels=list(classes), rotation=40, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(k), labels=list(classes))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(_with_subtitle(title, subtitle, side), fontsize=10 if subtitle else None)
    fig.colorbar(im, ax=ax, shrink=0.8, label="fraction of the true class")
    return fig


def confusion_matrix_png(cm, classes, path, *, show_rates: bool = True, title: str = "Confusion matrix",
                         subtitle: str = "") -> str:
    """Write the confusion matrix (see confusion_matrix_figure) as a PNG; returns the path."""
    return save_png(confusion_matrix_figure(cm, classes, show_rates=show_rates, title=title, subtitle=subtitle), path)


# -------------------------------------------------------------------------------- training curves

def _series(history: list[dict], key: str) -> tuple[list, list]:
    pts = [(h["epoch"], h[key]) for h in history if h.get(key) is not None and np.isfinite(h[key])]
    return [p[0] for p in pts], [p[1] for p in pts]


def curves_figure(history: list[dict], *, title: str = "Training curves", subtitle: str = "") -> Figure:
    """Loss, accuracy and learning rate per epoch, one panel each, from a list of per-epoch dicts;
    ``subtitle`` (the data and the split "val" is) goes under the title in smaller type.

    Each dict has "epoch" and any of train_loss, val_loss, val_ema_loss, train_acc, val_acc,
    val_ema_acc, lr. Ticks are picked by matplotlib's locators (integers, at most ~8 per axis), so
    the axes stay readable at any number of epochs; markers are drawn only while they fit.
    """
    fig = Figure(figsize=(13, 4), layout="constrained")
    axes = fig.subplots(1, 3)
    marker = "o" if len(history) <= 30 else None
    panels = (("loss", "_loss"), ("accuracy", "_acc"))
    for ax, (name, suffix) in zip(axes, panels):
        for series, color in SERIES_COLORS.items():
            x, y = _series(history, series + suffix)
            if x:
                ax.plot(x, y, color=color, marker=marker, markersize=3, label=series.replace("_", " "))
        ax.set_title(name)
        if ax.lines:
            ax.legend(loc="best", fontsize=9)
    x, y = _series(history, "lr")
    if x:
        axes[2].plot(x, y, color="tab:purple")
        axes[2].ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    else:
        axes[2].text(0.5, 0.5, "no learning rate recorded", ha="center", va="center", transform=axes[2].transAxes)
    axes[2].set_title("learning rate (end of epoch)")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(nbins=8, integer=True))
        ax.grid(alpha=0.3)
    fig.suptitle(_with_subtitle(title, subtitle, 13), fontsize=11 if subtitle else None)
    return fig


def curves_png(history: list[dict], path, *, title: str = "Training curves", subtitle: str = "") -> str:
    """Write the training curves (see curves_figure) as a 1300 x 400 PNG; returns the path."""
    return save_png(curves_figure(history, title=title, subtitle=subtitle), path)


# -------------------------------------------------------------------------------- attention maps

def _blend(image: np.ndarray, heat, alpha: float) -> np.ndarray:
    """The (gh, gw) heat map in [0, 1], stretched bilinearly over the image's own pixels (any aspect ratio),
    coloured and blended onto it at ``alpha``: (H, W, 3) uint8, the overlay at the resolution the model saw."""
    h, w = image.shape[:2]
    rgb = np.repeat(image[..., None], 3, -1) if image.ndim == 2 else image  # (H, W, 3)
    stretched = Image.fromarray(np.ascontiguousarray(_array(heat), dtype=np.float32)).resize((w, h), Image.BILINEAR)
    colour = colormaps[ATTENTION_CMAP](np.clip(np.asarray(stretched), 0, 1))[..., :3] * 255  # (H, W, 3)
    return np.round((1 - alpha) * rgb + alpha * colour).astype(np.uint8)


def _overlay(ax, image: np.ndarray, heat, alpha: float, enlarged: bool) -> None:
    """Draw an image, with a (gh, gw) heat map in [0, 1] blended over it when given (see _blend).
    ``enlarged``: the panel has more pixels than the image, which is then shown as it is (nearest), not
    smoothed; a larger image is scaled down with matplotlib's antialiasing."""
    h, w = image.shape[:2]
    shown = image if heat is None else _blend(image, heat, alpha)
    ax.imshow(shown, cmap="gray" if shown.ndim == 2 else None, vmin=0, vmax=255, extent=(0, w, h, 0),
              interpolation="nearest" if enlarged else "antialiased")
    ax.set_axis_off()


def _attention_colorbar(fig: Figure, rect) -> None:
    cax = fig.add_axes(rect)
    bar = fig.colorbar(ScalarMappable(Normalize(0, 1), ATTENTION_CMAP), cax=cax, orientation="horizontal")
    bar.set_ticks([0, 1], labels=["low", "high"])
    bar.ax.tick_params(labelsize=8)


def attention_grid_png(images, heats, captions, path, *, cols: int = 4, cell: int = 144, alpha: float = 0.5,
                       title: str = "Attention maps", subtitle: str = "") -> str:
    """A grid of (image, heat-map overlay) pairs, each under its caption lines, as one PNG.

    images: uint8 images (C, H, W) of one size, any aspect ratio; heats: (gh, gw) maps in [0, 1];
    captions: per image a list of (text, colour) lines (matplotlib colours, or 0..255 RGB tuples).
    Panels are ``cell`` pixels high, as wide as the image's aspect ratio makes them.

    >>> import tempfile, os
    >>> from PIL import Image
    >>> imgs, heats = [np.zeros((1, 8, 16), np.uint8)] * 3, [np.eye(2)] * 3
    >>> p = attention_grid_png(imgs, heats, [[("a", "black")], [("b", "red")], [("c", "green")]],
    ...                        os.path.join(tempfile.mkdtemp(), "a.png"), cols=2, cell=100)
    >>> Image.open(p).size
    (870, 340)
    """
    n = len(images)
    cols, rows = max(1, min(cols, n)), max(1, -(-n // max(1, min(cols, n))))
    h0, w0 = _image(images[0]).shape[:2] if n else (1, 1)
    pw = max(1, round(cell * w0 / h0))  # panel width in pixels: keeps the image's aspect
    lines = max((len(c) for c in captions), default=0)
    cap, gap, pad, col_gap = 4 + 16 * lines, 6, 14, 30  # col_gap > gap: pairs read as pairs
    head = 78 if subtitle else 58
    width = max(2 * pad + cols * (2 * pw + gap) + (cols - 1) * col_gap, 600)
    height = head + rows * (cap + cell + pad) + pad
    fig = Figure(figsize=(width / DPI, height / DPI))

    def rect(x, y, w, h):  # pixels from the top-left -> figure fraction from the bottom-left
        return (x / width, 1 - (y + h) / height, w / width, h / height)

    fig.text(pad / width, 1 - 12 / height, title, fontsize=13, va="top")
    if subtitle:
        fig.text(pad / width, 1 - 38 / height, subtitle, fontsize=8, color="0.35", va="top")
    _attention_colorbar(fig, rect(width - pad - 140, 16, 120, 10))
    for k, (image, heat, caption) in enumerate(zip(images, heats, captions)):
        x0 = pad + (k % cols) * (2 * pw + gap + col_gap)
        y0 = head + (k // cols) * (cap + cell + pad)
        for j, (text, color) in enumerate(caption):
            fig.text(x0 / width, 1 - (y0 + 2 + 16 * j) / height, text, color=_color(color), fontsize=9, va="top")
        base = _image(image)
        enlarged = cell >= base.shape[0]
        _overlay(fig.add_axes(rect(x0, y0 + cap, pw, cell)), base, None, alpha, enlarged)
        _overlay(fig.add_axes(rect(x0 + pw + gap, y0 + cap, pw, cell)), base, heat, alpha, enlarged)
    return save_png(fig, path)


def attention_overlay_png(image, heatmaps: dict, path, title: str = "", *, alpha: float = 0.5,
                          panel: float = 2.6) -> str:
    """One input beside several named overlays, e.g. {"rollout": ..., "last layer CLS": ...}.

    image: uint8 (C, H, W) / (H, W, C) / (H, W) or PIL; heatmaps: name -> (gh, gw) map in [0, 1]
    (tensor or array; the grid need not be square). Each panel is ``panel`` inches wide.

    >>> import tempfile, os
    >>> from PIL import Image
    >>> p = attention_overlay_png(np.zeros((48, 48), np.uint8), {"rollout": np.eye(3), "last": np.ones((3, 3))},
    ...                           os.path.join(tempfile.mkdtemp(), "o.png"), title="a face")
    >>> Image.open(p).size
    (780, 330)
    """
    base = _image(image)
    n = 1 + len(heatmaps)
    fig = Figure(figsize=(panel * n, panel + 0.7), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, n))
    enlarged = panel * DPI >= max(base.shape[:2])  # the panel's width in pixels (its height is about the same)
    _overlay(axes[0], base, None, alpha, enlarged)
    axes[0].set_title("input", fontsize=10)
    for ax, (name, heat) in zip(axes[1:], heatmaps.items()):
        _overlay(ax, base, heat, alpha, enlarged)
        ax.set_title(name, fontsize=10)
    if heatmaps:
        bar = fig.colorbar(ScalarMappable(Normalize(0, 1), ATTENTION_CMAP), ax=list(axes[1:]), shrink=0.7,
                           location="right")
        bar.set_ticks([0, 1], labels=["low", "high"])
    if title:
        fig.suptitle(title)
    return save_png(fig, path)


__all__ = ["confusion_matrix_figure", "confusion_matrix_png", "curves_figure", "curves_png", "attention_grid_png",
           "attention_overlay_png", "save_png"]
