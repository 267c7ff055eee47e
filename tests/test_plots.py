"""minivit.plots: matplotlib PNGs that are valid, of the documented size, and show what they claim."""

import numpy as np
import pytest
from matplotlib import colormaps
from PIL import Image

from minivit.evaluate.plots import (ATTENTION_CMAP, MATRIX_CMAP, attention_grid_png, attention_overlay_png,
                           confusion_matrix_figure, confusion_matrix_png, curves_figure, curves_png, save_png)

LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def read_png(path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.format == "PNG"
        im.verify()  # a complete, uncorrupted PNG
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).astype(int)


def cmap_rgb(name, value) -> np.ndarray:
    return np.array(colormaps[name](value)[:3]) * 255


def near(arr, rgb, tol=30) -> np.ndarray:
    return np.abs(arr - np.asarray(rgb)).sum(-1) < tol  # (H, W) mask of pixels close to rgb


def cell_pixel(fig, i, j, height):
    """Pixel (row, col) of a point inside matrix cell (i, j), away from its centred text."""
    x, y = fig.axes[0].transData.transform((j + 0.35, i + 0.35))
    return int(round(height - y)), int(round(x))


def test_confusion_matrix_diagonal_is_dark_and_rows_are_normalised(tmp_path):
    # rows differ 10x in size but both are 90% right: row-normalised colours must match
    cm = np.array([[900, 100, 0], [1, 9, 0], [0, 0, 5]])
    fig = confusion_matrix_figure(cm, ["a", "b", "c"])
    path = save_png(fig, tmp_path / "cm.png")
    arr = read_png(path)
    assert arr.shape[:2] == (387, 430)  # 4.3 x 3.87 in (0.7 in per class + labels) at 100 dpi
    cells = {(i, j): arr[cell_pixel(fig, i, j, arr.shape[0])] for i in range(3) for j in range(3)}
    assert np.allclose(cells[0, 0], cells[1, 1], atol=2)  # 900/1000 and 9/10: one colour
    assert np.allclose(cells[2, 2], cmap_rgb(MATRIX_CMAP, 1.0), atol=3)  # 100% = the darkest colour
    assert np.allclose(cells[0, 2], cmap_rgb(MATRIX_CMAP, 0.0), atol=3)  # 0% = the lightest
    for i in range(3):
        for j in range(3):
            if i != j:  # every diagonal cell is darker than every off-diagonal one
                assert cells[i, j].sum() > max(cells[d, d].sum() for d in range(3)) + 100, (i, j)


def test_confusion_matrix_png_for_seven_classes(tmp_path):
    cm = np.diag([400, 30, 300, 800, 500, 350, 450])
    path = confusion_matrix_png(cm, LABELS, tmp_path / "sub" / "cm.png", title="accuracy 93%")
    arr = read_png(path)
    assert arr.shape[:2] == (639, 710)  # 0.7 in per class + labels, at 100 dpi
    # the cells span the colour scale, and the counts are printed in both light and dark ink
    assert near(arr, cmap_rgb(MATRIX_CMAP, 1.0), 10).sum() > 1000
    assert near(arr, (255, 255, 255), 3).sum() > 1000 and near(arr, (0, 0, 0), 60).sum() > 300
    assert not list(tmp_path.glob("sub/.*.tmp"))  # written atomically, nothing left behind


def history(epochs, with_val=True):
    rng = np.random.default_rng(0)
    rows = []
    for e in range(1, epochs + 1):
        row = dict(epoch=e, train_loss=2 * np.exp(-e / 60) + 0.1 * rng.random(), train_acc=1 - np.exp(-e / 50),
                   lr=1e-3 * min(1, e / 10))
        if with_val:
            row.update(val_loss=2.1 * np.exp(-e / 80) + 0.3, val_acc=0.7 * (1 - np.exp(-e / 60)),
                       val_ema_loss=2 * np.exp(-e / 80) + 0.3, val_ema_acc=0.72 * (1 - np.exp(-e / 60)))
        rows.append(row)
    return rows


def test_curves_stay_readable_at_300_epochs(tmp_path):
    fig = curves_figure(history(300))
    arr = read_png(save_png(fig, tmp_path / "curves.png"))
    assert arr.shape[:2] == (400, 1300)
    renderer = fig.canvas.get_renderer()
    loss, acc, lr = fig.axes[:3]
    for ax in (loss, acc, lr):
        lo, hi = ax.get_xlim()
        labels = [t for t in ax.get_xticklabels() if lo <= t.get_position()[0] <= hi and t.get_text()]
        assert 3 <= len(labels) <= 9, [t.get_text() for t in labels]  # a few round epochs, not 300
        boxes = [t.get_window_extent(renderer) for t in labels]
        for a, b in zip(boxes, boxes[1:]):
            assert a.x1 < b.x0, "x tick labels overlap"
    # every series is drawn, with 300 points each, and the lr panel has its curve
    assert {line.get_label() for line in loss.lines} == {"train", "val", "val ema"}
    assert all(len(line.get_xdata()) == 300 for line in loss.lines + acc.lines)
    assert len(lr.lines) == 1 and max(lr.lines[0].get_ydata()) == pytest.approx(1e-3)
    # and the pixels show them: the train (blue) and val (orange) colours are there in quantity
    assert near(arr, (31, 119, 180)).sum() > 500 and near(arr, (255, 127, 14)).sum() > 500


def test_curves_png_with_train_only_and_one_epoch(tmp_path):
    for rows in (history(1, with_val=False), history(5, with_val=False)):
        arr = read_png(curves_png(rows, tmp_path / "c.png"))
        assert arr.shape[:2] == (400, 1300)
        assert near(arr, (31, 119, 180)).sum() > 20  # the train marker / line
        assert near(arr, (255, 127, 14)).sum() == 0  # no val series invented


def panels_on_gray(arr, gray=128):
    """(top, bottom, left, right) of the plain gray input panel, and the overlay's columns right of it."""
    mask = (arr == gray).all(-1)  # (H, W); antialiased text may hold a few such pixels too: use dense rows/cols
    ys, xs = np.nonzero(mask.sum(1) > 0.5 * mask.sum(1).max())[0], np.nonzero(mask.sum(0) > 0.5 * mask.sum(0).max())[0]
    top, bottom, left, right = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    band = arr[top:bottom, right:]
    coloured = ~(band == 255).all(-1) & ~(band == gray).all(-1)
    cols = np.nonzero(coloured.mean(0) > 0.9)[0] + right  # columns fully covered by an overlay
    return (top, bottom, left, right), cols


def hot_cell(panel, grid):
    """Grid cell (row, col) whose pixels are most red: the high end of the attention colour map."""
    gh, gw = grid
    h, w = panel.shape[:2]
    red = panel[..., 0] - panel[..., 2]
    scores = [[red[r * h // gh + h // (4 * gh):(r + 1) * h // gh - h // (4 * gh),
                   c * w // gw + w // (4 * gw):(c + 1) * w // gw - w // (4 * gw)].mean()
               for c in range(gw)] for r in range(gh)]
    return np.unravel_index(np.argmax(scores), grid)


def test_attention_grid_non_square_images_and_captions(tmp_path):
    images = [np.full((1, 24, 40), 128, np.uint8)] * 5  # (C, H, W), wider than tall
    heats = [np.random.default_rng(i).random((3, 5)) for i in range(5)]
    captions = [[("true: happy", "black"), ("pred: sad", (200, 0, 0))]] * 5
    path = attention_grid_png(images, heats, captions, tmp_path / "grid.png", cols=2, cell=60,
                              title="maps", subtitle="left: input, right: rollout")
    arr = read_png(path)
    pw = 100  # 60 px high panels keep the 40:24 aspect
    assert arr.shape[:2] == (78 + 3 * (36 + 60 + 14) + 14, max(2 * 14 + 2 * (2 * pw + 6) + 30, 600))
    assert near(arr, (200, 0, 0), 60).sum() > 5 * 10  # every red "pred" caption is drawn


@pytest.mark.parametrize("hot", [(0, 0), (0, 4), (2, 1)])
def test_attention_grid_heat_lands_on_its_patch(tmp_path, hot):
    heat = np.zeros((3, 5))
    heat[hot] = 1.0
    path = attention_grid_png([np.full((48, 80), 128, np.uint8)], [heat], [[("x", "black")]], tmp_path / "g.png",
                              cell=120)
    arr = read_png(path)
    (top, bottom, left, right), cols = panels_on_gray(arr)
    assert (bottom - top, right - left) == (120, 200)  # the input panel, at its 48:80 aspect
    overlay = arr[top:bottom, cols.min():cols.max() + 1]
    assert overlay.shape[1] == 200
    assert hot_cell(overlay, (3, 5)) == hot


def test_attention_overlay_png_named_panels(tmp_path):
    rollout, last = np.zeros((3, 5)), np.zeros((3, 5))
    rollout[2, 4], last[0, 1] = 1.0, 1.0
    path = attention_overlay_png(np.full((1, 48, 80), 128, np.uint8), {"rollout": rollout, "last layer CLS": last},
                                 tmp_path / "o.png", title="a face")
    arr = read_png(path)
    assert arr.shape[:2] == (330, 780)  # 3 panels of 2.6 in, plus the title row
    (top, bottom, _, right), _ = panels_on_gray(arr)
    band = arr[top:bottom, right:]
    overlay_cols = np.nonzero((~(band == 255).all(-1)).mean(0) > 0.9)[0] + right
    # two overlays: split the covered columns where they jump
    splits = np.nonzero(np.diff(overlay_cols) > 1)[0]
    first = overlay_cols[: splits[0] + 1]
    second = overlay_cols[splits[0] + 1:]
    second = second[: np.nonzero(np.diff(second) > 1)[0][0] + 1] if (np.diff(second) > 1).any() else second
    assert hot_cell(arr[top:bottom, first.min():first.max() + 1], (3, 5)) == (2, 4)
    assert hot_cell(arr[top:bottom, second.min():second.max() + 1], (3, 5)) == (0, 1)
    hot = cmap_rgb(ATTENTION_CMAP, 1.0)
    assert near(arr, 0.5 * hot + 0.5 * 128, 40).sum() > 100  # the map's high end, blended at alpha 0.5
