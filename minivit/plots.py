"""PNG figures drawn with Pillow: confusion matrix, training curves, attention maps.

No matplotlib: a training report needs three kinds of picture and each is a few dozen
lines of rectangles, lines and text. Every function takes plain Python/NumPy/torch data
and a path, writes one PNG and returns the path.

Example:
    >>> import tempfile, os
    >>> from minivit.plots import confusion_matrix_png
    >>> p = confusion_matrix_png([[5, 1], [2, 7]], ["cat", "dog"], os.path.join(tempfile.mkdtemp(), "cm.png"))
    >>> os.path.getsize(p) > 0
    True
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Colour scale as data: anchor colours of a viridis-like map, interpolated linearly.
COLORMAP = (
    (0.00, (68, 1, 84)),
    (0.25, (59, 82, 139)),
    (0.50, (33, 145, 140)),
    (0.75, (94, 201, 98)),
    (1.00, (253, 231, 37)),
)
# One colour per curve in the training-curves plot.
CURVE_COLORS = {"train": (31, 119, 180), "val": (255, 127, 14), "val_ema": (44, 160, 44)}


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)  # a scalable font where Pillow has FreeType
    except TypeError:  # very old Pillow: fixed bitmap font
        return ImageFont.load_default()


def _text_size(draw: ImageDraw.ImageDraw, text: str, font) -> tuple[int, int]:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return right - left, bottom - top


def colormap(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] to RGB uint8 with the COLORMAP anchors: (...) -> (..., 3)."""
    values = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0)
    stops = np.array([s for s, _ in COLORMAP])
    colors = np.array([c for _, c in COLORMAP], dtype=np.float64)
    rgb = np.stack([np.interp(values, stops, colors[:, i]) for i in range(3)], axis=-1)
    return rgb.round().astype(np.uint8)


def _save(img: Image.Image, path) -> str:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return str(path)


def confusion_matrix_png(cm, classes, path, *, normalize: bool = True, title: str = "Confusion matrix") -> str:
    """Draw a confusion matrix (rows: true class, columns: predicted) as a PNG.

    Cells are coloured by the row-normalised rate (so rare classes are as readable as
    common ones) and show the count and, with ``normalize``, the rate in percent.
    """
    cm = np.asarray(cm, dtype=np.int64)
    k = cm.shape[0]
    rates = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    font, small, big = _font(14), _font(11), _font(18)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_w = max(_text_size(probe, c, font)[0] for c in classes) + 16
    cell = 64
    left, top = label_w + 30, 60
    bar_w = 20
    width = left + k * cell + 40 + bar_w + 50
    height = top + k * cell + label_w + 40
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    draw.text((left, 15), title, fill="black", font=big)

    colors = colormap(rates)
    for i in range(k):
        for j in range(k):
            x0, y0 = left + j * cell, top + i * cell
            color = tuple(int(c) for c in colors[i, j])
            draw.rectangle([x0, y0, x0 + cell - 1, y0 + cell - 1], fill=color, outline="white")
            # Dark text on light cells, light text on dark ones.
            ink = "black" if sum(color) > 400 else "white"
            lines = [str(cm[i, j])] + ([f"{100 * rates[i, j]:.0f}%"] if normalize else [])
            for n, line in enumerate(lines):
                tw, th = _text_size(draw, line, small if n else font)
                ty = y0 + cell / 2 - (len(lines) * 16) / 2 + n * 18
                draw.text((x0 + (cell - tw) / 2, ty), line, fill=ink, font=small if n else font)

    # Row labels (true class) on the left, column labels (predicted) rotated below.
    for i, name in enumerate(classes):
        tw, th = _text_size(draw, name, font)
        draw.text((left - tw - 8, top + i * cell + (cell - th) / 2), name, fill="black", font=font)
        tw, th = _text_size(draw, name, font)
        label = Image.new("RGBA", (tw + 4, th + 6), (255, 255, 255, 0))
        ImageDraw.Draw(label).text((0, 0), name, fill="black", font=font)
        label = label.rotate(90, expand=True)
        img.paste(label, (left + i * cell + (cell - label.width) // 2, top + k * cell + 6), label)
    axis_y = _text_size(draw, "true", font)[0]
    draw.text((8, top + k * cell / 2 - axis_y / 2), "true", fill="gray", font=font)
    draw.text((left + k * cell / 2 - 30, height - 24), "predicted", fill="gray", font=font)

    # Colour bar: 0% at the bottom, 100% at the top.
    bx = left + k * cell + 30
    ramp = colormap(np.linspace(1, 0, k * cell))
    for y, color in enumerate(ramp):
        draw.line([bx, top + y, bx + bar_w, top + y], fill=tuple(int(c) for c in color))
    draw.rectangle([bx, top, bx + bar_w, top + k * cell - 1], outline="black")
    for frac, text in ((1.0, "100%"), (0.5, "50%"), (0.0, "0%")):
        y = top + (1 - frac) * (k * cell - 1)
        draw.text((bx + bar_w + 4, y - 7), text, fill="black", font=small)
    return _save(img, path)


def _panel(draw, box, series: dict, title: str, font, small, ylim=None):
    """Draw one line chart inside box=(x0, y0, x1, y1). series: name -> list of (x, y)."""
    x0, y0, x1, y1 = box
    pts = [p for s in series.values() for p in s if p[1] is not None and np.isfinite(p[1])]
    draw.text((x0, y0 - 28), title, fill="black", font=font)
    if not pts:
        draw.rectangle(box, outline="black")
        return
    xs = [p[0] for p in pts]
    xmin, xmax = min(xs), max(xs)
    if xmax == xmin:
        xmax = xmin + 1
    ymin, ymax = ylim or (min(p[1] for p in pts), max(p[1] for p in pts))
    if ymax - ymin < 1e-9:
        ymin, ymax = ymin - 0.5, ymax + 0.5
    pad = 0.05 * (ymax - ymin)
    ymin, ymax = ymin - pad, ymax + pad

    def to_px(x, y):
        return x0 + (x - xmin) / (xmax - xmin) * (x1 - x0), y1 - (y - ymin) / (ymax - ymin) * (y1 - y0)

    for frac in np.linspace(0, 1, 5):  # horizontal grid lines with their values
        y = ymin + frac * (ymax - ymin)
        _, py = to_px(xmin, y)
        draw.line([x0, py, x1, py], fill=(225, 225, 225))
        draw.text((x0 - 48, py - 7), f"{y:.3g}", fill="black", font=small)
    for x in sorted(set(int(v) for v in xs)):  # integer epoch ticks
        px, _ = to_px(x, ymin)
        draw.text((px - 4, y1 + 4), str(x), fill="black", font=small)
    for n, (name, s) in enumerate(series.items()):
        s = [p for p in s if p[1] is not None and np.isfinite(p[1])]
        color = CURVE_COLORS.get(name, (120, 120, 120))
        line = [to_px(x, y) for x, y in s]
        if len(line) > 1:
            draw.line(line, fill=color, width=2)
        for px, py in line:
            draw.ellipse([px - 3, py - 3, px + 3, py + 3], fill=color)
        lx = x0 + 110 + 85 * n  # legend above the box, beside the title: never over the data
        draw.line([lx, y0 - 16, lx + 20, y0 - 16], fill=color, width=3)
        draw.text((lx + 25, y0 - 23), name, fill="black", font=small)
    draw.rectangle(box, outline="black")


def curves_png(history: list[dict], path, *, title: str = "Training curves") -> str:
    """Loss and accuracy per epoch, one panel each, from a list of per-epoch dicts.

    Each dict has "epoch" and any of train_loss, train_acc, val_loss, val_acc, val_ema_acc.
    """
    font, small = _font(15), _font(11)
    panel_w, panel_h = 420, 280
    img = Image.new("RGB", (2 * panel_w + 200, panel_h + 130), "white")
    draw = ImageDraw.Draw(img)
    draw.text((20, 8), title, fill="black", font=_font(18))

    def series(key):
        return [(h["epoch"], h.get(key)) for h in history if h.get(key) is not None]

    loss = {"train": series("train_loss"), "val": series("val_loss")}
    acc = {"train": series("train_acc"), "val": series("val_acc"), "val_ema": series("val_ema_acc")}
    _panel(draw, (70, 70, 70 + panel_w, 70 + panel_h), {k: v for k, v in loss.items() if v}, "loss", font, small)
    bx = 70 + panel_w + 90
    _panel(draw, (bx, 70, bx + panel_w, 70 + panel_h), {k: v for k, v in acc.items() if v}, "accuracy", font, small)
    draw.text((70 + panel_w / 2 - 20, 70 + panel_h + 24), "epoch", fill="gray", font=font)
    draw.text((bx + panel_w / 2 - 20, 70 + panel_h + 24), "epoch", fill="gray", font=font)
    return _save(img, path)


def _head_mean(a) -> np.ndarray:
    """One layer's attention as float64 (Q, T), heads averaged: from (T, T), (heads, Q, T) or (1, heads, Q, T)."""
    a = np.asarray(a.detach().float().cpu() if hasattr(a, "detach") else a, dtype=np.float64)
    return a.reshape(-1, a.shape[-2], a.shape[-1]).mean(axis=0)  # (Q, T)


def rollout_matrix(attentions) -> np.ndarray:
    """Attention rollout (Abnar & Zuidema, 2020) of one image as a (T, T) matrix whose rows sum to 1.

    Row i says how much of token i's final representation flows from each input token. Per
    layer: heads averaged, the residual path added as 0.5 * identity, rows renormalised; the
    layers are multiplied, last layer on the left (x_L = A_L ... A_1 x_0).

    >>> a = np.array([[[0.0, 1.0], [0.0, 1.0]]])  # one head: both tokens attend to token 1
    >>> rollout_matrix([a]).tolist()
    [[0.5, 0.5], [0.0, 1.0]]
    """
    rollout = None
    for a in attentions:
        a = _head_mean(a)  # (T, T)
        a = 0.5 * a + 0.5 * np.eye(a.shape[0])
        a = a / a.sum(axis=-1, keepdims=True)  # rows of low-precision (bf16/fp16) maps sum to 1 again
        rollout = a if rollout is None else a @ rollout  # (T, T)
    return rollout


def attention_rollout(attentions, num_prefix: int, grid: tuple[int, int]) -> np.ndarray:
    """Attention rollout of one image: how much each patch feeds the classifier, as a (gh, gw) map in [0, 1].

    attentions: per-layer probabilities, each (heads, T, T) or (1, heads, T, T). Which row of the
    rollout is the classifier's input depends on the pooling:
      * a CLS token (num_prefix > 0): its row;
      * global average pooling (no prefix): the mean of all rows, exactly, since the pooled vector
        is the mean of the final tokens;
      * attention pooling (a MAP head): if the list ends with the pooling attention, a non-square
        (heads, Q, T) map, its head-averaged weights times the rollout of the square layers.
    Prefix tokens are dropped and the patch values are scaled to [0, 1] (min to max).
    """
    attentions = list(attentions)
    pool = None
    last = attentions[-1].shape if attentions else None
    if last is not None and last[-2] != last[-1]:  # (.., Q, T) with Q != T: a pooling attention
        pool = _head_mean(attentions.pop()).mean(axis=0)  # (T,) mean over the Q probe queries
    rollout = rollout_matrix(attentions)  # (T, T)
    if pool is not None:
        row = pool @ rollout  # (T,)
    else:
        row = rollout[0] if num_prefix else rollout.mean(axis=0)  # (T,)
    patch = row[num_prefix:].reshape(grid)  # (gh, gw)
    patch = patch - patch.min()
    return patch / max(patch.max(), 1e-12)


def _to_pil(image) -> Image.Image:
    """uint8 image (C, H, W) / (H, W, C) / (H, W) tensor or array, or a PIL image -> RGB PIL image."""
    if not isinstance(image, Image.Image):
        arr = np.asarray(image.cpu() if hasattr(image, "cpu") else image)
        if arr.ndim == 3 and arr.shape[0] in (1, 3):
            arr = arr.transpose(1, 2, 0)  # (H, W, C)
        image = Image.fromarray(arr.squeeze().astype(np.uint8))
    return image.convert("RGB")


def attention_grid_png(images, heats, captions, path, *, cols: int = 4, cell: int = 144, alpha: float = 0.5,
                       title: str = "Attention maps", subtitle: str = "") -> str:
    """A grid of (image, heat-map overlay) pairs, each under a caption, written as one PNG.

    images: uint8 images (C, H, W); heats: (gh, gw) maps in [0, 1]; captions: per image a list of
    (text, colour) lines. Panels are ``cell`` pixels high (width follows the image's aspect).

    >>> import tempfile, os
    >>> imgs, heats = [np.zeros((1, 8, 8), np.uint8)] * 2, [np.eye(2)] * 2
    >>> p = attention_grid_png(imgs, heats, [[("a", "black")], [("b", "red")]], os.path.join(tempfile.mkdtemp(), "a.png"))
    >>> Image.open(p).size
    (720, 252)
    """
    font, small, big = _font(13), _font(11), _font(17)
    n = len(images)
    cols = max(1, min(cols, n))
    rows = max(1, -(-n // cols))
    h0, w0 = _to_pil(images[0]).size[::-1] if n else (1, 1)
    pw = max(1, round(cell * w0 / h0))  # panel width: keep the image's aspect
    lines = max((len(c) for c in captions), default=0)
    cap_h, gap, pad, col_gap = 6 + 16 * lines, 6, 14, 30  # col_gap > gap: pairs read as pairs
    cell_w, cell_h = 2 * pw + gap, cap_h + cell
    head = 78 if subtitle else 58
    width = max(2 * pad + cols * cell_w + (cols - 1) * col_gap, 720)
    height = head + rows * (cell_h + pad) + pad
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    draw.text((pad, 10), title, fill="black", font=big)
    if subtitle:
        draw.text((pad, 34), subtitle, fill=(90, 90, 90), font=small)
    # colour bar, top right: what the overlay colours mean
    bar_w, bx, by = 120, width - pad - 120 - 34, 14
    for x, color in enumerate(colormap(np.linspace(0, 1, bar_w))):
        draw.line([bx + x, by, bx + x, by + 12], fill=tuple(int(c) for c in color))
    draw.rectangle([bx, by, bx + bar_w - 1, by + 12], outline="black")
    draw.text((bx - 30, by), "low", fill="black", font=small)
    draw.text((bx + bar_w + 4, by), "high", fill="black", font=small)
    for k, (image, heat, caption) in enumerate(zip(images, heats, captions)):
        x0 = pad + (k % cols) * (cell_w + col_gap)
        y0 = head + (k // cols) * (cell_h + pad)
        for j, (text, color) in enumerate(caption):
            draw.text((x0, y0 + 16 * j), text, fill=color, font=font)
        base = _to_pil(image).resize((pw, cell), Image.BICUBIC)
        heat_img = Image.fromarray(colormap(heat)).resize((pw, cell), Image.BILINEAR)
        img.paste(base, (x0, y0 + cap_h))
        img.paste(Image.blend(base, heat_img, alpha), (x0 + pw + gap, y0 + cap_h))
    return _save(img, path)


def attention_png(image, heat: np.ndarray, path, *, alpha: float = 0.5, size: int = 224, title: str = "") -> str:
    """Overlay a (gh, gw) heat map in [0, 1] on an image (uint8 (C, H, W) tensor/array or PIL)."""
    base = _to_pil(image).resize((size, size), Image.BICUBIC)
    heat_img = Image.fromarray(colormap(heat)).resize((size, size), Image.BILINEAR)
    overlay = Image.blend(base, heat_img, alpha)
    canvas = Image.new("RGB", (2 * size + 30, size + (40 if title else 20)), "white")
    canvas.paste(base, (10, canvas.height - size - 10))
    canvas.paste(overlay, (size + 20, canvas.height - size - 10))
    if title:
        ImageDraw.Draw(canvas).text((10, 6), title, fill="black", font=_font(15))
    return _save(canvas, path)


def attention_map_png(model, image_u8, path, *, transform=None, title: str = "") -> str:
    """Run ``model.forward_with_attention`` on one uint8 image (C, H, W) and save the rollout overlay.

    ``transform`` maps a uint8 batch (1, C, H, W) to the model's float input; by default
    minivit.augment.eval_transform at the model's image size.
    """
    import torch

    if transform is None:
        from minivit.augment import AugmentConfig, eval_transform

        size = model.config.image_size
        size = size if isinstance(size, int) else size[0]
        cfg = AugmentConfig(image_size=size)
        transform = lambda x: eval_transform(x, cfg)  # noqa: E731
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    with torch.no_grad():
        x = transform(torch.as_tensor(image_u8)[None].to(device))  # (1, 3, S, S)
        _, attentions = model.forward_with_attention(x)
    model.train(was_training)
    heat = attention_rollout(attentions, model.config.num_prefix_tokens, tuple(model.config.grid))
    return attention_png(image_u8, heat, path, title=title)


__all__ = [
    "colormap", "confusion_matrix_png", "curves_png", "rollout_matrix", "attention_rollout", "attention_png",
    "attention_grid_png", "attention_map_png",
]
