"""Kill -9 during a checkpoint write: nothing half-written is ever read.

A child process writes checkpoints in a loop through minivit's atomic writers -- a large
safetensors file (``write_safetensors``, the writer of resume.safetensors) and a model checkpoint
(``save_checkpoint``, as best.safetensors is) -- and is SIGKILLed: twice at a random moment, and
once certainly inside a write (its writer blocks half-way through the temp file). After every kill
each target is a complete version -- the last one the child reported, or the one after it --
never a mix, never truncated; the temp files a killed write leaves behind are never what a reader
opens; and resuming the run removes them.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from minivit import ViT
from minivit.checkpoints import read_extra
from minivit.checkpoints.reading import read_safetensors

REPO = Path(__file__).resolve().parents[1]
BIG = 2_000_000  # floats: an 8 MB file, so that a random kill often lands inside a write

CHILD = r"""
import sys, torch
from pathlib import Path
from minivit import ViT
from minivit.checkpoints import save_checkpoint
from minivit.checkpoints.writing import write_safetensors

run, start, block = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "block"
model = ViT.from_pretrained(run / "best.safetensors")
if block:  # the next write stops half-way through its temp file, until the parent kills us
    import safetensors.torch, time
    real = safetensors.torch.save_file
    def half_then_hang(tensors, path, metadata=None):
        real(tensors, path, metadata=metadata)
        size = Path(path).stat().st_size
        with open(path, "r+b") as f:
            f.truncate(size // 2)
        print("inside", flush=True)
        time.sleep(600)
    safetensors.torch.save_file = half_then_hang
version = start
while True:
    big = torch.full((%d,), float(version))
    write_safetensors({"big": big, "tail": big[:7] + 1}, run / "big.safetensors", {"version": str(version)})
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(version / 1000)
    save_checkpoint(model, run / "best.safetensors", extra={"version": version})
    print(version, flush=True)
    version += 1
""" % BIG


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A real (tiny) finished training run: config.json, best/last/resume.safetensors, the report."""
    from minivit.train import TrainConfig, train

    out = tmp_path_factory.mktemp("crash") / "run"
    cfg = TrainConfig(model="Ti/16", model_overrides=dict(patch_size=8, dim=16, depth=1, heads=2, mlp_dim=32),
                      image_size=16, synthetic_samples=14, batch_size=7, epochs=1, warmup_epochs=0, out=str(out),
                      progress=False, log=False, device="cpu", compile="no")
    train(cfg)
    return out


def check_complete(run: Path, reported: int | None) -> int:
    """Both targets are whole versions, the reported one or the one being written; returns the version."""
    tensors, meta = read_safetensors(run / "big.safetensors")
    version = int(meta["version"])
    assert tensors["big"].shape == (BIG,) and bool((tensors["big"] == version).all()), "mixed or torn big file"
    assert torch.equal(tensors["tail"], torch.full((7,), version + 1.0))
    model = ViT.from_pretrained(run / "best.safetensors")  # the loader verifies every tensor's shape
    best = read_extra(run / "best.safetensors")["version"]
    assert all(bool((p == best / 1000).all()) for p in model.parameters()), "mixed or torn best checkpoint"
    if reported is not None:
        assert version in (reported, reported + 1) and best in (reported, reported + 1), (version, best, reported)
    return version


def run_child(run: Path, start: int, *, block: bool) -> tuple[int | None, bool]:
    """Start the writer, SIGKILL it (at random, or once it is inside a write); (last version reported, killed inside)."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(run), str(start), "block" if block else "loop"],
                             stdout=subprocess.PIPE, text=True, env=env)
    reported, inside = None, False
    try:
        if block:
            inside = child.stdout.readline().strip() == "inside"
        else:
            reported = int(child.stdout.readline())  # one complete write first, then kill at a random moment
            time.sleep(random.Random(start).uniform(0.0, 0.4))
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
        for line in child.stdout.read().split():
            reported = int(line) if line.isdigit() else reported
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL
    return reported, inside


def temp_files(run: Path) -> list[Path]:
    return sorted(run.glob(".*.tmp"))


def test_kill_during_checkpoint_writes_never_leaves_a_torn_file(finished_run, tmp_path, capsys):
    import shutil

    from minivit.checkpoints import RunFolder

    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    config_before = (run / "config.json").read_bytes()
    version = 100
    for round_ in range(2):  # killed at a random moment
        reported, _ = run_child(run, version, block=False)
        version = check_complete(run, reported) + 1
    # killed for certain inside a write: the target keeps the previous complete version
    previous = check_complete(run, None)
    reported, inside = run_child(run, version, block=True)
    assert inside and reported is None
    assert check_complete(run, None) == previous
    leftovers = temp_files(run)
    assert leftovers, "the blocked write should have left its temp file"
    # a stale temp file is never what a reader opens: not a run file, not matched as a checkpoint
    assert not any(p.suffix == ".safetensors" for p in leftovers)
    assert RunFolder.of_checkpoint(run)[0] == str(run / "best.safetensors") and RunFolder(run).state == "finished"
    assert (run / "config.json").read_bytes() == config_before

    # resuming the (finished) run cleans the leftovers up and still reads the complete files
    from minivit.common.cli import run as run_cli
    from minivit.commands.train import main

    assert run_cli(main, ["--resume", str(run), "--no-progress", "--device", "cpu"]) == 0, capsys.readouterr().err
    assert temp_files(run) == []
    assert json.loads((run / "metrics.json").read_text())["num_samples"] > 0


def test_clean_temp_files_removes_only_temp_files(tmp_path):
    from minivit.checkpoints.writing import write_safetensors
    from minivit.checkpoints import RunFolder

    write_safetensors({"w": torch.ones(3)}, tmp_path / "best.safetensors")
    (tmp_path / ".best.safetensors.abc123.tmp").write_bytes(b"half")
    (tmp_path / ".resume.safetensors.x.tmp").write_bytes(b"")
    (tmp_path / "notes.tmp").write_text("not ours: no leading dot")
    assert RunFolder(tmp_path).clean_temp_files() == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.safetensors", "notes.tmp"]
    assert read_safetensors(tmp_path / "best.safetensors")[0]["w"].sum() == 3
