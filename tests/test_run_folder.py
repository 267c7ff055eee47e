"""A run folder is one object (minivit.checkpoints.RunFolder): its state, and the one reader of its config.json.

Every command that takes a run folder -- train (new, --resume, --config), evaluate, predict, export -- is
run here on a real run while every open of that run's config.json is recorded with the minivit module that
opened it: only run_folder.py may, and a resumed run reads it once.
"""

import builtins
import io
import json
import sys
from pathlib import Path

import pytest

from minivit.checkpoints import RunFolder, save_checkpoint
from minivit.checkpoints.run_folder import EMPTY, FINISHED, RESUMABLE, STARTED
from minivit.common.cli import run as run_command
from minivit.common.errors import CheckpointError, ConfigError
from minivit.train import TrainConfig, train

PACKAGE = Path(__file__).resolve().parents[1] / "minivit"
# 64 synthetic faces at 16x16, 5 steps an epoch: a run in a second or two
TINY = dict(synthetic_samples=64, image_size=16, batch_size=12, epochs=2, model_overrides=dict(
    patch_size=8, dim=16, depth=1, heads=2, mlp_dim=32), device="cpu", compile="no", progress=False, log=False)


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "done"
    train(TrainConfig(**TINY, out=str(out)))
    return out


class ConfigReads:
    """Who opens ``<folder>/config.json``: the minivit module of each open, in order."""

    def __init__(self, monkeypatch, folder: Path):
        self.target, self.readers = (folder / "config.json").resolve(), []
        real = io.open

        def spy(file, mode="r", *args, **kwargs):
            if isinstance(file, (str, Path)) and "r" in mode and Path(file).resolve() == self.target:
                self.readers.append(self.opener())
            return real(file, mode, *args, **kwargs)

        monkeypatch.setattr(io, "open", spy)  # pathlib's read_text and read_bytes open through io.open
        monkeypatch.setattr(builtins, "open", spy)

    @staticmethod
    def opener() -> str:
        frame = sys._getframe(2)
        while frame is not None:
            path = Path(frame.f_code.co_filename)
            if PACKAGE in path.parents:
                return str(path.relative_to(PACKAGE))
            frame = frame.f_back
        return "<not minivit>"


def test_a_resumed_run_reads_its_config_json_once_through_the_run_folder(tmp_path, monkeypatch):
    out = tmp_path / "run"
    assert train(TrainConfig(**TINY, out=str(out), stop_after=7))["interrupted"]  # mid-epoch 2: resumable
    assert RunFolder(out).state == RESUMABLE
    reads = ConfigReads(monkeypatch, out)
    result = train(TrainConfig(**TINY, out=str(out), resume=str(out)))
    assert result["step"] == 10 and not result["interrupted"] and RunFolder(out).state == FINISHED
    assert reads.readers == ["checkpoints/run_folder.py"]


@pytest.mark.parametrize("command", ["resume", "config", "evaluate", "predict", "export"])
def test_only_the_run_folder_opens_a_runs_config_json(finished, tmp_path, monkeypatch, command):
    from minivit.commands import evaluate, export, predict, train as train_command

    image = tmp_path / "face.png"
    from PIL import Image

    Image.new("L", (16, 16), 90).save(image)
    argv = {
        "resume": (train_command.main, ["--resume", finished, "--no-progress"]),
        "config": (train_command.main, ["--config", finished, "--out", tmp_path / "again", "--epochs", "1",
                                        "--no-progress"]),
        "evaluate": (evaluate.main, ["--checkpoint", finished, "--out", tmp_path / "report", "--no-progress"]),
        "predict": (predict.main, [image, "--checkpoint", finished, "--no-detect", "--no-progress"]),
        "export": (export.main, ["--checkpoint", finished, "--onnx", tmp_path / "m.onnx"]),
    }[command]
    if command == "export":
        pytest.importorskip("onnxruntime", reason="export verifies with ONNX Runtime (the export extra)")
    reads = ConfigReads(monkeypatch, finished)
    assert run_command(argv[0], [str(a) for a in argv[1]]) == 0
    assert set(reads.readers) <= {"checkpoints/run_folder.py"}, reads.readers


def test_states_of_a_folder(tmp_path):
    run = RunFolder(tmp_path / "run")
    assert run.state == EMPTY and not run.is_run_folder
    run.path.mkdir()
    assert run.state == EMPTY
    run.write_config({"train": {"data": "synthetic"}})
    assert run.state == STARTED and run.is_run_folder
    run.check_new_run(overwrite=True)  # replacing it is asked for
    # started, with no resume point: --resume has nothing to continue, so the message names the two ways out
    with pytest.raises(ConfigError) as refused:
        run.check_new_run(overwrite=False)
    assert str(refused.value).startswith(f"{run.path} already holds a run") and "--resume" not in str(refused.value)
    assert "--overwrite" in str(refused.value) and "another --out" in str(refused.value)
    with pytest.raises(CheckpointError) as refused:
        RunFolder.of_resume(run.path).load_resume()
    assert "no resume.safetensors there" in str(refused.value) and "--overwrite" in str(refused.value)
    assert "another --out" in str(refused.value)
    (run.path / "resume.safetensors").write_bytes(b"state")
    assert run.state == RESUMABLE
    with pytest.raises(ConfigError, match=f"{run.path} already holds a run; use --resume {run.path} to continue it "
                                          f"or --overwrite to replace it"):
        run.check_new_run(overwrite=False)
    run.metrics.write_text("{}")
    assert run.state == FINISHED
    (run.path / "model.safetensors").write_bytes(b"")  # a transformers folder's weights: not a run folder
    assert not run.is_run_folder


def test_config_json_is_read_once_and_named_when_broken(tmp_path):
    run = RunFolder(tmp_path)
    run.config_file.write_text(json.dumps({"train": {"data": "a"}, "data": {"split": {"val_hash": "abc"}}}))
    assert run.data == "a"
    run.config_file.write_text("{ not json")  # read already: the object answers from what it read
    assert run.split_rule == {"val_hash": "abc"} and RunFolder(tmp_path).is_run_folder
    with pytest.raises(ConfigError, match=f"{run.config_file}: not valid JSON"):
        RunFolder(tmp_path).config


def test_a_checkpoint_names_its_run(tmp_path):
    import minivit

    run = RunFolder(tmp_path / "run")
    run.write_config({"train": {}})
    with pytest.raises(minivit.CheckpointError, match="run folder without best.safetensors"):
        RunFolder.of_checkpoint(run.path)
    save_checkpoint(minivit.create_model("Ti/16", image_size=16, patch_size=8, dim=16, depth=1, heads=2, mlp_dim=32),
                    run.best)
    for named in (run.path, run.best):  # the folder means its best weights; a file in it belongs to it
        weights, folder = RunFolder.of_checkpoint(named)
        assert weights == str(run.best) and folder.path == run.path
    assert RunFolder.of_checkpoint(tmp_path / "elsewhere.npz") == (str(tmp_path / "elsewhere.npz"), None)
