"""The benchmark and profiling scripts run, parse their flags, and write what they say they write.

These check the JSON and traces the scripts produce, never their speed: CPU timings mean nothing
here. Every run is tiny (a 1-2 block model at 16-24 px, a few steps).
"""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from minivit.data import LABELS

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import fer_recipe  # noqa: E402
import profile_step  # noqa: E402
import throughput  # noqa: E402

TINY = ["--model", "Ti/16", "--patch-size", "4", "--img-size", "16", "--dim", "32", "--depth", "1", "--heads", "2",
        "--mlp-dim", "64", "--num-classes", "7", "--batch-size", "4", "--warmup", "0"]


def test_throughput_rows_tricks_and_ratios(tmp_path):
    out = tmp_path / "t.json"
    # minivit eager as the reference row: the ratio columns are exercised without timm installed
    assert throughput.main(TINY + ["--iters", "2", "--libs", "minivit,minivit-fast", "--modes", "eager",
                                   "--compile-backend", "aot_eager", "--reference", "minivit:eager",
                                   "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    rows = {(r["lib"], r["mode"]): r for r in report["results"]}
    assert set(rows) == {("minivit", "eager"), ("minivit-fast", "fast")}
    ref = rows["minivit", "eager"]
    for r in rows.values():
        assert r["train_img_s"] > 0 and r["infer_img_s"] > 0
        assert r["train_vs_minivit_eager"] == pytest.approx(r["train_img_s"] / ref["train_img_s"])
        assert r["infer_vs_minivit_eager"] == pytest.approx(r["infer_img_s"] / ref["infer_img_s"])
    assert ref["train_vs_minivit_eager"] == 1.0
    tricks = " ".join(rows["minivit-fast", "fast"]["tricks"])
    assert "compile_model" in tricks and "sdpa_backends" in tricks
    assert report["meta"]["config"]["patch_size"] == 4 and report["meta"]["architecture"].endswith("17 tokens")
    assert report["reference"] == ["minivit", "eager"]


def test_ratios_are_none_without_the_reference_row():
    rows = [{"lib": "minivit", "mode": "eager", "train_img_s": 10.0, "infer_img_s": 20.0}]
    assert throughput.add_ratios(rows) is None
    assert rows[0]["train_vs_timm_compiled"] is None and rows[0]["infer_vs_timm_compiled"] is None
    rows.append({"lib": "timm", "mode": "compiled", "train_img_s": 8.0, "infer_img_s": 40.0})
    assert throughput.add_ratios(rows) is rows[1]
    assert rows[0]["train_vs_timm_compiled"] == 1.25 and rows[0]["infer_vs_timm_compiled"] == 0.5


def test_the_fer_conv_preset_measures_the_fer_recipes_model(tmp_path):
    """docs/performance.md: fer-conv is "the default FER recipe's model": the one the gpu profile of
    minivit.train builds (a 7-class head on its input), whatever that profile says today."""
    from minivit import config_from_name
    from minivit.train import config_for

    args, _ = throughput.parse_args(["--preset", "fer-conv", "--device", "cpu", "--out", str(tmp_path / "x.json")])
    recipe = config_for("fer2013.csv", profile="gpu")  # the GPU recipe for a real dataset
    assert recipe.model_overrides["stem"] == "conv"
    trained = config_from_name(recipe.model, image_size=recipe.image_size, num_classes=7, **recipe.model_overrides)
    assert throughput.model_config(args) == trained and args.batch_size == recipe.batch_size


def test_flags_override_the_preset(tmp_path):
    args, _ = throughput.parse_args(["--preset", "fer-conv", "--device", "cpu", "--batch-size", "8", "--stem", "patch",
                                     "--in-chans", "3", "--depth", "2", "--out", str(tmp_path / "x.json")])
    cfg = throughput.model_config(args)
    assert (args.batch_size, cfg.stem, cfg.in_chans, cfg.depth, cfg.dim) == (8, "patch", 3, 2, 384)


def test_forward_flops_count_vit_b16():
    # 35.1 GFLOPs per 224x224 image (2 per multiply-add, attention's T^2 terms included)
    args, _ = throughput.parse_args(["--preset", "b16", "--device", "cpu", "--out", "/nonexistent/x.json"])
    assert throughput.forward_flops(throughput.model_config(args)) == pytest.approx(35.13e9, rel=2e-3)


@pytest.mark.parametrize("argv, message", [
    (["--iters", "0"], "--iters: must be an integer >= 1"),
    (["--libs", "minivit,flax"], "unknown library 'flax'"),
    (["--modes", "jit"], "unknown mode 'jit'"),
    (["--preset", "fer512"], "invalid choice: 'fer512'"),
    (["--reference", "timm"], "expected LIB:MODE"),
    (["--in-chans", "2"], "--in-chans: invalid choice: 2 (choose from 1, 3)"),
])
def test_throughput_bad_flags_exit_2_with_one_line(capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        throughput.parse_args(argv + ["--device", "cpu"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_throughput_never_overwrites_without_the_flag(tmp_path, capsys):
    out = tmp_path / "t.json"
    out.write_text("keep me")
    with pytest.raises(SystemExit) as e:
        throughput.parse_args(["--device", "cpu", "--out", str(out)])
    assert e.value.code == 2 and "--overwrite" in capsys.readouterr().err
    assert out.read_text() == "keep me"


def test_loop_mode_reports_the_loop_against_its_pure_step(tmp_path, monkeypatch):
    monkeypatch.setattr(throughput, "LOOP_EPOCH_STEPS", 4)  # 8 steps = 2 epochs of the synthetic set
    out = tmp_path / "loop.json"
    assert throughput.main(TINY + ["--batch-size", "8", "--loop", "--steps", "8", "--modes", "eager",
                                   "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    (row,) = report["loop"]
    assert row["mode"] == "eager" and row["steps"] == row["steps_run"] == 8 and row["epochs"] == 2
    assert row["profile"] == "gpu"
    assert row["loop_img_s"] > 0 and row["pure_step_img_s"] > 0
    assert row["loop_vs_pure"] == pytest.approx(row["loop_img_s"] / row["pure_step_img_s"])


def test_profile_step_writes_traces_and_finds_the_attention_kernel(tmp_path):
    out = tmp_path / "prof"
    assert profile_step.main(TINY + ["--batch-size", "8", "--steps", "2", "--loop-steps", "4", "--modes",
                                     "eager,compiled", "--compile-backend", "aot_eager", "--out", str(out)]) == 0
    for name in ("step-eager.json", "step-compiled.json", "loop-eager.json"):
        assert json.loads((out / name).read_text())["traceEvents"], name
    summary = json.loads((out / "summary.json").read_text())
    eager, compiled, loop = summary["step-eager"], summary["step-compiled"], summary["loop-eager"]
    assert eager["sdpa_backend"] == ["flash (CPU kernel)"]
    assert eager["sdpa_can_run"] == {"cudnn": False, "flash": True, "efficient": False, "math": True}
    assert compiled["graph_breaks"] == {"graphs": 1, "graph_breaks": 0, "reasons": []}
    assert eager["host_syncs"].startswith("not applicable")
    assert eager["kernels_per_step"] is None and eager["launch_gaps"] is None  # CUDA only
    assert eager["top_ops"] and all(r["self_us_per_step"] >= 0 for r in eager["top_ops"])
    # the loop augments, mixes and evaluates around the same step: more ops per step than the step alone
    assert loop["aten_ops_per_step"] > eager["aten_ops_per_step"] > 0
    assert summary["loop_extra_over_step"] and all(r["extra_us_per_step"] > 0 for r in summary["loop_extra_over_step"])


def test_profile_step_out_that_is_a_file_is_one_line_exit_2(tmp_path, capsys):
    out = tmp_path / "summary"
    out.write_text("keep me")
    with pytest.raises(SystemExit) as e:
        profile_step.main(TINY + ["--device", "cpu", "--out", str(out)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and f"--out: {out} is a file, not a folder" in err and err.count("\n") == 1
    assert out.read_text() == "keep me"


def test_device_choices_are_minivit_devices(capsys):
    from minivit.common.device import DEVICES
    from minivit.commands.evaluate import build_parser

    for parse in (throughput.parse_args, build_parser().parse_args):
        with pytest.raises(SystemExit) as e:
            parse(["--device", "mps"] + ([] if parse is throughput.parse_args else ["--checkpoint", "x"]))
        err = capsys.readouterr().err
        assert e.value.code == 2 and "invalid choice: 'mps'" in err
        assert err.split("choose from ")[1].split(")")[0].replace("'", "").split(", ") == list(DEVICES)


def test_launch_gaps_and_sdpa_names():
    g = profile_step.launch_gaps([(0, 10), (5, 12), (20, 30)])  # two overlapping kernels, then an 8 us gap
    assert g["busy_fraction"] == pytest.approx(22 / 30, abs=1e-4) and g["largest_gap_us"] == 8
    assert profile_step.launch_gaps([]) is None
    assert profile_step.sdpa_backend_used(["aten::_scaled_dot_product_cudnn_attention",
                                           "aten::_scaled_dot_product_flash_attention_backward"]) == ["cudnn"]


def test_fer_recipe_smoke_run_writes_json_and_markdown(tmp_path):
    out = tmp_path / "recipe"
    assert fer_recipe.main(["--data", "synthetic", "--epochs", "1", "--tiny", "--no-progress", "--device", "cpu",
                            "--only", "default,rgb", "--out", str(out)]) == 0
    report = json.loads((out / "results.json").read_text())
    rows = {r["variant"]: r for r in report["variants"]}
    assert list(rows) == ["default", "rgb"]  # the 1-channel conv-stem model, and 3 channels from gray data
    models = {name: r["config"]["model_overrides"] for name, r in rows.items()}
    assert models["default"]["stem"] == "conv" and models["default"]["in_chans"] == 1
    assert models["rgb"]["in_chans"] == 3
    assert rows["default"]["config"]["mix_prob"] > 0 and rows["default"]["tta"]
    for r in rows.values():
        assert r["epochs"] == 1
        # the row's numbers are those of the run's final evaluation: recomputed here from its confusion matrix
        cm = np.array(json.loads((Path(r["run_dir"]) / "metrics.json").read_text())["confusion_matrix"])  # (true, pred)
        assert cm.shape == (7, 7) and cm.sum() == report["meta"]["val_size"]  # every val image, once
        assert r["val_accuracy"] == pytest.approx(np.trace(cm) / cm.sum(), abs=1e-9)
        recall = np.diag(cm) / cm.sum(1)
        assert list(r["recall"]) == list(LABELS) and np.allclose(list(r["recall"].values()), recall, atol=1e-9)
        precision = np.divide(np.diag(cm), cm.sum(0), out=np.zeros(7), where=cm.sum(0) > 0)
        f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(7), where=precision + recall > 0)
        assert r["val_macro_f1"] == pytest.approx(f1.mean(), abs=1e-9)
        assert r["command"].endswith(f"--only {r['variant']} --epochs 1 --tiny")
        # the test split went through: scored once, from its own confusion matrix, each figure naming its split
        test = json.loads((Path(r["run_dir"]) / "metrics.json").read_text())["test"]
        test_cm = np.array(test["confusion_matrix"])
        assert test_cm.sum() == report["meta"]["test_size"] > 0
        assert r["test_accuracy"] == pytest.approx(np.trace(test_cm) / test_cm.sum(), abs=1e-9)
        assert r["test_macro_f1"] == pytest.approx(test["macro_f1"], abs=1e-12)
        assert r["val_split"].startswith("val: ") and f"{report['meta']['val_size']} images" in r["val_split"]
        assert r["test_split"].startswith("test: ") and "never used for selection" in r["test_split"]
    table = (out / "results.md").read_text()
    assert table.count("\n| ") == 1 + len(rows) and "disgust recall" in table
    assert "| val accuracy | val macro-F1 | test accuracy | test macro-F1 |" in table
    assert report["meta"]["val_split"] in table and report["meta"]["test_split"] in table


def test_fer_recipe_wall_time_budget_chooses_epochs(tmp_path):
    out = tmp_path / "recipe"
    assert fer_recipe.main(["--data", "synthetic", "--minutes", "0.05", "--probe-steps", "5", "--tiny",
                            "--no-progress", "--device", "cpu", "--only", "batch128", "--out", str(out)]) == 0
    (row,) = json.loads((out / "results.json").read_text())["variants"]
    assert row["probe"]["img_per_s"] > 0 and row["epochs"] >= 1
    assert row["config"]["batch_size"] == 16  # 128 / 8 under --tiny: half of the default's 32


@pytest.mark.parametrize("name, field, value", [
    ("no-mix", "mix_prob", 0.0), ("mix-every-batch", "mix_prob", 1.0), ("batch128", "batch_size", 128),
    ("patch-stem", "model_overrides", "stem=patch"), ("rgb", "model_overrides", "in_chans=3")])
def test_fer_recipe_variants_change_one_knob(tmp_path, name, field, value):
    kw = dict(data="synthetic", out=tmp_path, epochs=None, tiny=False, device="cpu", progress=False, seed=0)
    default = fer_recipe.variant_config("default", **kw).to_dict()
    variant = fer_recipe.variant_config(name, **kw).to_dict()
    assert {k for k, v in variant.items() if v != default[k]} == {field}
    if field == "model_overrides":  # one ViTConfig field changed, the rest of the model kept
        key, wanted = value.split("=")
        changed = {k for k in variant[field] if variant[field][k] != default[field].get(k)}
        assert changed == {key} and str(variant[field][key]) == wanted
    else:
        assert variant[field] == value != default[field]


def test_fer_recipe_shorter_runs_keep_the_warmup_share(tmp_path):
    kw = dict(data="synthetic", out=tmp_path, tiny=False, device="cpu", progress=False, seed=0)
    full, short = fer_recipe.variant_config("default", epochs=None, **kw), fer_recipe.variant_config(
        "default", epochs=10, **kw)
    assert short.epochs == 10 and short.warmup_epochs / short.epochs == pytest.approx(full.warmup_epochs / full.epochs)


def test_epochs_for_budget():
    assert fer_recipe.epochs_for_budget(101, 1000, 10, 8000, 3000, tta=False) == 10  # 9 s an epoch, 1 s report
    assert fer_recipe.epochs_for_budget(101, 1000, 10, 8000, 3000, tta=True) == 9  # the TTA report costs 2 s
    assert fer_recipe.epochs_for_budget(1, 10, 10, 8000, 3000, tta=True) == 1  # never zero


def test_fer_recipe_bad_input(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        fer_recipe.main(["--only", "default,turbo", "--data", "synthetic", "--out", str(tmp_path)])
    assert e.value.code == 2 and "unknown variant(s) turbo" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        fer_recipe.main(["--data", str(tmp_path / "missing"), "--out", str(tmp_path)])
    assert e.value.code == 2 and "does not exist" in capsys.readouterr().err
    assert fer_recipe.main(["--variants"]) == 0
    assert "patch-stem" in capsys.readouterr().out


def test_fer_recipe_refuses_a_variant_folder_holding_a_run_before_training_any(tmp_path, capsys):
    out = tmp_path / "recipe"
    (out / "runs" / "rgb").mkdir(parents=True)
    (out / "runs" / "rgb" / "metrics.json").write_text("{}")
    argv = ["--data", "synthetic", "--epochs", "1", "--tiny", "--no-progress", "--device", "cpu",
            "--only", "default,rgb", "--out", str(out)]
    with pytest.raises(SystemExit) as e:
        fer_recipe.main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert f"{out / 'runs' / 'rgb'} already holds a run" in err and "--overwrite" in err
    assert not (out / "runs" / "default").exists()  # refused up front: the first variant did not train
    kw = dict(data="synthetic", out=tmp_path, epochs=1, tiny=True, device="cpu", progress=False, seed=0)
    assert fer_recipe.variant_config("default", **kw).overwrite is False  # train() refuses on its own too
    assert fer_recipe.variant_config("default", overwrite=True, **kw).overwrite is True


@pytest.mark.parametrize("module", [throughput, profile_step, fer_recipe], ids=lambda m: m.__name__)
def test_benchmark_docstring_examples(module):
    # benchmarks/ is not part of the package, so tests/test_docs.py does not collect these
    import doctest

    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
