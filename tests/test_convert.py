"""python -m minivit.convert: bit-exact round trips, folders of checkpoints, one-line errors."""

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minivit import ViT, ViTConfig
from minivit.checkpoints import save_checkpoint
from minivit.commands.convert import main

REPO = Path(__file__).resolve().parents[1]


def test_npz_to_safetensors_bit_exact(fixtures_dir, tmp_path, capsys):
    src = fixtures_dir / "vitjax_token_rep" / "model.npz"
    out = tmp_path / "vit.safetensors"
    assert main([str(src), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "max abs diff 0 " in printed and "dim=64" in printed and "gelu=tanh" in printed
    assert f"parameters: {ViT.from_pretrained(src).num_params():,}" in printed
    assert hashlib.sha256(out.read_bytes()).hexdigest() in printed
    a, b = ViT.from_pretrained(src), ViT.from_pretrained(out)
    assert all(torch.equal(b.state_dict()[k], v) for k, v in a.state_dict().items())
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(a(x), b(x))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vit.safetensors"]  # no temp files left


@pytest.mark.parametrize("fixture, to, back_layout", [("hf_vit_cls/hf_model", "transformers", "transformers"),
                                                     ("timm_vit_token/timm_model", "transformers", "transformers"),
                                                     ("timm_vit_token/timm_model", "timm", "timm"),
                                                     ("bigvision_gap/model.npz", "timm", "timm")])
def test_to_library_folders(fixtures_dir, tmp_path, capsys, fixture, to, back_layout):
    out = tmp_path / "out"
    assert main([str(fixtures_dir / fixture), "--to", to, "-o", str(out)]) == 0
    assert "max abs diff 0 " in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    assert ViT.from_pretrained(out).load_report.layout == back_layout


def test_num_classes_and_image_size(fixtures_dir, tmp_path, capsys):
    out = tmp_path / "ft.safetensors"
    src = fixtures_dir / "vitjax_token_rep" / "model.npz"
    assert main([str(src), "-o", str(out), "--num-classes", "7", "--image-size", "48x40"]) == 0
    cfg = ViT.from_pretrained(out).config
    assert (cfg.num_classes, cfg.image_size, cfg.representation_size) == (7, (48, 40), None)
    assert "new: head.weight" in capsys.readouterr().out


def test_folder_of_checkpoints(fixtures_dir, tmp_path, capsys):
    src = tmp_path / "many"
    src.mkdir()
    shutil.copy(fixtures_dir / "bigvision_gap" / "model.npz", src / "bv.npz")
    shutil.copytree(fixtures_dir / "hf_vit_cls" / "hf_model", src / "hf")
    out = tmp_path / "converted"
    out.mkdir()
    assert main([str(src), "-o", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["bv.safetensors", "hf.safetensors"]
    assert capsys.readouterr().out.count("max abs diff 0 ") == 2


def test_errors_are_one_line_exit_2(tmp_path, capsys):
    bad = tmp_path / "page.npz"
    bad.write_text("<!DOCTYPE html><html><body>Sign in</body></html>")
    assert main([str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "page.npz" in err and "HTML" in err
    model_path = tmp_path / "m.safetensors"
    from minivit import ViT, ViTConfig

    save_checkpoint(ViT(ViTConfig(image_size=16, patch_size=8, dim=16, depth=1, heads=2, mlp_dim=32, num_classes=2,
                                  representation_size=8)), model_path)
    assert main([str(model_path), "--to", "timm", "-o", str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "m.safetensors" in err and "pre_logits" in err
    assert not (tmp_path / "t").exists()


def test_cli_subprocess_help_and_error(tmp_path):
    run = lambda *a: subprocess.run([sys.executable, "-m", "minivit.convert", *a], cwd=REPO, capture_output=True,  # noqa: E731
                                    text=True, timeout=120)
    helped = run("--help")
    assert helped.returncode == 0
    for option in ("--to", "--num-classes", "--image-size", "--output", "--tolerance", "transformers", "timm"):
        assert option in helped.stdout
    lfs = tmp_path / "ViT-B_16.npz"
    lfs.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n")
    failed = run(str(lfs))
    assert failed.returncode == 2
    assert "Traceback" not in failed.stderr and len(failed.stderr.strip().splitlines()) == 1
    assert "Git LFS pointer" in failed.stderr


@pytest.mark.parametrize("option, value, named", [("--num-classes", "-1", "--num-classes"), ("--num-classes", "two", "--num-classes"),
                                                   ("--image-size", "0", "--image-size"), ("--image-size", "-48", "--image-size"),
                                                   ("--image-size", "48x", "--image-size"), ("--tolerance", "0", "--tolerance"),
                                                   ("--tolerance", "nan", "--tolerance"), ("--seed", "-3", "--seed"),
                                                   ("--to", "onnx", "--to")])
def test_bad_options_exit_2_before_reading_anything(tmp_path, capsys, option, value, named):
    missing = tmp_path / "never-read.npz"  # the option is checked before the source is even looked at
    with pytest.raises(SystemExit) as exited:
        main([str(missing), option, value])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and named in err and "never-read" not in err


def test_image_size_not_a_multiple_of_the_patch_is_one_line(fixtures_dir, tmp_path, capsys):
    out = tmp_path / "x.safetensors"
    assert main([str(fixtures_dir / "vitjax_token_rep" / "model.npz"), "--image-size", "50", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "image_size=50 is not a multiple of the checkpoint's patch size 8" in err
    assert not out.exists()


@pytest.mark.parametrize("to", ["timm", "transformers", "vit_jax", "big_vision"])
def test_conv_stem_model_to_an_external_layout_exits_2(tmp_path, capsys, to):
    src = tmp_path / "conv.safetensors"
    save_checkpoint(ViT(ViTConfig(image_size=16, patch_size=4, dim=16, depth=1, heads=2, mlp_dim=32, num_classes=3,
                                  stem="conv", in_chans=1)), src)
    assert main([str(src), "--to", to, "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {src}: stem='conv' cannot be expressed in the {to} layout; save it as minivit .safetensors\n"
    assert not (tmp_path / "out").exists()
    # ... while minivit's own layout holds it, bit for bit.
    assert main([str(src), "-o", str(tmp_path / "copy.safetensors")]) == 0
    assert "max abs diff 0 " in capsys.readouterr().out


def test_cli_conv_stem_error_in_a_subprocess(tmp_path):
    src = tmp_path / "conv.safetensors"
    save_checkpoint(ViT(ViTConfig(image_size=16, patch_size=4, dim=16, depth=1, heads=2, mlp_dim=32, num_classes=3,
                                  stem="conv")), src)
    done = subprocess.run([sys.executable, "-m", "minivit.convert", str(src), "--to", "timm"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().endswith("stem='conv' cannot be expressed in the timm layout; save it as minivit .safetensors")


def test_npz_targets_round_trip(fixtures_dir, tmp_path, capsys):
    for fixture, to in (("bigvision_gap/model.npz", "big_vision"), ("vitjax_token_rep/model.npz", "vit_jax")):
        out = tmp_path / f"m-{to}.npz"
        assert main([str(fixtures_dir / fixture), "--to", to, "-o", str(out)]) == 0
        assert "max abs diff 0 " in capsys.readouterr().out
        assert ViT.from_pretrained(out).load_report.layout == to
    # The transformers and timm fixtures compute the exact GELU (transformers' also LayerNorm eps 1e-12),
    # which an .npz cannot state: refused, nothing written. --allow-lossy writes every tensor bit for bit
    # (reloading with the source's gelu and eps gives the source back) and reports the measured difference.
    for fixture in ("hf_vit_cls/hf_model", "timm_vit_token/timm_model"):
        src, out = fixtures_dir / fixture, tmp_path / f"{fixture.split('/')[0]}-vit_jax.npz"
        assert main([str(src), "--to", "vit_jax", "-o", str(out)]) == 2
        assert "gelu='exact'" in capsys.readouterr().err and not out.exists()
        assert main([str(src), "--to", "vit_jax", "-o", str(out), "--allow-lossy"]) == 0
        printed = capsys.readouterr().out
        assert "LOSSY" in printed and "max abs diff 0 " not in printed
        source = ViT.from_pretrained(src)
        back = ViT.from_pretrained(out, gelu=source.config.gelu, norm_eps=source.config.norm_eps)
        assert back.load_report.layout == "vit_jax"
        assert all(torch.equal(back.state_dict()[k], v) for k, v in source.state_dict().items())
    # big_vision has no position embedding for a CLS token: a model with a non-zero one is refused.
    assert main([str(fixtures_dir / "hf_vit_cls" / "hf_model"), "--to", "big_vision", "-o", str(tmp_path / "x.npz")]) == 2
    assert "pos_embed[:, 0] is not zero" in capsys.readouterr().err and not (tmp_path / "x.npz").exists()
