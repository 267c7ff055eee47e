"""Bad files -> one-line CheckpointError naming the file; random damage never gives anything else."""

import json
import struct

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minivit import ViT, ViTConfig
from minivit.checkpoints import export, save_checkpoint
from minivit.common.errors import CheckpointError, MinivitError


def tiny_model(**kw):
    torch.manual_seed(0)
    cfg = dict(image_size=16, patch_size=8, dim=16, depth=1, heads=2, mlp_dim=32, num_classes=3, gelu="tanh")
    return ViT(ViTConfig(**{**cfg, **kw})).eval()


@pytest.fixture(scope="module")
def good_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("good")
    model = tiny_model(representation_size=8)
    export(model, d / "m.npz", "vit_jax")
    save_checkpoint(model, d / "m.safetensors")
    return {"npz": (d / "m.npz").read_bytes(), "safetensors": (d / "m.safetensors").read_bytes()}


def expect_error(path, match, **kw):
    with pytest.raises(CheckpointError) as info:
        ViT.from_pretrained(path, **kw)
    msg = str(info.value)
    assert "\n" not in msg and path.name in msg, msg
    assert match in msg, msg


def test_truncated_npz(good_files, tmp_path):
    p = tmp_path / "cut.npz"
    p.write_bytes(good_files["npz"][: len(good_files["npz"]) // 2])
    expect_error(p, "corrupt")


def test_html_page(tmp_path):
    p = tmp_path / "ViT-B_16.npz"
    p.write_text("\n  <!DOCTYPE html>\n<html><head><title>Google Drive</title></head></html>")
    expect_error(p, "HTML page")


def test_git_lfs_pointer(tmp_path):
    p = tmp_path / "ViT-B_16.npz"
    p.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:4e0b\nsize 346000000\n")
    expect_error(p, "Git LFS pointer")


def test_npz_needing_pickle(tmp_path):
    p = tmp_path / "obj.npz"
    np.savez(p, **{"embedding/kernel": np.array([{"a": 1}], dtype=object)})
    expect_error(p, "pickle")


def test_corrupted_safetensors_header(good_files, tmp_path):
    data = bytearray(good_files["safetensors"])
    p = tmp_path / "hugelen.safetensors"
    p.write_bytes(struct.pack("<Q", 10**12) + data[8:])
    expect_error(p, "corrupted safetensors header")
    n = struct.unpack("<Q", data[:8])[0]
    data[8 + n // 2] = ord("}")  # break the JSON in the middle
    p = tmp_path / "badjson.safetensors"
    p.write_bytes(bytes(data))
    expect_error(p, "safetensors")


def test_shapes_contradict_config(tmp_path):
    # config metadata says dim=16 but the tensors are dim=32
    big = tiny_model(dim=32)
    p = tmp_path / "lying.safetensors"
    from minivit.checkpoints.writing import write_safetensors

    write_safetensors(big.state_dict(), p, {"minivit_config": json.dumps(tiny_model().config.to_dict())})
    expect_error(p, "shape")


def test_unknown_layout_and_type(tmp_path):
    p = tmp_path / "other.npz"
    np.savez(p, **{"conv1/weight": np.zeros((3, 3), np.float32)})
    expect_error(p, "unknown checkpoint layout")
    q = tmp_path / "weights.h5"
    q.write_bytes(b"\x89HDF\r\n\x1a\n")
    expect_error(q, "unknown checkpoint type")
    r = tmp_path / "bare.safetensors"
    from minivit.checkpoints.writing import write_safetensors

    write_safetensors({"blocks.0.attn.qkv.weight": torch.zeros(3, 1)}, r)
    expect_error(r, "config")


def test_missing_file_and_empty_folder(tmp_path):
    with pytest.raises(MinivitError) as info:  # not a local path: resolved through minivit.hub, which fails
        ViT.from_pretrained(str(tmp_path / "nothing_here.npz"))
    assert "nothing_here.npz" in str(info.value) and "\n" not in str(info.value)
    expect_error(tmp_path, "config.json")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(["npz", "safetensors"]), data=st.data())
def test_random_damage_loads_or_raises_checkpoint_error(good_files, tmp_path, kind, data):
    good = good_files[kind]
    raw = bytearray(good)
    truncate = data.draw(st.booleans(), label="truncate")
    if truncate:
        raw = raw[: data.draw(st.integers(0, len(raw) - 1), label="length")]
    # Every example is damaged: without a cut, at least one byte really changes. Flips favour the
    # first and last KiB, where the structure is (safetensors' JSON header; the zip headers and the
    # central directory of an npz), as much as the tensor data between them.
    if raw:
        near = min(len(raw) - 1, 1023)
        offset = st.one_of(st.integers(0, near), st.integers(len(raw) - 1 - near, len(raw) - 1),
                           st.integers(0, len(raw) - 1))
        for i in data.draw(st.sets(offset, min_size=0 if truncate else 1, max_size=8), label="offsets"):
            raw[i] ^= data.draw(st.integers(1, 255), label="xor")  # distinct offsets, never xor 0: each byte changes
    assert bytes(raw) != good
    path = tmp_path / f"damaged.{kind}"
    path.write_bytes(bytes(raw))
    loads_whole_or_raises(path)


def loads_whole_or_raises(path):
    """A damaged file is refused with a one-line CheckpointError naming it, or it loads as a whole model."""
    try:
        model = ViT.from_pretrained(path)
    except CheckpointError as e:
        assert "\n" not in str(e) and path.name in str(e)
        return None
    # every parameter read from the file, nothing in the file left over, nothing freshly initialised
    report = model.load_report
    assert report.ok and not report.new and not report.dropped, str(report)
    assert report.loaded == sorted(model.state_dict()), str(report)
    assert model.config.dim == 16
    return model


@pytest.mark.parametrize("kind, name", [("safetensors", b'"head.bias"'), ("npz", b"head/bias.npy")])
def test_one_flipped_byte_in_a_tensor_name(good_files, tmp_path, kind, name):
    """The damage that keeps a file readable: a tensor under another name is refused, not loaded without it."""
    raw = good_files[kind]
    assert name in raw
    path = tmp_path / f"renamed.{kind}"
    path.write_bytes(raw.replace(name, name.replace(b"head", b"heaD")))  # npz: local header and directory alike
    assert loads_whole_or_raises(path) is None


def test_timm_unknown_architecture_without_sizes(tmp_path):
    export(tiny_model(gelu="exact"), tmp_path, "timm")
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["architecture"] = "vit_base_patch16_clip_224"
    del cfg["model_args"]["num_heads"]
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    expect_error(tmp_path, "num_heads")


def _folder_with_config(tmp_path, to: str, change) -> "Path":
    folder = tmp_path / f"{to}_model"
    export(tiny_model(gelu="exact"), folder, to)
    cfg = json.loads((folder / "config.json").read_text())
    change(cfg)
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


@pytest.mark.parametrize("to, change", [
    ("transformers", lambda c: c.update(hidden_size="big")),
    ("transformers", lambda c: c.update(layer_norm_eps=None)),
    ("transformers", lambda c: c.update(image_size={"height": 16, "width": 16})),
    ("transformers", lambda c: c.update(num_hidden_layers=-1)),
    ("timm", lambda c: c["model_args"].update(mlp_ratio="x")),
    ("timm", lambda c: c["model_args"].update(global_pool=["token"])),
    ("timm", lambda c: c["model_args"].update(embed_dim="wide")),
])
def test_bad_config_values_are_one_line_errors(tmp_path, to, change):
    folder = _folder_with_config(tmp_path, to, change)
    expect_error(folder, "config")


def test_npz_without_block_norm_is_a_one_line_error(tmp_path):
    good = tmp_path / "good.npz"
    export(tiny_model(), good, "vit_jax")
    with np.load(good) as z:
        tensors = {k: z[k] for k in z.files if "LayerNorm_0/scale" not in k}
    p = tmp_path / "no_norm.npz"
    np.savez(p, **tensors)
    expect_error(p, "LayerNorm_0/scale")


def test_scan_stacked_0d_array_is_a_one_line_error(tmp_path):
    good = tmp_path / "good.npz"
    export(tiny_model(classifier="gap"), good, "big_vision")
    with np.load(good) as z:
        tensors = {k: z[k] for k in z.files}
    name = next(k for k in tensors if "encoderblock_0/" in k)
    tensors[name.replace("encoderblock_0/", "encoderblock/")] = np.float32(1.0)  # no depth axis
    p = tmp_path / "scan.npz"
    np.savez(p, **tensors)
    expect_error(p, "0-d")


def test_convert_bad_config_exits_2_with_one_line(tmp_path, capsys):
    from minivit.commands.convert import main

    folder = _folder_with_config(tmp_path, "transformers", lambda c: c.update(hidden_size="big"))
    assert main([str(folder), "-o", str(tmp_path / "out.safetensors")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "transformers_model" in err and "bad config" in err, err
