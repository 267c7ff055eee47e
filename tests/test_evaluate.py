"""Metrics, TTA, the report files and the Pillow plots."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from minivit import ViT, ViTConfig
from minivit.evaluate import classification_metrics, confusion_matrix, format_table, predict, write_report
from minivit.plots import attention_map_png, attention_rollout, colormap, confusion_matrix_png, curves_png


def test_metrics_by_hand():
    y = torch.tensor([0, 0, 0, 1, 1, 2])
    p = torch.tensor([0, 0, 1, 1, 2, 2])
    m = classification_metrics(y, p, classes=("a", "b", "c"))
    assert m["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]  # rows true, columns predicted
    assert m["accuracy"] == pytest.approx(4 / 6)
    # per class: a P=1 R=2/3 F1=0.8; b P=1/2 R=1/2 F1=0.5; c P=1/2 R=1 F1=2/3
    f1 = [r["f1"] for r in m["per_class"]]
    assert f1 == pytest.approx([0.8, 0.5, 2 / 3])
    assert m["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert m["weighted_f1"] == pytest.approx((3 * 0.8 + 2 * 0.5 + 1 * 2 / 3) / 6)
    assert [r["support"] for r in m["per_class"]] == [3, 2, 1]
    assert "macro F1" in format_table(m)


def test_absent_class_gives_zero_not_nan():
    m = classification_metrics(torch.tensor([0, 0]), torch.tensor([0, 0]), classes=("a", "b"))
    assert m["per_class"][1] == dict(name="b", precision=0.0, recall=0.0, f1=0.0, support=0)
    assert m["macro_f1"] == pytest.approx(0.5) and m["weighted_f1"] == pytest.approx(1.0)


def test_confusion_matrix_counts_match_loop():
    g = torch.Generator().manual_seed(0)
    y, p = torch.randint(0, 7, (500,), generator=g), torch.randint(0, 7, (500,), generator=g)
    cm = confusion_matrix(y, p, 7)
    ref = np.zeros((7, 7), dtype=np.int64)
    for a, b in zip(y.tolist(), p.tolist()):
        ref[a, b] += 1
    assert (cm.numpy() == ref).all()


class Asymmetric(torch.nn.Module):
    """A linear model on the flattened image: not flip-invariant, so TTA changes its logits."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(3 * 4 * 4, 3)

    def forward(self, x):
        return self.fc(x.flatten(1))


def test_tta_averages_the_mirror():
    torch.manual_seed(0)
    model = Asymmetric()
    images = torch.randint(0, 256, (10, 3, 4, 4), dtype=torch.uint8)

    def transform(x):
        return x.float() / 127.5 - 1

    plain = predict(model, images, transform, batch_size=3)
    tta = predict(model, images, transform, batch_size=3, tta=True)
    x = transform(images)
    with torch.no_grad():
        expected = 0.5 * (model(x) + model(x.flip(-1)))
    assert torch.allclose(tta, expected, atol=1e-6) and not torch.allclose(plain, tta)


def test_report_and_pngs(tmp_path):
    m = classification_metrics(torch.tensor([0, 1, 2, 2]), torch.tensor([0, 2, 2, 2]), classes=("x", "y", "z"))
    paths = write_report(m, tmp_path, extra={"split": "val"})
    saved = json.loads(open(paths["metrics"]).read())
    assert saved["split"] == "val" and saved["confusion_matrix"] == m["confusion_matrix"]
    img = Image.open(paths["confusion_matrix"])
    assert img.size[0] > 200 and img.size[1] > 200
    assert len(np.unique(np.asarray(img.convert("RGB")).reshape(-1, 3), axis=0)) > 10  # cells, text, colour bar
    history = [dict(epoch=e, train_loss=2 - 0.1 * e, val_loss=2.1 - 0.1 * e, train_acc=0.1 * e, val_acc=0.09 * e)
               for e in range(1, 6)]
    curves = Image.open(curves_png(history, tmp_path / "curves.png"))
    assert curves.size[0] > 400
    # the curves are drawn: the train colour appears in the picture
    assert (np.asarray(curves.convert("RGB")) == (31, 119, 180)).all(-1).sum() > 100


def test_colormap_ends():
    c = colormap(np.array([0.0, 1.0, 2.0]))
    assert c[0].tolist() == [68, 1, 84] and c[1].tolist() == c[2].tolist() == [253, 231, 37]


def test_confusion_matrix_png_cells_follow_rates(tmp_path):
    # a perfect classifier: the diagonal cells carry the top colour, the others the bottom one
    path = confusion_matrix_png(np.diag([5, 3]), ["a", "b"], tmp_path / "cm.png")
    arr = np.asarray(Image.open(path).convert("RGB"))
    assert ((arr == (253, 231, 37)).all(-1)).sum() > 1000 and ((arr == (68, 1, 84)).all(-1)).sum() > 1000


def test_attention_rollout_and_png(tmp_path):
    torch.manual_seed(0)
    model = ViT(ViTConfig(image_size=16, patch_size=4, dim=32, depth=2, heads=2, mlp_dim=64, num_classes=7))
    image = torch.randint(0, 256, (1, 16, 16), dtype=torch.uint8)
    _, att = model.forward_with_attention(torch.randn(1, 3, 16, 16))
    heat = attention_rollout(att, num_prefix=1, grid=(4, 4))
    assert heat.shape == (4, 4) and heat.min() == 0 and heat.max() == pytest.approx(1)
    # identity attention everywhere: rollout of the CLS row puts no weight on patches -> flat map
    eye = [torch.eye(17)[None, None]] * 2
    assert attention_rollout(eye, 1, (4, 4)).max() == 0
    try:
        path = attention_map_png(model, image, tmp_path / "att.png", title="rollout")
    except ImportError as e:
        pytest.skip(f"minivit.augment unavailable: {e}")
    assert Image.open(path).size == (2 * 224 + 30, 224 + 40)
