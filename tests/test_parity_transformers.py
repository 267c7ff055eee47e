"""Parity with transformers, in the style of minGPT's HF import test.

A transformers ViT with random weights is the oracle: its weights are copied into minivit
through the same key-mapping table the checkpoint loader uses, and the outputs must agree
to 1e-5 in float32.
"""

import pytest
import torch

transformers = pytest.importorskip("transformers", reason="transformers is the oracle for these tests")

import tempfile  # noqa: E402

from minivit import ViT  # noqa: E402


def random_hf(cls, **config):
    torch.manual_seed(0)
    fields = dict(hidden_size=48, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96,
                  image_size=32, patch_size=8, num_labels=7, attn_implementation="eager")
    fields.update(config)
    model = cls(transformers.ViTConfig(**fields))
    with torch.no_grad():  # re-draw everything: HF zero-inits biases and sets norms to 1/0
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.1)
    return model.eval()


def to_minivit(hf) -> ViT:
    """The public path: save_pretrained, then ViT.from_pretrained (strict: every key, every shape)."""
    with tempfile.TemporaryDirectory() as folder:
        hf.save_pretrained(folder)
        model = ViT.from_pretrained(folder)
    assert model.load_report.ok and not model.load_report.new
    return model.eval()


@pytest.mark.parametrize("config", [
    {},
    {"image_size": (32, 48)},                           # non-square input
    {"layer_norm_eps": 1e-12},                          # transformers' default eps, read from the config
    {"hidden_act": "gelu_pytorch_tanh"},                # the tanh GELU
    {"qkv_bias": False},
])
def test_image_classification_logits_match(config):
    hf = random_hf(transformers.ViTForImageClassification, **config)
    ours = to_minivit(hf)
    x = torch.randn(3, 3, *ours.config.image_hw)
    with torch.no_grad():
        expected = hf(pixel_values=x).logits
        torch.testing.assert_close(ours(x), expected, atol=1e-5, rtol=0)
        explicit, out = ours(x, attention=True)  # the explicit softmax path
        torch.testing.assert_close(explicit, expected, atol=1e-5, rtol=0)
        hf_out = hf(pixel_values=x, output_attentions=True, output_hidden_states=True)
        for ours_probs, theirs_probs in zip(out["attention"], hf_out.attentions, strict=True):
            torch.testing.assert_close(ours_probs, theirs_probs, atol=1e-5, rtol=0)
        for ours_tokens, theirs_tokens in zip(out["tokens"], hf_out.hidden_states[1:], strict=True):
            torch.testing.assert_close(ours_tokens, theirs_tokens, atol=1e-5, rtol=0)


def test_headless_model_returns_the_pooler_output():
    torch.manual_seed(0)
    config = transformers.ViTConfig(hidden_size=48, num_hidden_layers=2, num_attention_heads=4,
                                    intermediate_size=96, image_size=32, patch_size=8)
    hf = transformers.ViTModel(config, add_pooling_layer=True)
    with torch.no_grad():
        for p in hf.parameters():
            p.copy_(torch.randn_like(p) * 0.1)
    hf.eval()
    ours = to_minivit(hf)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = hf(pixel_values=x)
        torch.testing.assert_close(ours(x), out.pooler_output, atol=1e-5, rtol=0)
        torch.testing.assert_close(ours(x, return_out=True)[1]["encoded"], out.last_hidden_state, atol=1e-5, rtol=0)
