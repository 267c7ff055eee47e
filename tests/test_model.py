"""The model: published sizes, the one forward and its out dict, both attention paths, the conv stem,
resampling, precision, compile."""

import re

import numpy as np
import pytest
import torch
from PIL import Image
from hypothesis import given, settings
from hypothesis import strategies as st

import minivit
from minivit import ConfigError, ViT, ViTConfig, create_model, resample_pos_embed
from minivit.checkpoints import save_checkpoint
from minivit.model.config import config_from_name, parse_name


def tiny(**overrides) -> ViTConfig:
    fields = dict(image_size=32, patch_size=8, dim=32, depth=2, heads=4, mlp_dim=64, num_classes=5)
    fields.update(overrides)
    return ViTConfig(**fields)


def randomized(model: ViT, seed: int = 0) -> ViT:
    """Re-draw every parameter: the zero head and unit norms of a fresh model hide mistakes."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model.eval()


@pytest.mark.parametrize(
    "name, expected",
    [
        ("ViT-B_16", 86_567_656),
        ("Ti/16", 5_717_416),
        ("vit_small_patch16_224", 22_050_664),
        ("ViT-L/16", 304_326_632),
    ],
)
def test_published_parameter_counts(name, expected):
    with torch.device("meta"):  # sizes only: no memory, no init time
        model = ViT(config_from_name(name))
    assert model.num_params() == expected


@pytest.mark.parametrize(
    "name, parsed",
    [
        ("ViT-B_16", ("B", 16, 224)),
        ("B/16", ("B", 16, 224)),
        ("ViT-B/32-384", ("B", 32, 384)),
        ("ViT-H_14", ("H", 14, 224)),
        ("vit_tiny_patch16_384.augreg_in21k_ft_in1k", ("Ti", 16, 384)),
        ("vit_large_patch32_224", ("L", 32, 224)),
        ("S_16-i21k-300ep-lr_0.001-aug_light1-wd_0.03-do_0.0-sd_0.0", ("S", 16, 224)),
        ("ViT-S_8", ("S", 8, 224)),
    ],
)
def test_names_in_every_dialect(name, parsed):
    assert parse_name(name) == parsed


@pytest.mark.parametrize("name", ["ViT-X_16", "B/15", "resnet50", "vit_base_patch16_x", ""])
def test_unknown_names_are_clear_errors(name):
    with pytest.raises(ConfigError, match="unknown model name"):
        config_from_name(name)


def test_bad_config_is_one_clear_error():
    with pytest.raises(ConfigError, match="not a multiple of patch_size"):
        tiny(image_size=30)
    with pytest.raises(ConfigError, match="unknown option"):
        config_from_name("B/16", hidden_size=3)
    model = ViT(tiny())
    with pytest.raises(ConfigError, match="not a multiple of the patch size"):
        model(torch.randn(1, 3, 33, 32))


@pytest.mark.parametrize("field, value", [
    ("dim", 0), ("dim", "big"), ("depth", 0), ("depth", 1.5), ("heads", -2), ("mlp_dim", 0), ("patch_size", 0),
    ("num_classes", -1), ("representation_size", 0), ("dropout", 1.0), ("attn_dropout", -0.1), ("drop_path", 1),
    ("norm_eps", 0.0), ("norm_eps", None), ("image_size", [32, 32, 3]), ("image_size", {"h": 32}), ("image_size", 0),
    ("depth", True),
])
def test_out_of_range_fields_are_one_line_config_errors(field, value):
    with pytest.raises(ConfigError) as err:
        tiny(**{field: value})
    assert field in str(err.value) and "\n" not in str(err.value)


def test_from_pretrained_refuses_out_of_range_metadata(tmp_path):
    import json

    from minivit import CheckpointError
    from minivit.checkpoints.writing import write_safetensors

    model = ViT(tiny())
    path = tmp_path / "odd.safetensors"
    write_safetensors(model.state_dict(), path, {"minivit_config": json.dumps({**model.config.to_dict(), "dropout": 2.0})})
    with pytest.raises(CheckpointError) as err:
        ViT.from_pretrained(path)
    assert "odd.safetensors" in str(err.value) and "dropout" in str(err.value) and "\n" not in str(err.value)


def test_reset_head_follows_the_model_device_and_dtype():
    model = ViT(tiny(representation_size=24)).to(torch.float64)
    model.reset_head(7)
    assert model.head.weight.dtype == torch.float64 and model.head.weight.device == model.pos_embed.device
    assert model(torch.randn(1, 3, 32, 32, dtype=torch.float64)).shape == (1, 7)


def test_config_round_trips_through_dict():
    cfg = tiny(image_size=(32, 48), classifier="gap", representation_size=16, gelu="tanh")
    assert ViTConfig.from_dict(cfg.to_dict()) == cfg
    assert ViTConfig.from_dict(tiny(classifier="map").to_dict()).classifier == "map"
    with pytest.raises(ConfigError):
        ViTConfig.from_dict({**cfg.to_dict(), "bogus": 1})


def test_init_is_deterministic_under_seed_and_follows_reference():
    torch.manual_seed(0)
    a = ViT(tiny())
    torch.manual_seed(0)
    b = ViT(tiny())
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name
    assert torch.count_nonzero(a.head.weight) == 0 and torch.count_nonzero(a.head.bias) == 0
    big = ViT(tiny(dim=256, heads=4, mlp_dim=512, image_size=64))
    assert big.pos_embed.std().item() == pytest.approx(0.02 * 0.88, rel=0.1)  # std of a 2-sigma truncated normal
    assert big.pos_embed.abs().max() <= 0.04 + 1e-6  # truncated at 2 std
    fc1 = big.blocks[0].mlp.fc1.weight  # xavier uniform on [-a, a], a = sqrt(6 / (fan_in + fan_out))
    a = (6 / (256 + 512)) ** 0.5
    assert fc1.abs().max() <= a
    # ...and it fills that interval: 131k draws reach within 0.1% of the bound, with a uniform's std a / sqrt(3)
    assert fc1.abs().max() >= 0.999 * a and fc1.min() <= -0.999 * a
    assert fc1.std().item() == pytest.approx(a / 3**0.5, rel=0.02) and abs(fc1.mean().item()) < 0.01 * a


@pytest.mark.parametrize("classifier", ["token", "gap", "map"])
def test_explicit_attention_matches_sdpa(classifier):
    model = randomized(ViT(tiny(classifier=classifier)))
    x = torch.randn(3, 3, 32, 32)
    logits, out = model(x, attention=True)
    torch.testing.assert_close(logits, model(x), atol=1e-5, rtol=1e-5)
    tokens = 16 + (classifier == "token")
    assert [m.shape for m in out["attention"]] == [(3, 4, tokens, tokens)] * 2
    for probs in out["attention"]:
        torch.testing.assert_close(probs.sum(-1), torch.ones(3, 4, tokens))
        assert probs.min() >= 0
    assert ("map_attention" in out) == (classifier == "map")


@pytest.mark.parametrize("classifier, norm_after_pool", [("token", False), ("gap", False), ("gap", True), ("map", False)])
def test_out_dict_holds_every_intermediate(classifier, norm_after_pool):
    model = randomized(ViT(tiny(classifier=classifier, norm_after_pool=norm_after_pool, representation_size=24)))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        logits, out = model(x, return_out=True)
        T = 16 + (classifier == "token")
        assert [t.shape for t in out["tokens"]] == [(2, T, 32)] * 2
        assert out["encoded"].shape == (2, T, 32) and out["pooled"].shape == (2, 32)
        assert "attention" not in out and "map_attention" not in out  # only on request
        if norm_after_pool:  # the norm belongs to the pooled vector: encoded is the last block's output
            assert torch.equal(out["encoded"], out["tokens"][-1])
            torch.testing.assert_close(out["pooled"], model.norm(out["tokens"][-1].mean(dim=1)))
        else:  # the last block's tokens, normed, are the encoded tokens
            assert torch.equal(model.norm(out["tokens"][-1]), out["encoded"])
        if classifier == "token":
            assert torch.equal(out["pooled"], out["encoded"][:, 0])
        torch.testing.assert_close(out["pre_logits"], torch.tanh(model.pre_logits(out["pooled"])))
        assert torch.equal(logits, model.head(out["pre_logits"]))
        # Each block's output is that block applied to the previous one.
        assert torch.equal(out["tokens"][1], model.blocks[1](out["tokens"][0])[0])


def test_representation_layer_and_headless_model():
    model = randomized(ViT(tiny(representation_size=24)))
    features = model(torch.randn(2, 3, 32, 32))
    assert features.shape == (2, 5)
    headless = randomized(ViT(tiny(representation_size=24, num_classes=0)))
    pooled = headless(torch.randn(2, 3, 32, 32))
    assert pooled.shape == (2, 24) and pooled.abs().max() <= 1  # tanh output


def test_reset_head_drops_representation_like_the_paper():
    model = randomized(ViT(tiny(representation_size=24)))
    model.reset_head(7)
    assert model.pre_logits is None and model.config.representation_size is None
    assert model.head.weight.shape == (7, 32) and torch.count_nonzero(model.head.weight) == 0
    kept = randomized(ViT(tiny(representation_size=24)))
    kept.reset_head(7, keep_representation=True)
    assert kept.head.weight.shape == (7, 24) and kept.pre_logits is not None


def test_norm_after_pool_normalises_the_pooled_vector():
    model = randomized(ViT(tiny(classifier="gap", norm_after_pool=True, num_classes=0)))
    x = torch.randn(2, 3, 32, 32)
    features, out = model(x, return_out=True)
    expected = model.norm(out["encoded"].mean(dim=1))
    torch.testing.assert_close(features, expected)


def test_on_the_fly_resampling_equals_resize_image():
    model = randomized(ViT(tiny()))
    x = torch.randn(2, 3, 48, 64)
    with torch.no_grad():
        on_the_fly = model(x)
    resized = randomized(ViT(tiny()))
    resized.resize_image((48, 64))
    assert resized.config.grid == (6, 8) and resized.pos_embed.shape == (1, 1 + 48, 32)
    with torch.no_grad():
        assert torch.equal(on_the_fly, resized(x))  # one rule, so the very same numbers
        # No cache: a weight update is seen by the next forward.
        model.pos_embed.add_(1.0)
        assert not torch.equal(model(x), on_the_fly)


def test_resampled_pos_embed_gets_gradients_in_training():
    model = randomized(ViT(tiny())).train()
    model(torch.randn(2, 3, 48, 48)).sum().backward()
    assert model.pos_embed.grad is not None and model.pos_embed.grad.abs().sum() > 0


def pil_bicubic(grid: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """An independent reference: Pillow's antialiased bicubic resize of each (h, w) channel of (h, w, D)."""
    channels = [np.asarray(Image.fromarray(grid[..., d].numpy().astype(np.float32), mode="F")
                           .resize((size[1], size[0]), Image.BICUBIC)) for d in range(grid.shape[-1])]
    return torch.from_numpy(np.stack(channels, axis=-1))  # (h', w', D)


@pytest.mark.parametrize("old, new", [((4, 4), (8, 8)), ((14, 14), (3, 3)), ((4, 6), (7, 3)), ((5, 5), (5, 9))])
def test_resampling_matches_an_independent_bicubic(old, new):
    torch.manual_seed(0)
    pe = torch.randn(1, 1 + old[0] * old[1], 6)
    out = resample_pos_embed(pe, new, old, num_prefix=1)
    assert out.shape == (1, 1 + new[0] * new[1], 6)
    assert torch.equal(out[:, 0], pe[:, 0])  # the CLS slot is kept apart
    expected = pil_bicubic(pe[0, 1:].reshape(*old, 6), new).reshape(1, -1, 6)
    torch.testing.assert_close(out[:, 1:], expected, atol=1e-5, rtol=1e-5)
    # bf16 weights are resampled in float32 and only then cast back (at most one bf16 rounding step off).
    half = pe.bfloat16()
    from_half = pil_bicubic(half[0, 1:].float().reshape(*old, 6), new).reshape(1, -1, 6).bfloat16()
    out_half = resample_pos_embed(half, new, old, 1)
    assert out_half.dtype == torch.bfloat16
    torch.testing.assert_close(out_half[:, 1:].float(), from_half.float(), atol=1e-2, rtol=1e-2)
    # A constant grid stays constant under any interpolation.
    const = torch.cat([pe[:, :1], torch.full((1, old[0] * old[1], 6), 0.3)], dim=1)
    torch.testing.assert_close(resample_pos_embed(const, new, old, 1)[:, 1:], torch.full((1, new[0] * new[1], 6), 0.3))


def test_drop_path_and_dropout_are_training_only():
    model = randomized(ViT(tiny(drop_path=0.5, dropout=0.3, attn_dropout=0.3)))
    x = torch.randn(4, 3, 32, 32)
    assert torch.equal(model(x), model(x))  # eval: deterministic
    model.train()
    assert not torch.equal(model(x), model(x))


def test_grad_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    a = randomized(ViT(tiny())).train()
    b = randomized(ViT(tiny())).train()
    b.set_grad_checkpointing()
    x = torch.randn(2, 3, 32, 32)
    a(x).square().sum().backward()
    b(x).square().sum().backward()
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, msg=name)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_and_half_weights(dtype):
    model = randomized(ViT(tiny()))
    x = torch.randn(2, 3, 32, 32)
    reference = model(x)
    with torch.autocast("cpu", dtype=dtype):
        mixed = model(x)
    assert mixed.dtype == dtype
    torch.testing.assert_close(mixed.float(), reference, atol=0.1, rtol=0.05)
    if dtype == torch.bfloat16:
        half = model.to(dtype)
        out = half(x.to(dtype)) + half(torch.randn(2, 3, 48, 48, dtype=dtype))  # resampling in bf16 too
        assert out.dtype == dtype and torch.isfinite(out).all()


def test_compiles_with_no_graph_break():
    model = randomized(ViT(tiny()))
    x = torch.randn(2, 3, 32, 32)
    explanation = torch._dynamo.explain(model)(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(x), model(x))
    x48 = torch.randn(2, 3, 48, 48)  # another size: the resampling of the position embeddings compiled too
    torch.testing.assert_close(compiled(x48), model(x48))
    logits, out = torch.compile(model, fullgraph=True, backend="eager")(x, attention=True)  # the out dict too
    torch.testing.assert_close(logits, model(x), atol=1e-5, rtol=1e-5)
    model.train()
    torch.compile(model, fullgraph=True, backend="eager")(x).sum().backward()


def test_public_api_builds_loads_and_runs_a_model(tmp_path):
    """What the README shows, through the public names only: a model by name, its out dict, saved and read
    back (from minivit and from minivit.model alike), and the one-line error of a bad input."""
    from minivit.checkpoints import save_checkpoint
    from minivit.model import ViT as ModelViT

    model = minivit.create_model("Ti/16", image_size=32, patch_size=8, dim=32, depth=2, heads=2, mlp_dim=64,
                                 num_classes=7).eval()
    x = torch.randn(2, 3, 32, 32)
    logits, out = model(x, attention=True)
    assert logits.shape == (2, 7) and len(out["tokens"]) == len(out["attention"]) == 2
    assert minivit.config_from_name("Ti/16").dim == 192 and isinstance(model.config, minivit.ViTConfig)
    save_checkpoint(model, tmp_path / "m.safetensors")
    for load in (minivit.ViT.from_pretrained, ModelViT.from_pretrained):
        assert torch.equal(load(tmp_path / "m.safetensors")(x), model(x))
    with pytest.raises(minivit.ConfigError, match="for one image pass x"):
        model(x[0])
    pe = minivit.resample_pos_embed(model.pos_embed, (6, 6), model.config.grid, num_prefix=1)
    assert pe.shape == (1, 37, 32) and torch.equal(pe[:, 0], model.pos_embed[:, 0])


def test_a_plain_forward_keeps_no_block_output_alive():
    """model(x) under no_grad frees each block's output once the next block has read it; the out dict
    (return_out / attention) is what keeps them all, and only when asked for."""
    import gc
    import weakref

    model = ViT(tiny(depth=4)).eval()
    x = torch.randn(2, 3, 32, 32)

    def alive_when_the_last_block_runs(**kw) -> int:
        outputs, alive = [], []

        def count(module, inputs):  # a pre-hook returning None leaves the inputs as they are
            gc.collect()
            alive.append(sum(r() is not None for r in outputs))

        hooks = [b.register_forward_hook(lambda m, i, o: outputs.append(weakref.ref(o[0]))) for b in model.blocks]
        hooks.append(model.blocks[-1].register_forward_pre_hook(count))
        with torch.no_grad():
            model(x, **kw)
        for h in hooks:
            h.remove()
        return alive[0]

    assert alive_when_the_last_block_runs() == 1  # only the output the last block is reading
    assert alive_when_the_last_block_runs(return_out=True) == 3  # every block's, for out["tokens"]


# --- the convolutional stem and the input channels ------------------------------------


def conv_tiny(**overrides) -> ViTConfig:
    return tiny(**{**dict(stem="conv", patch_size=4, image_size=48, dim=64), **overrides})


@pytest.mark.parametrize("in_chans", [1, 3])
@pytest.mark.parametrize("size", [(32, 32), (48, 48), (64, 64), (48, 64)])
def test_conv_stem_output_shapes(in_chans, size):
    model = randomized(ViT(conv_tiny(in_chans=in_chans)))
    x = torch.randn(2, in_chans, *size)
    with torch.no_grad():
        tokens = model.patch_embed(x)
        logits, out = model(x, return_out=True)
    grid = (size[0] // 4, size[1] // 4)
    assert tokens.shape == (2, grid[0] * grid[1], 64)
    assert logits.shape == (2, 5) and out["encoded"].shape == (2, 1 + grid[0] * grid[1], 64)


def test_conv_stem_structure_follows_xiao_et_al():
    """p = 4: five 3x3 conv+BN+GELU layers (stride 1, 2, 1, 2, 1), widths D/8 -> D/4 -> D/2, then a 1x1 to D."""
    stem = ViT(conv_tiny(dim=384, heads=6, in_chans=1)).patch_embed
    convs = [layer.conv for layer in stem.convs]
    assert [c.stride[0] for c in convs] == [1, 2, 1, 2, 1] and all(c.kernel_size == (3, 3) for c in convs)
    assert [c.out_channels for c in convs] == [48, 96, 96, 192, 192] and convs[0].in_channels == 1
    assert all(c.bias is None for c in convs)  # BatchNorm follows: a bias would be redundant
    assert all(torch.equal(layer.norm.weight, torch.ones(c.out_channels)) for layer, c in zip(stem.convs, convs))
    assert all(torch.count_nonzero(layer.norm.bias) == 0 for layer in stem.convs)
    assert stem.proj.kernel_size == (1, 1) and (stem.proj.in_channels, stem.proj.out_channels) == (192, 384)
    x = torch.randn(2, 1, 48, 48)
    assert stem.convs(x).shape == (2, 192, 12, 12)
    assert len(ViT(tiny(stem="conv", patch_size=16, image_size=32)).patch_embed.convs) == 1 + 2 * 4


def test_stem_width_sets_the_first_stage_and_doubles_per_halving(tmp_path):
    """stem_width=w: w channels at full resolution, 2w, 4w after each stride-2 stage; the 1x1 projects to D."""
    config = conv_tiny(dim=64, in_chans=1, stem_width=12)
    stem = ViT(config).patch_embed
    assert [layer.conv.out_channels for layer in stem.convs] == [12, 24, 24, 48, 48]
    assert (stem.proj.in_channels, stem.proj.out_channels) == (48, 64)
    model = randomized(ViT(config)).eval()
    x = torch.randn(2, 1, 48, 48)
    with torch.no_grad():
        assert stem.convs(x).shape == (2, 48, 12, 12)
    save_checkpoint(model, tmp_path / "w.safetensors")  # the width is part of the saved config
    back = ViT.from_pretrained(tmp_path / "w.safetensors")
    assert back.config.stem_width == 12
    with torch.no_grad():
        assert torch.equal(back(x), model(x))


@pytest.mark.parametrize("fields, message", [
    (dict(stem="patch", stem_width=16), "stem_width=16 needs stem='conv'"),
    (dict(stem="conv", stem_width=0), "stem_width must be None or an integer >= 1, not 0"),
    (dict(stem="conv", stem_width=8.5), "stem_width must be None or an integer >= 1, not 8.5"),
])
def test_stem_width_is_checked(fields, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        tiny(**fields)


def test_conv_stem_needs_a_power_of_two_patch():
    with pytest.raises(ConfigError, match="stem='conv' needs a power-of-two patch_size"):
        tiny(stem="conv", patch_size=6, image_size=36)
    with pytest.raises(ConfigError, match="stem must be one of 'patch', 'conv'"):
        tiny(stem="resnet")
    with pytest.raises(ConfigError, match="in_chans must be 1"):
        tiny(in_chans=4)


@pytest.mark.parametrize("in_chans, given", [(3, 1), (1, 3), (3, 4)])
def test_wrong_channel_count_is_a_config_error(in_chans, given):
    model = ViT(tiny(in_chans=in_chans))
    plural = "s" if given != 1 else ""
    with pytest.raises(ConfigError) as err:
        model(torch.randn(1, given, 32, 32))
    assert str(err.value) == f"input has {given} channel{plural} but the model expects {in_chans} (in_chans={in_chans})"


def test_conv_stem_compiles_forward_and_backward_with_no_graph_break():
    model = randomized(ViT(conv_tiny(in_chans=1, depth=1))).train()
    x = torch.randn(2, 1, 32, 32)
    explanation = torch._dynamo.explain(model)(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    compiled(x).square().sum().backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None for g in grads.values())
    model.zero_grad()
    model(x).square().sum().backward()  # batch statistics of the same batch: the same gradients eagerly
    for n, p in model.named_parameters():
        torch.testing.assert_close(grads[n], p.grad, msg=n)


def test_conv_stem_init_and_batchnorm_running_stats():
    torch.manual_seed(0)
    stem = ViT(conv_tiny(dim=256, heads=4)).patch_embed
    w = stem.convs[1].conv.weight  # kaiming normal, fan_out: std sqrt(2 / (out * 3 * 3))
    assert w.std().item() == pytest.approx((2 / (w.shape[0] * 9)) ** 0.5, rel=0.1)
    model = ViT(conv_tiny()).train()
    model(torch.randn(4, 3, 48, 48))
    assert model.patch_embed.convs[0].norm.num_batches_tracked.item() == 1  # BN statistics move in training only
    before = model.patch_embed.convs[0].norm.running_mean.clone()
    model.eval()(torch.randn(4, 3, 48, 48))
    assert torch.equal(model.patch_embed.convs[0].norm.running_mean, before)


# --- properties ------------------------------------------------------------------------

configs = st.builds(
    lambda patch, gh, gw, heads, head_dim, depth, classifier, rep, nc, gelu: ViTConfig(
        image_size=(patch * gh, patch * gw), patch_size=patch, dim=heads * head_dim, depth=depth,
        heads=heads, mlp_dim=2 * heads * head_dim, classifier=classifier, representation_size=rep,
        num_classes=nc, gelu=gelu,
    ),
    patch=st.sampled_from([2, 4, 8]),
    gh=st.integers(1, 4),
    gw=st.integers(1, 4),
    heads=st.integers(1, 4),
    head_dim=st.sampled_from([4, 8]),
    depth=st.integers(1, 2),
    classifier=st.sampled_from(["token", "gap", "map"]),
    rep=st.one_of(st.none(), st.integers(4, 12)),
    nc=st.integers(0, 6),
    gelu=st.sampled_from(["exact", "tanh"]),
)


@settings(max_examples=30, deadline=None)
@given(cfg=configs, batch=st.integers(2, 4), seed=st.integers(0, 2**16), extra=st.tuples(st.integers(1, 3), st.integers(1, 3)))
def test_properties_of_any_config(cfg, batch, seed, extra):
    torch.manual_seed(seed)
    model = randomized(ViT(cfg), seed)
    h, w = cfg.image_hw
    x = torch.randn(batch, 3, h, w)
    with torch.no_grad():
        out = model(x)
        width = cfg.num_classes or cfg.representation_size or cfg.dim
        assert out.shape == (batch, width)
        logits, att = model(x, attention=True)
        assert att["encoded"].shape == (batch, cfg.num_tokens, cfg.dim)
        # A batch and its halves give the same outputs: no sample leaks into another.
        halves = torch.cat([model(x[: batch // 2]), model(x[batch // 2 :])])
        torch.testing.assert_close(halves, out, atol=1e-5, rtol=1e-5)
        # The explicit attention path computes the same function as SDPA.
        torch.testing.assert_close(logits, out, atol=1e-5, rtol=1e-5)
        # Any other grid runs, and equals resizing once.
        other = (cfg.patch_size * extra[0], cfg.patch_size * extra[1])
        y = torch.randn(batch, 3, *other)
        resized = randomized(ViT(cfg), seed)
        resized.resize_image(other)
        assert torch.equal(model(y), resized(y))
        # Resampling to the same grid is the identity (no interpolation round trip).
        assert torch.equal(resample_pos_embed(model.pos_embed, cfg.grid, cfg.grid, cfg.num_prefix_tokens), model.pos_embed)


@pytest.mark.parametrize("name, parsed", [
    ("vit-base-patch16-224", ("B", 16, 224)),
    ("google/vit-base-patch16-224", ("B", 16, 224)),
    ("google/vit-base-patch16-224-in21k", ("B", 16, 224)),
    ("vit-large-patch32-384", ("L", 32, 384)),
    ("vit-huge-patch14-224-in21k", ("H", 14, 224)),
    ("Google/ViT-Base-Patch32-384", ("B", 32, 384)),
    ("timm/vit_small_patch16_224.augreg_in21k", ("S", 16, 224)),
])
def test_transformers_and_hugging_face_repo_names(name, parsed):
    assert parse_name(name) == parsed


def test_a_transformers_name_builds_the_paper_names_model():
    with torch.device("meta"):  # sizes only
        assert create_model("vit-base-patch16-224").num_params() == create_model("B/16").num_params() == 86_567_656
    assert config_from_name("google/vit-huge-patch14-224-in21k") == config_from_name("H/14")
    assert config_from_name("vit-large-patch32-384", num_classes=7) == config_from_name("L/32-384", num_classes=7)


@pytest.mark.parametrize("name", ["vit-base-patch15-224", "openai/vit-base-patch16-224", "vit-base16-224",
                                  "vit-base-patch16-224-finetuned-fer2013", "google/vit-base_patch16_224"])
def test_an_unknown_name_lists_every_dialect(name):
    with pytest.raises(ConfigError) as e:
        config_from_name(name)
    message = str(e.value)
    assert message.startswith(f"unknown model name {name!r}") and "\n" not in message
    for example in ("'ViT-B_16'", "'B/16'", "'vit_base_patch16_224'", "'google/vit-base-patch16-224'", "-in21k'"):
        assert example in message, example


def test_an_unbatched_image_is_a_one_line_error_naming_the_shapes():
    """Batches only (as nanoGPT's model): a (C, H, W) image is refused with the shape it had and the
    shape wanted, not Python's "not enough values to unpack"."""
    model = randomized(ViT(tiny()))
    x = torch.randn(3, 32, 32)
    with pytest.raises(ConfigError, match=r"^input has shape \(3, 32, 32\) but the model expects a batch of images "
                                          r"\(B, C, H, W\): for one image pass x\[None\]$"):
        model(x)
    with pytest.raises(ValueError, match=r"input has shape \(2, 1, 3, 32, 32\) but .* \(B, C, H, W\)$"):
        model(torch.randn(2, 1, 3, 32, 32))  # a ConfigError is a ValueError, for callers that catch those
    with pytest.raises(ConfigError, match=r"input has shape \(32, 32\)"):
        model(torch.randn(32, 32))
    with torch.no_grad():
        assert model(x[None]).shape == (1, 5)  # the batch of one the message suggests
