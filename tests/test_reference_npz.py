"""A clean-room ViT in numpy checks every layout minivit loads, on any clone.

tests/test_fixtures.py compares minivit with outputs of the official code, but those
checkpoints live in ../shared and are absent from a bare clone; transformers, a test
dependency, checks only its own layout (tests/test_parity_transformers.py). This file needs
nothing outside the repository. It writes random checkpoints with the real key names and
shapes of the Google vit_jax and big_vision ``.npz`` layouts and of timm's folder layout
(names and shapes as in ../shared/fixtures/README.md and the official model code), loads them
with ``ViT.from_pretrained`` and compares the logits with ``reference_logits``: a small float64
numpy implementation of the published model, written from the equations of the official code
(vit_jax ``models_vit.py``, big_vision ``models/vit.py``, timm ``vision_transformer.py``):

    pre-LN blocks             x = x + MHA(LN(x));  x = x + MLP(LN(x)),  LayerNorm eps 1e-6
    flax attention            q, k, v = x @ kernel (D, heads, hd) + bias (heads, hd); q / sqrt(hd);
                              out = o @ kernel (heads, hd, D) + bias
    GELU                      flax nn.gelu = tanh approximation (Google); exact erf (timm)
    vit_jax                   [cls] + patches, + pos_embedding (cls slot included); token or gap;
                              pre_logits: tanh(dense); head
    big_vision                patches + pos_embedding (no cls slot), then [cls] for "tok";
                              encoder_norm, then mean over all tokens ("gap"), token 0 ("tok"), or
                              MAPHead (probe attends over tokens, x + MLP(LN(x)))
    timm                      torch Linear (out, in) weights, fused qkv rows [q; k; v]; "avg" pools
                              the patch tokens and then fc_norm; "map" = attn_pool (latent, q, kv)

The reference reads each file by its own key names, never through minivit's mapping tables
(minivit/checkpoints/layouts.py): a wrong table must not be checked against itself. Every
tensor is random (not zero, not one), so a transposed kernel or a swapped q/k shows up far
above the tolerance (``test_the_comparison_sees_a_mapping_mistake``). When ../shared is
present, the reference is checked against the official fixtures too, which proves it right.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file

from minivit import ViT

ATOL = 5e-5  # float32 minivit against the float64 reference, as for the official fixtures
EPS = 1e-6  # LayerNorm epsilon of flax, big_vision and timm's ViT


# --------------------------------------------------------------------------- the reference maths

_erf = np.vectorize(math.erf)


def gelu(x, kind: str):
    if kind == "tanh":  # flax nn.gelu's default (approximate=True)
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
    return 0.5 * x * (1 + _erf(x / np.sqrt(2)))


def layer_norm(x, p):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + EPS) * p["scale"] + p["bias"]


def dense(x, p):
    return x @ p["kernel"] + p["bias"]


def attention(queries, tokens, p):
    """flax MultiHeadDotProductAttention: per-head kernels (D, heads, hd), out kernel (heads, hd, D)."""
    q = np.einsum("bqd,dhk->bqhk", queries, p["query"]["kernel"]) + p["query"]["bias"]
    k = np.einsum("btd,dhk->bthk", tokens, p["key"]["kernel"]) + p["key"]["bias"]
    v = np.einsum("btd,dhk->bthk", tokens, p["value"]["kernel"]) + p["value"]["bias"]
    scores = np.einsum("bqhk,bthk->bhqt", q / np.sqrt(q.shape[-1]), k)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    o = np.einsum("bhqt,bthk->bqhk", weights, v)
    return np.einsum("bqhk,hkd->bqd", o, p["out"]["kernel"]) + p["out"]["bias"]


def mlp(x, p, act):
    return dense(gelu(dense(x, p["Dense_0"]), act), p["Dense_1"])


@dataclass
class Reference:
    """One ViT in flax's vocabulary, whatever file it was read from."""

    embedding: dict  # kernel (p, p, C, D) HWIO, bias (D,)
    pos: np.ndarray  # (1, T, D) as stored
    blocks: list  # dicts: ln1, attn (query/key/value/out), ln2, mlp (Dense_0, Dense_1)
    norm: dict  # the final LayerNorm (timm's fc_norm when norm_after_pool)
    pool: str  # "token", "gap" or "map"
    act: str  # "tanh" or "erf"
    cls: np.ndarray | None = None  # (1, 1, D)
    pos_before_cls: bool = False  # big_vision: pos_embedding added to the patches, then [cls]
    norm_after_pool: bool = False  # timm's fc_norm
    map_head: dict | None = None  # probe, attn, ln, mlp
    pre_logits: dict | None = None
    head: dict | None = None
    extra: dict = field(default_factory=dict)


def reference_logits(m: Reference, x_nhwc: np.ndarray) -> np.ndarray:
    """(B, H, W, C) images -> logits (B, K) (pooled features without a head), in float64."""
    x = x_nhwc.astype(np.float64)
    kernel = m.embedding["kernel"]
    p, B, H, W, C = kernel.shape[0], *x.shape
    patches = x.reshape(B, H // p, p, W // p, p, C)  # non-overlapping p x p patches, row-major grid
    x = (np.einsum("bipjqc,pqcd->bijd", patches, kernel) + m.embedding["bias"]).reshape(B, -1, kernel.shape[-1])
    cls = None if m.cls is None else np.broadcast_to(m.cls, (B, 1, x.shape[-1]))
    if m.pos_before_cls:
        x = x + m.pos
        x = x if cls is None else np.concatenate([cls, x], axis=1)
    else:
        x = x if cls is None else np.concatenate([cls, x], axis=1)
        x = x + m.pos
    for b in m.blocks:
        y = layer_norm(x, b["ln1"])
        x = x + attention(y, y, b["attn"])
        x = x + mlp(layer_norm(x, b["ln2"]), b["mlp"], m.act)
    if not m.norm_after_pool:
        x = layer_norm(x, m.norm)
    if m.pool == "token":
        x = x[:, 0]
    elif m.pool == "gap":
        x = x[:, 0 if cls is None else 1:].mean(1)
    else:  # MAP: one learned query attends over the tokens, then x + MLP(LN(x))
        h = m.map_head
        x = attention(np.broadcast_to(h["probe"], (B, 1, x.shape[-1])), x, h["attn"])
        x = (x + mlp(layer_norm(x, h["ln"]), h["mlp"], m.act))[:, 0]
    if m.norm_after_pool:
        x = layer_norm(x, m.norm)
    if m.pre_logits is not None:
        x = np.tanh(dense(x, m.pre_logits))
    return x if m.head is None else dense(x, m.head)


# ---------------------------------------------------------------- reading each layout by its names

def _f64(tree):
    return {k: _f64(v) for k, v in tree.items()} if isinstance(tree, dict) else np.asarray(tree, np.float64)


def _flax_tree(w: dict, name: str) -> dict:
    """The sub-tree of a flat '/'-separated npz under ``name/``: {"query": {"kernel": ...}, ...}."""
    tree: dict = {}
    for key, value in w.items():
        if key.startswith(name + "/"):
            node = tree
            *path, leaf = key[len(name) + 1:].split("/")
            for part in path:
                node = node.setdefault(part, {})
            node[leaf] = value
    return _f64(tree)


def _depth(w: dict, stem: str) -> int:
    """How many blocks: the distinct i of the names ``stem{i}/...`` (or ``stem{i}.``)."""
    return len({k[len(stem):].replace(".", "/").split("/")[0] for k in w if k.startswith(stem)})


def read_vit_jax(w: dict, prefix: str = "") -> Reference:
    """Google vision_transformer (vit_jax) .npz, its pre-linen module names."""
    t = lambda name: _flax_tree(w, prefix + name)  # noqa: E731
    blocks = [t(f"Transformer/encoderblock_{i}") for i in range(_depth(w, prefix + "Transformer/encoderblock_"))]
    return Reference(
        embedding=t("embedding"), pos=np.float64(w[prefix + "Transformer/posembed_input/pos_embedding"]),
        blocks=[dict(ln1=b["LayerNorm_0"], attn=b["MultiHeadDotProductAttention_1"], ln2=b["LayerNorm_2"],
                     mlp=b["MlpBlock_3"]) for b in blocks],
        norm=t("Transformer/encoder_norm"), act="tanh",
        cls=np.float64(w[prefix + "cls"]) if prefix + "cls" in w else None,
        pool="token" if prefix + "cls" in w else "gap",
        pre_logits=t("pre_logits") or None, head=t("head") or None)


def read_big_vision(w: dict, prefix: str = "params/") -> Reference:
    """big_vision .npz: linen names, pos_embedding at the top without a cls slot, an optional MAPHead_0."""
    t = lambda name: _flax_tree(w, prefix + name)  # noqa: E731
    blocks = [t(f"Transformer/encoderblock_{i}") for i in range(_depth(w, prefix + "Transformer/encoderblock_"))]
    map_head = t("MAPHead_0")
    has_cls = prefix + "cls" in w
    return Reference(
        embedding=t("embedding"), pos=np.float64(w[prefix + "pos_embedding"]), pos_before_cls=True,
        blocks=[dict(ln1=b["LayerNorm_0"], attn=b["MultiHeadDotProductAttention_0"], ln2=b["LayerNorm_1"],
                     mlp=b["MlpBlock_0"]) for b in blocks],
        norm=t("Transformer/encoder_norm"), act="tanh",
        cls=np.float64(w[prefix + "cls"]) if has_cls else None,
        pool="token" if has_cls else ("map" if map_head else "gap"),
        map_head=dict(probe=map_head["probe"], attn=map_head["MultiHeadDotProductAttention_0"],
                      ln=map_head["LayerNorm_0"], mlp=map_head["MlpBlock_0"]) if map_head else None,
        pre_logits=t("pre_logits") or None, head=t("head") or None)


def _torch_linear(w: dict, name: str) -> dict:
    """torch Linear weight (out, in) -> flax Dense kernel (in, out)."""
    return {"kernel": w[name + ".weight"].T, "bias": w[name + ".bias"]}


def _torch_heads(weight, bias, heads: int) -> dict:
    """Rows of a torch projection (heads * hd, D), heads contiguous -> flax kernel (D, heads, hd)."""
    d = weight.shape[1]
    bias = np.zeros(weight.shape[0]) if bias is None else bias
    return {"kernel": weight.T.reshape(d, heads, -1), "bias": bias.reshape(heads, -1)}


def _torch_attention(w, prefix, heads, q=None, kv=None, qkv=None) -> dict:
    """timm's Attention (qkv rows [q; k; v]) or AttentionPoolLatent (q, kv rows [k; v]) in flax form."""
    if qkv is not None:
        fused = w[qkv + ".weight"]  # (3D, D)
        weights, biases = np.split(fused, 3), np.split(w.get(qkv + ".bias", np.zeros(len(fused))), 3)
    else:
        weights = [w[q + ".weight"], *np.split(w[kv + ".weight"], 2)]
        biases = [w[q + ".bias"], *np.split(w[kv + ".bias"], 2)]
    proj = w[prefix + "proj.weight"]  # (D, heads * hd): the heads merged on its input side
    return {"query": _torch_heads(weights[0], biases[0], heads), "key": _torch_heads(weights[1], biases[1], heads),
            "value": _torch_heads(weights[2], biases[2], heads),
            "out": {"kernel": proj.T.reshape(heads, -1, proj.shape[0]), "bias": w[prefix + "proj.bias"]}}


def read_timm(w: dict, config: dict) -> Reference:
    """timm VisionTransformer state dict (save_for_hf folder) and its config.json ``model_args``."""
    w = _f64(w)
    args = config["model_args"]
    heads, pool = args["num_heads"], args.get("global_pool", "token")
    ln = lambda name: {"scale": w[name + ".weight"], "bias": w[name + ".bias"]}  # noqa: E731
    lin = lambda name: _torch_linear(w, name)  # noqa: E731
    depth = _depth(w, "blocks.")
    blocks = [dict(ln1=ln(f"blocks.{i}.norm1"), ln2=ln(f"blocks.{i}.norm2"),
                   attn=_torch_attention(w, f"blocks.{i}.attn.", heads, qkv=f"blocks.{i}.attn.qkv"),
                   mlp={"Dense_0": lin(f"blocks.{i}.mlp.fc1"), "Dense_1": lin(f"blocks.{i}.mlp.fc2")})
              for i in range(depth)]
    fc_norm = args.get("fc_norm")
    fc_norm = pool == "avg" if fc_norm is None else fc_norm  # timm: fc_norm=None means "for avg pooling"
    map_head = None
    if pool == "map":
        map_head = dict(probe=w["attn_pool.latent"], ln=ln("attn_pool.norm"),
                        attn=_torch_attention(w, "attn_pool.", heads, q="attn_pool.q", kv="attn_pool.kv"),
                        mlp={"Dense_0": lin("attn_pool.mlp.fc1"), "Dense_1": lin("attn_pool.mlp.fc2")})
    return Reference(
        embedding={"kernel": w["patch_embed.proj.weight"].transpose(2, 3, 1, 0), "bias": w["patch_embed.proj.bias"]},
        pos=w["pos_embed"], cls=w.get("cls_token"), blocks=blocks,
        norm=ln("fc_norm" if fc_norm else "norm"), norm_after_pool=fc_norm,
        pool={"token": "token", "avg": "gap", "map": "map"}[pool],
        act="tanh" if args.get("act_layer") == "gelu_tanh" else "erf", map_head=map_head,
        head=lin("head") if "head.weight" in w else None)


# -------------------------------------------------------------- random checkpoints with real names

@dataclass(frozen=True)
class Spec:
    """A tiny ViT to write in one layout (sizes chosen so that no two axes are confusable)."""

    layout: str  # "vit_jax", "big_vision" or "timm"
    pool: str = "token"  # token / gap / map (timm: token / avg / map)
    dim: int = 32
    heads: int = 4
    depth: int = 2
    mlp: int = 64
    patch: int = 4
    image: tuple = (16, 16)
    chans: int = 3
    classes: int = 5
    rep: int | None = None
    prefix: str = ""
    qkv_bias: bool = True
    act: str | None = None  # timm act_layer


def _flax_block(D, h, M, names) -> dict:
    ln1, attn, ln2, mlp_ = names
    hd = D // h
    shapes = {f"{ln}/{leaf}": (D,) for ln in (ln1, ln2) for leaf in ("scale", "bias")}
    for x in ("query", "key", "value"):
        shapes.update({f"{attn}/{x}/kernel": (D, h, hd), f"{attn}/{x}/bias": (h, hd)})
    shapes.update({f"{attn}/out/kernel": (h, hd, D), f"{attn}/out/bias": (D,), f"{mlp_}/Dense_0/kernel": (D, M),
                   f"{mlp_}/Dense_0/bias": (M,), f"{mlp_}/Dense_1/kernel": (M, D), f"{mlp_}/Dense_1/bias": (D,)})
    return shapes


def flax_shapes(s: Spec) -> dict:
    """Every tensor of a vit_jax or big_vision checkpoint: name -> shape (README of ../shared/fixtures)."""
    D, N = s.dim, (s.image[0] // s.patch) * (s.image[1] // s.patch)
    token = s.pool == "token"
    shapes = {"embedding/kernel": (s.patch, s.patch, s.chans, D), "embedding/bias": (D,),
              "Transformer/encoder_norm/scale": (D,), "Transformer/encoder_norm/bias": (D,)}
    if s.layout == "vit_jax":
        names = ("LayerNorm_0", "MultiHeadDotProductAttention_1", "LayerNorm_2", "MlpBlock_3")
        shapes["Transformer/posembed_input/pos_embedding"] = (1, N + token, D)
    else:
        names = ("LayerNorm_0", "MultiHeadDotProductAttention_0", "LayerNorm_1", "MlpBlock_0")
        shapes["pos_embedding"] = (1, N, D)  # added before the cls token: no slot for it
    for i in range(s.depth):
        block = _flax_block(D, s.heads, s.mlp, names)
        shapes.update({f"Transformer/encoderblock_{i}/{k}": v for k, v in block.items()})
    if token:
        shapes["cls"] = (1, 1, D)
    if s.pool == "map":
        shapes["MAPHead_0/probe"] = (1, 1, D)
        shapes.update({f"MAPHead_0/{k}": v for k, v in _flax_block(D, s.heads, s.mlp, (
            "LayerNorm_0", "MultiHeadDotProductAttention_0", "LayerNorm_0", "MlpBlock_0")).items()})
    if s.rep:
        shapes.update({"pre_logits/kernel": (D, s.rep), "pre_logits/bias": (s.rep,)})
    if s.classes:
        shapes.update({"head/kernel": (s.rep or D, s.classes), "head/bias": (s.classes,)})
    return {s.prefix + k: v for k, v in shapes.items()}


def timm_shapes(s: Spec) -> dict:
    """Every tensor of a timm VisionTransformer state dict: name -> shape (torch layouts)."""
    D, M, N = s.dim, s.mlp, (s.image[0] // s.patch) * (s.image[1] // s.patch)
    token = s.pool == "token"
    shapes = {"patch_embed.proj.weight": (D, s.chans, s.patch, s.patch), "patch_embed.proj.bias": (D,),
              "pos_embed": (1, N + token, D), "head.weight": (s.classes, D), "head.bias": (s.classes,)}
    shapes.update({f"{'fc_norm' if s.pool == 'avg' else 'norm'}.{leaf}": (D,) for leaf in ("weight", "bias")})
    if token:
        shapes["cls_token"] = (1, 1, D)
    for i in range(s.depth):
        b = f"blocks.{i}."
        shapes.update({b + f"{norm}.{leaf}": (D,) for norm in ("norm1", "norm2") for leaf in ("weight", "bias")})
        shapes.update({b + "attn.qkv.weight": (3 * D, D), b + "attn.proj.weight": (D, D), b + "attn.proj.bias": (D,),
                       b + "mlp.fc1.weight": (M, D), b + "mlp.fc1.bias": (M,), b + "mlp.fc2.weight": (D, M),
                       b + "mlp.fc2.bias": (D,)})
        if s.qkv_bias:
            shapes[b + "attn.qkv.bias"] = (3 * D,)
    if s.pool == "map":
        shapes.update({"attn_pool.latent": (1, 1, D), "attn_pool.q.weight": (D, D), "attn_pool.q.bias": (D,),
                       "attn_pool.kv.weight": (2 * D, D), "attn_pool.kv.bias": (2 * D,),
                       "attn_pool.proj.weight": (D, D), "attn_pool.proj.bias": (D,), "attn_pool.norm.weight": (D,),
                       "attn_pool.norm.bias": (D,), "attn_pool.mlp.fc1.weight": (M, D), "attn_pool.mlp.fc1.bias": (M,),
                       "attn_pool.mlp.fc2.weight": (D, M), "attn_pool.mlp.fc2.bias": (D,)})
    return shapes


def random_tensors(shapes: dict, seed: int) -> dict:
    """Random float32 tensors at a scale that keeps activations O(1): kernels ~ 1/sqrt(fan_in), norms'
    scales around 1 (never exactly 1), biases, cls, position embeddings and probes O(0.3)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in shapes.items():
        leaf = name.replace(".", "/").split("/")[-1]
        is_norm = "norm" in name.lower() or "LayerNorm" in name
        if is_norm and leaf in ("scale", "weight"):
            t = 1 + 0.3 * rng.standard_normal(shape)
        elif leaf in ("kernel", "weight") and len(shape) >= 2:
            if leaf == "weight":  # torch (out, in, ...)
                fan_in = int(np.prod(shape[1:]))
            elif name.endswith("embedding/kernel") or name.endswith("out/kernel"):  # (p, p, C, D), (heads, hd, D)
                fan_in = int(np.prod(shape[:-1]))
            else:  # flax (in, out) or (D, heads, hd)
                fan_in = shape[0]
            t = rng.standard_normal(shape) / np.sqrt(fan_in)
        else:
            t = 0.3 * rng.standard_normal(shape)
        out[name] = t.astype(np.float32)
    return out


def timm_config(s: Spec) -> dict:
    """config.json as timm.models.save_for_hf writes it (the fixture's, with this model's sizes)."""
    pool = {"token": "token", "avg": "avg", "map": "map"}[s.pool]
    args = dict(img_size=list(s.image), patch_size=s.patch, embed_dim=s.dim, depth=s.depth, num_heads=s.heads,
                mlp_ratio=s.mlp / s.dim, num_classes=s.classes, global_pool=pool, class_token=s.pool == "token",
                in_chans=s.chans, qkv_bias=s.qkv_bias, **({"act_layer": s.act} if s.act else {}))
    return {"architecture": "vit_tiny_patch16_224", "num_classes": s.classes, "num_features": s.dim,
            "global_pool": pool, "model_args": args}


def write_checkpoint(s: Spec, folder, seed: int):
    """The checkpoint of ``s`` in its layout under ``folder``; returns (path to load, tensors, config)."""
    if s.layout == "timm":
        tensors = random_tensors(timm_shapes(s), seed)
        path = folder / "timm_model"
        path.mkdir()
        save_file(tensors, str(path / "model.safetensors"))
        config = timm_config(s)
        (path / "config.json").write_text(json.dumps(config))
        return path, tensors, config
    tensors = random_tensors(flax_shapes(s), seed)
    path = folder / "model.npz"
    np.savez(path, **tensors)
    return path, tensors, None


def read_reference(s: Spec, tensors: dict, config: dict | None) -> Reference:
    if s.layout == "vit_jax":
        return read_vit_jax(tensors, s.prefix)
    if s.layout == "big_vision":
        return read_big_vision(tensors, s.prefix)
    return read_timm(tensors, config)


SPECS = {
    # vit_jax: ImageNet-21k style (token + pre_logits), the opt/target/ prefix, and gap without a head
    "vit_jax-token-rep": Spec("vit_jax", rep=24),
    "vit_jax-token-opt_target": Spec("vit_jax", dim=48, heads=3, depth=1, mlp=96, patch=8, image=(32, 32),
                                     classes=7, prefix="opt/target/"),
    "vit_jax-gap-headless": Spec("vit_jax", pool="gap", heads=2, image=(12, 12), classes=0),
    # big_vision: the three pool types, the three prefixes, a representation layer
    "big_vision-gap": Spec("big_vision", pool="gap", prefix="params/"),
    "big_vision-tok-rep": Spec("big_vision", mlp=48, classes=6, rep=32, prefix="params/img/"),
    "big_vision-map": Spec("big_vision", pool="map"),
    # timm: token, avg + fc_norm on a non-square image without qkv bias and with tanh GELU, attention pooling
    "timm-token": Spec("timm"),
    "timm-avg-fc_norm": Spec("timm", pool="avg", image=(16, 24), qkv_bias=False, act="gelu_tanh"),
    "timm-map": Spec("timm", pool="map", heads=2),
}


def images(s: Spec, seed: int) -> np.ndarray:
    """A batch of 3 NHWC inputs in [-1, 1] (the Google checkpoints' normalisation)."""
    return np.random.default_rng(seed).uniform(-1, 1, (3, *s.image, s.chans)).astype(np.float32)


def minivit_logits(model: ViT, x_nhwc: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x_nhwc).permute(0, 3, 1, 2)).numpy()  # minivit takes NCHW


# ------------------------------------------------------------------------------------------ tests

@pytest.mark.parametrize("name", SPECS)
def test_from_pretrained_matches_the_reference(name, tmp_path):
    s = SPECS[name]
    seed = sorted(SPECS).index(name)
    path, tensors, config = write_checkpoint(s, tmp_path, seed)
    model = ViT.from_pretrained(path)
    report = model.load_report
    assert report.layout == s.layout and report.ok and not report.new and not report.dropped, str(report)
    assert model.config.gelu == ("tanh" if s.layout != "timm" or s.act == "gelu_tanh" else "exact")
    x = images(s, seed)
    ours = minivit_logits(model, x)
    expected = reference_logits(read_reference(s, tensors, config), x)
    assert ours.shape == expected.shape == (3, s.classes or s.rep or s.dim)
    assert ours.dtype == np.float32 and np.abs(expected).max() > 0.1  # real numbers, not a collapsed output
    err = np.abs(ours - expected).max()
    assert err <= ATOL, f"{name}: max abs diff {err:.2e} > {ATOL}"


def _swap_q_k(s: Spec, tensors: dict) -> dict:
    """The same file with block 0's query and key projections exchanged."""
    out = dict(tensors)
    if s.layout == "timm":
        q, k, v = np.split(tensors["blocks.0.attn.qkv.weight"], 3)
        out["blocks.0.attn.qkv.weight"] = np.concatenate([k, q, v])
    else:
        attn = "MultiHeadDotProductAttention_1" if s.layout == "vit_jax" else "MultiHeadDotProductAttention_0"
        base = f"{s.prefix}Transformer/encoderblock_0/{attn}/"
        out[base + "query/kernel"] = tensors[base + "key/kernel"]
        out[base + "key/kernel"] = tensors[base + "query/kernel"]
    return out


def _transpose_out_heads(s: Spec, tensors: dict) -> dict:
    """The same file with block 0's attention output projection read with heads and head_dim exchanged."""
    out = dict(tensors)
    if s.layout == "timm":
        w = tensors["blocks.0.attn.proj.weight"]  # (D, heads * hd) -> (D, hd * heads)
        out["blocks.0.attn.proj.weight"] = w.reshape(s.dim, s.heads, -1).transpose(0, 2, 1).reshape(s.dim, -1)
    else:
        attn = "MultiHeadDotProductAttention_1" if s.layout == "vit_jax" else "MultiHeadDotProductAttention_0"
        key = f"{s.prefix}Transformer/encoderblock_0/{attn}/out/kernel"
        h, hd, d = tensors[key].shape
        out[key] = tensors[key].reshape(h * hd, d).reshape(hd, h, d).transpose(1, 0, 2).copy()
    return out


@pytest.mark.parametrize("name", ["vit_jax-token-rep", "big_vision-map", "timm-token"])
def test_the_comparison_sees_a_mapping_mistake(name, tmp_path):
    """With random tensors, the mistakes a mapping table can make move the logits far beyond ATOL:
    the parity above cannot pass by accident. (Here the file is changed and the reference reads it;
    a loader making the same mistake on the original file would be off by as much.)"""
    s = SPECS[name]
    path, tensors, config = write_checkpoint(s, tmp_path, seed=0)
    x = images(s, 0)
    good = reference_logits(read_reference(s, tensors, config), x)
    for mistake in (_swap_q_k, _transpose_out_heads):
        wrong = reference_logits(read_reference(s, mistake(s, tensors), config), x)
        assert np.abs(wrong - good).max() > 100 * ATOL, mistake.__name__
    other = read_reference(s, tensors, config)
    other.act = "erf" if other.act == "tanh" else "tanh"  # the other GELU convention
    assert np.abs(reference_logits(other, x) - minivit_logits(ViT.from_pretrained(path), x)).max() > ATOL


# ---------------------------------------------------- the reference against the official fixtures

FIXTURES = {
    # fixture: (how to read it, input, {expected file: GELU it was computed with})
    "vitjax_token_rep": ("vit_jax", "input_nhwc.npy",
                         {"expected_logits.npy": "tanh", "expected_logits_exact_gelu.npy": "erf"}),
    "bigvision_gap": ("big_vision", "input_nhwc.npy",
                      {"expected_logits.npy": "tanh", "expected_logits_exact_gelu.npy": "erf"}),
    "timm_vit_token": ("timm", "input_nchw.npy", {"expected_logits.npy": "erf"}),
}


@pytest.mark.parametrize("name", FIXTURES)
def test_reference_matches_the_official_code(fixtures_dir, name):
    """The clean-room reference reproduces what vit_jax, big_vision and timm computed (../shared)."""
    layout, inp, expected = FIXTURES[name]
    folder = fixtures_dir / name
    if layout == "timm":
        ref = read_timm(load_file(str(folder / "timm_model" / "model.safetensors")),
                        json.loads((folder / "timm_model" / "config.json").read_text()))
    else:
        with np.load(folder / "model.npz", allow_pickle=False) as f:
            w = dict(f)
        ref = read_vit_jax(w) if layout == "vit_jax" else read_big_vision(w, "params/")
    x = np.load(folder / inp)
    x = x.transpose(0, 2, 3, 1) if inp.endswith("nchw.npy") else x  # the reference takes NHWC
    for file, act in expected.items():
        ref.act = act
        err = np.abs(reference_logits(ref, x) - np.load(folder / file)).max()
        assert err <= ATOL, f"{name}/{file}: reference differs from the official output by {err:.2e}"
