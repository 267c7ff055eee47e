"""minivit.speed: every fast path against the plain path, on the CPU.

float32 paths must match at float32 tolerance; the bf16 inference copy at the tolerance stated in
minivit.speed (BF16_RTOL, relative to the logits' norm).
"""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch.profiler import profile

from minivit import ConfigError, ViT, ViTConfig
from minivit.model import speed


def tiny_model(seed: int = 0, **overrides) -> ViT:
    """A small ViT with every parameter redrawn: a fresh model's zero head would make all logits 0."""
    fields = dict(image_size=32, patch_size=4, dim=64, depth=3, heads=4, mlp_dim=128, num_classes=7)
    fields.update(overrides)
    torch.manual_seed(seed)
    model = ViT(ViTConfig(**fields))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2 or name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=g) * (0.3 if p.ndim < 2 else p.shape[-1] ** -0.5))
    return model.eval()


def images(model: ViT, n: int = 6, seed: int = 1) -> torch.Tensor:
    cfg = model.config
    return torch.randn(n, cfg.in_chans, *cfg.image_hw, generator=torch.Generator().manual_seed(seed))


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def test_inference_copy_matches_fp32_logits_at_bf16_tolerance():
    model = tiny_model()
    x = images(model)
    with torch.no_grad():
        reference = model(x)  # (B, K)
        fast = speed.inference_copy(model)
        logits = fast(x.to(torch.bfloat16))
    assert reference.abs().max() > 1.0  # the check below means something only for non-trivial logits
    assert logits.dtype == torch.bfloat16
    assert relative_error(logits, reference) <= speed.BF16_RTOL
    assert (logits.float().argmax(1) == reference.argmax(1)).float().mean() >= 5 / 6


def test_inference_copy_leaves_the_model_alone():
    model = tiny_model().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = speed.inference_copy(model)
    assert all(p.dtype == torch.bfloat16 and not p.requires_grad for p in fast.parameters())
    assert not fast.training
    assert model.training and all(p.dtype == torch.float32 and p.requires_grad for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_inference_copy_rejects_an_integer_dtype():
    with pytest.raises(ConfigError, match="floating-point"):
        speed.inference_copy(tiny_model(), torch.int8)


def sdpa_ops(fn) -> set[str]:
    with profile() as prof:
        fn()
    return {e.key for e in prof.key_averages() if "scaled_dot_product" in e.key}


@pytest.mark.parametrize("order, kernel", [
    (("math",), "aten::_scaled_dot_product_attention_math"),
    (("flash",), "aten::_scaled_dot_product_flash_attention_for_cpu"),
    # cuDNN does not exist on a CPU: it is dropped and math stays as the last resort, never "no kernel"
    (("cudnn",), "aten::_scaled_dot_product_attention_math"),
    (speed.HOPPER_ORDER, "aten::_scaled_dot_product_flash_attention_for_cpu"),
])
def test_sdpa_backends_choose_the_kernel_and_keep_the_result(order, kernel):
    model = tiny_model()
    x = images(model)
    with torch.no_grad():
        reference = model(x)
        with speed.sdpa_backends(order, torch.device("cpu")):
            logits = model(x)
            used = sdpa_ops(lambda: model(x))
    assert kernel in used
    torch.testing.assert_close(logits, reference, rtol=1e-5, atol=1e-5)


def test_sdpa_backends_rejects_unknown_names():
    with pytest.raises(ConfigError, match="attention backends"):
        speed.sdpa_backends(("fastest",), torch.device("cpu"))


@pytest.mark.parametrize("overrides", [dict(), dict(stem="conv", in_chans=1, image_size=24)])
def test_compile_model_matches_eager_forward_and_gradients(overrides):
    # aot_eager runs dynamo (fullgraph: a graph break fails here) and AOTAutograd's forward/backward
    # graphs without Inductor's code generation, which would take ~20 s per model on a CPU.
    model = tiny_model(**overrides).train()
    compiled = speed.compile_model(model, "reduce-overhead", backend="aot_eager")
    x = images(model, n=4)
    y = torch.arange(4) % model.config.num_classes
    grads = []
    for runner in (model, compiled):
        torch.manual_seed(0)
        speed.begin_step()  # harmless outside CUDA graphs: the training step calls it every time
        loss = F.cross_entropy(runner(x), y)
        model.zero_grad(set_to_none=True)
        loss.backward()
        grads.append((loss.detach(), {k: p.grad.clone() for k, p in model.named_parameters()}))
    (loss_eager, g_eager), (loss_compiled, g_compiled) = grads
    torch.testing.assert_close(loss_compiled, loss_eager, rtol=1e-5, atol=1e-6)
    assert g_eager.keys() == g_compiled.keys()
    for k in g_eager:
        torch.testing.assert_close(g_compiled[k], g_eager[k], rtol=1e-4, atol=1e-6, msg=k)


def test_compile_model_rejects_unknown_modes():
    with pytest.raises(ConfigError, match="compile mode"):
        speed.compile_model(tiny_model(), "fastest")


def test_channels_last_computes_the_same_logits_and_gradients_as_the_plain_model():
    torch.manual_seed(0)
    plain = ViT(ViTConfig(image_size=24, patch_size=4, in_chans=1, stem="conv", stem_width=8, dim=32, depth=2,
                          heads=2, mlp_dim=64, num_classes=7)).train()
    with torch.no_grad():
        plain.head.weight.normal_()  # a zero head would hide every difference upstream of it
    fast = speed.channels_last(copy.deepcopy(plain))
    assert fast.patch_embed.convs[1].conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not plain.patch_embed.convs[1].conv.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(5, 1, 24, 24, generator=torch.Generator().manual_seed(1))
    a, b = plain(x), fast(x)
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    a.square().sum().backward()
    b.square().sum().backward()
    for (name, p), q in zip(plain.named_parameters(), fast.parameters()):
        err = ((q.grad - p.grad).norm() / p.grad.norm()).item()
        assert err < 1e-5, f"{name}: relative gradient error {err:.2e}"
    # the BatchNorm running statistics moved the same way
    torch.testing.assert_close(fast.patch_embed.convs[0].norm.running_var, plain.patch_embed.convs[0].norm.running_var)
