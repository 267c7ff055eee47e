"""Metrics, TTA, the report files and the Pillow plots."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from minivit import ViT, ViTConfig
from minivit.evaluate import (attention_report, classification_metrics, confusion_matrix, format_table,
                              map_pool_attention, predict, select_examples, write_report)
from minivit.plots import (attention_map_png, attention_rollout, colormap, confusion_matrix_png, curves_png,
                           rollout_matrix)


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


# Two one-head layers over 3 tokens: layer 1 sends token 0 to token 1, layer 2 sends token 0 to token 2.
A1 = [[0.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
A2 = [[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]


def one_head(a):
    return torch.tensor(a)[None, None]  # (1, heads=1, T, T), as forward_with_attention returns it


def test_rollout_matches_hand_computation():
    # A' = 0.5 A + 0.5 I: A1' = [[.5, .5, 0], [0, 1, 0], [0, 0, 1]], A2' = [[.5, 0, .5], [0, 1, 0], [0, 0, 1]]
    # R = A2' @ A1' (last layer on the left): row 0 = .5 * [.5, .5, 0] + .5 * [0, 0, 1] = [.25, .25, .5]
    R = rollout_matrix([one_head(A1), one_head(A2)])
    assert np.allclose(R, [[0.25, 0.25, 0.5], [0, 1, 0], [0, 0, 1]])
    # CLS token (token 0) over 2 patches: [.25, .5] -> scaled to [0, 1]
    assert np.allclose(attention_rollout([one_head(A1), one_head(A2)], 1, (1, 2)), [[0, 1]])
    # GAP over 3 patch tokens: mean of R's rows = [.25, 1.25, 1.5] / 3 -> (x - min) / (max - min) = [0, .8, 1]
    assert np.allclose(attention_rollout([one_head(A1), one_head(A2)], 0, (1, 3)), [[0, 0.8, 1]])
    # MAP head: a pooling attention (1, heads, Q=1, T) that looks only at token 0 selects R's row 0
    pool = torch.tensor([[[[1.0, 0.0, 0.0]]]])
    assert np.allclose(attention_rollout([one_head(A1), one_head(A2), pool], 0, (1, 3)), [[0, 0, 1]])
    # heads are averaged before the residual: heads (A1, I) -> 0.5 * (0.5 A1 + 0.5 I) + 0.5 I
    two_heads = torch.stack([torch.tensor(A1), torch.eye(3)])[None]  # (1, 2, 3, 3)
    assert np.allclose(rollout_matrix([two_heads]), 0.25 * np.array(A1) + 0.75 * np.eye(3))


@pytest.mark.parametrize("amp", [None, torch.bfloat16])
def test_rollout_rows_sum_to_one_on_a_model(amp):
    torch.manual_seed(0)
    model = ViT(ViTConfig(image_size=16, patch_size=4, dim=32, depth=3, heads=2, mlp_dim=64, num_classes=7)).eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=amp, enabled=amp is not None):
        _, att = model.forward_with_attention(torch.randn(1, 3, 16, 16))
    R = rollout_matrix(att)  # bf16 maps are cast to float first
    assert R.shape == (17, 17) and np.allclose(R.sum(-1), 1) and (R >= 0).all()
    assert not np.allclose(R, np.eye(17))  # the layers do mix tokens


def test_select_examples_takes_a_couple_per_class():
    y = torch.tensor([3, 0, 0, 1, 3, 0, 1, 1, 3, 0])
    assert select_examples(y, 7, per_class=2, min_images=0) == [1, 2, 3, 6, 0, 4]  # class order, 2 each
    assert select_examples(y, 7, per_class=2, min_images=8) == [1, 2, 5, 3, 6, 7, 0, 4, 8]  # 3 classes: 3 each
    soft = torch.nn.functional.one_hot(y, 7).float()
    assert select_examples(soft, 7, min_images=0) == select_examples(y, 7, min_images=0)


@pytest.mark.parametrize("classifier,amp", [("token", None), ("gap", torch.bfloat16)])
def test_attention_report_png(tmp_path, classifier, amp):
    from minivit.augment import AugmentConfig, eval_transform
    from minivit.data import synthetic_faces

    torch.manual_seed(0)
    model = ViT(ViTConfig(image_size=16, patch_size=4, dim=32, depth=2, heads=2, mlp_dim=64, num_classes=7,
                          classifier=classifier))
    data = synthetic_faces(70, image_size=24, seed=0)  # 10 per class, resized to the model's 16 x 16
    aug = AugmentConfig(16)
    path = attention_report(model, data, lambda x: eval_transform(x, aug), tmp_path / "attention_maps.png",
                            autocast_dtype=amp)
    assert model.training  # mode restored
    img = Image.open(path).convert("RGB")
    # 7 classes x 2 = 14 images, 4 a row -> 4 rows; a cell is a 144-px input + 144-px overlay + caption
    assert img.size == (14 + 4 * (2 * 144 + 6) + 3 * 30 + 14, 78 + 4 * (38 + 144 + 14) + 14)
    arr = np.asarray(img).astype(int)
    x0, y0 = 14, 78 + 38  # first cell: input panel, then the overlay 6 px to its right
    base, overlay = arr[y0:y0 + 144, x0:x0 + 144], arr[y0:y0 + 144, x0 + 150:x0 + 294]
    assert base.std() > 10 and overlay.std() > 10  # a face, not a blank panel
    assert np.abs(base - overlay).mean() > 10  # the heat map is drawn over it
    # captions in green (right) or red (wrong) for every image
    green = (arr == (0, 128, 0)).all(-1).sum()
    red = (arr == (200, 0, 0)).all(-1).sum()
    assert green + red > 14 * 20


def test_map_pool_attention_is_the_heads_attention(tmp_path):
    """For a MAP head the map is its probe's attention: recomputed outside, it must reproduce the head's output."""
    try:
        model = ViT(ViTConfig(image_size=16, patch_size=4, dim=32, depth=2, heads=2, mlp_dim=64, num_classes=7,
                              classifier="map")).eval()
    except Exception as e:  # a model without MAP pooling
        pytest.skip(f"classifier='map' unavailable: {e}")
    head = model.map_head
    tokens = torch.randn(3, 16, 32)
    with torch.no_grad():
        att = map_pool_attention(head, tokens)  # (B, h, 1, N)
        v = head.kv(tokens)[..., 32:].reshape(3, 16, 2, 16).transpose(1, 2)  # (B, h, N, hd)
        x = head.proj((att @ v).transpose(1, 2).reshape(3, 1, 32))  # (B, 1, D)
        x = x + head.mlp(head.norm(x))
    assert att.shape == (3, 2, 1, 16) and torch.allclose(att.sum(-1), torch.ones(3, 2, 1))
    assert torch.allclose(x[:, 0], head(tokens), atol=1e-5)
    from minivit.augment import AugmentConfig, eval_transform
    from minivit.data import synthetic_faces

    data = synthetic_faces(14, image_size=16, seed=0)
    path = attention_report(model, data, lambda b: eval_transform(b, AugmentConfig(16)), tmp_path / "a.png",
                            autocast_dtype=torch.bfloat16)
    assert Image.open(path).size[0] >= 720 and not head._forward_hooks  # the hook is gone
