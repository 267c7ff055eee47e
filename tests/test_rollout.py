"""minivit.rollout: attention rollout (Abnar & Zuidema 2020) and last-layer attention."""

import numpy as np
import pytest
import torch

from minivit import ViT, ViTConfig
from minivit.common.errors import ConfigError
from minivit.evaluate.rollout import attention_rollout, last_layer_attention, rollout_matrix


def numpy_rollout(attentions, grid, num_prefix, map_attention=None):
    """An independent reference: one image at a time, float64, plain loops over layers."""
    maps = []
    for b in range(attentions[0].shape[0]):
        R = np.eye(attentions[0].shape[-1])
        for a in attentions:
            a = np.asarray(a[b], dtype=np.float64).mean(axis=0)  # (T, T)
            a = (a + np.eye(len(a))) / 2
            a = a / a.sum(axis=1, keepdims=True)
            R = a @ R
        if map_attention is not None:
            row = np.asarray(map_attention[b], dtype=np.float64).mean(axis=0)[0] @ R
        elif num_prefix:
            row = R[0]
        else:
            row = R.mean(axis=0)
        m = row[num_prefix:].reshape(grid)
        m = m - m.min()
        maps.append(m / m.max() if m.max() > 0 else m)
    return np.stack(maps)


def random_attention(generator, batch, heads, tokens, layers):
    return [torch.softmax(3 * torch.randn(batch, heads, tokens, tokens, generator=generator), -1)
            for _ in range(layers)]


@pytest.mark.parametrize("num_prefix", [0, 1])
def test_identity_attention_gives_a_uniform_map(num_prefix):
    grid = (3, 5)
    eye = [torch.eye(num_prefix + 15).expand(2, 4, -1, -1)] * 3  # (B, h, T, T): tokens keep to themselves
    for fn in (attention_rollout, last_layer_attention):
        maps = fn(eye, grid, num_prefix)
        assert maps.shape == (2, 3, 5) and maps.dtype == torch.float32
        assert torch.all(maps == maps[0, 0, 0])  # every patch weighs the same


@pytest.mark.parametrize("num_prefix", [0, 1])
def test_attending_to_one_patch_puts_the_peak_at_its_grid_position(num_prefix):
    gh, gw = 3, 5
    tokens = num_prefix + gh * gw
    for k in (0, 4, 7, 12, 14):  # patch k sits at row k // gw, column k % gw
        a = torch.zeros(1, 2, tokens, tokens)
        a[..., num_prefix + k] = 1.0  # every query attends only to patch k
        for fn in (attention_rollout, last_layer_attention):
            maps = fn([a, a], (gh, gw), num_prefix)  # (1, 3, 5)
            peak = divmod(int(maps[0].argmax()), gw)
            assert peak == (k // gw, k % gw), (fn.__name__, k, peak)
            assert maps[0, k // gw, k % gw] == 1 and maps[0].sum() == 1  # the one patch, scaled to 1


def test_map_probe_attention_selects_the_probes_patch():
    gh, gw = 2, 3
    eye = [torch.eye(gh * gw)[None, None]] * 2  # (1, 1, 6, 6): no mixing between tokens
    probe = torch.zeros(1, 2, 1, gh * gw)
    probe[..., 5] = 1.0  # the MAP probe reads patch 5 = row 1, column 2
    for fn in (attention_rollout, last_layer_attention):
        maps = fn(eye, (gh, gw), 0, map_attention=probe)
        assert maps[0].tolist() == [[0, 0, 0], [0, 0, 1]]


@pytest.mark.parametrize("num_prefix,grid,with_map", [(1, (3, 5), False), (0, (4, 2), False), (0, (2, 3), True)])
def test_rollout_matches_numpy_reference(num_prefix, grid, with_map):
    g = torch.Generator().manual_seed(0)
    tokens = num_prefix + grid[0] * grid[1]
    att = random_attention(g, 3, 4, tokens, 5)
    probe = torch.softmax(torch.randn(3, 4, 1, tokens, generator=g), -1) if with_map else None
    got = attention_rollout(att, grid, num_prefix, map_attention=probe)
    want = numpy_rollout([a.numpy() for a in att], grid, num_prefix, None if probe is None else probe.numpy())
    assert got.shape == (3, *grid)
    np.testing.assert_allclose(got.numpy(), want, atol=1e-5)
    assert not np.allclose(want[0], want[1])  # the images differ: a batch is not collapsed


# Two one-head layers over 3 tokens: layer 1 sends token 0 to token 1, layer 2 sends token 0 to token 2.
A1 = [[0.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
A2 = [[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]


def one_head(a):
    return torch.tensor(a)[None, None]  # (B=1, heads=1, T, T)


def test_rollout_matches_hand_computation():
    # A' = 0.5 A + 0.5 I: A1' = [[.5, .5, 0], [0, 1, 0], [0, 0, 1]], A2' = [[.5, 0, .5], [0, 1, 0], [0, 0, 1]]
    # R = A2' @ A1' (last layer on the left): row 0 = .5 * [.5, .5, 0] + .5 * [0, 0, 1] = [.25, .25, .5]
    R = rollout_matrix([one_head(A1), one_head(A2)])[0]
    assert np.allclose(R, [[0.25, 0.25, 0.5], [0, 1, 0], [0, 0, 1]])
    # CLS token (token 0) over 2 patches: [.25, .5] -> scaled to [0, 1]
    assert np.allclose(attention_rollout([one_head(A1), one_head(A2)], (1, 2), 1), [[[0, 1]]])
    # GAP over 3 patch tokens: mean of R's rows = [.25, 1.25, 1.5] / 3 -> (x - min) / (max - min) = [0, .8, 1]
    assert np.allclose(attention_rollout([one_head(A1), one_head(A2)], (1, 3), 0), [[[0, 0.8, 1]]])
    # MAP head: a probe attention (1, heads, 1, T) that looks only at token 0 selects R's row 0
    pool = torch.tensor([[[[1.0, 0.0, 0.0]]]])
    assert np.allclose(attention_rollout([one_head(A1), one_head(A2)], (1, 3), 0, map_attention=pool), [[[0, 0, 1]]])
    # heads are averaged before the residual: heads (A1, I) -> 0.5 * (0.5 A1 + 0.5 I) + 0.5 I
    two_heads = torch.stack([torch.tensor(A1), torch.eye(3)])[None]  # (1, 2, 3, 3)
    assert np.allclose(rollout_matrix([two_heads])[0], 0.25 * np.array(A1) + 0.75 * np.eye(3))


def test_low_precision_maps_are_computed_in_float32():
    g = torch.Generator().manual_seed(1)
    att = random_attention(g, 2, 3, 1 + 12, 4)
    exact = attention_rollout(att, (3, 4), 1)
    half = attention_rollout([a.to(torch.bfloat16) for a in att], (3, 4), 1)
    assert half.dtype == torch.float32
    assert torch.allclose(half, exact, atol=0.05)
    R = rollout_matrix([a.to(torch.bfloat16) for a in att])
    assert R.dtype == torch.float32 and torch.allclose(R.sum(-1), torch.ones(2, 13), atol=1e-5)


def test_grid_that_does_not_fit_the_tokens_is_an_error():
    att = [torch.softmax(torch.randn(1, 1, 16, 16), -1)]
    with pytest.raises(ConfigError, match="16 tokens does not fit a 4x4 grid with 1 prefix"):
        attention_rollout(att, (4, 4), 1)
    with pytest.raises(ConfigError, match=r"expected \(B, heads, T, T\)"):
        attention_rollout([torch.ones(16, 16)], (4, 4), 0)


@pytest.mark.parametrize("classifier", ["token", "gap", "map"])
def test_rollout_on_a_non_square_model(classifier):
    """The model's own attention path on a 16 x 24 input (a 4 x 6 grid): maps come out (B, 4, 6)."""
    torch.manual_seed(0)
    model = ViT(ViTConfig(image_size=(16, 24), patch_size=4, dim=32, depth=3, heads=2, mlp_dim=64, num_classes=7,
                          classifier=classifier)).eval()
    cfg = model.config
    with torch.no_grad():
        logits, out = model(torch.randn(2, 3, 16, 24), attention=True)
    att = out["attention"]
    assert len(att) == 3 and att[0].shape == (2, 2, cfg.num_tokens, cfg.num_tokens)
    for fn in (attention_rollout, last_layer_attention):
        maps = fn(att, cfg.grid, cfg.num_prefix_tokens, out.get("map_attention"))
        assert maps.shape == (2, 4, 6) and float(maps.min()) == 0 and float(maps.max()) == pytest.approx(1)
    want = numpy_rollout([a.numpy() for a in att], cfg.grid, cfg.num_prefix_tokens,
                         None if out.get("map_attention") is None else out["map_attention"].numpy())
    np.testing.assert_allclose(attention_rollout(att, cfg.grid, cfg.num_prefix_tokens, out.get("map_attention")),
                               want, atol=1e-5)
    assert (classifier == "map") == (out.get("map_attention") is not None)


@pytest.mark.parametrize("amp", [None, torch.bfloat16])
def test_rollout_rows_sum_to_one_on_a_model(amp):
    torch.manual_seed(0)
    model = ViT(ViTConfig(image_size=16, patch_size=4, dim=32, depth=3, heads=2, mlp_dim=64, num_classes=7)).eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=amp, enabled=amp is not None):
        _, out = model(torch.randn(1, 3, 16, 16), attention=True)
    R = rollout_matrix(out["attention"])[0]  # bf16 maps are cast to float32 first
    assert R.shape == (17, 17) and R.dtype == torch.float32
    assert torch.allclose(R.sum(-1), torch.ones(17), atol=1e-5) and (R >= 0).all()
    assert not torch.allclose(R, torch.eye(17), atol=1e-3)  # the layers do mix tokens
