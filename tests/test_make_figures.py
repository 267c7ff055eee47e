"""docs/make_figures.py: every figure is drawn, from its inputs, as a small valid PNG.

The script runs in-process on a tiny non-square model saved as a checkpoint, on synthetic faces, so
it is fast and needs no data files; assertions are made on the data each drawing function returns
(what the picture shows) rather than on pixels.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from minivit import ViT, ViTConfig
from minivit.checkpoints import save_checkpoint
from minivit.common.cli import run
from minivit.data.labels import LABELS
from minivit.evaluate.rollout import attention_rollout, last_layer_attention

SCRIPT = Path(__file__).resolve().parents[1] / "docs" / "make_figures.py"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def mf():
    spec = importlib.util.spec_from_file_location("make_figures", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_figures"] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("make_figures", None)


def tiny(classifier: str = "token") -> ViT:
    """A 16x24 input (a 4x6 grid: non-square on purpose), gray, 2 heads, 2 blocks."""
    torch.manual_seed(0)
    cfg = ViTConfig(image_size=(16, 24), patch_size=4, dim=16, depth=2, heads=2, mlp_dim=32, num_classes=7,
                    in_chans=1, classifier=classifier)
    return ViT(cfg).eval()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_checkpoint(tiny(), path, extra={"epoch": 3, "val_accuracy": 0.5})
    return path


@pytest.fixture(scope="module")
def inputs(mf, checkpoint):
    model, about, trained = mf.load_model(str(checkpoint))
    faces, labels, source = mf.load_faces("synthetic", n=6)
    return mf.Inputs(model, about, trained, faces, labels, source)


def test_main_writes_every_figure_as_a_small_png(mf, checkpoint, tmp_path, capsys):
    assert mf.main(["--checkpoint", str(checkpoint), "--data", "synthetic", "--out", str(tmp_path)]) == 0
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == sorted(f"{name}.png" for name in mf.FIGURES)
    assert len(capsys.readouterr().out.splitlines()) == len(mf.FIGURES)  # one path printed per figure
    for path in tmp_path.iterdir():
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC), path.name
        assert 3_000 < len(data) < 120_000, f"{path.name}: {len(data)} bytes"
        with Image.open(path) as im:
            im.verify()
        with Image.open(path) as im:
            w, h = im.size
        assert 300 <= w <= 1400 and 150 <= h <= 1200, f"{path.name}: {w}x{h}"


def test_only_draws_the_named_figures(mf, checkpoint, tmp_path):
    args = ["--checkpoint", str(checkpoint), "--data", "synthetic", "--only", "cutmix,lr_schedule"]
    assert mf.main(args + ["--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cutmix.png", "lr_schedule.png"]


def test_figures_are_deterministic(mf, inputs, tmp_path):
    mf.make_figures(["augment", "cutmix"], inputs, tmp_path / "a")
    mf.make_figures(["augment", "cutmix"], inputs, tmp_path / "b")
    for name in ("augment.png", "cutmix.png"):  # seeded draws: byte-identical PNGs
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_untrained_model_is_seeded_and_says_so(mf, inputs, tmp_path):
    rng = torch.get_rng_state()
    model, about, trained = mf.load_model(None)
    assert torch.equal(torch.get_rng_state(), rng)  # seeded init that leaves the caller's RNG alone
    assert not trained and "UNTRAINED" in about
    torch.manual_seed(mf.SEED)
    gpu = mf.PROFILES["gpu"]
    ref = mf.create_model(gpu["model"], image_size=gpu["image_size"], num_classes=7, **gpu["model_overrides"])
    assert torch.equal(model.pos_embed, ref.pos_embed)  # the gpu profile's model, seeded: same figure each run
    untrained = mf.Inputs(model, about, trained, inputs.faces, inputs.labels, inputs.source)
    assert "UNTRAINED" in mf.pos_embed_figure(untrained, tmp_path / "u.png")["title"]
    assert "UNTRAINED" not in mf.pos_embed_figure(inputs, tmp_path / "t.png")["title"]
    assert inputs.trained and "epoch 3" in inputs.about and "0.500" in inputs.about  # from the checkpoint's extra


def test_position_similarity_is_the_cosine_of_the_model_embeddings(mf, inputs, tmp_path):
    sim = mf.pos_embed_figure(inputs, tmp_path / "p.png")["similarity"]
    gh, gw = inputs.model.config.grid
    assert sim.shape == (gh * gw, gh * gw)
    pe = inputs.model.pos_embed[0, 1:].detach()  # (N, D): CLS left out
    i, j = 2, 17
    expected = torch.nn.functional.cosine_similarity(pe[i], pe[j], dim=0)
    assert sim[i, j].item() == pytest.approx(expected.item(), abs=1e-5)
    assert torch.allclose(sim.diagonal(), torch.ones(gh * gw), atol=1e-5)


def test_patches_are_the_face_cut_in_token_order(mf, inputs, tmp_path):
    d = mf.patches_figure(inputs, tmp_path / "patches.png")
    cfg = inputs.model.config
    (gh, gw), p = d["grid"], cfg.patch_size
    assert (gh, gw) == (4, 6) and d["num_tokens"] == 1 + gh * gw
    assert d["face"].shape == (16, 24)
    for k in (0, gw - 1, gw, gh * gw - 1):  # first, end of row 1, start of row 2, last
        r, c = divmod(k, gw)
        assert torch.equal(d["patches"][k], d["face"][r * p:(r + 1) * p, c * p:(c + 1) * p]), k


def receptive_window(stem, cell: tuple[int, int], hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """(row0, row1, col0, col1), inclusive: the input pixels a stem output cell can see, composed layer by layer
    from the convolutions' kernel, stride and padding (not from gradients), clipped to the image."""
    convs = [m for m in stem.modules() if isinstance(m, torch.nn.Conv2d)]
    (r0, r1), (c0, c1) = (cell[0], cell[0]), (cell[1], cell[1])
    for conv in reversed(convs):  # output interval [a, b] -> input [a*s - pad, b*s - pad + k - 1]
        (k, _), (s, _), (pad, _) = conv.kernel_size, conv.stride, conv.padding
        r0, r1, c0, c1 = r0 * s - pad, r1 * s - pad + k - 1, c0 * s - pad, c1 * s - pad + k - 1
    return max(r0, 0), min(r1, hw[0] - 1), max(c0, 0), min(c1, hw[1] - 1)


@pytest.mark.parametrize("stem", ["patch", "conv"])
def test_patches_show_what_each_token_is_computed_from(mf, inputs, tmp_path, stem):
    """A patch stem's token sees its own p x p cell and nothing else; a conv stem's token sees exactly the
    window its convolutions reach, wider than the cell. The figure says which stem the model has."""
    model = ViT(inputs.model.config.replace(stem=stem)).eval()
    shown = mf.Inputs(model, "tiny", False, inputs.faces, inputs.labels, inputs.source)
    d = mf.patches_figure(shown, tmp_path / "patches.png")
    (gh, gw), p = d["grid"], model.config.patch_size
    assert d["texts"][0].startswith(f"this model has a {stem} stem")
    assert not any("sequence the transformer reads" in t for t in d["texts"])  # a conv stem reads no raw patches
    assert len(d["tokens"]) == 2 and sorted(d["support"]) == sorted((s, k) for s in ("patch", "conv") for k in d["tokens"])
    twin = mf.both_stems(model)
    for k in d["tokens"]:
        r, c = divmod(k, gw)
        cell = torch.zeros(16, 24, dtype=torch.bool)
        cell[r * p:(r + 1) * p, c * p:(c + 1) * p] = True
        assert torch.equal(d["support"]["patch", k], cell), k  # its cell, all of it, nothing else
        r0, r1, c0, c1 = receptive_window(twin["conv"].patch_embed, (r, c), (16, 24))
        window = torch.zeros(16, 24, dtype=torch.bool)
        window[r0:r1 + 1, c0:c1 + 1] = True
        conv = d["support"]["conv", k]
        assert torch.equal(conv, window), k
        assert (conv & cell).equal(cell) and conv.sum() > cell.sum()  # the cell and more around it
    assert twin[stem] is model  # the model's own stem is the model itself, the other a seeded twin


def test_augment_draws_differ_and_have_the_model_input_shape(mf, inputs, tmp_path):
    samples = mf.augment_figure(inputs, tmp_path / "aug.png", faces=3, draws=4)["augmented"]
    assert samples.shape == (4, 3, 1, 16, 24)  # (draws, faces, C, H, W): the model's input
    assert not torch.equal(samples[0], samples[1])


def test_cutmix_label_matches_the_pasted_box(mf, inputs, tmp_path):
    smoothing = 0.1
    d = mf.cutmix_figure(inputs, tmp_path / "cutmix.png", smoothing=smoothing)
    label, k = d["label"], len(LABELS)
    a, b = LABELS.index(inputs.labels[0]), LABELS.index(inputs.labels[1])
    assert a != b
    assert label.sum().item() == pytest.approx(1.0, abs=1e-6)
    y0, y1, x0, x1 = d["box"]
    area = (y1 - y0) * (x1 - x0) / (16 * 24)
    assert d["pasted"] == pytest.approx(area) and 0.2 <= area <= 0.6
    assert label[b].item() == pytest.approx(area * (1 - smoothing) + smoothing / k, abs=1e-5)
    assert label[a].item() == pytest.approx((1 - area) * (1 - smoothing) + smoothing / k, abs=1e-5)
    others = [i for i in range(k) if i not in (a, b)]
    assert torch.allclose(label[others], torch.full((k - 2,), smoothing / k))


def test_lr_schedule_follows_the_profile(mf, tmp_path):
    profile = dict(epochs=10, warmup_epochs=2, lr=1e-3, min_lr=1e-5, batch_size=100, accum_steps=1)
    d = mf.lr_schedule_figure(None, tmp_path / "a.png", profile=profile, train_size=1000)  # 10 steps/epoch
    lr, epoch = d["lr"], d["epoch"]
    assert len(lr) == 100 and lr[0] == pytest.approx(5e-5)  # warmup starts at lr / warmup_steps (20)
    assert epoch[lr.argmax()] == pytest.approx(1.9)  # peak at the last warmup step (step 19 of 20)
    assert lr.max() == pytest.approx(1e-3) and lr[-1] == pytest.approx(1e-5, rel=0.05)
    later = mf.lr_schedule_figure(None, tmp_path / "b.png", profile={**profile, "warmup_epochs": 5}, train_size=1000)
    assert epoch[later["lr"].argmax()] == pytest.approx(4.9)
    assert (tmp_path / "a.png").read_bytes() != (tmp_path / "b.png").read_bytes()
    default = mf.lr_schedule_figure(None, tmp_path / "c.png")  # the gpu profile: cosine ends at min_lr
    assert default["epoch"][-1] == pytest.approx(mf.PROFILES["gpu"]["epochs"], abs=0.05)


@pytest.mark.parametrize("classifier", ["token", "gap"])
def test_attention_maps_are_minivit_rollout_of_the_shown_faces(mf, inputs, tmp_path, classifier):
    model = tiny(classifier)
    shown = mf.Inputs(model, "tiny", False, inputs.faces, inputs.labels, inputs.source)
    d = mf.attention_figure(shown, tmp_path / "att.png", faces=3)
    assert d["rollout"].shape == d["last"].shape == (3, 4, 6)
    x = mf.eval_transform(inputs.faces[:3], mf.augment_config(model))  # (3, 1, 16, 24)
    with torch.no_grad():
        logits, out = model(x, attention=True)
    prefix = model.config.num_prefix_tokens
    assert torch.allclose(d["rollout"], attention_rollout(out["attention"], (4, 6), prefix))
    assert torch.allclose(d["last"], last_layer_attention(out["attention"], (4, 6), prefix))
    assert torch.allclose(d["probs"], logits.softmax(-1))
    if classifier == "token":
        heads = mf.attention_heads_figure(shown, tmp_path / "heads.png")["heads"]  # one map per head
        assert heads.shape == (2, 4, 6) and torch.allclose(heads.amax((1, 2)), torch.ones(2))
        assert not torch.allclose(heads[0], heads[1])  # two random heads look at different patches


def test_bad_options_are_one_line_errors(mf, checkpoint, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        mf.main(["--only", "cutmix,bogus", "--out", str(tmp_path)])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bogus" in err and "lr_schedule" in err
    assert run(mf.main, ["--data", str(tmp_path / "nowhere"), "--out", str(tmp_path)]) == 2
    assert run(mf.main, ["--checkpoint", str(tmp_path / "missing.safetensors"), "--out", str(tmp_path)]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2 and "nowhere" in errors[0] and "missing.safetensors" in errors[1]
    assert list(tmp_path.iterdir()) == []  # nothing written on bad input


def test_faces_are_fer2013_publictest_when_shared_data_exists(mf):
    if not mf.DEFAULT_DATA.is_dir():
        pytest.skip(f"{mf.DEFAULT_DATA} absent (../shared not checked out)")
    faces, labels, source = mf.load_faces(None, n=6)
    assert source == "FER2013 PublicTest faces" and faces.shape == (6, 1, 48, 48)
    assert labels[:3] == ["happy", "surprise", "angry"]  # one face per class, in SHOW_CLASSES order
    assert (faces.float().flatten(1).std(1) > 10).all()  # no blank image


@pytest.mark.parametrize("overrides", [{}, {"classifier": "gap"}, {"classifier": "map", "representation_size": 12},
                                       {"stem": "conv"}, {"stem": "conv", "in_chans": 3, "image_size": 32}])
def test_stage_shapes_are_the_config_arithmetic(mf, overrides):
    """The shapes the architecture figure prints, from a forward pass, are what the config implies."""
    cfg = ViTConfig(**{**dict(image_size=(16, 24), patch_size=4, dim=16, depth=3, heads=2, mlp_dim=40,
                              num_classes=7, in_chans=1), **overrides})
    shapes = mf.stage_shapes(ViT(cfg), batch=3)
    (gh, gw), D, B = cfg.grid, cfg.dim, 3
    T = gh * gw + (cfg.classifier == "token")  # tokens: a CLS token only with the token classifier
    expected = {"input": (B, cfg.in_chans, *cfg.image_hw), "grid": (B, D, gh, gw), "tokens": (B, gh * gw, D),
                "embedded": (B, T, D), "qkv": (B, T, 3 * D), "attention": (B, cfg.heads, T, T), "attended": (B, T, D),
                "mlp": (B, T, cfg.mlp_dim), "block": (B, T, D), "encoded": (B, T, D), "pooled": (B, D),
                "logits": (B, cfg.num_classes), "depth": cfg.depth}
    if cfg.stem == "conv":
        expected["stem_convs"] = (B, max(D // 2, 8), gh, gw)  # the 3x3 stack ends at D/2 channels
    if cfg.representation_size:
        expected["pre_logits"] = (B, cfg.representation_size)
    assert shapes == expected
    labels = mf.stage_labels(ViT(cfg), shapes)
    assert labels["tokens"] == f"(B, {gh * gw}, {D})" and labels["attention"] == f"(B, {cfg.heads}, {T}, {T})"
    assert labels["block"].endswith(f"{cfg.depth} blocks, same shape")


def test_architecture_figure_draws_b16_and_the_fer_model(mf, tmp_path):
    d = mf.architecture_figure(None, tmp_path / "architecture.png")
    assert (tmp_path / "architecture.png").read_bytes().startswith(PNG_MAGIC)
    (b16_title, b16), (fer_title, fer) = mf.architecture_models()
    gpu = mf.PROFILES["gpu"]
    # the FER column is the gpu training profile's model, the other Google's ViT-B/16
    assert (fer.config.stem, fer.config.in_chans, fer.config.depth) == (
        gpu["model_overrides"]["stem"], gpu["model_overrides"]["in_chans"], gpu["model_overrides"]["depth"])
    assert fer.config.image_hw == (gpu["image_size"],) * 2 and fer.config.num_classes == len(LABELS)
    b16_cfg = b16.config
    assert (b16_cfg.patch_size, b16_cfg.image_hw, b16_cfg.dim, b16_cfg.num_classes) == (16, (224, 224), 768, 1000)
    for model, shapes, labels in zip((b16, fer), d["shapes"], d["labels"]):
        cfg = model.config
        n = cfg.grid[0] * cfg.grid[1]
        assert shapes["tokens"][1:] == (n, cfg.dim) and shapes["embedded"][1] == n + 1
        assert shapes["depth"] == cfg.depth and shapes["logits"][1:] == (cfg.num_classes,)
        for stage, _ in mf.STAGES:  # every stage's label is drawn, and starts with the shape of the pass
            assert labels[stage].startswith(mf.shape_label(shapes[stage])) and labels[stage] in d["texts"], stage
    assert b16_title in d["texts"] and fer_title in d["texts"]
    assert "(B, 197, 768)" in d["labels"][0]["embedded"] and "(B, 12, 197, 197)" == d["labels"][0]["attention"]
    # the two skip connections of each block are drawn (Eq. 2: around attention, Eq. 3: around the MLP), each
    # ending in a "+", and no stage claims an addition in words instead
    assert d["skips"] == [("qkv", "attended"), ("mlp", "block")]
    assert d["texts"].count("+") == 2 and d["texts"].count("skip") == 2
    assert not any("residual" in text for text in d["texts"])
