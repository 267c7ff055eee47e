"""python -m minivit.export: ONNX parity with PyTorch for every architecture minivit builds, a dynamic
batch axis, failure above the tolerance (exit 1, no file), and no overwriting without --overwrite."""

import json

import numpy as np
import pytest
import torch

import minivit
from minivit.checkpoints import save_checkpoint
from minivit.commands.export import DEFAULT_OPSET, main

ort = pytest.importorskip("onnxruntime", reason="ONNX export needs the 'export' extra (onnx, onnxruntime)")
onnx = pytest.importorskip("onnx", reason="ONNX export needs the 'export' extra (onnx, onnxruntime)")

VARIANTS = {
    "token": {},
    "gap": dict(classifier="gap"),
    "map": dict(classifier="map"),
    "representation": dict(representation_size=24),
    "conv-stem": dict(stem="conv"),
    "1-channel": dict(in_chans=1),
    "non-square": dict(image_size=(32, 48)),
}


def save_tiny(path, **overrides):
    torch.manual_seed(0)
    model = minivit.create_model("Ti/16", **{**dict(image_size=48, patch_size=8, dim=32, depth=2, heads=2, mlp_dim=64,
                                                    num_classes=7), **overrides})
    torch.nn.init.normal_(model.head.weight, std=0.5)  # a zero head would make every logit equal
    if overrides.get("stem") == "conv":  # BatchNorm statistics that are not the identity
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    save_checkpoint(model.eval(), path)
    return model.eval()


@pytest.mark.parametrize("variant", VARIANTS)
def test_onnx_matches_pytorch(variant, tmp_path, capsys):
    model = save_tiny(tmp_path / "m.safetensors", **VARIANTS[variant])
    out = tmp_path / "m.onnx"
    assert main(["--checkpoint", str(tmp_path / "m.safetensors"), "--onnx", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"opset {DEFAULT_OPSET}" in printed and printed.count("max abs difference") == 2
    assert "synthetic face" in printed

    # an independent check: a batch size the export never saw, against the model itself
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = torch.randn(5, model.config.in_chans, *model.config.image_hw)
    with torch.no_grad():
        expected = model(x).numpy()
    got = session.run(["logits"], {"images": x.numpy()})[0]
    assert got.shape == (5, 7) and np.abs(got - expected).max() < 1e-4
    assert np.abs(expected[0] - expected[1]).max() > 1e-3  # the outputs depend on the input: a real check
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(meta["classes"]) == list(minivit.data.LABELS)
    assert onnx.load(str(out)).opset_import[0].version == DEFAULT_OPSET


def test_dynamo_exporter_and_a_real_image(tmp_path, capsys):
    pytest.importorskip("onnxscript", reason="--dynamo needs onnxscript")
    from PIL import Image

    save_tiny(tmp_path / "m.safetensors", classifier="map")
    face = tmp_path / "face.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (60, 50), dtype=np.uint8)).save(face)
    out = tmp_path / "m.onnx"
    assert main(["--checkpoint", str(tmp_path / "m.safetensors"), "--onnx", str(out), "--dynamo",
                 "--image", str(face), "--static-batch"]) == 0
    printed = capsys.readouterr().out
    assert "torch.export-based" in printed and "verify (real image, batch 1)" in printed and out.is_file()
    assert f"real image: {face}" in printed


def test_an_image_named_random_keeps_the_random_batch_check(tmp_path, capsys, monkeypatch):
    """The inputs are keyed by role, not file name: --image random still verifies the batch of 3."""
    from PIL import Image

    save_tiny(tmp_path / "m.safetensors")
    monkeypatch.chdir(tmp_path)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (60, 50), dtype=np.uint8)).save("random", format="PNG")
    assert main(["--checkpoint", "m.safetensors", "--onnx", "m.onnx", "--image", "random"]) == 0
    printed = capsys.readouterr().out
    assert "verify (random batch of 3, batch 3)" in printed and "verify (real image, batch 1)" in printed
    assert printed.count("max abs difference") == 2 and "real image: random" in printed


def test_difference_above_tolerance_exits_1_and_writes_nothing(tmp_path, capsys):
    save_tiny(tmp_path / "m.safetensors")
    out = tmp_path / "m.onnx"
    assert main(["--checkpoint", str(tmp_path / "m.safetensors"), "--onnx", str(out), "--tolerance", "1e-30"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ONNX Runtime and PyTorch differ by") and "not written" in err
    assert list(tmp_path.iterdir()) == [tmp_path / "m.safetensors"]  # no .onnx, no temp file left behind


def test_existing_file_is_not_overwritten(tmp_path, capsys):
    save_tiny(tmp_path / "m.safetensors")
    out = tmp_path / "m.onnx"
    out.write_bytes(b"keep me")
    assert main(["--checkpoint", str(tmp_path / "m.safetensors"), "--onnx", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err and out.read_bytes() == b"keep me"
    assert main(["--checkpoint", str(tmp_path / "m.safetensors"), "--onnx", str(out), "--overwrite"]) == 0
    assert out.read_bytes() != b"keep me"


def test_help_explains_every_flag(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for flag in ("--checkpoint", "--onnx", "--overwrite", "--opset", "--static-batch", "--dynamo", "--image",
                 "--tolerance"):
        assert flag in text


def test_dynamo_export_prints_no_torchvision_notices(tmp_path):
    """torch's dynamo exporter logs "torchvision is not installed. Skipping torchvision::nms" (and three
    more) on every export; minivit has no such operator. A real process: the lines went to stderr
    through torch's own log handler, which an in-process capture does not see."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("onnxscript", reason="--dynamo needs onnxscript")
    save_tiny(tmp_path / "m.safetensors")
    out = tmp_path / "m.onnx"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, "-m", "minivit.export", "--checkpoint", str(tmp_path / "m.safetensors"),
                           "--onnx", str(out), "--dynamo"], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and out.is_file(), proc.stderr
    assert "torch.export-based" in proc.stdout and "wrote" in proc.stdout
    assert "torchvision" not in proc.stderr, proc.stderr


def test_only_the_torchvision_notices_are_dropped():
    """The filter is exact: another warning of the same logger still shows, and the filter is gone after."""
    import logging

    from minivit.inference.onnx_export import ONNX_REGISTRY_LOGGER, without_torchvision_notices

    logger = logging.getLogger(ONNX_REGISTRY_LOGGER)
    seen = []
    handler = logging.Handler(level=logging.WARNING)
    handler.emit = lambda record: seen.append(record.getMessage())
    logger.addHandler(handler)
    try:
        with without_torchvision_notices():
            for op in ("nms", "roi_align", "roi_pool", "deform_conv2d"):
                logger.warning("torchvision is not installed. Skipping %s", f"torchvision::{op}")
            logger.warning("'%s' does not have a 'default' overload.", "aten::x")
        logger.warning("torchvision is not installed. Skipping %s", "torchvision::nms")
    finally:
        logger.removeHandler(handler)
    assert seen == ["'aten::x' does not have a 'default' overload.",
                    "torchvision is not installed. Skipping torchvision::nms"]
