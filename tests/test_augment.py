"""Tests for minivit.data.augment: shapes, ranges, identities, determinism, CutMix/MixUp label algebra."""

import doctest
import math

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import minivit.data.augment as augment
from minivit.data.augment import (AugmentConfig, crop_flip_rotate_theta, cutmix, eval_transform, mix_batch, mixup,
                             one_hot, train_transform)
from minivit.common.errors import ConfigError

FAST = settings(max_examples=25, deadline=None)
# Every random piece switched off: train_transform must reduce to eval_transform.
NO_AUG = dict(scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.0, rotate_deg=0.0, brightness=0.0, contrast=0.0)


def _images(b, c, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, c, h, w), generator=g, dtype=torch.uint8)


def test_doctests():
    result = doctest.testmod(augment)
    assert result.failed == 0 and result.attempted > 0


@FAST
@given(b=st.integers(1, 4), c=st.sampled_from([1, 3]), h=st.integers(8, 80), w=st.integers(8, 80),
       size=st.integers(8, 64), seed=st.integers(0, 2**16))
def test_transform_shapes_dtype_range(b, c, h, w, size, seed):
    x = _images(b, c, h, w, seed)
    cfg = AugmentConfig(size)
    for out in (train_transform(x, cfg, torch.Generator().manual_seed(seed)), eval_transform(x, cfg)):
        assert out.shape == (b, 3, size, size) and out.dtype == torch.float32 and out.device == x.device
        assert out.min() >= -1 - 1e-6 and out.max() <= 1 + 1e-6  # mean = std = 0.5 -> [-1, 1]
    # grayscale -> 3 identical channels
    if c == 1:
        out = train_transform(x, cfg, torch.Generator().manual_seed(seed))
        assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 0], out[:, 2])


@FAST
@given(h=st.integers(8, 48), size=st.integers(8, 96), c=st.sampled_from([1, 3]), seed=st.integers(0, 2**16))
def test_all_probabilities_zero_is_eval_transform(h, size, c, seed):
    assume(size >= h)  # eval antialiases when shrinking, grid_sample cannot; compare where both are plain bilinear
    x = _images(3, c, h, h, seed)
    cfg = AugmentConfig(size, **NO_AUG)
    # same sample points, computed two ways: equal up to float rounding (1e-4 = 1/80 of a gray level)
    torch.testing.assert_close(train_transform(x, cfg, torch.Generator().manual_seed(seed)), eval_transform(x, cfg),
                               atol=1e-4, rtol=0)


def test_same_size_no_aug_is_exact_normalisation():
    x = _images(2, 1, 48, 48)
    out = train_transform(x, AugmentConfig(48, **NO_AUG))
    torch.testing.assert_close(out[:, :1], x.float() / 127.5 - 1, atol=1e-5, rtol=0)


@FAST
@given(h=st.integers(4, 40), w=st.integers(4, 40), seed=st.integers(0, 2**16))
def test_flip_is_mirror_and_flip_twice_is_identity(h, w, seed):
    x = _images(2, 1, h, w, seed)
    flip = AugmentConfig((h, w), mean=(0.0,) * 3, std=(1.0,) * 3, **{**NO_AUG, "hflip": 1.0, "ratio": (w / h, w / h)})
    once = train_transform(x, flip)  # float in [0, 1]
    torch.testing.assert_close(once, x.flip(-1).float().expand(-1, 3, -1, -1) / 255, atol=1e-5, rtol=0)
    twice = train_transform(once[:, :1], flip)  # float input in [0, 1] is accepted as is
    torch.testing.assert_close(twice[:, :1], x.float() / 255, atol=1e-5, rtol=0)


def test_rotation_by_90_degrees_matches_rot90():
    # A pure rotation theta on a square image with align_corners=False is exactly torch.rot90.
    x = _images(1, 1, 10, 10).float()
    cfg = AugmentConfig(10, **{**NO_AUG, "rotate_deg": 90.0})
    g = torch.Generator()
    theta = torch.tensor([[[0.0, -1.0, 0.0], [1.0, 0.0, 0.0]]])  # angle 90: [[cos, -sin], [sin, cos]]
    grid = torch.nn.functional.affine_grid(theta, [1, 1, 10, 10], align_corners=False)
    out = torch.nn.functional.grid_sample(x, grid, align_corners=False)
    assert torch.allclose(out, torch.rot90(x, 1, (2, 3)), atol=1e-4) or torch.allclose(out, torch.rot90(x, -1, (2, 3)), atol=1e-4)
    # and crop_flip_rotate_theta with rotate_deg=90 only produces matrices of that form (scaled rotation)
    t = crop_flip_rotate_theta(16, 10, 10, cfg, g.manual_seed(0))
    torch.testing.assert_close(t[:, 0, 0], t[:, 1, 1])
    torch.testing.assert_close(t[:, 0, 1], -t[:, 1, 0])
    torch.testing.assert_close(t[:, 0, 0] ** 2 + t[:, 1, 0] ** 2, torch.ones(16))


@FAST
@given(seed=st.integers(0, 2**16), scale_lo=st.floats(0.05, 1.0), h=st.integers(8, 64), w=st.integers(8, 64))
def test_crop_boxes_stay_inside_the_image(seed, scale_lo, h, w):
    cfg = AugmentConfig(16, scale=(scale_lo, 1.0), rotate_deg=0.0, hflip=0.5)
    theta = crop_flip_rotate_theta(64, h, w, cfg, torch.Generator().manual_seed(seed))
    # without rotation, |theta_00| and theta_11 are the crop's half extents (normalised): centre +- extent in [-1, 1]
    half_w, half_h = theta[:, 0, 0].abs(), theta[:, 1, 1]
    assert (theta[:, 0, 2].abs() + half_w <= 1 + 1e-5).all() and (theta[:, 1, 2].abs() + half_h <= 1 + 1e-5).all()
    area = half_w * half_h  # fraction of the image area
    # a box taller or wider than the image is clamped to it, which shrinks the area by at most
    # sqrt(ratio_min * h / w) (or w / h): the bound below follows from sqrt(s * x) >= s * sqrt(x) for s <= 1
    bound = scale_lo * min(1.0, math.sqrt(0.75 * h / w), math.sqrt(0.75 * w / h))
    assert (area <= 1 + 1e-5).all() and (area >= bound - 1e-5).all()


def test_generator_determinism_and_device_check():
    x = _images(8, 1, 48, 48)
    cfg = AugmentConfig(32)
    a = train_transform(x, cfg, torch.Generator().manual_seed(1))
    b = train_transform(x, cfg, torch.Generator().manual_seed(1))
    c = train_transform(x, cfg, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(ConfigError, match="generator is on cpu but the images are on cuda"):
        augment._check_generator(torch.Generator(), torch.device("cuda"))
    with pytest.raises(ConfigError, match="images must be"):
        train_transform(torch.zeros(2, 48, 48, dtype=torch.uint8), cfg)


def test_brightness_contrast_change_values_within_range():
    x = torch.full((64, 1, 16, 16), 100, dtype=torch.uint8)
    x[:, :, :8] = 150
    cfg = AugmentConfig(16, **{**NO_AUG, "brightness": 0.4, "contrast": 0.4})
    out = train_transform(x, cfg, torch.Generator().manual_seed(0))
    means = out.mean(dim=(1, 2, 3))
    assert means.std() > 0.01  # per-sample brightness differs
    base = eval_transform(x, cfg)
    ratio = (out[:, 0] + 1) / (base[:, 0] + 1)  # back to [0, 2] scale: brightness * contrast effects
    assert ratio.min() > 0.3 and ratio.max() < 2.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_runs_on_cuda_with_cuda_generator():
    x = _images(4, 1, 48, 48).cuda()
    g = torch.Generator(device="cuda").manual_seed(0)
    out = train_transform(x, AugmentConfig(64), g)
    assert out.device == x.device and out.shape == (4, 3, 64, 64)
    y = one_hot(torch.tensor([0, 1, 2, 3], device="cuda"), 7)
    xm, ym = cutmix(out, y, 1.0, torch.Generator().manual_seed(0))  # per-batch numbers from the host
    assert xm.device == x.device and torch.allclose(ym.sum(1), torch.ones(4, device="cuda"))


# ----------------------------------------------------------------------------- labels, CutMix, MixUp

@FAST
@given(b=st.integers(1, 16), k=st.integers(2, 10), smoothing=st.floats(0.0, 0.9), seed=st.integers(0, 1000))
def test_one_hot_rows_sum_to_one(b, k, smoothing, seed):
    targets = torch.randint(0, k, (b,), generator=torch.Generator().manual_seed(seed))
    y = one_hot(targets, k, smoothing)
    torch.testing.assert_close(y.sum(1), torch.ones(b))
    assert torch.equal(y.argmax(1), targets) or smoothing * (1 - 1 / k) >= (1 - smoothing) - 1e-6
    on = y[torch.arange(b), targets]
    torch.testing.assert_close(on, torch.full((b,), 1 - smoothing + smoothing / k))
    soft = torch.softmax(torch.randn(b, k), 1)
    torch.testing.assert_close(one_hot(soft, k, smoothing).sum(1), torch.ones(b))


def test_one_hot_errors():
    with pytest.raises(ConfigError, match="smoothing"):
        one_hot(torch.tensor([0]), 3, smoothing=1.0)
    with pytest.raises(ConfigError, match="targets must be"):
        one_hot(torch.zeros(2, 4), 3)


@settings(max_examples=60, deadline=None)
@given(b=st.integers(2, 6), h=st.integers(1, 40), w=st.integers(1, 40), alpha=st.floats(0.1, 4.0),
       seed=st.integers(0, 2**16))
def test_cutmix_label_weight_is_pasted_area(b, h, w, alpha, seed):
    x = torch.arange(b, dtype=torch.float64).view(b, 1, 1, 1).expand(b, 2, h, w).contiguous()  # sample i is all i
    y = one_hot(torch.arange(b), b).double()  # distinct classes, so the two label weights are readable
    xm, ym = cutmix(x, y, alpha, torch.Generator().manual_seed(seed))
    torch.testing.assert_close(ym.sum(1), torch.ones(b, dtype=torch.float64))
    for i in range(b):
        source = (i - 1) % b  # the batch is rolled by one
        pasted = xm[i, 0] == source
        box_area = int(pasted.sum())
        assert (xm[i, 0][~pasted] == i).all()  # outside the box: untouched
        if box_area:  # the pasted pixels form one rectangle
            rows, cols = pasted.nonzero(as_tuple=True)
            assert (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1) == box_area
        assert ym[i, source] == box_area / (h * w)  # 1 - lambda_adjusted == box area / image area, exactly
        assert ym[i, i] == 1 - box_area / (h * w)
    assert torch.equal(xm[:, 1], xm[:, 0])  # same box for every channel


@FAST
@given(b=st.integers(1, 6), alpha=st.floats(0.05, 2.0), seed=st.integers(0, 2**16), first=st.integers(0, 6))
def test_mixup_is_convex_and_rows_sum_to_one(b, alpha, seed, first):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 3, 4, 4, generator=g)
    # consecutive samples have different classes (b <= 6 < 7 classes), so every example recovers lambda
    y = one_hot((first + torch.arange(b)) % 7, 7, smoothing=0.1)
    xm, ym = mixup(x, y, alpha, g)
    torch.testing.assert_close(ym.sum(1), torch.ones(b))
    if b == 1:  # the batch rolled by one is itself: mixing it with itself changes nothing
        torch.testing.assert_close(xm, x)
        torch.testing.assert_close(ym, y)
        return
    # lambda from each sample's own class, which its rolled partner lacks: one lambda for the whole batch
    own = torch.arange(b)
    partner = y.roll(1, 0)
    lams = (ym[own, y.argmax(1)] - partner[own, y.argmax(1)]) / (y - partner)[own, y.argmax(1)]  # (b,)
    torch.testing.assert_close(lams, lams[:1].expand(b), atol=1e-5, rtol=0)
    lam = float(lams[0])
    assert 0 <= lam <= 1
    torch.testing.assert_close(ym, lam * y + (1 - lam) * partner, atol=1e-6, rtol=0)
    torch.testing.assert_close(xm, lam * x + (1 - lam) * x.roll(1, 0), atol=1e-5, rtol=1e-5)


@FAST
@given(b=st.integers(1, 5), seed=st.integers(0, 1000))
def test_alpha_zero_changes_nothing(b, seed):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(b, 3, 8, 8, generator=g), one_hot(torch.randint(0, 7, (b,), generator=g), 7)
    for fn in (cutmix, mixup):
        xm, ym = fn(x, y, 0.0, g)
        assert torch.equal(xm, x) and torch.equal(ym, y)
    xm, ym = mix_batch(x, y, generator=g)
    assert torch.equal(xm, x) and torch.equal(ym, y)


def test_mix_batch_deterministic_and_valid():
    x, y = torch.randn(8, 3, 16, 16), one_hot(torch.arange(8) % 7, 7)
    a = mix_batch(x, y, mixup_alpha=0.2, cutmix_alpha=1.0, generator=torch.Generator().manual_seed(3))
    b = mix_batch(x, y, mixup_alpha=0.2, cutmix_alpha=1.0, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    torch.testing.assert_close(a[1].sum(1), torch.ones(8))
    assert not math.isnan(float(a[0].sum()))


@FAST
@given(b=st.integers(2, 6), cutmix_alpha=st.floats(0, 2), mixup_alpha=st.floats(0, 2), seed=st.integers(0, 2**16))
def test_mix_prob_zero_never_mixes(b, cutmix_alpha, mixup_alpha, seed):
    x, y = torch.rand(b, 1, 8, 8), one_hot(torch.arange(b) % 3, 3, smoothing=0.1)
    x2, y2 = mix_batch(x, y, cutmix_alpha=cutmix_alpha, mixup_alpha=mixup_alpha, mix_prob=0.0,
                       generator=torch.Generator().manual_seed(seed))
    assert torch.equal(x2, x) and torch.equal(y2, y)


def test_mix_prob_is_the_share_of_mixed_batches():
    x, y = torch.rand(4, 1, 8, 8), one_hot(torch.arange(4), 4)
    mixed = 0
    for seed in range(400):
        _, y2 = mix_batch(x, y, cutmix_alpha=1.0, mix_prob=0.5, generator=torch.Generator().manual_seed(seed))
        mixed += not torch.equal(y2, y)
    assert 150 < mixed < 250  # ~200 (a CutMix box can be empty, so a few "mixed" batches stay unchanged)
    # mix_prob=1 draws nothing for the decision: the same batch as before mix_prob existed
    a = mix_batch(x, y, cutmix_alpha=1.0, generator=torch.Generator().manual_seed(3))
    b = cutmix(x, y, 1.0, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    with pytest.raises(ConfigError, match="mix_prob"):
        mix_batch(x, y, cutmix_alpha=1.0, mix_prob=1.5)


@FAST
@given(c=st.sampled_from([1, 3]), size=st.integers(8, 40), seed=st.integers(0, 2**16))
def test_one_channel_models_get_one_channel(c, size, seed):
    x = _images(3, c, 24, 24, seed)
    cfg = AugmentConfig(size, channels=1)
    for out in (train_transform(x, cfg, torch.Generator().manual_seed(seed)), eval_transform(x, cfg)):
        assert out.shape == (3, 1, size, size) and out.dtype == torch.float32
        assert out.min() >= -1 - 1e-5 and out.max() <= 1 + 1e-5


def test_rgb_becomes_luminance_for_one_channel_models():
    x = _images(2, 3, 16, 16)
    out = eval_transform(x, AugmentConfig(16, channels=1))  # (2, 1, 16, 16), (x - 0.5) / 0.5
    luma = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]).float() / 255
    torch.testing.assert_close(out, luma * 2 - 1, atol=1e-5, rtol=0)
    # grayscale to a 3-channel model: the gray repeated; RGB statistics become luminance ones for 1 channel
    gray = _images(2, 1, 16, 16)
    three = eval_transform(gray, AugmentConfig(16, channels=3))
    assert three.shape == (2, 3, 16, 16) and torch.equal(three[:, 0], three[:, 2])
    imagenet = AugmentConfig(16, channels=1, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    m = 0.299 * 0.485 + 0.587 * 0.456 + 0.114 * 0.406
    s = 0.299 * 0.229 + 0.587 * 0.224 + 0.114 * 0.225
    torch.testing.assert_close(eval_transform(gray, imagenet), (gray.float() / 255 - m) / s, atol=1e-5, rtol=0)
    with pytest.raises(ConfigError, match="channels"):
        eval_transform(gray, AugmentConfig(16, channels=2))


@given(st.integers(1, 6), st.integers(8, 40), st.integers(8, 40), st.integers(0, 2**31 - 1))
@FAST
def test_random_erase_replaces_one_box_per_erased_image(b, h, w, seed):
    """p = 1: every image gets one axis-aligned box of noise, 2-33% of its area (rounding aside), the rest untouched."""
    x = torch.full((b, 1, h, w), 2.0)  # outside noise's [0, 1): erased pixels are exactly the changed ones
    out = augment.random_erase(x, 1.0, torch.Generator().manual_seed(seed))
    for img in out[:, 0]:
        changed = img != 2.0
        rows, cols = changed.any(1).nonzero().flatten(), changed.any(0).nonzero().flatten()
        assert len(rows) and len(cols)
        box_h, box_w = int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)
        assert int(changed.sum()) == box_h * box_w  # one solid rectangle
        assert bool((img[changed] >= 0).all() and (img[changed] < 1).all())
        # the area rule, allowing for the rounding of each side to whole pixels and the clamp to the image
        assert box_h * box_w <= math.ceil(math.sqrt(h * w * augment.ERASE_AREA[1] * augment.ERASE_ASPECT[1]) + 1) * w


def test_random_erase_probability_and_stream():
    x = torch.zeros(4000, 1, 12, 12)
    out = augment.random_erase(x, 0.3, torch.Generator().manual_seed(0))
    share = (out != 0).flatten(1).any(1).float().mean().item()
    assert abs(share - 0.3) < 0.03  # the share of erased images is p
    assert torch.equal(augment.random_erase(x, 0.0, torch.Generator().manual_seed(0)), x)
    # erase=0 draws nothing: train_transform with it off is the transform it was before the option existed
    imgs = _images(8, 1, 48, 48)
    a = train_transform(imgs, AugmentConfig(48, channels=1), torch.Generator().manual_seed(3))
    b = train_transform(imgs, AugmentConfig(48, channels=1, erase=0.0), torch.Generator().manual_seed(3))
    c = train_transform(imgs, AugmentConfig(48, channels=1, erase=1.0), torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(ConfigError, match=r"erase=1.5 \(must be a probability in \[0, 1\]\)"):
        AugmentConfig(48, erase=1.5)
