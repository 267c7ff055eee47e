"""The training loop: optimiser rules, schedule, exact resume, DDP on CPU, the CLI."""

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from minivit import ViT, ViTConfig, create_model
from minivit.checkpoints import read_extra
from minivit.common.device import resolve_precision
from minivit.common.errors import ConfigError
from minivit.train import EMA, TrainConfig, epoch_indices, layer_id, lr_at, param_groups, soft_cross_entropy, train
from processes import run_python

REPO = Path(__file__).resolve().parents[1]
TINY = dict(patch_size=4, dim=32, depth=2, heads=2, mlp_dim=64)


def tiny_cfg(out, **kw) -> TrainConfig:
    base = dict(data="synthetic", synthetic_samples=224, image_size=16, epochs=2, batch_size=16,
                model_overrides=TINY, out=str(out), progress=False, log=False, lr=2e-3)
    return TrainConfig(**{**base, **kw})


def read_all(path) -> dict:
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def test_weight_decay_rule_and_layer_ids():
    model = ViT(ViTConfig(image_size=8, patch_size=4, dim=8, depth=3, heads=2, mlp_dim=16, num_classes=3))
    groups = param_groups(model, weight_decay=0.1, layer_decay=0.5)
    decayed = {n for g in groups if g["weight_decay"] > 0 for n in g["names"]}
    shapes = dict(model.named_parameters())
    assert decayed == {n for n, p in shapes.items() if p.ndim >= 2 and n not in ("pos_embed", "cls_token")}
    assert "blocks.0.attn.qkv.weight" in decayed and "pos_embed" not in decayed and "head.bias" not in decayed
    assert layer_id("cls_token", 3) == 0 and layer_id("blocks.2.mlp.fc1.weight", 3) == 3 and layer_id("head.weight", 3) == 4
    scale = {n: g["lr_scale"] for g in groups for n in g["names"]}
    assert scale["head.weight"] == 1.0 and scale["blocks.2.norm1.weight"] == 0.5 and scale["patch_embed.proj.weight"] == 0.5**4
    # every parameter in exactly one group
    assert sorted(n for g in groups for n in g["names"]) == sorted(shapes)
    pooled = ViT(ViTConfig(image_size=8, patch_size=4, dim=8, depth=1, heads=2, mlp_dim=16, classifier="map"))
    decayed = {n for g in param_groups(pooled, 0.1) if g["weight_decay"] > 0 for n in g["names"]}
    assert "map_head.probe" not in decayed and "map_head.kv.weight" in decayed


def test_lr_schedule_warmup_then_cosine():
    lrs = [lr_at(s, 100, 10, 1.0, 0.01) for s in range(101)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))  # monotone decay after warmup
    assert lrs[100] == pytest.approx(0.01) and lrs[55] == pytest.approx(0.505)


def test_precision_choice_and_bad_options():
    assert resolve_precision("auto", torch.device("cpu")) == ("fp32", None, False)
    assert resolve_precision("fp16", torch.device("cpu"))[1:] == (torch.float16, True)
    with pytest.raises(ConfigError, match="--precision"):
        train(TrainConfig(precision="fp8", progress=False, log=False))


def test_bf16_autocast_on_cpu(tmp_path):
    """--precision bf16 --device cpu: the autocast path the GPU takes, end to end (train, validate, report)."""
    bf16 = train(tiny_cfg(tmp_path / "bf16", epochs=1, precision="bf16", device="cpu"))
    fp32 = train(tiny_cfg(tmp_path / "fp32", epochs=1, precision="fp32", device="cpu"))
    assert bf16["precision"] == "bf16" and json.loads((tmp_path / "bf16" / "config.json").read_text())["precision"] == "bf16"
    # autocast really ran: bf16 matmuls change the loss a little, not a lot
    assert bf16["train_loss"] != fp32["train_loss"] and abs(bf16["train_loss"] - fp32["train_loss"]) < 0.05
    assert bf16["val_loss"] == pytest.approx(fp32["val_loss"], abs=0.05)
    # weights and optimiser state stay fp32; only the compute was bf16
    saved = read_all(tmp_path / "bf16" / "resume.safetensors")
    assert {v.dtype for k, v in saved.items() if not k.endswith(".step")} == {torch.float32}
    assert (tmp_path / "bf16" / "attention_maps.png").is_file() and (tmp_path / "bf16" / "metrics.json").is_file()


def test_auto_precision_skips_emulated_bf16(monkeypatch):
    """torch >= 2.4 says bf16 is "supported" on T4/V100 by emulation: auto must pick fp16 + GradScaler there."""
    def fake(including_emulation=True, native=False):
        return native or including_emulation

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", fake)  # a pre-Ampere GPU
    assert resolve_precision("auto", torch.device("cuda")) == ("fp16", torch.float16, True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)  # Ampere+
    assert resolve_precision("auto", torch.device("cuda")) == ("bf16", torch.bfloat16, False)
    assert resolve_precision("bf16", torch.device("cuda")) == ("bf16", torch.bfloat16, False)  # never a scaler


def test_soft_cross_entropy_matches_torch():
    logits, y = torch.randn(5, 7), torch.randint(0, 7, (5,))
    soft = torch.nn.functional.one_hot(y, 7).float() * 0.9 + 0.1 / 7
    assert torch.allclose(soft_cross_entropy(logits, soft),
                          torch.nn.functional.cross_entropy(logits, y, label_smoothing=0.1), atol=1e-6)


def test_epoch_indices_shard_and_balance():
    a, b = (epoch_indices(100, 50, epoch=3, seed=1, rank=r, world=2) for r in (0, 1))
    assert len(set(a.tolist()) | set(b.tolist())) == 100  # the two ranks split one permutation
    assert torch.equal(a, epoch_indices(100, 50, epoch=3, seed=1, rank=0, world=2))  # reproducible
    labels = torch.tensor([0] * 90 + [1] * 10)
    w = (1.0 / torch.bincount(labels).float())[labels]
    drawn = labels[epoch_indices(100, 4000, epoch=0, seed=0, rank=0, world=1, sample_weights=w)]
    assert 0.4 < drawn.float().mean().item() < 0.6  # balanced despite 9:1


def test_balance_loss_weights_and_their_square_root():
    """"loss": N / (K n_c); "sqrt": its square root rescaled so the weights still average 1 over the images."""
    from minivit.data.imageset import ImageSet
    from minivit.train.data import balance_weights

    targets = torch.tensor([0] * 80 + [1] * 15 + [2] * 5)
    images = torch.zeros(100, 1, 4, 4, dtype=torch.uint8)
    train_set = ImageSet(images, targets, ("a", "b", "c"))
    counts = torch.tensor([80.0, 15.0, 5.0])
    _, loss = balance_weights(train_set, "loss", torch.device("cpu"))
    torch.testing.assert_close(loss, 100 / (3 * counts))
    _, sqrt = balance_weights(train_set, "sqrt", torch.device("cpu"))
    torch.testing.assert_close((sqrt * counts).sum() / 100, torch.tensor(1.0))  # mean weight over the data: 1
    torch.testing.assert_close(sqrt / sqrt[0], (loss / loss[0]).sqrt())  # the ratios are the square roots
    assert sqrt[2] < loss[2] and sqrt[0] > loss[0]  # milder both ways
    assert balance_weights(train_set, "none", torch.device("cpu")) == (None, None)


def test_resume_after_interruption_is_exact(tmp_path):
    """A run stopped mid-epoch and resumed ends with exactly the weights of an uninterrupted run."""
    kw = dict(accum_steps=2, ema=0.9, drop_path=0.1, mixup=0.2, cutmix=1.0, balance="loss", layer_decay=0.8,
              ckpt_every=3)
    full = train(tiny_cfg(tmp_path / "full", **kw))
    assert full["step"] == 14 and not full["interrupted"]  # 224 // (16 * 2) = 7 steps x 2 epochs
    part = train(tiny_cfg(tmp_path / "part", stop_after=10, **kw))  # "killed" after step 10; last save: step 9
    assert part["interrupted"] and part["step"] == 10
    resumed = train(tiny_cfg(tmp_path / "part", resume=str(tmp_path / "part"), **kw))
    assert resumed["step"] == 14
    a, b = read_all(tmp_path / "full" / "resume.safetensors"), read_all(tmp_path / "part" / "resume.safetensors")
    assert a.keys() == b.keys() and any(k.startswith("optim.") for k in a) and any(k.startswith("ema.") for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # and the run actually trained: the weights moved away from the initial ones (seed 0, as the run drew them)
    torch.manual_seed(0)
    first = create_model("Ti/16", image_size=16, num_classes=7, drop_path=0.1, **TINY)
    assert not torch.equal(first.blocks[0].attn.qkv.weight, a["model.blocks.0.attn.qkv.weight"])
    assert full["train_img_per_s"] > 0
    hist_a = json.loads((tmp_path / "full" / "history.json").read_text())
    hist_b = json.loads((tmp_path / "part" / "history.json").read_text())
    assert [h["val_acc"] for h in hist_a] == [h["val_acc"] for h in hist_b]


def test_run_folder_report_and_learning(tmp_path):
    result = train(tiny_cfg(tmp_path, synthetic_samples=448, epochs=10, lr=3e-3, label_smoothing=0.0, tta=True))
    for name in ("config.json", "metrics.json", "history.json", "confusion_matrix.png", "curves.png",
                 "attention_maps.png", "best.safetensors", "last.safetensors", "resume.safetensors"):
        assert (tmp_path / name).is_file(), name
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["tta"] is True and len(metrics["per_class"]) == 7 and len(metrics["history"]) == 10
    assert result["val_accuracy"] == metrics["accuracy"] > 0.3  # chance is 1/7 = 0.14
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["train"]["epochs"] == 10 and saved["model"]["dim"] == 32
    # best.safetensors carries its config and the epoch it was picked at: it loads back into the same function
    best = ViT.from_pretrained(str(tmp_path / "best.safetensors"))
    assert best.config.dim == 32 and best.config.num_classes == 7
    extra = read_extra(tmp_path / "best.safetensors")
    assert extra["epoch"] == metrics["best_epoch"] == result["best_epoch"]
    assert extra["val_accuracy"] == max(h["val_acc"] for h in metrics["history"])


def test_from_pretrained_reads_our_checkpoints(tmp_path):
    train(tiny_cfg(tmp_path, epochs=1))
    model = ViT.from_pretrained(str(tmp_path / "best.safetensors"))
    state = read_all(tmp_path / "best.safetensors")
    assert set(model.state_dict()) == set(state)
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    # the model part of resume.safetensors too: the weights after the last step
    resumed = ViT.from_pretrained(str(tmp_path / "resume.safetensors"))
    saved = read_all(tmp_path / "resume.safetensors")
    for k, v in resumed.state_dict().items():
        assert torch.equal(v, saved[f"model.{k}"]), k


TINY_CLI = ["--synthetic-samples", "256", "--img-size", "16", "--patch-size", "4", "--dim", "32", "--depth", "1",
            "--heads", "2", "--mlp-dim", "64", "--batch-size", "32", "--no-progress"]


def test_ddp_two_processes_gloo(tmp_path):
    """torchrun with 2 CPU processes (gloo): both ranks train, rank 0 writes the run folder."""
    out = tmp_path / "ddp"
    r = run_python(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
              "examples/finetune_fer.py", *TINY_CLI, "--epochs", "2", "--device", "cpu", "--out", str(out)])
    assert r.returncode == 0, r.stderr[-3000:]
    saved = json.loads((out / "config.json").read_text())
    assert saved["world_size"] == 2
    hist = json.loads((out / "history.json").read_text())
    assert [h["step"] for h in hist] == [4, 8]  # 256 images / 2 ranks / 32 per step = 4 steps per epoch
    assert (out / "metrics.json").is_file() and (out / "best.safetensors").is_file()


def test_cli_errors_are_one_line(tmp_path):
    r = run_python(["examples/finetune_fer.py", "--data", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "x")])
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = run_python(["examples/evaluate_fer.py", "--checkpoint", str(tmp_path / "missing.safetensors")])
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr


def test_cli_train_resume_and_evaluate(tmp_path):
    out = tmp_path / "cli"
    r = run_python(["examples/finetune_fer.py", *TINY_CLI, "--epochs", "1", "--out", str(out)])
    assert r.returncode == 0, r.stderr[-3000:]
    r = run_python(["examples/finetune_fer.py", "--resume", str(out), "--epochs", "2", "--no-progress"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(json.loads((out / "history.json").read_text())) == 2
    assert json.loads((out / "config.json").read_text())["train"]["epochs"] == 2
    r = run_python(["examples/evaluate_fer.py", "--checkpoint", str(out), "--tta"])
    assert r.returncode == 0, r.stderr[-3000:]
    # the default split is the test split: the synthetic test faces, which selected nothing
    report = json.loads((out / "eval-synthetic-test-tta" / "metrics.json").read_text())
    assert report["tta"] and report["num_samples"] == 64 and "macro_f1" in report
    assert report["split"] == "test" and report["split_label"] == "test: synthetic faces, 64 images, never used for selection"
    assert (out / "eval-synthetic-test-tta" / "confusion_matrix.png").is_file()
    assert (out / "eval-synthetic-test-tta" / "attention_maps.png").is_file()


def test_finetune_from_google_npz(tmp_path, fixtures_dir):
    """--weights: a vit_jax .npz gets a new 7-way head and resampled position embeddings, then trains (SGD recipe)."""
    npz = fixtures_dir / "vitjax_token_rep" / "model.npz"
    result = train(tiny_cfg(tmp_path, weights=str(npz), image_size=16, epochs=1, optimizer="sgd", lr=0.01,
                            weight_decay=0.0, model_overrides={}))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["num_samples"] == 64 and sum(metrics["confusion_matrix"][0]) + sum(
        sum(row) for row in metrics["confusion_matrix"][1:]) == 64
    best = ViT.from_pretrained(str(tmp_path / "best.safetensors"))
    # the reported accuracy is the best checkpoint's on the run's val faces, recomputed here without
    # minivit.evaluate: the model's own argmax on the re-drawn val set, preprocessed as the loop does
    from minivit.data.augment import AugmentConfig, eval_transform
    from minivit.data import synthetic_split

    val = synthetic_split(224, image_size=16, seed=0)[1]
    with torch.no_grad():
        logits = best.eval()(eval_transform(val.images, AugmentConfig(16, channels=best.config.in_chans)))
    recomputed = (logits.argmax(1) == val.targets).float().mean().item()
    assert result["val_accuracy"] == metrics["accuracy"] == pytest.approx(recomputed, abs=1e-9)
    cfg = best.config
    assert cfg.gelu == "tanh" and cfg.dim == 64 and cfg.num_classes == 7 and cfg.grid == (2, 2)
    assert best.pos_embed.shape == (1, 5, 64)
    # the pretrained blocks were loaded and fine-tuned (close to the checkpoint's, not equal); the head is new
    start = ViT.from_pretrained(str(npz), num_classes=7, image_size=16)
    w0, w1 = start.blocks[0].attn.qkv.weight, best.blocks[0].attn.qkv.weight
    assert not torch.equal(w0, w1) and (w1 - w0).abs().max() < 0.1 * w0.abs().max()
    assert not torch.equal(best.head.weight, torch.zeros_like(best.head.weight))


def test_ema_averages_parameters_and_copies_buffers():
    """BatchNorm running statistics (the conv stem's) are copied into the EMA model at every update."""
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    ema = EMA(model, decay=0.9)
    start = model[0].weight.detach().clone()
    with torch.no_grad():
        model[0].weight.add_(1.0)
    model.train()(torch.randn(8, 3))  # moves BatchNorm's running mean/var
    ema.update(model)  # update 1: decay min(0.9, 2/11)
    d = 2 / 11
    torch.testing.assert_close(ema.module[0].weight, d * start + (1 - d) * model[0].weight.detach())
    for name, buf in model.named_buffers():
        assert torch.equal(dict(ema.module.named_buffers())[name], buf), name
    assert int(ema.module[1].num_batches_tracked) == 1


def test_conv_stem_resume_is_exact_with_batchnorm(tmp_path):
    """The conv stem's BatchNorm buffers travel through resume.safetensors: kill-and-resume stays bit-exact."""
    kw = dict(model_overrides={**TINY, "stem": "conv", "in_chans": 1}, ema=0.9, mix_prob=0.5, cutmix=1.0,
              ckpt_every=2, epochs=2, synthetic_samples=96)
    train(tiny_cfg(tmp_path / "full", **kw))
    train(tiny_cfg(tmp_path / "part", stop_after=9, **kw))  # mid-epoch 2; last save: step 8
    train(tiny_cfg(tmp_path / "part", resume=str(tmp_path / "part"), **kw))
    a, b = read_all(tmp_path / "full" / "resume.safetensors"), read_all(tmp_path / "part" / "resume.safetensors")
    assert any("running_mean" in k for k in a) and any(k.startswith("ema.") and "running_var" in k for k in a)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_ddp_mid_epoch_resume_counts_every_image_once(tmp_path):
    """torchrun, 2 CPU processes: stopped mid-epoch after a --ckpt-every save and resumed, the epoch's train
    loss and accuracy equal the uninterrupted run's (the saved sums are both ranks' total, carried by rank 0)."""
    torchrun = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "examples/finetune_fer.py",
                "--device", "cpu", "--no-progress"]
    new_run = [*TINY_CLI, "--epochs", "1", "--ckpt-every", "2"]
    full, part = tmp_path / "full", tmp_path / "part"
    for args in ([*new_run, "--out", str(full)], [*new_run, "--out", str(part), "--stop-after", "3"],  # saved at step 2
                 ["--resume", str(part), "--stop-after", "0"]):
        r = run_python([*torchrun, *args])
        assert r.returncode == 0, r.stderr[-3000:]
    a = json.loads((full / "history.json").read_text())[0]
    b = json.loads((part / "history.json").read_text())[0]
    assert b["step"] == a["step"] == 4
    assert b["train_acc"] == a["train_acc"] and b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-9)


def test_no_sync_looks_through_torch_compile():
    """Under torch.compile the DDP module is the OptimizedModule's _orig_mod: no_sync must still apply."""
    from contextlib import contextmanager

    from minivit.train.distributed import no_sync

    class FakeDDP(torch.nn.parallel.DistributedDataParallel):
        def __init__(self):
            torch.nn.Module.__init__(self)  # no process group: only the type and no_sync matter here
            self.module = torch.nn.Linear(2, 2)
            self.entered = 0

        @contextmanager
        def no_sync(self):
            self.entered += 1
            yield

    ddp = FakeDDP()
    compiled = torch.compile(ddp)  # lazy: nothing is compiled until it is called
    assert compiled._orig_mod is ddp
    for net in (ddp, compiled):
        with no_sync(net, skip=True):
            pass
        with no_sync(net, skip=False):
            pass
    assert ddp.entered == 2
