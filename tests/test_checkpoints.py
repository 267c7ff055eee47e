"""Loading, adapting and exporting checkpoints: what the reference fixtures do not cover.

transformers is the oracle for its own layout (random-weight models saved in tmp_path);
Google layouts are checked by re-saving the fixture's arrays under other prefixes and
scan-stacked, which must give identical outputs.
"""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from minivit import ViT, ViTConfig, resample_pos_embed
from minivit.checkpoints import (
    CONFIG_KEY,
    LAYOUTS,
    export,
    from_minivit,
    read_extra,
    to_minivit,
    save_checkpoint,
    table_markdown,
)
from minivit.checkpoints.reading import read_safetensors
from minivit.checkpoints.writing import write_npz
from minivit.checkpoints.layouts import CONDITIONS
from minivit.common.errors import CheckpointError

REPO = Path(__file__).resolve().parents[1]


def randomize(module, seed=0, scale=0.3):
    """Redraw every parameter: zero biases and unit LayerNorms would hide transposition and mix-ups."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return module.eval()


def tiny(**kw):
    cfg = dict(image_size=16, patch_size=8, dim=32, depth=2, heads=4, mlp_dim=64, num_classes=5)
    return randomize(ViT(ViTConfig(**{**cfg, **kw})))


@pytest.fixture
def transformers():
    """The transformers library: the oracle for its own layout; only the tests that ask for it skip without it."""
    return pytest.importorskip("transformers", reason="transformers is not installed (the oracle of its layout)")


def hf_config(transformers, **kw):
    cfg = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, image_size=16,
               patch_size=8, num_labels=3, attn_implementation="eager")
    return transformers.ViTConfig(**{**cfg, **kw})


def max_diff(a, b):
    return (a - b).abs().max().item()


# -- transformers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("act, gelu", [("gelu", "exact"), ("gelu_pytorch_tanh", "tanh")])
def test_transformers_classifier_nonsquare_eps(tmp_path, transformers, act, gelu):
    hf = randomize(transformers.ViTForImageClassification(hf_config(transformers, image_size=[16, 24],
                                                                    layer_norm_eps=1e-5, hidden_act=act)))
    hf.save_pretrained(tmp_path)  # keys with the "vit." prefix, classifier at the root
    model = ViT.from_pretrained(tmp_path)
    assert model.config.image_size == (16, 24) and model.config.norm_eps == 1e-5 and model.config.gelu == gelu
    x = torch.randn(2, 3, 16, 24)
    with torch.no_grad():
        assert max_diff(model(x), hf(pixel_values=x).logits) < 5e-5


def test_transformers_model_with_pooler(tmp_path, transformers):
    hf = randomize(transformers.ViTModel(hf_config(transformers)))  # saved without a prefix, with the pooler
    hf.save_pretrained(tmp_path)
    model = ViT.from_pretrained(tmp_path)
    assert model.config.num_classes == 0 and model.config.representation_size == 32
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert max_diff(model(x), hf(pixel_values=x).pooler_output) < 5e-5


def test_transformers_model_without_pooler(tmp_path, transformers):
    hf = randomize(transformers.ViTModel(hf_config(transformers), add_pooling_layer=False))
    hf.save_pretrained(tmp_path)
    model = ViT.from_pretrained(tmp_path)
    assert model.config.representation_size is None
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert max_diff(model(x), hf(pixel_values=x).last_hidden_state[:, 0]) < 5e-5


def test_transformers_in_memory_names_load_from_a_folder(tmp_path, transformers):
    """A folder holding transformers 5's in-memory state dict (model.state_dict() saved as is, no save_pretrained)."""
    from safetensors.torch import save_file

    hf = randomize(transformers.ViTForImageClassification(hf_config(transformers)))
    save_file({k: v.contiguous() for k, v in hf.state_dict().items()}, tmp_path / "model.safetensors")
    hf.config.to_json_file(tmp_path / "config.json")
    model = ViT.from_pretrained(tmp_path)
    assert model.load_report.layout == "transformers_v5" and model.load_report.ok
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert max_diff(model(x), hf(pixel_values=x).logits) < 5e-5


@pytest.mark.parametrize("kw, cls", [({}, "ViTForImageClassification"),
                                     ({"gelu": "tanh", "norm_eps": 1e-12, "image_size": (16, 24)}, "ViTForImageClassification"),
                                     ({"num_classes": 0, "representation_size": 32}, "ViTModel")])
def test_export_to_transformers_loads_in_transformers(tmp_path, transformers, kw, cls):
    model = tiny(**kw)
    export(model, tmp_path, "transformers")
    hf = getattr(transformers, cls).from_pretrained(tmp_path, attn_implementation="eager").eval()
    x = torch.randn(2, 3, *model.config.image_hw)
    with torch.no_grad():
        out = hf(pixel_values=x)
        ref = out.logits if cls == "ViTForImageClassification" else out.pooler_output
        assert max_diff(model(x), ref) < 5e-5
    reloaded = ViT.from_pretrained(tmp_path)  # and back: the table used both ways is exact
    assert all(torch.equal(reloaded.state_dict()[k], v) for k, v in model.state_dict().items())


def test_export_refuses_what_the_target_cannot_hold(tmp_path):
    with pytest.raises(CheckpointError, match="representation"):
        export(tiny(representation_size=32), tmp_path / "a", "transformers")
    with pytest.raises(CheckpointError, match="pre_logits"):
        export(tiny(representation_size=32), tmp_path / "b", "timm")
    with pytest.raises(CheckpointError, match="CLS"):
        export(tiny(classifier="gap"), tmp_path / "c", "transformers")


def test_timm_export_refuses_an_mlp_width_timm_cannot_size(tmp_path):
    """timm builds the MLP as int(embed_dim * mlp_ratio): 56 * (61 / 56) is 60.99... -> 60, not 61."""
    with pytest.raises(CheckpointError, match="mlp_dim=61"):
        export(tiny(dim=56, heads=4, mlp_dim=61), tmp_path / "t", "timm")
    assert not (tmp_path / "t").exists()  # refused before anything is written
    export(tiny(dim=56, heads=4, mlp_dim=224), tmp_path / "ok", "timm")
    assert ViT.from_pretrained(tmp_path / "ok").config.mlp_dim == 224


def test_timm_export_roundtrip_gap_fc_norm(tmp_path):
    model = tiny(classifier="gap", norm_after_pool=True)
    export(model, tmp_path, "timm")
    names = set(read_safetensors(tmp_path / "model.safetensors")[0])
    assert "fc_norm.weight" in names and "norm.weight" not in names and "cls_token" not in names
    x = torch.randn(2, 3, 16, 16)
    reloaded = ViT.from_pretrained(tmp_path)
    assert reloaded.config.norm_after_pool and torch.equal(reloaded(x), model(x))


# -- Google npz variants -----------------------------------------------------------------------------


def _resave(src, dst, rename=lambda k: k, extra=None, drop=()):
    with np.load(src) as z:
        arrays = {rename(k): z[k] for k in z.files if k not in drop}
    np.savez(dst, **arrays, **(extra or {}))
    return dst


def _run(path, x, **kw):
    with torch.no_grad():
        return ViT.from_pretrained(path, **kw)(x)


def test_vit_jax_opt_target_prefix_identical(fixtures_dir, tmp_path):
    src = fixtures_dir / "vitjax_token_rep" / "model.npz"
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    dst = _resave(src, tmp_path / "prefixed.npz", lambda k: "opt/target/" + k)
    assert torch.equal(_run(src, x), _run(dst, x))


def test_big_vision_img_prefix_and_scan_stacked_identical(fixtures_dir, tmp_path):
    src = fixtures_dir / "bigvision_gap" / "model.npz"
    with np.load(src) as z:
        arrays = {k.replace("params/", "params/img/"): z[k] for k in z.files}
    stacked, blocks = {}, {}
    for k, v in arrays.items():
        m = re.match(r"(.*Transformer/)encoderblock_(\d+)/(.*)", k)
        if m:
            blocks.setdefault(f"{m[1]}encoderblock/{m[3]}", {})[int(m[2])] = v
        else:
            stacked[k] = v
    for k, per_layer in blocks.items():  # scan-over-layers: one array with a leading depth axis
        stacked[k] = np.stack([per_layer[i] for i in sorted(per_layer)])
    np.savez(tmp_path / "scan.npz", **stacked)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    model = ViT.from_pretrained(tmp_path / "scan.npz")
    assert model.load_report.ok and model.load_report.layout == "big_vision"
    with torch.no_grad():
        assert torch.equal(model(x), _run(src, x))


@pytest.mark.parametrize("layout, prefix", [("vit_jax", ""), ("big_vision", "params/")])
def test_npz_export_roundtrip_token(tmp_path, layout, prefix):
    model = tiny(gelu="tanh", representation_size=16)
    with torch.no_grad():
        model.pos_embed[:, 0] = 0  # big_vision's CLS token has no position embedding
    write_npz(from_minivit(model.state_dict(), LAYOUTS[layout], model.config, prefix), tmp_path / "m.npz")
    reloaded = ViT.from_pretrained(tmp_path / "m.npz")
    assert reloaded.load_report.layout == layout and reloaded.config == model.config
    assert all(torch.equal(reloaded.state_dict()[k], v) for k, v in model.state_dict().items())


def test_big_vision_export_refuses_cls_position(tmp_path):
    with pytest.raises(CheckpointError, match="CLS"):
        export(tiny(gelu="tanh"), tmp_path / "m.npz", "big_vision")


def test_incomplete_map_head_is_a_clear_error(fixtures_dir, tmp_path):
    # Complete MAP heads load (tests/test_map_head.py); a probe alone is a one-line error.
    dst = _resave(fixtures_dir / "bigvision_gap" / "model.npz", tmp_path / "map.npz",
                  extra={"params/MAPHead_0/probe": np.zeros((1, 1, 64), np.float32)})
    with pytest.raises(CheckpointError, match="MAPHead_0/MultiHeadDotProductAttention_0/query/kernel is missing"):
        ViT.from_pretrained(dst)


# -- adapting: num_classes, image_size, overrides, strict --------------------------------------------


def test_new_num_classes_drops_representation(fixtures_dir):
    path = fixtures_dir / "vitjax_token_rep" / "model.npz"
    model = ViT.from_pretrained(path, num_classes=7)
    assert model.config.num_classes == 7 and model.config.representation_size is None and model.pre_logits is None
    assert torch.count_nonzero(model.head.weight) == 0 and torch.count_nonzero(model.head.bias) == 0
    report = model.load_report
    assert set(report.new) == {"head.weight", "head.bias"}
    assert {"head.weight", "pre_logits.weight", "pre_logits.bias"} <= set(report.dropped)
    assert "new: head.weight" in str(report)
    kept = ViT.from_pretrained(path, num_classes=7, keep_representation=True)
    full = ViT.from_pretrained(path)
    assert kept.config.representation_size == 64
    assert torch.equal(kept.pre_logits.weight, full.pre_logits.weight)
    same = ViT.from_pretrained(path, num_classes=10)
    assert not same.load_report.new and torch.equal(same.head.weight, full.head.weight)


@pytest.mark.parametrize("name, ckpt", [("vitjax_token_rep", "model.npz"), ("bigvision_gap", "model.npz"),
                                        ("hf_vit_cls", "hf_model"), ("timm_vit_token", "timm_model")])
def test_new_image_size_resamples_once_by_the_forward_rule(fixtures_dir, name, ckpt):
    """Every layout loads at a new size by the one rule (minivit.pos_embed): loading at 48x40 computes
    exactly what the native-size model computes on a 48x40 input, resampling on the fly."""
    path = fixtures_dir / name / ckpt
    full = ViT.from_pretrained(path)
    model = ViT.from_pretrained(path, image_size=(48, 40))
    grid, prefix = (48 // full.config.patch_size, 40 // full.config.patch_size), full.config.num_prefix_tokens
    assert model.config.image_size == (48, 40) and model.pos_embed.shape == (1, prefix + grid[0] * grid[1], 64)
    expected = resample_pos_embed(full.pos_embed.data, grid, full.config.grid, prefix)
    assert torch.equal(model.pos_embed.data, expected)
    assert torch.equal(model.pos_embed[:, :prefix], full.pos_embed[:, :prefix])  # the CLS slot is kept apart
    assert any("resampled" in n and "bicubic" in n for n in model.load_report.notes)
    x = torch.randn(2, full.config.in_chans, 48, 40)
    with torch.no_grad():
        assert torch.equal(model(x), full(x))  # load-time resampling == the forward's on-the-fly resampling


def test_overrides(fixtures_dir):
    npz = fixtures_dir / "vitjax_token_rep" / "model.npz"
    with pytest.raises(CheckpointError, match="dim=32 contradicts"):
        ViT.from_pretrained(npz, dim=32)
    with pytest.raises(CheckpointError, match="representation_size"):
        ViT.from_pretrained(npz, representation_size=None)
    with pytest.raises(CheckpointError, match="not a ViTConfig field"):
        ViT.from_pretrained(npz, colour="blue")
    with pytest.raises(CheckpointError, match="gelu='tanh' contradicts"):  # config.json states hidden_act
        ViT.from_pretrained(fixtures_dir / "hf_vit_cls" / "hf_model", gelu="tanh")
    model = ViT.from_pretrained(npz, dropout=0.1, norm_eps=1e-5)  # not stated by an npz: allowed, and noted
    assert model.config.dropout == 0.1 and model.config.norm_eps == 1e-5
    assert any("norm_eps" in n for n in model.load_report.notes)


def test_strict_reports_extra_and_missing(fixtures_dir, tmp_path):
    src = fixtures_dir / "vitjax_token_rep" / "model.npz"
    extra = _resave(src, tmp_path / "extra.npz", extra={"Transformer/stray": np.zeros(3, np.float32)})
    with pytest.raises(CheckpointError, match="Transformer/stray"):
        ViT.from_pretrained(extra)
    model = ViT.from_pretrained(extra, strict=False)
    assert model.load_report.unused == ["Transformer/stray"]
    missing = _resave(src, tmp_path / "missing.npz", drop={"Transformer/encoder_norm/scale"})
    with pytest.raises(CheckpointError, match="norm.weight"):
        ViT.from_pretrained(missing)
    model = ViT.from_pretrained(missing, strict=False)
    assert model.load_report.missing == ["norm.weight"] and "norm.weight" in model.load_report.new


# -- minivit's own format ----------------------------------------------------------------------------


def test_minivit_roundtrip_bit_exact(fixtures_dir, tmp_path):
    model = ViT.from_pretrained(fixtures_dir / "vitjax_token_rep" / "model.npz", num_classes=3, image_size=48)
    save_checkpoint(model, tmp_path / "m.safetensors")
    meta = read_safetensors(tmp_path / "m.safetensors")[1]
    assert CONFIG_KEY in meta and '"gelu": "tanh"' in meta[CONFIG_KEY]
    back = ViT.from_pretrained(tmp_path / "m.safetensors")
    assert back.config == model.config and back.load_report.layout == "minivit" and back.load_report.ok
    assert all(torch.equal(back.state_dict()[k], v) for k, v in model.state_dict().items())
    assert not list(tmp_path.glob("*.tmp"))  # atomic write leaves no temp file


# Configs that together switch on every `when` of every table.
BOTH_WAYS_CONFIGS = [dict(classifier="token", representation_size=24), dict(classifier="token"),
                     dict(classifier="token", representation_size=24, num_classes=0), dict(classifier="gap"),
                     dict(classifier="map"), dict(classifier="gap", norm_after_pool=True, num_classes=0),
                     dict(classifier="token", stem="conv", patch_size=4), dict(qkv_bias=False)]


@pytest.mark.parametrize("name", [n for n, lay in LAYOUTS.items()])
def test_every_row_of_every_table_round_trips_both_ways(name):
    """Export with the table read backwards, import with it read forwards: every tensor comes back
    bit-exact, and every row of the table is exercised by at least one config."""
    layout = LAYOUTS[name]
    used_rows = set()
    for fields in BOTH_WAYS_CONFIGS:
        model = tiny(gelu="tanh", **fields)
        if name == "big_vision" and model.config.classifier == "token":
            with torch.no_grad():
                model.pos_embed[:, 0] = 0  # big_vision has no CLS position: only a zero slot is expressible
        try:
            layout.check_expressible(model.config)
            exported = from_minivit(model.state_dict(), layout, model.config, layout.prefixes[0])
        except CheckpointError:
            continue  # a part this layout cannot hold (tested below); it must then hold no row for it
        state, used, missing = to_minivit(exported, layout, layout.prefixes[0], model.config)
        assert not missing and used == set(exported), (name, fields)
        assert state.keys() == model.state_dict().keys(), (name, fields)
        for k, v in model.state_dict().items():
            assert torch.equal(state[k], v), (name, fields, k)
        used_rows |= {(r.ours, r.when) for r in layout.rules if not r.when or CONDITIONS[r.when](model.config)}
    unused_rows = [(r.ours, r.when) for r in layout.rules if (r.ours, r.when) not in used_rows]
    assert not unused_rows, f"{name}: rows no config exercised: {unused_rows}"


def test_docs_print_the_tables_of_the_code():
    docs = (REPO / "docs" / "reference" / "checkpoint_layouts.md").read_text()
    for name in LAYOUTS:
        assert table_markdown(name) in docs, f"docs/reference/checkpoint_layouts.md is out of date: the {name} table"


# -- the conv stem, grayscale, extra metadata, run files ------------------------------------------


def trained_conv_stem(**kw) -> ViT:
    """A conv-stem model whose BatchNorm statistics have moved (a few training-mode forwards)."""
    torch.manual_seed(0)
    cfg = dict(image_size=16, patch_size=4, dim=32, depth=1, heads=4, mlp_dim=64, num_classes=3, stem="conv", in_chans=1)
    model = randomize(ViT(ViTConfig(**{**cfg, **kw}))).train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(4, model.config.in_chans, 16, 16))
    return model.eval()


def test_conv_stem_save_load_round_trip_is_bit_exact(tmp_path):
    model = trained_conv_stem()
    assert model.patch_embed.convs[0].norm.num_batches_tracked.item() == 3
    save_checkpoint(model, tmp_path / "conv.safetensors", extra={"epoch": 7})
    meta = read_safetensors(tmp_path / "conv.safetensors")[1]
    assert '"stem": "conv"' in meta[CONFIG_KEY] and '"in_chans": 1' in meta[CONFIG_KEY]
    back = ViT.from_pretrained(tmp_path / "conv.safetensors")
    assert back.config == model.config and back.load_report.ok
    assert back.state_dict().keys() == model.state_dict().keys()
    for k, v in model.state_dict().items():  # parameters and every BatchNorm buffer
        assert torch.equal(back.state_dict()[k], v) and back.state_dict()[k].dtype == v.dtype, k
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(back(x), model(x))
    assert read_extra(tmp_path / "conv.safetensors") == {"epoch": 7}


@pytest.mark.parametrize("to", ["vit_jax", "big_vision", "transformers", "timm"])
def test_conv_stem_cannot_be_exported_to_other_layouts(tmp_path, to):
    model = trained_conv_stem(in_chans=3)
    with pytest.raises(CheckpointError) as err:
        export(model, tmp_path / "out", to)
    assert str(err.value) == f"stem='conv' cannot be expressed in the {to} layout; save it as minivit .safetensors"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("to", ["vit_jax", "big_vision", "transformers", "timm"])
def test_grayscale_patch_model_exports_to_every_layout(tmp_path, to):
    """in_chans=1 is expressible everywhere: the kernel's shape (npz), num_channels (transformers), in_chans (timm)."""
    model = tiny(in_chans=1, gelu="tanh" if to in ("vit_jax", "big_vision") else "exact", classifier="gap")
    if to == "transformers":
        model = tiny(in_chans=1)
    out = tmp_path / ("out.npz" if LAYOUTS[to].kind == "npz" else "out")
    export(model, out, to)
    back = ViT.from_pretrained(out, gelu=model.config.gelu)
    assert back.config.in_chans == 1
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(back(x), model(x), atol=1e-6, rtol=0)


def test_from_pretrained_reads_the_model_part_of_a_resume_file(tmp_path):
    from minivit.checkpoints.writing import write_safetensors

    model = trained_conv_stem()
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors.update({f"ema.{k}": v + 1 for k, v in model.state_dict().items() if v.is_floating_point()})
    tensors["optim.0.exp_avg"] = torch.zeros(3)
    write_safetensors(tensors, tmp_path / "resume.safetensors",
                      {CONFIG_KEY: json.dumps(model.config.to_dict()), "train_state": "{}"})
    back = ViT.from_pretrained(tmp_path / "resume.safetensors")
    for k, v in model.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k
    assert back.load_report.ok


def test_extra_must_be_json(tmp_path):
    with pytest.raises(CheckpointError, match="extra metadata must be JSON"):
        save_checkpoint(tiny(), tmp_path / "m.safetensors", extra={"when": object()})
    assert not (tmp_path / "m.safetensors").exists()
    save_checkpoint(tiny(), tmp_path / "plain.safetensors")
    assert read_extra(tmp_path / "plain.safetensors") == {}


def test_checkpoint_layer_does_not_import_the_model():
    """The checkpoint layer reads the model's config (minivit/model/config.py), never the model
    (minivit/model/vit.py, or the model package that re-exports it)."""
    import ast

    for path in (REPO / "minivit" / "checkpoints").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                parts = (node.module or "").split(".")
                names = {a.name for a in node.names}
                model = "model" in parts and (parts[-1] == "model" or "vit" in parts or "vit" in names)
                assert not model, f"{path.name} imports {node.module}: {', '.join(names)}"
