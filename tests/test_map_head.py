"""The MAP head (classifier="map", big_vision pool_type="map"): maths, loading, exporting.

The oracle is an independent forward pass written here with einsums directly on the flax-shaped
arrays of a big_vision .npz ((D, heads, hd) attention kernels, HWIO conv, (in, out) Dense),
in float64, sharing no code with minivit. Where ../shared is present, the same reference run
with gap pooling on the bigvision_gap fixture reproduces big_vision's own logits, which ties
the reference's encoder maths to the producing library.
"""

import math

import numpy as np
import pytest
import torch

from minivit import ViT, ViTConfig
from minivit.checkpoints import LAYOUTS, export, from_minivit, save_checkpoint, timm_config
from minivit.checkpoints.writing import write_npz
from minivit.common.errors import CheckpointError, ConfigError

P = "params/"


# -- a big_vision npz and an independent forward of it ------------------------------------------------


def map_head_arrays(rng, dim, heads, mlp_dim, scale=0.3) -> dict:
    """big_vision's MAPHead_0 params with random values (flax shapes, `params/` prefix)."""
    hd = dim // heads
    r = lambda *shape: (rng.standard_normal(shape) * scale).astype(np.float32)  # noqa: E731
    mha = f"{P}MAPHead_0/MultiHeadDotProductAttention_0"
    arrays = {f"{P}MAPHead_0/probe": r(1, 1, dim)}
    for name in ("query", "key", "value"):
        arrays[f"{mha}/{name}/kernel"], arrays[f"{mha}/{name}/bias"] = r(dim, heads, hd), r(heads, hd)
    arrays[f"{mha}/out/kernel"], arrays[f"{mha}/out/bias"] = r(heads, hd, dim), r(dim)
    arrays[f"{P}MAPHead_0/LayerNorm_0/scale"] = 1 + r(dim)
    arrays[f"{P}MAPHead_0/LayerNorm_0/bias"] = r(dim)
    for i, (n_in, n_out) in enumerate([(dim, mlp_dim), (mlp_dim, dim)]):
        arrays[f"{P}MAPHead_0/MlpBlock_0/Dense_{i}/kernel"] = r(n_in, n_out)
        arrays[f"{P}MAPHead_0/MlpBlock_0/Dense_{i}/bias"] = r(n_out)
    return arrays


def synthetic_gap_arrays(rng, dim=32, depth=2, heads=4, mlp_dim=64, patch=8, grid=2, classes=5, scale=0.3) -> dict:
    """A whole big_vision pool_type="gap" ViT with random values, as big_vision names and shapes it."""
    hd = dim // heads
    r = lambda *shape: (rng.standard_normal(shape) * scale).astype(np.float32)  # noqa: E731
    a = {f"{P}embedding/kernel": r(patch, patch, 3, dim), f"{P}embedding/bias": r(dim),
         f"{P}pos_embedding": r(1, grid * grid, dim)}
    for i in range(depth):
        b = f"{P}Transformer/encoderblock_{i}"
        for ln in ("LayerNorm_0", "LayerNorm_1"):
            a[f"{b}/{ln}/scale"], a[f"{b}/{ln}/bias"] = 1 + r(dim), r(dim)
        for name in ("query", "key", "value"):
            a[f"{b}/MultiHeadDotProductAttention_0/{name}/kernel"] = r(dim, heads, hd)
            a[f"{b}/MultiHeadDotProductAttention_0/{name}/bias"] = r(heads, hd)
        a[f"{b}/MultiHeadDotProductAttention_0/out/kernel"] = r(heads, hd, dim)
        a[f"{b}/MultiHeadDotProductAttention_0/out/bias"] = r(dim)
        for j, (n_in, n_out) in enumerate([(dim, mlp_dim), (mlp_dim, dim)]):
            a[f"{b}/MlpBlock_0/Dense_{j}/kernel"], a[f"{b}/MlpBlock_0/Dense_{j}/bias"] = r(n_in, n_out), r(n_out)
    a[f"{P}Transformer/encoder_norm/scale"], a[f"{P}Transformer/encoder_norm/bias"] = 1 + r(dim), r(dim)
    a[f"{P}head/kernel"], a[f"{P}head/bias"] = r(dim, classes), r(classes)
    return a


def reference_forward(arrays: dict, x_nhwc: np.ndarray, pool: str) -> torch.Tensor:
    """big_vision's _Model.__call__ (learned posemb, no cls, pool "gap" or "map"), float64, flax layouts."""
    w = {k[len(P):]: torch.from_numpy(v).double() for k, v in arrays.items()}
    x = torch.from_numpy(x_nhwc).double()  # (B, H, W, C)
    eps = 1e-6  # flax LayerNorm's default

    def layer_norm(t, name):
        mu, var = t.mean(-1, keepdim=True), t.var(-1, unbiased=False, keepdim=True)
        return (t - mu) / torch.sqrt(var + eps) * w[f"{name}/scale"] + w[f"{name}/bias"]

    def gelu_tanh(t):  # flax nn.gelu's default (approximate=True)
        return 0.5 * t * (1 + torch.tanh(math.sqrt(2 / math.pi) * (t + 0.044715 * t**3)))

    def mlp(t, name):
        t = gelu_tanh(t @ w[f"{name}/Dense_0/kernel"] + w[f"{name}/Dense_0/bias"])
        return t @ w[f"{name}/Dense_1/kernel"] + w[f"{name}/Dense_1/bias"]

    def mha(q_in, kv_in, name):  # flax MultiHeadDotProductAttention(q_in, kv_in)
        q = torch.einsum("bqd,dhk->bqhk", q_in, w[f"{name}/query/kernel"]) + w[f"{name}/query/bias"]
        k = torch.einsum("bnd,dhk->bnhk", kv_in, w[f"{name}/key/kernel"]) + w[f"{name}/key/bias"]
        v = torch.einsum("bnd,dhk->bnhk", kv_in, w[f"{name}/value/kernel"]) + w[f"{name}/value/bias"]
        probs = torch.softmax(torch.einsum("bqhk,bnhk->bhqn", q / math.sqrt(q.shape[-1]), k), dim=-1)
        out = torch.einsum("bhqn,bnhk->bqhk", probs, v)
        return torch.einsum("bqhk,hkd->bqd", out, w[f"{name}/out/kernel"]) + w[f"{name}/out/bias"]

    kernel = w["embedding/kernel"]  # (p, p, C, D): a VALID conv with stride p = one Dense per patch
    p = kernel.shape[0]
    B, H, W, C = x.shape
    patches = x.reshape(B, H // p, p, W // p, p, C).permute(0, 1, 3, 2, 4, 5).reshape(B, -1, p, p, C)
    t = torch.einsum("bnijc,ijcd->bnd", patches, kernel) + w["embedding/bias"]
    t = t + w["pos_embedding"]
    depth = len({k.split("/")[1] for k in w if k.startswith("Transformer/encoderblock_")})
    for i in range(depth):
        b = f"Transformer/encoderblock_{i}"
        y = layer_norm(t, f"{b}/LayerNorm_0")
        t = t + mha(y, y, f"{b}/MultiHeadDotProductAttention_0")
        t = t + mlp(layer_norm(t, f"{b}/LayerNorm_1"), f"{b}/MlpBlock_0")
    t = layer_norm(t, "Transformer/encoder_norm")  # the encoder norm comes before any pooling
    if pool == "gap":
        pooled = t.mean(dim=1)
    else:  # MAPHead: probe attends over the tokens, then LayerNorm + MLP with a residual
        probe = w["MAPHead_0/probe"].expand(B, 1, -1)
        y = mha(probe, t, "MAPHead_0/MultiHeadDotProductAttention_0")
        y = y + mlp(layer_norm(y, "MAPHead_0/LayerNorm_0"), "MAPHead_0/MlpBlock_0")
        pooled = y[:, 0]
    return pooled @ w["head/kernel"] + w["head/bias"]


def _gap_fixture(request) -> tuple[dict, np.ndarray, np.ndarray]:
    folder = request.getfixturevalue("fixtures_dir") / "bigvision_gap"
    with np.load(folder / "model.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    return arrays, np.load(folder / "input_nhwc.npy"), np.load(folder / "expected_logits.npy")


@pytest.fixture(params=["synthetic", "bigvision_gap_fixture"])
def map_npz(request, tmp_path):
    """(path of a big_vision 'map' npz, its arrays, an NHWC input): synthetic, or the gap fixture + a MAP head."""
    rng = np.random.default_rng(0)
    if request.param == "synthetic":
        base = synthetic_gap_arrays(rng)
        x = rng.uniform(-1, 1, (3, 16, 16, 3)).astype(np.float32)
    else:
        base, x, expected = _gap_fixture(request)
        # The reference's encoder is big_vision's: with gap pooling it gives big_vision's own logits.
        gap = reference_forward(base, x, "gap")
        assert (gap - torch.from_numpy(expected).double()).abs().max().item() <= 5e-5
    block0 = f"{P}Transformer/encoderblock_0"
    dim, heads, _ = base[f"{block0}/MultiHeadDotProductAttention_0/query/kernel"].shape
    mlp_dim = base[f"{block0}/MlpBlock_0/Dense_0/kernel"].shape[1]
    arrays = {**base, **map_head_arrays(rng, dim, heads, mlp_dim)}
    path = tmp_path / "map.npz"
    np.savez(path, **arrays)
    return path, arrays, x


# -- (1) the logits of an independent forward -------------------------------------------------------------


def test_map_npz_matches_independent_reference(map_npz):
    path, arrays, x = map_npz
    model = ViT.from_pretrained(path)
    cfg = model.config
    assert (cfg.classifier, cfg.num_prefix_tokens, cfg.gelu, cfg.norm_after_pool) == ("map", 0, "tanh", False)
    assert model.load_report.ok and not model.load_report.new
    assert not hasattr(model, "cls_token") and model.pos_embed.shape[1] == cfg.grid[0] * cfg.grid[1]
    x_nchw = torch.from_numpy(x).permute(0, 3, 1, 2)
    expected = reference_forward(arrays, x, "map")
    with torch.no_grad():
        out = model(x_nchw)
        exact = model.double()(x_nchw.double())
    # float32 as loaded: agreement up to float32 rounding of logits of size ~10.
    torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=1e-5)
    # float64: the same function, so only rounding at 1e-16 is left: any mapping mistake is O(0.1).
    assert (exact - expected).abs().max().item() <= 1e-9
    # The MAP head is not a no-op: pooling by the mean instead gives other logits.
    assert (reference_forward(arrays, x, "gap") - expected).abs().max().item() > 1e-2


# -- (2) export to big_vision and back is bit-exact ---------------------------------------------------------


def test_big_vision_roundtrip_bit_exact(map_npz, tmp_path):
    path, arrays, x = map_npz
    model = ViT.from_pretrained(path)
    write_npz(from_minivit(model.state_dict(), LAYOUTS["big_vision"], model.config, P), tmp_path / "back.npz")
    with np.load(tmp_path / "back.npz", allow_pickle=False) as z:
        back = {k: z[k] for k in z.files}
    assert set(back) == set(arrays)
    for k, v in arrays.items():
        assert back[k].shape == v.shape and np.array_equal(back[k], v), k
    again = ViT.from_pretrained(tmp_path / "back.npz")
    assert again.config == model.config
    assert all(torch.equal(again.state_dict()[k], v) for k, v in model.state_dict().items())


def test_timm_and_minivit_roundtrips_and_refused_targets(tmp_path):
    rng = np.random.default_rng(1)
    arrays = {**synthetic_gap_arrays(rng), **map_head_arrays(rng, 32, 4, 64)}
    np.savez(tmp_path / "m.npz", **arrays)
    model = ViT.from_pretrained(tmp_path / "m.npz")
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    export(model, tmp_path / "timm", "timm")  # timm's global_pool="map": AttentionPoolLatent at attn_pool.*
    tc = timm_config(model.config)
    assert tc["global_pool"] == "map" and tc["model_args"]["class_token"] is False
    save_checkpoint(model, tmp_path / "m.safetensors")
    for src, layout in [(tmp_path / "timm", "timm"), (tmp_path / "m.safetensors", "minivit")]:
        back = ViT.from_pretrained(src)
        assert back.load_report.layout == layout and back.load_report.ok and back.config.classifier == "map"
        assert all(torch.equal(back.state_dict()[k], v) for k, v in model.state_dict().items())
        with torch.no_grad():
            assert torch.equal(back(x), model(x))
    with pytest.raises(CheckpointError, match="transformers"):
        export(model, tmp_path / "hf", "transformers")
    with pytest.raises(CheckpointError, match="vit_jax layout has no place for map_head"):
        export(model, tmp_path / "vj.npz", "vit_jax")


def test_fine_tuning_setup_keeps_the_map_head(tmp_path):
    rng = np.random.default_rng(2)
    arrays = {**synthetic_gap_arrays(rng), **map_head_arrays(rng, 32, 4, 64)}
    np.savez(tmp_path / "m.npz", **arrays)
    full = ViT.from_pretrained(tmp_path / "m.npz")
    model = ViT.from_pretrained(tmp_path / "m.npz", num_classes=7, image_size=32)
    assert set(model.load_report.new) == {"head.weight", "head.bias"} and model.pos_embed.shape == (1, 16, 32)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in full.state_dict().items() if k.startswith("map_head."))
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)


@pytest.mark.parametrize("damage, message", [
    ("probe_only", "MAPHead_0/MultiHeadDotProductAttention_0/query/kernel is missing"),
    ("with_cls", "both a cls token and a MAP head"),
    ("other_heads", "MAP head has 2 heads, the encoder 4"),
    ("no_probe", "MAPHead_0 tensors but no params/MAPHead_0/probe"),
    ("mlp_width", "map_head.mlp.fc1.weight has shape"),
])
def test_bad_map_heads_are_one_line_errors(tmp_path, damage, message):
    rng = np.random.default_rng(3)
    arrays = synthetic_gap_arrays(rng)
    head = map_head_arrays(rng, 32, 2 if damage == "other_heads" else 4, 48 if damage == "mlp_width" else 64)
    if damage == "probe_only":
        head = {k: v for k, v in head.items() if k.endswith("probe")}
    if damage == "no_probe":
        head = {k: v for k, v in head.items() if not k.endswith("probe")}
    if damage == "with_cls":
        arrays[f"{P}cls"] = np.zeros((1, 1, 32), np.float32)
    np.savez(tmp_path / "bad.npz", **arrays, **head)
    with pytest.raises(CheckpointError, match=message) as e:
        ViT.from_pretrained(tmp_path / "bad.npz")
    assert "\n" not in str(e.value) and "bad.npz" in str(e.value)


# -- the module itself ------------------------------------------------------------------------------------


def tiny_map(**kw) -> ViT:
    cfg = dict(image_size=16, patch_size=4, dim=32, depth=1, heads=4, mlp_dim=64, num_classes=3, classifier="map")
    return ViT(ViTConfig(**{**cfg, **kw}))


def test_init_follows_big_vision():
    torch.manual_seed(0)
    head = tiny_map(dim=256, heads=4, mlp_dim=512).map_head
    # flax xavier_uniform on the (1, 1, D) probe: fan_in 1, fan_out D.
    bound = math.sqrt(6 / (1 + 256))
    assert head.probe.abs().max() <= bound and head.probe.abs().max() > 0.9 * bound
    # k and v are two (D, D) kernels in flax, each xavier on its own: bound sqrt(6 / 2D), not sqrt(6 / 3D).
    kv_bound = math.sqrt(6 / 512)
    for half in head.kv.weight.chunk(2):
        assert half.abs().max() <= kv_bound and half.abs().max() > 0.95 * kv_bound
    assert torch.count_nonzero(head.q.bias) == 0 and torch.count_nonzero(head.kv.bias) == 0


def test_map_pooling_ignores_token_order_and_matches_explicit_path():
    torch.manual_seed(0)
    model = tiny_map().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
        x = torch.randn(2, 3, 16, 16)
        logits, out = model(x, return_out=True)
        tokens = out["encoded"]  # (2, 16, 32)
        pooled, _ = model.map_head(tokens)
        torch.testing.assert_close(pooled, out["pooled"])
        # Attention pooling is a weighted sum over the tokens: their order does not matter.
        torch.testing.assert_close(model.map_head(tokens[:, torch.randperm(16)])[0], pooled, atol=1e-5, rtol=1e-5)
        explicit, out = model(x, attention=True)
        torch.testing.assert_close(explicit, logits, atol=1e-5, rtol=1e-5)
        assert len(out["attention"]) == 1 and out["attention"][0].shape == (2, 4, 16, 16)  # no CLS slot
        assert out["map_attention"].shape == (2, 4, 1, 16)


def test_map_attention_equals_an_independent_einsum():
    """out["map_attention"] is softmax(q(probe) . k(tokens) / sqrt(hd)) per head, computed here from the weights."""
    torch.manual_seed(1)
    model = tiny_map().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
        _, out = model(torch.randn(3, 3, 16, 16), attention=True)
        head, tokens = model.map_head, out["encoded"].double()  # (3, 16, 32)
        heads, hd = 4, 8
        q = (head.probe.double()[0] @ head.q.weight.double().T + head.q.bias.double()).view(1, heads, hd)  # (1, h, hd)
        k_w, k_b = head.kv.weight.double()[:32], head.kv.bias.double()[:32]  # rows [k; v]: the k half
        k = (torch.einsum("bnd,ed->bne", tokens, k_w) + k_b).view(3, 16, heads, hd)  # (B, N, h, hd)
        scores = torch.einsum("qhc,bnhc->bhqn", q, k) / hd**0.5  # (B, h, 1, N)
        expected = scores.softmax(dim=-1).float()
    torch.testing.assert_close(out["map_attention"], expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out["map_attention"].sum(-1), torch.ones(3, 4, 1))


def test_config_validation_names_the_choices():
    with pytest.raises(ConfigError, match="'token', 'gap', 'map'"):
        ViTConfig(classifier="attention")
    assert ViTConfig(classifier="map").num_prefix_tokens == 0
