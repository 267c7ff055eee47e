"""What each writable layout can hold (minivit/checkpoints/holds.py), cell by cell, and a converter
that verifies the file it wrote.

Every cell of the table (every writable layout in LAYOUTS x every setting in SETTINGS) is tried on
a small random model: a "kept" model must come back through plain ``ViT.from_pretrained`` (no
overrides, as any user would load it) with the same outputs at 5e-5 in float32; a "refused" one
must be refused in one line naming the setting and the layout, with nothing written, and written
with allow_lossy, the converter printing the measured difference; a "never" one stays refused.
A new layout or setting is covered by the parametrisation without touching this file.
"""

import dataclasses
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from minivit import ViT, ViTConfig
from minivit.checkpoints import LAYOUTS, SETTINGS, export, export_refusals, holds_markdown, save_checkpoint
from minivit.checkpoints import timm_config, transformers_config
from minivit.checkpoints.configs import FREE_FIELDS
from minivit.checkpoints.holds import cell
from minivit.commands.convert import main
from minivit.common.errors import CheckpointError

REPO = Path(__file__).resolve().parents[1]
TOLERANCE = 5e-5
WRITABLE = [name for name, layout in LAYOUTS.items() if layout.writable]
# Every writable layout holds this model: a CLS token without a position embedding (big_vision has
# none for it), tanh GELU and eps 1e-6 (what a Google .npz implies).
BASE = dict(image_size=16, patch_size=8, dim=32, depth=2, heads=4, mlp_dim=64, num_classes=5, gelu="tanh")


def build(seed=0, scale=0.3, cls_position=False, **fields) -> ViT:
    """A model with every parameter redrawn (unit LayerNorms and zero biases would hide mistakes)."""
    model = ViT(ViTConfig(**{**BASE, **fields}))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)
        if model.config.classifier == "token":
            model.pos_embed[:, 0] = 0.5 if cls_position else 0.0
    return model.eval()


def example(setting) -> ViT:
    return build(cls_position=setting.weights, **setting.example)


def target(tmp_path: Path, to: str, name: str = "out") -> Path:
    return tmp_path / (f"{name}.npz" if LAYOUTS[to].kind == "npz" else f"{name}.safetensors"
                       if LAYOUTS[to].kind == "minivit" else name)


def fixed_input(cfg: ViTConfig, seed: int = 0) -> torch.Tensor:
    """The converter's verification input: uniform in [-1, 1] from a seeded generator."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(2, cfg.in_chans, *cfg.image_hw, generator=g) * 2 - 1


def max_diff(a: ViT, b: ViT, x: torch.Tensor) -> float:
    """Largest abs difference of the logits and of the features the head reads (float32)."""
    with torch.no_grad():
        (la, oa), (lb, ob) = a.float()(x, return_out=True), b.float()(x, return_out=True)
    assert la.shape == lb.shape and oa["pre_logits"].shape == ob["pre_logits"].shape
    return max((la - lb).abs().max().item(), (oa["pre_logits"] - ob["pre_logits"]).abs().max().item())


def named(setting, message: str) -> bool:
    """Does a refusal name the setting: one of its ViTConfig fields, or pos_embed for the weights row."""
    words = setting.fields or ("pos_embed",)
    return any(word in message for word in words)


CELLS = [(to, s) for to in WRITABLE for s in SETTINGS]
CELL_IDS = [f"{to}-{s.key}" for to, s in CELLS]
REFUSED = [(to, s) for to, s in CELLS if cell(LAYOUTS[to].holds, s) is not None]


# -- the table itself ------------------------------------------------------------------------------


def test_every_config_field_is_a_setting_or_a_training_rate():
    named_fields = {f for s in SETTINGS for f in s.fields} | FREE_FIELDS
    missing = [f.name for f in dataclasses.fields(ViTConfig) if f.name not in named_fields]
    assert not missing, f"ViTConfig fields no row of holds.SETTINGS covers: {missing}"


@pytest.mark.parametrize("to", WRITABLE)
def test_every_writable_layout_has_a_table_that_names_known_settings(to):
    holds = LAYOUTS[to].holds
    assert holds is not None and holds.layout == to
    keys = {s.key for s in SETTINGS}
    assert set(holds.cannot) <= keys, f"{to}: unknown settings {set(holds.cannot) - keys}"
    for key, c in holds.cannot.items():  # a lossy cell needs a way to drop the setting
        setting = next(s for s in SETTINGS if s.key == key)
        assert not c.lossy or setting.drop is not None, (to, key)
    assert export_refusals(build(), to) == []  # the base model of every cell is held


def test_docs_print_the_table_of_the_code():
    docs = (REPO / "docs" / "reference" / "checkpoint_layouts.md").read_text()
    assert holds_markdown() in docs, ("docs/reference/checkpoint_layouts.md is out of date: paste "
                                      "minivit.checkpoints.holds_markdown()")


# -- every cell ------------------------------------------------------------------------------------


@pytest.mark.parametrize("to, setting", CELLS, ids=CELL_IDS)
def test_every_cell(tmp_path, to, setting):
    model = example(setting)
    c = cell(LAYOUTS[to].holds, setting)
    out = target(tmp_path, to)
    x = fixed_input(model.config)
    if c is None:  # kept: reloaded as any user would, the same function
        assert export_refusals(model, to) == []
        export(model, out, to)
        back = ViT.from_pretrained(out)
        assert back.load_report.layout == to and back.load_report.ok
        assert max_diff(model, back, x) <= TOLERANCE, (to, setting.key)
        return
    with pytest.raises(CheckpointError) as refused:
        export(model, out, to)
    message = str(refused.value)
    assert "\n" not in message and f"the {to} layout" in message and named(setting, message), message
    assert not out.exists()  # refused before anything is written
    if c.lossy:
        assert "allow_lossy=True" in message
        export(model, out, to, allow_lossy=True)
        back = ViT.from_pretrained(out)
        assert back.load_report.layout == to and math.isfinite(max_diff(model, back, x))
    else:
        assert "allow_lossy" not in message  # nothing would help: no hint that it could
        with pytest.raises(CheckpointError):
            export(model, out, to, allow_lossy=True)
        assert not out.exists()


@pytest.mark.parametrize("to, setting", REFUSED, ids=[f"{to}-{s.key}" for to, s in REFUSED])
def test_every_refused_cell_in_the_converter(tmp_path, capsys, to, setting):
    """Exit 2 and one line without --allow-lossy; with it a lossy cell is written and the printed
    difference is the one measured here, independently, on the reloaded file."""
    model = example(setting)
    src = tmp_path / "src.safetensors"
    save_checkpoint(model, src)
    out = target(tmp_path, to)
    capsys.readouterr()
    assert main([str(src), "--to", to, "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"the {to} layout" in err and named(setting, err) and str(src) in err
    assert not out.exists()
    status = main([str(src), "--to", to, "-o", str(out), "--allow-lossy"])
    printed = capsys.readouterr()
    if not cell(LAYOUTS[to].holds, setting).lossy:
        assert status == 2 and "--allow-lossy" not in printed.err and not out.exists()
        return
    assert status == 0 and "LOSSY" in printed.out
    shown = float(re.search(r"max abs diff (\S+) ", printed.out)[1])
    measured = max_diff(model, ViT.from_pretrained(out), fixed_input(model.config))
    assert shown == pytest.approx(measured, rel=1e-4, abs=1e-12)


# -- the Python API refuses as the converter does ---------------------------------------------------


def test_every_writer_follows_the_one_table(tmp_path):
    exact = build(gelu="exact", norm_eps=1e-12)
    for write in (lambda: export(exact, tmp_path / "a.npz", "vit_jax"), lambda: export(exact, tmp_path / "b.npz", "big_vision")):
        with pytest.raises(CheckpointError, match=r"gelu='exact', norm_eps=1e-12 cannot be expressed"):
            write()
    with pytest.raises(CheckpointError, match="norm_eps=1e-12 cannot be expressed in the timm layout"):
        export(exact, tmp_path / "t", "timm")
    with pytest.raises(CheckpointError, match="norm_eps=1e-12 cannot be expressed in the timm layout"):
        timm_config(exact.config)
    with pytest.raises(CheckpointError, match="classifier='gap' cannot be expressed in the transformers layout"):
        transformers_config(build(classifier="gap").config)
    assert not list(tmp_path.iterdir())
    export(exact, tmp_path / "a.npz", "vit_jax", allow_lossy=True)
    assert ViT.from_pretrained(tmp_path / "a.npz").config.norm_eps == 1e-6


def test_lossy_writes_the_nearest_model_the_layout_holds(tmp_path):
    """What allow_lossy writes, tensor by tensor: the MAP head dropped from vit_jax, the CLS slot zeroed
    for big_vision, pre_logits dropped from timm; everything else bit for bit."""
    cases = [("vit_jax", dict(classifier="map"), "gap", ("map_head.",)),
             ("big_vision", dict(cls_position=True), "token", ()),
             ("timm", dict(representation_size=32), "token", ("pre_logits.",))]
    for to, fields, classifier, dropped in cases:
        model = build(**fields)
        out = target(tmp_path, to, to)
        export(model, out, to, allow_lossy=True)
        back = ViT.from_pretrained(out)
        assert back.config.classifier == classifier and back.config.representation_size is None
        kept = {k: v for k, v in model.state_dict().items() if not k.startswith(dropped)}
        assert set(back.state_dict()) == set(kept)
        for k, v in kept.items():
            want = torch.cat([torch.zeros_like(v[:, :1]), v[:, 1:]], 1) if to == "big_vision" and k == "pos_embed" else v
            assert torch.equal(back.state_dict()[k], want), (to, k)


def test_a_representation_layer_narrower_than_dim_cannot_be_dropped(tmp_path):
    model = build(representation_size=16)  # the head reads 16 features; without pre_logits it would get 32
    with pytest.raises(CheckpointError, match="representation_size=16 cannot be expressed in the timm layout") as err:
        export(model, tmp_path / "t", "timm", allow_lossy=True)
    assert "allow_lossy=True" not in str(err.value) and not (tmp_path / "t").exists()


# -- the converter on a transformers-style model: the case that reported 0 and was 4.4e-4 off ---------


def transformers_style(tmp_path: Path) -> Path:
    """A transformers folder with what transformers' ViT computes: exact GELU, LayerNorm eps 1e-12."""
    model = build(seed=1, scale=1.0, gelu="exact", norm_eps=1e-12, num_classes=10)
    folder = tmp_path / "hf_model"
    export(model, folder, "transformers")
    assert ViT.from_pretrained(folder).config.gelu == "exact"
    return folder


def convert(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "minivit.convert", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=120)


def test_transformers_model_to_vit_jax_is_refused_unless_lossy(tmp_path):
    src, out = transformers_style(tmp_path), tmp_path / "x.npz"
    refused = convert(src, "--to", "vit_jax", "-o", out)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr and not out.exists()
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "gelu='exact', norm_eps=1e-12 cannot be expressed in the vit_jax layout" in lines[0]
    assert "--allow-lossy" in lines[0] and refused.stdout == ""
    lossy = convert(src, "--to", "vit_jax", "-o", out, "--allow-lossy")
    assert lossy.returncode == 0, lossy.stderr
    assert "LOSSY (--allow-lossy): the vit_jax layout cannot hold gelu='exact', norm_eps=1e-12" in lossy.stdout
    shown = float(re.search(r"max abs diff (\S+) ", lossy.stdout)[1])
    source, written = ViT.from_pretrained(src), ViT.from_pretrained(out)  # as any user would load them
    assert (written.config.gelu, written.config.norm_eps) == ("tanh", 1e-6)
    measured = max_diff(source, written, fixed_input(source.config))
    assert shown == pytest.approx(measured, rel=1e-4) and measured > TOLERANCE
    assert "ABOVE tolerance 5e-05" in lossy.stdout


def test_timm_is_lossy_for_eps_and_transformers_exact(tmp_path, capsys):
    src = transformers_style(tmp_path)
    assert main([str(src), "--to", "timm", "-o", str(tmp_path / "timm"), "--allow-lossy"]) == 0
    out = capsys.readouterr().out
    assert "LOSSY" in out and "norm_eps=1e-12" in out and "gelu" not in out.split("LOSSY")[1].splitlines()[0]
    exact = tmp_path / "exact.safetensors"
    save_checkpoint(build(gelu="exact", norm_eps=1e-12), exact)
    assert main([str(exact), "--to", "transformers", "-o", str(tmp_path / "hf")]) == 0
    out = capsys.readouterr().out
    assert "max abs diff 0 " in out and "LOSSY" not in out


def test_a_mapping_bug_is_caught_by_reloading_the_written_file(tmp_path, capsys, monkeypatch):
    """The verification reloads the file: a table that writes a wrong tensor must be exit 1."""
    from minivit.checkpoints import layouts

    src = tmp_path / "m.safetensors"
    save_checkpoint(build(), src)
    forward, inverse, doc = layouts.TRANSFORMS["dense"]
    monkeypatch.setitem(layouts.TRANSFORMS, "dense", (forward, lambda t, cfg: [t.T * 1.01], doc))
    assert main([str(src), "--to", "vit_jax", "-o", str(tmp_path / "m.npz")]) == 1
    assert "ABOVE tolerance" in capsys.readouterr().out


def test_hf_fixture_to_vit_jax(fixtures_dir, tmp_path, capsys):
    """The reference transformers checkpoint: refused; with --allow-lossy the written file is ~4.4e-4
    from the logits transformers computed, nine times the tolerance, and the converter says so."""
    fixture = fixtures_dir / "hf_vit_cls"
    out = tmp_path / "x.npz"
    assert main([str(fixture / "hf_model"), "--to", "vit_jax", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "gelu='exact', norm_eps=1e-12 cannot be expressed in the vit_jax layout" in err
    assert not out.exists()
    assert main([str(fixture / "hf_model"), "--to", "vit_jax", "-o", str(out), "--allow-lossy"]) == 0
    printed = capsys.readouterr().out
    shown = float(re.search(r"max abs diff (\S+) ", printed)[1])
    source, written = ViT.from_pretrained(fixture / "hf_model"), ViT.from_pretrained(out)
    assert shown == pytest.approx(max_diff(source, written, fixed_input(source.config)), rel=1e-4)
    assert shown > TOLERANCE and "LOSSY" in printed
    x = torch.from_numpy(np.load(fixture / "input_nchw.npy"))
    with torch.no_grad():
        off = (written(x) - torch.from_numpy(np.load(fixture / "expected.npy"))).abs().max().item()
    assert 3e-4 < off < 6e-4  # 4.4e-4: what a user loading the file gets, not the 0 once printed
