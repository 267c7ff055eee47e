"""The training command line (python -m minivit.train): bad options and folders end in one line and
exit 2 with nothing touched, the recipe flags mean what they say, and a run tells the truth about itself."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minivit.common.cli import run
from minivit.data import ImageSet
from minivit.common.errors import ConfigError
from minivit.train import TrainConfig, train
from minivit.commands.train import build_config, main, parse_args
from minivit.checkpoints import RunFolder

REPO = Path(__file__).resolve().parents[1]
TINY = ["--synthetic-samples", "64", "--img-size", "16", "--patch-size", "4", "--dim", "32", "--depth", "1",
        "--heads", "2", "--mlp-dim", "64", "--batch-size", "16", "--epochs", "1", "--device", "cpu"]


def cli(capsys, *argv):
    """Run the command in-process: (exit code, stdout, stderr)."""
    try:
        code = run(main, [str(a) for a in argv])
    except SystemExit as e:  # argparse errors
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def fake_run(folder: Path) -> dict:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"train": {}}')
    (folder / "best.safetensors").write_bytes(b"not really weights")
    (folder / "metrics.json").write_text('{"accuracy": 0.9}')
    return snapshot(folder)


def test_existing_run_folder_is_refused_untouched(tmp_path, capsys):
    out = tmp_path / "runs" / "x"
    before = fake_run(out)
    code, _, err = cli(capsys, *TINY, "--out", out)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert f"{out} already holds a run; use --resume {out} to continue it or --overwrite to replace it" in err
    assert snapshot(out) == before  # byte for byte, and nothing added


def test_overwrite_replaces_the_run(tmp_path, capsys):
    out = tmp_path / "x"
    fake_run(out)
    (out / "notes.txt").write_text("mine")  # not a run file: kept
    code, _, err = cli(capsys, *TINY, "--out", out, "--overwrite", "--no-progress")
    assert code == 0, err
    assert json.loads((out / "config.json").read_text())["train"]["epochs"] == 1
    assert (out / "best.safetensors").read_bytes() != b"not really weights"
    assert json.loads((out / "metrics.json").read_text())["num_samples"] == 64
    assert (out / "notes.txt").read_text() == "mine"


def test_python_api_refuses_an_existing_run_too(tmp_path):
    before = fake_run(tmp_path / "x")
    with pytest.raises(ConfigError, match="already holds a run"):
        train(TrainConfig(out=str(tmp_path / "x"), progress=False, log=False))
    assert snapshot(tmp_path / "x") == before


def test_default_out_names_never_collide(tmp_path):
    first = RunFolder.new("synthetic", root=str(tmp_path)).path
    first.mkdir()
    second = RunFolder.new("synthetic", root=str(tmp_path)).path
    assert second != first and second.name.startswith(first.name) and not second.exists()
    assert RunFolder.new("../shared/data/fer2013.csv", root=str(tmp_path)).path.name.startswith("fer2013-")


BAD_OPTIONS = [
    ("--lr", "-1"), ("--lr", "0"), ("--lr", "nan"), ("--lr", "inf"), ("--min-lr", "-1e-6"),
    ("--weight-decay", "-0.1"), ("--drop-path", "1"), ("--drop-path", "-0.1"), ("--ema", "1.5"), ("--ema", "1"),
    ("--cutmix", "-1"), ("--mixup", "-0.5"), ("--mix-prob", "1.5"), ("--label-smoothing", "1"),
    ("--momentum", "1"), ("--layer-decay", "0"), ("--layer-decay", "1.2"), ("--warmup-epochs", "-1"),
    ("--epochs", "0"), ("--batch-size", "0"), ("--accum-steps", "0"), ("--img-size", "0"), ("--clip-grad", "-1"),
    ("--synthetic-samples", "0"), ("--synthetic-samples", "6"), ("--epochs", "2.5"), ("--in-chans", "2"),
    ("--stem", "resnet"), ("--compile", "maybe"), ("--on-bad-image", "ignore"), ("--patch-size", "0"),
    ("--log-every", "0"), ("--eval-batch-size", "0"), ("--seed", "-1"),
    ("--val-fraction", "0"), ("--val-fraction", "1"), ("--val-fraction", "-0.1"), ("--val-split", "sometimes"),
]


@pytest.mark.parametrize("flag,value", BAD_OPTIONS)
def test_option_out_of_range_is_one_line_exit_2(flag, value, capsys, tmp_path):
    code, out, err = cli(capsys, flag, value, "--out", tmp_path / "never")
    assert code == 2 and len(err.strip().splitlines()) == 1 and flag in err and "Traceback" not in err, err
    assert not (tmp_path / "never").exists()


@settings(max_examples=40, deadline=None)
@given(value=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8)))
def test_fuzz_ema_option(value):
    """Any text for --ema either parses to a number in [0, 1) or exits 2 naming --ema."""
    text = str(value)
    try:
        args = parse_args(["--ema", text])
    except SystemExit as e:
        assert e.code == 2
        return
    assert 0 <= args.ema < 1


@pytest.mark.parametrize("field,value", [("lr", -1), ("lr", float("nan")), ("drop_path", 1.0), ("ema", 1.5),
                                         ("mix_prob", -0.1), ("epochs", 0), ("batch_size", 2.5), ("min_lr", 0.1),
                                         ("label_smoothing", 1.0), ("optimizer", "lamb"), ("compile", "maybe"),
                                         ("betas", (0.9, 1.0)), ("synthetic_samples", 0)])
def test_train_config_validate_names_the_option(field, value):
    with pytest.raises(ConfigError, match="--" + field.replace("_", "-") if field != "betas" else "betas"):
        train(TrainConfig(**{field: value}, progress=False, log=False))


def test_dataset_smaller_than_a_batch_names_the_dataset(tmp_path):
    g = torch.Generator().manual_seed(0)
    tiny = ImageSet(torch.randint(0, 256, (10, 1, 16, 16), dtype=torch.uint8, generator=g),
                    torch.arange(10) % 7, source="my-faces.csv")
    with pytest.raises(ConfigError, match=r"my-faces.csv has 10 training images.*--batch-size 16"):
        train(TrainConfig(batch_size=16, image_size=16, out=str(tmp_path / "r"), progress=False, log=False), tiny, tiny)


def write_config(folder: Path, text: str) -> Path:
    folder.mkdir()
    (folder / "config.json").write_text(text)
    return folder / "config.json"


@pytest.mark.parametrize("text,problem", [
    ("{not json", "not valid JSON"),
    ('{"model": {}}', 'no "train" section'),
    (json.dumps({"train": {**TrainConfig().to_dict(), "learning_rate": 1}}), "unknown TrainConfig fields: learning_rate"),
    (json.dumps({"train": {k: v for k, v in TrainConfig().to_dict().items() if k != "epochs"}}),
     "missing TrainConfig fields: epochs"),
    (json.dumps({"train": {**TrainConfig().to_dict(), "lr": -1}}), "--lr must be"),
])
def test_bad_resume_config_is_one_line_naming_the_file(tmp_path, capsys, text, problem):
    path = write_config(tmp_path / "run", text)
    before = snapshot(tmp_path / "run")
    code, _, err = cli(capsys, "--resume", tmp_path / "run")
    assert code == 2 and len(err.strip().splitlines()) == 1 and str(path) in err and problem in err, err
    assert snapshot(tmp_path / "run") == before


def test_explicit_model_keeps_its_patch_size():
    cfg, _ = build_config(parse_args(["--data", "faces/", "--profile", "gpu", "--model", "B/16"]))
    assert cfg.profile == "gpu" and cfg.model == "B/16" and "patch_size" not in cfg.model_overrides
    assert "depth" not in cfg.model_overrides  # the profile's sizes are not stacked on a named model
    cfg, _ = build_config(parse_args(["--data", "faces/", "--model", "B/16", "--patch-size", "8"]))
    assert cfg.model_overrides["patch_size"] == 8
    cfg, _ = build_config(parse_args(["--data", "faces/", "--profile", "gpu"]))  # its model: S/4, 8 blocks, conv stem
    assert cfg.model == "S/4" and cfg.model_overrides == dict(stem="conv", in_chans=1, depth=8)


@pytest.mark.parametrize("argv", [["--weights", "ViT-B_16", "--in-chans", "1"], ["--weights", "x.npz", "--model", "S/4"],
                                  ["--resume", "runs/x", "--patch-size", "8"]])
def test_model_flags_that_would_be_ignored_are_refused(argv, capsys):
    code, _, err = cli(capsys, *argv)
    assert code == 2 and "does not apply" in err and argv[-2] in err and len(err.strip().splitlines()) == 1, err


def test_gpu_profile_is_the_measured_fer_reference():
    cfg, _ = build_config(parse_args(["--data", "faces/", "--profile", "gpu"]))
    assert (cfg.batch_size, cfg.lr, cfg.weight_decay, cfg.label_smoothing, cfg.epochs, cfg.warmup_epochs) == \
        (256, 1e-3, 0.05, 0.1, 100, 5)
    assert (cfg.cutmix, cfg.mixup, cfg.mix_prob, cfg.drop_path, cfg.ema, cfg.tta, cfg.compile) == \
        (1.0, 0.0, 0.5, 0.1, 0.0, True, "auto")
    from minivit import create_model
    model = create_model(cfg.model, image_size=48, num_classes=7, **cfg.model_overrides)
    c = model.config
    assert (c.dim, c.depth, c.heads, c.mlp_dim, c.stem, c.in_chans, c.grid) == (384, 8, 6, 1536, "conv", 1, (12, 12))


def test_conv_stem_grayscale_run_end_to_end_with_header(tmp_path, capsys):
    out = tmp_path / "gray"
    code, stdout, err = cli(capsys, *TINY, "--stem", "conv", "--in-chans", "1", "--out", out, "--no-progress")
    assert code == 0, err
    header = next(line for line in stdout.splitlines() if line.startswith("model "))
    for part in ("conv stem", "patch 4", "4x4 grid = 16 patches", "17 tokens", "dim 32", "depth 1", "in_chans 1"):
        assert part in header, header
    saved = json.loads((out / "config.json").read_text())["model"]
    assert saved["stem"] == "conv" and saved["in_chans"] == 1
    from minivit import ViT
    model = ViT.from_pretrained(str(out / "best.safetensors"))
    assert model.config.in_chans == 1 and model(torch.zeros(2, 1, 16, 16)).shape == (2, 7)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_samples"] == 64 and metrics["train_img_per_s"] > 0


def test_warmup_longer_than_the_run_is_warned(tmp_path, capsys):
    code, _, err = cli(capsys, *TINY, "--warmup-epochs", "2", "--out", tmp_path / "w", "--no-progress")
    assert code == 0
    assert "warning: --warmup-epochs 2 >= --epochs 1" in err


def test_single_class_prediction_is_reported(tmp_path, capsys):
    """A model trained on one class predicts it for everything: said at the end and in metrics.json."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 1, 16, 16), dtype=torch.uint8, generator=g)
    happy = ImageSet(images, torch.full((64,), 3), source="all-happy")
    val = ImageSet(images[:32], torch.arange(32) % 7, source="mixed")
    cfg = TrainConfig(image_size=16, epochs=2, batch_size=16, lr=3e-3, out=str(tmp_path / "r"), progress=False,
                      log=False, model_overrides=dict(patch_size=4, dim=32, depth=1, heads=2, mlp_dim=64))
    result = train(cfg, happy, val)
    assert len(result["warnings"]) == 1 and "predicts 'happy' for 100% of the 32 images" in result["warnings"][0]
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["warning"] == result["warnings"][0]
    assert f"warning: {result['warnings'][0]}" in capsys.readouterr().err  # said at the end of the run too


def _run(args, timeout=120):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def test_redirected_log_is_small_and_no_progress_silences_bars(tmp_path):
    """stdout/stderr are pipes here (not a terminal): no bars even by default; --no-progress: none ever."""
    for extra in ([], ["--no-progress"]):
        out = tmp_path / ("quiet" if extra else "default")
        r = _run(["-m", "minivit.train", *TINY, "--epochs", "2", "--out", str(out), *extra])
        assert r.returncode == 0, r.stderr[-2000:]
        log = r.stdout + r.stderr
        assert "\r" not in log and "it/s" not in log and len(log) < 3000, log
        assert sum(line.startswith("epoch ") for line in r.stdout.splitlines()) == 2  # one line per epoch


def test_too_many_processes_for_the_gpus_is_one_line(monkeypatch, capsys, tmp_path):
    """torchrun --nproc_per_node 2 on a 1-GPU machine: rank 1 stops with one line naming the GPU count."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    code, _, err = cli(capsys, *TINY[:-2], "--device", "cuda", "--out", tmp_path / "ddp")
    assert code == 2 and "1 GPU(s)" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "ddp").exists()


def test_stale_temp_files_are_cleaned(tmp_path):
    out = tmp_path / "r"
    base = dict(synthetic_samples=64, image_size=16, epochs=2, batch_size=16, progress=False, log=False,
                model_overrides=dict(patch_size=4, dim=32, depth=1, heads=2, mlp_dim=64), out=str(out))
    train(TrainConfig(**base, stop_after=5))  # "killed" in epoch 2
    stale = [out / ".resume.safetensors.k2j4x9.tmp", out / ".best.safetensors.a1b2c3.tmp"]
    for p in stale:
        p.write_bytes(b"")  # what a kill during an atomic write leaves
    train(TrainConfig(**base, resume=str(out)))
    assert not any(p.exists() for p in stale) and not list(out.glob("*.tmp"))
    assert json.loads((out / "history.json").read_text())[-1]["epoch"] == 2


def image_folder(root: Path, bad: bool = True) -> Path:
    """train/ and test/ class folders of gray PNGs in two sizes (mixed, as AffectNet/RAF-DB folders are)."""
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    for split, n in (("train", 12), ("test", 4)):
        for cls in ("happy", "sad"):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                side = 16 if i % 2 else 24
                pixels = torch.randint(0, 256, (side, side), dtype=torch.uint8, generator=g).numpy()
                Image.fromarray(pixels, "L").save(root / split / cls / f"{i}.png")
    if bad:
        (root / "train" / "sad" / "broken.png").write_bytes(b"\x89PNG not an image")
    return root


FOLDER_RUN = ["--img-size", "16", "--model", "Ti/16", "--patch-size", "4", "--dim", "32", "--depth", "1",
              "--heads", "2", "--mlp-dim", "64", "--batch-size", "8", "--epochs", "1", "--warmup-epochs", "0",
              "--device", "cpu", "--no-progress"]


def test_bad_images_stop_or_are_skipped_and_counted(tmp_path, capsys):
    data = image_folder(tmp_path / "faces")
    code, _, err = cli(capsys, "--data", data, *FOLDER_RUN, "--out", tmp_path / "raise")
    assert code == 2 and "broken.png" in err and len(err.strip().splitlines()) == 1, err
    assert "--on-bad-image skip" in err  # the way past it
    code, out, err = cli(capsys, "--data", data, *FOLDER_RUN, "--on-bad-image", "skip", "--out", tmp_path / "skip")
    assert code == 0, err
    said = [line for line in (out + err).splitlines() if "skipped" in line]  # once, singular, naming the file
    assert len(said) == 1 and said[0].startswith("warning: skipped 1 unreadable image in ") and "broken.png" in said[0]
    saved = json.loads((tmp_path / "skip" / "config.json").read_text())
    # the 24 readable training images (16 and 24 px, resized to 16): a val split of 1 per class carved out of
    # them (the folder has no val/), the other 22 trained on; test/ is scored at the end, never selects
    assert saved["data"]["train_size"] + saved["data"]["val_size"] == 24 and saved["data"]["val_size"] == 2
    assert saved["data"]["split"]["val"] == "carved" and saved["data"]["test_size"] == 8
    assert saved["model"]["in_chans"] == 1


# -- resuming: what may not change, where the run continues, what the stop line says ----------------------

SMALL = dict(synthetic_samples=64, image_size=16, batch_size=16, progress=False, log=False, device="cpu", compile="no",
             model_overrides=dict(patch_size=4, dim=32, depth=1, heads=2, mlp_dim=64))


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory) -> Path:
    """A run "killed" after step 5 of 2 x 4 steps: its resume point is the end of epoch 1."""
    out = tmp_path_factory.mktemp("stopped") / "run"
    train(TrainConfig(**SMALL, epochs=2, out=str(out), stop_after=5))
    assert (out / "resume.safetensors").is_file()
    return out


def copy_run(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("option, value, was", [("--layer-decay", "0.5", "1.0"), ("--optimizer", "sgd", "adamw"),
                                                ("--weight-decay", "0.1", "0.05"), ("--batch-size", "8", "16"),
                                                ("--accum-steps", "2", "1")])
def test_resume_refuses_changed_optimiser_options(stopped_run, tmp_path, capsys, option, value, was):
    run = copy_run(stopped_run, tmp_path / "run")
    before = snapshot(run)
    code, _, err = cli(capsys, "--resume", run, option, value, "--no-progress")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert f"{option} cannot change on --resume (the run used {was})" in err
    assert snapshot(run) == before


@pytest.mark.parametrize("saved, changed, message", [
    (dict(optimizer="sgd", momentum=0.9), dict(optimizer="sgd", momentum=0.5), "--momentum cannot change on --resume"),
    (dict(betas=(0.9, 0.999)), dict(betas=(0.9, 0.95)), "--betas cannot change on --resume"),
])
def test_resume_refuses_changed_momentum_and_betas(tmp_path, saved, changed, message):
    from minivit.train.config import check_resume_options

    write_config(tmp_path / "run", json.dumps({"train": TrainConfig(**saved).to_dict()}))
    with pytest.raises(ConfigError, match=message):
        check_resume_options(TrainConfig(**changed), RunFolder(tmp_path / "run").train_fields)
    check_resume_options(TrainConfig(**saved), RunFolder(tmp_path / "run").train_fields)  # unchanged: accepted


def test_optimiser_state_that_does_not_fit_is_a_checkpoint_error(tmp_path):
    from minivit import ViT, ViTConfig
    from minivit.checkpoints.run_folder import load_resume, restore, save_resume
    from minivit.common.errors import CheckpointError
    from minivit.train import param_groups

    model = ViT(ViTConfig(image_size=8, patch_size=4, dim=8, depth=2, heads=2, mlp_dim=16, num_classes=3))
    adamw = torch.optim.AdamW(param_groups(model, 0.05, 1.0))
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    adamw.step()
    save_resume(tmp_path / "resume.safetensors", model, adamw, None, None, {"epoch": 0, "step": 1})
    _, tensors, state = load_resume(tmp_path / "resume.safetensors")
    sgd = torch.optim.SGD(param_groups(model, 0.05, 0.5), lr=0.1, momentum=0.9)  # another group layout
    with pytest.raises(CheckpointError) as err:
        restore(tensors, state, model, sgd, None, None, where=tmp_path / "resume.safetensors")
    assert "resume.safetensors" in str(err.value) and "\n" not in str(err.value)


def test_resume_refuses_another_out_folder(stopped_run, tmp_path, capsys):
    run = copy_run(stopped_run, tmp_path / "run")
    before = snapshot(run)
    code, _, err = cli(capsys, "--resume", run, "--out", tmp_path / "elsewhere", "--no-progress")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "elsewhere" in err and "--overwrite" in err and str(run) in err
    assert snapshot(run) == before and not (tmp_path / "elsewhere").exists()


def test_resume_with_out_equal_to_its_folder_finishes_the_run(stopped_run, tmp_path, capsys):
    run = copy_run(stopped_run, tmp_path / "run")
    code, _, err = cli(capsys, "--resume", run, "--out", run, "--stop-after", "0", "--no-progress")
    assert code == 0, err
    assert json.loads((run / "history.json").read_text())[-1]["epoch"] == 2


def test_stop_message_offers_resume_only_when_there_is_a_resume_point(tmp_path, capsys):
    code, out, err = cli(capsys, *TINY, "--stop-after", "1", "--out", tmp_path / "early", "--no-progress")
    assert code == 0, err
    assert not (tmp_path / "early" / "resume.safetensors").exists()
    assert "no resume point was written yet" in out and "--resume" not in out, out
    code, out, err = cli(capsys, *TINY[:-4], "--epochs", "2", "--device", "cpu", "--stop-after", "5",
                         "--out", tmp_path / "later", "--no-progress")
    assert code == 0, err
    assert f"continue with --resume {tmp_path / 'later'}" in out, out


# -- options checked before any work ------------------------------------------------------------------

@pytest.mark.parametrize("argv, named", [(["--in-chans", "2"], "--in-chans"), (["--in-chans", "5"], "--in-chans"),
                                         (["--in-chans", "x"], "--in-chans"), (["--seed", str(2**31)], "--seed")])
def test_out_of_range_options_are_one_line(argv, named, capsys):
    code, _, err = cli(capsys, *argv)
    assert code == 2 and len(err.strip().splitlines()) == 1 and named in err and "Traceback" not in err, err


def test_seed_range_in_the_python_api_and_numpy_seeding():
    from minivit.commands.convert import build_parser
    from minivit.train.setup import seed_everything

    with pytest.raises(ConfigError, match="--seed"):
        TrainConfig(seed=2**31).validate()
    TrainConfig(seed=2**31 - 1).validate()
    seed_everything(2**31 - 1 + 3)  # the largest seed plus a rank: numpy takes it (mod 2**32)
    seed_everything(2**32 + 1)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["x.npz", "--seed", str(2**31)])


@pytest.fixture
def no_data(monkeypatch):
    """Decoding the dataset is an error: what is checked before it must fail first."""
    import minivit.train.data as data

    def refuse(*a, **kw):
        raise AssertionError("the dataset was loaded before the options were checked")
    monkeypatch.setattr(data, "load_data", refuse)


@pytest.mark.parametrize("kw, named", [
    (dict(model_overrides=dict(patch_size=4, dim=32, depth=1, heads=5, mlp_dim=64)), "heads=5"),
    (dict(model="Q/16"), "Q/16"),
    (dict(image_size=18), "image_size=18"),
    (dict(augment={"rotate": 5}), "rotate"),
    (dict(augment={"scale": [0.0, 1.0]}), "scale"),
    (dict(augment={"hflip": 1.5}), "hflip"),
    (dict(weights="missing/ViT-B_16.npz"), "missing/ViT-B_16.npz"),
])
def test_model_augment_and_weights_are_checked_before_the_data(tmp_path, no_data, kw, named):
    base = dict(SMALL, out=str(tmp_path / "run"), epochs=1)
    with pytest.raises(ConfigError) as err:
        train(TrainConfig(**{**base, **kw}))
    assert named in str(err.value) and "\n" not in str(err.value), err.value


def test_eval_only_passes_the_evaluation_options(tmp_path, monkeypatch, capsys):
    import minivit.evaluate

    seen = {}
    monkeypatch.setattr(minivit.evaluate, "evaluate_checkpoint", lambda *a, **kw: seen.update(kw))
    code, _, err = cli(capsys, "--eval-only", "--weights", tmp_path / "m.safetensors", "--data", tmp_path / "ferplus.csv",
                       "--overwrite", "--eval-batch-size", "7", "--label-mode", "soft",
                       "--ferplus-images", tmp_path / "fer2013.csv")
    assert code == 0, err
    assert seen["overwrite"] is True and seen["batch_size"] == 7 and seen["label_mode"] == "soft"
    assert seen["ferplus_images"] == str(tmp_path / "fer2013.csv")


def test_the_examples_python_snippet_is_the_commands_recipe():
    """examples/finetune_fer.py's "The same from Python" builds exactly the config the command builds."""
    import ast
    import textwrap

    from minivit.train import config_for

    doc = ast.get_docstring(ast.parse((REPO / "examples" / "finetune_fer.py").read_text()))
    snippet = textwrap.dedent(doc.split("The same from Python")[1].split(":\n", 1)[1])
    assert 'config_for("../shared/data/fer2013", out="runs/fer2013")' in snippet
    python = config_for("../shared/data/fer2013", out="runs/fer2013")
    command, _ = build_config(parse_args(["--data", "../shared/data/fer2013", "--out", "runs/fer2013"]))
    assert python.to_dict() == command.to_dict() and command.profile == ("gpu" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize("argv, data, weights", [
    ([], "synthetic", "none"),
    (["--data", "faces/"], "faces/", "none"),
    (["--data", "faces/", "--weights", "ViT-B_16"], "faces/", "ViT-B_16"),
    (["--data", "faces/", "--model", "Ti/16"], "faces/", "none"),
])
def test_python_and_the_command_share_one_table_of_profiles(argv, data, weights):
    """TrainConfig() is the command's no-argument run; config_for builds what the command builds for
    each kind of run; every choices= of the command is the config's own table."""
    from minivit.train import CHOICES, TrainConfig, choose_profile, config_for

    command, _ = build_config(parse_args(argv))
    extra = {"model": "Ti/16"} if "--model" in argv else {}
    assert config_for(data, weights=weights, **extra).to_dict() == command.to_dict()
    assert command.profile == choose_profile("auto", data, weights)[0]
    if not argv:
        assert command == TrainConfig() and command.profile == "synthetic"
        assert TrainConfig().model_overrides == dict(patch_size=4, dim=64, depth=3, heads=4, mlp_dim=128)
    import argparse

    from minivit.commands import train as train_cli

    parser = argparse.ArgumentParser()
    train_cli.add_options(parser)
    choices = {a.dest: tuple(a.choices) for a in parser._actions if a.choices and a.dest in CHOICES}
    assert choices.pop("profile") == ("auto", *CHOICES["profile"])  # --profile also takes auto
    assert choices == {name: tuple(values) for name, values in CHOICES.items() if name != "profile"}


# -- the profile for the machine, its defaults in --help, the whole-run estimate -----------------------------

@pytest.mark.parametrize("cuda, argv, profile, why", [
    (False, ["--data", "faces/"], "cpu", "no CUDA device; --profile gpu for the 100-epoch GPU recipe"),
    (True, ["--data", "faces/"], "gpu", "a CUDA device; --profile cpu for the CPU recipe"),
    (True, ["--data", "faces/", "--device", "cpu"], "cpu", "--device cpu; --profile gpu for the 100-epoch GPU recipe"),
    (False, ["--data", "faces/", "--profile", "gpu"], "gpu", "--profile gpu"),
    (True, ["--data", "faces/", "--weights", "ViT-B_16"], "finetune", "--weights given: the ViT paper's fine-tuning recipe"),
    (True, [], "synthetic", "no --data: a short demo run on SYNTHETIC faces drawn by minivit.data.synthetic_faces, "
                            "not real data; --data for a real dataset"),
])
def test_profile_auto_picks_the_recipe_for_the_data_and_the_machine(monkeypatch, cuda, argv, profile, why):
    from minivit.train import config_for
    from minivit.train.profiles import PROFILES

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    cfg, said = build_config(parse_args(argv))
    assert (cfg.profile, said) == (profile, why)
    assert all(getattr(cfg, k) == v for k, v in PROFILES[profile].items() if k != "model_overrides")
    data = argv[argv.index("--data") + 1] if "--data" in argv else "synthetic"
    weights = argv[argv.index("--weights") + 1] if "--weights" in argv else "none"
    extra = {"device": "cpu"} if "--device" in argv else {}
    assert config_for(data, weights=weights, profile="gpu" if "--profile" in argv else "auto", **extra) == cfg


def test_the_profile_is_said_recorded_and_repeated_on_another_machine(tmp_path, capsys, monkeypatch):
    """A cpu-profile run's config.json, replayed with --config on a GPU machine, is the same run."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    data = image_folder(tmp_path / "faces", bad=False)
    flags = [f for f in FOLDER_RUN if f not in ("--device", "cpu")]  # the device left to the profile
    code, out, err = cli(capsys, "--data", data, *flags, "--out", tmp_path / "a")
    assert code == 0, err
    assert out.splitlines()[0] == "profile cpu (no CUDA device; --profile gpu for the 100-epoch GPU recipe)"
    assert " x 1 epoch, " in out  # one epoch, said so
    saved = TrainConfig.from_run(RunFolder(tmp_path / "a"))
    assert saved.profile == "cpu" and saved.device == "cpu" and saved.compile == "no"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # another machine, with a GPU
    again, why = build_config(parse_args(["--config", str(tmp_path / "a" / "config.json"), "--out", str(tmp_path / "b")]))
    assert why == f"--config {tmp_path / 'a' / 'config.json'}"
    assert again.to_dict() == {**saved.to_dict(), "out": str(tmp_path / "b")}
    assert build_config(parse_args(["--data", str(data), *flags]))[0].profile == "gpu"  # auto, on that machine


def test_a_runs_config_reads_back_as_written_and_nothing_is_filled_in(tmp_path):
    """minivit has had no release, so no older config.json needs fields guessed for it: from_run gives back
    exactly what the run wrote, and a config.json without a field is refused, naming the file and the field."""
    cfg = TrainConfig(data="faces/", model="S/4", profile="cpu", save_every_minutes=2.5)
    RunFolder(tmp_path / "run").write_config({"train": cfg.to_dict()})
    assert TrainConfig.from_run(RunFolder(tmp_path / "run")) == cfg
    fields = cfg.to_dict()
    del fields["profile"], fields["save_every_minutes"]
    old = RunFolder(tmp_path / "old")
    old.write_config({"train": fields})
    with pytest.raises(ConfigError) as refused:
        TrainConfig.from_run(old)
    assert str(refused.value) == f"{old.config_file}: missing TrainConfig fields: profile, save_every_minutes"


def test_every_options_help_shows_each_profiles_default_from_the_table():
    import argparse

    from minivit.commands import train as train_cli
    from minivit.train.profiles import PROFILES, default_of, help_default, shown

    parser = argparse.ArgumentParser()
    train_cli.add_options(parser)
    helps = {a.dest: " ".join(a.help.split()) for a in parser._actions if a.help}
    assert helps["mix_prob"].endswith("(default by profile: 0.5 (cpu, gpu), 1 (finetune, synthetic))")
    assert helps["epochs"].endswith("(default by profile: 64 (cpu), 100 (gpu), 10 (finetune), 20 (synthetic))")
    assert helps["momentum"].endswith("(default 0.9)") and helps["dim"].endswith(
        "(default by profile: 128 (cpu), 384 (gpu), the checkpoint's (finetune), 64 (synthetic))")
    # every option with a value and a default ends with the table's words for it, each profile's value in them
    stated = [dest for dest in helps if dest in TrainConfig.field_names() or dest in train_cli.MODEL_FLAGS]
    unstated = [d for d in stated if not helps[d].endswith(f"({help_default(d)})")]
    assert set(unstated) == {"out", "resume", "overwrite", "progress", "cache", "cache_dir", "profile",
                             "ferplus_images", "stem_width"}, unstated  # on/off flags, no default, or said in words
    for dest in set(stated) - set(unstated):
        assert all(shown(default_of(p, dest)) in helps[dest] for p in PROFILES), dest


def test_the_estimate_and_the_cpu_warning():
    from types import SimpleNamespace

    from minivit.common.text import duration
    from minivit.train.report import Clock, Forecast

    def run(profile, device="cpu", resume=None, epochs=100):
        cfg = SimpleNamespace(epochs=epochs, tta=True, profile=profile, resume=resume)
        data = SimpleNamespace(steps_per_epoch=201, images_per_step=128)
        return SimpleNamespace(cfg=cfg, data=data, world=1, ema=None, val_set=[0] * 2873, test_set=[0] * 3589,
                               clock=Clock(), total_steps=201 * epochs, state={"step": 0}, step=0,
                               device=torch.device(device))

    gpu_on_cpu = Forecast(run("gpu"))
    per_image = 26.0 / 128 / 3  # before a validation was timed: a third of a trained image
    left = gpu_on_cpu.seconds_left(26.0, 0)
    assert left == pytest.approx(201 * 100 * 26.0 + (100 * 2873 + (2873 + 3589) * 2) * per_image)
    line = gpu_on_cpu.line(26.0, 0)  # the GPU recipe on a CPU, as issue 23's user met it: 26 s a step
    assert line.startswith("speed: 26.0 s a step, 5 img/s; estimated: an epoch 1 h 30 min with its validation, "
                           "the whole run (100 epochs and the final report) 151 h, done around "), line
    assert gpu_on_cpu.warning(26.0, 0) == ("this run takes about 151 h on this CPU; faster: --profile cpu (the recipe "
                                           "for a CPU) or fewer --epochs (--epochs 1 takes about 2 h)")
    cpu = Forecast(run("cpu"))
    left = cpu.seconds_left(0.75, 0)
    assert cpu.warning(0.75, 0) == (f"this run takes about {duration(left)} on this CPU; faster: fewer --epochs "
                                    f"(--epochs {int(7200 // (left / 100))} takes about 2 h)") and left > 7200
    assert cpu.warning(0.1, 0) is None  # under 2 hours
    assert Forecast(run("gpu", device="cuda")).warning(26.0, 0) is None  # a GPU: no CPU warning
    assert "--profile" not in Forecast(run("gpu", resume="runs/x")).warning(26.0, 0)  # a resumed run keeps its profile


def test_the_bar_shows_the_runs_time_left(tmp_path, capsys, monkeypatch):
    import minivit.common.console as console
    import minivit.train.report as report

    monkeypatch.setenv("MINIVIT_PROGRESS", "always")  # capsys is no terminal
    monkeypatch.setattr(report, "ESTIMATE_AFTER_S", 0.0)
    # every update redraws (tqdm redraws at most every 0.1 s: a 16-step epoch of this tiny model is shorter)
    monkeypatch.setattr(report, "bar", lambda *a, **k: console.bar(*a, mininterval=0, **k))
    train(TrainConfig(synthetic_samples=256, image_size=16, batch_size=16, epochs=2, out=str(tmp_path / "r"),
                      model_overrides=dict(patch_size=4, dim=32, depth=1, heads=2, mlp_dim=64)))
    out, err = capsys.readouterr()
    assert "speed: " in out, out
    assert "epoch 1/2" in err, err
    assert ", run " in err and " left" in err, err
