"""The four reference checkpoints load and match the producing library's outputs at 5e-5.

Each fixture (../shared/fixtures, see its README) is a tiny random ViT saved by the
official code of one layout, with an input and the output that code computed. This is the
second line of the numerical checks, and it needs ../shared: the first runs on any clone
(tests/test_reference_npz.py, a clean-room numpy ViT against random vit_jax, big_vision and
timm checkpoints; tests/test_parity_transformers.py, transformers itself), and that reference
is itself checked against these fixtures when they are present.
"""

import numpy as np
import pytest
import torch

from minivit import ViT

ATOL = 5e-5
FIXTURES = {
    # name: (checkpoint, input, expected, gelu the producer used)
    "vitjax_token_rep": ("model.npz", "input_nhwc.npy", "expected_logits.npy", "tanh"),
    "bigvision_gap": ("model.npz", "input_nhwc.npy", "expected_logits.npy", "tanh"),
    "hf_vit_cls": ("hf_model", "input_nchw.npy", "expected.npy", "exact"),
    "timm_vit_token": ("timm_model", "input_nchw.npy", "expected_logits.npy", "exact"),
}


def _input(folder, name):
    x = torch.from_numpy(np.load(folder / name))
    return x.permute(0, 3, 1, 2) if name.endswith("nhwc.npy") else x  # flax saw NHWC


@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_matches_producer(fixtures_dir, name):
    ckpt, inp, expected, gelu = FIXTURES[name]
    folder = fixtures_dir / name
    model = ViT.from_pretrained(folder / ckpt)
    assert not model.training
    assert model.config.gelu == gelu
    assert model.load_report.ok and not model.load_report.new and not model.load_report.dropped
    with torch.no_grad():
        out = model(_input(folder, inp))
    err = (out - torch.from_numpy(np.load(folder / expected))).abs().max().item()
    assert err <= ATOL, f"{name}: max abs diff {err}"


@pytest.mark.parametrize("name", ["vitjax_token_rep", "bigvision_gap"])
def test_npz_with_exact_gelu_matches_timm(fixtures_dir, name):
    folder = fixtures_dir / name
    model = ViT.from_pretrained(folder / "model.npz", gelu="exact")
    x = _input(folder, "input_nhwc.npy")
    with torch.no_grad():
        out = model(x)
    exact = torch.from_numpy(np.load(folder / "expected_logits_exact_gelu.npy"))
    tanh = torch.from_numpy(np.load(folder / "expected_logits.npy"))
    assert (out - exact).abs().max().item() <= ATOL
    # ...and the GELU variant is visible at this tolerance, so the tanh default is what makes the first test pass.
    assert (out - tanh).abs().max().item() > ATOL


def test_fixture_facts(fixtures_dir):
    vj = ViT.from_pretrained(fixtures_dir / "vitjax_token_rep" / "model.npz").config
    assert (vj.representation_size, vj.classifier, vj.norm_eps, vj.heads, vj.mlp_dim) == (64, "token", 1e-6, 4, 128)
    bv = ViT.from_pretrained(fixtures_dir / "bigvision_gap" / "model.npz").config
    assert (bv.classifier, bv.norm_after_pool, bv.representation_size) == ("gap", False, None)
    hf = ViT.from_pretrained(fixtures_dir / "hf_vit_cls" / "hf_model").config
    assert hf.norm_eps == 1e-12  # transformers' default, read from config.json
