"""Ctrl-C and SIGTERM keep the work (minivit/train/interrupt.py): the run finishes the step it is in, writes
its resume point, says how to continue and exits 130 / 143; --resume continues bit-exactly; a second
Ctrl-C stops at once, writing nothing; --save-every-minutes saves on a timer; under DDP every rank stops
after the same step; Ctrl-C while the data is decoded or the report written leaves nothing half-written."""

import json
import os
import random
import re
import signal
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from minivit.checkpoints import RunFolder
from minivit.checkpoints.run_folder import load_resume
from minivit.common.errors import Interrupted
from minivit.train import TrainConfig, train
from minivit.train.data import SAMPLE_LOG_ENV
from processes import finish, run_python, start_python

# A synthetic run slow enough to be signalled in flight: 16 steps an epoch, 3 epochs, tens of ms a step; drop
# path, mixing and an EMA, so that the RNG, the EMA and the optimiser must all come back exactly.
RUN = ["--synthetic-samples", "1024", "--img-size", "32", "--patch-size", "4", "--dim", "64", "--depth", "2",
       "--heads", "2", "--mlp-dim", "128", "--batch-size", "64", "--epochs", "3", "--drop-path", "0.1",
       "--cutmix", "1", "--mix-prob", "0.5", "--ema", "0.9", "--device", "cpu", "--no-progress"]
STEPS_PER_EPOCH, STEPS = 16, 48
TINY = dict(data="synthetic", synthetic_samples=224, image_size=16, epochs=2, batch_size=32, progress=False,
            log=False, model_overrides=dict(patch_size=4, dim=32, depth=2, heads=2, mlp_dim=64), ema=0.9)


def read_all(path) -> dict:
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def assert_same_tensors(a_path, b_path) -> None:
    a, b = read_all(a_path), read_all(b_path)
    assert a.keys() == b.keys()
    assert any(k.startswith("model.") for k in a) and any(k.startswith("ema.") for k in a)
    assert any(k.startswith("optim.") for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def wait_for_lines(path: Path, n: int, proc, timeout: float = 120) -> None:
    """Until the sample log ``path`` holds ``n`` lines (micro-batches taken), failing if the process ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file() and path.read_text().count("\n") >= n:
            return
        if proc.poll() is not None:
            pytest.fail(f"the run ended before it took {n} batches: {proc.stderr.read()[-2000:]}")
        time.sleep(0.003)
    pytest.fail(f"the run took fewer than {n} batches in {timeout}s")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    """The run RUN trains when nothing stops it, in a child as the interrupted ones (the same threads): its
    folder, which both signals' resumed runs must match bit for bit."""
    full = tmp_path_factory.mktemp("uninterrupted") / "full"
    # bars asked for, and --no-progress wins
    r = run_python(["-m", "minivit.train", *RUN, "--out", full], env={"MINIVIT_PROGRESS": "always"})
    assert r.returncode == 0, r.stderr[-3000:]
    # the whole-run estimate (a line, not a bar: --no-progress keeps it), then each epoch says what is left
    assert re.search(r"^speed: .* img/s; estimated: an epoch .* with its validation, the whole run \(3 epochs and "
                     r"the final report\) .*, done around \d\d:\d\d$", r.stdout, re.M), r.stdout
    assert re.search(r"^epoch   1  .*, run .* left\)$", r.stdout, re.M) and "\r" not in r.stdout + r.stderr
    return full


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_saves_the_step_and_resume_continues_bit_exactly(tmp_path, signum, uninterrupted):
    full, part, log = uninterrupted, tmp_path / "part", tmp_path / "log"
    taken = random.randrange(3, STEPS - 8)  # a random step of the 48: the signal comes after this many batches
    proc = start_python(["-m", "minivit.train", *RUN, "--out", part], env={SAMPLE_LOG_ENV: str(log)})
    wait_for_lines(log / "rank0.txt", taken, proc)
    proc.send_signal(signum)
    r = finish(proc)
    name = signal.Signals(signum).name
    assert r.returncode == 128 + signum, (taken, r.stderr[-3000:])
    assert "Traceback" not in r.stderr and f"{name}: finishing this step" in r.stderr, r.stderr[-3000:]
    _, _, state = load_resume(part / "resume.safetensors")
    step = state["step"]
    trained = (log / "rank0.txt").read_text().count("\n")
    assert step == trained >= taken, (taken, step, trained)  # the step in flight finished and saved, none after
    epoch = (step - 1) // STEPS_PER_EPOCH + 1
    assert r.stdout.splitlines()[-1] == (f"interrupted at epoch {epoch}, step {step - (epoch - 1) * STEPS_PER_EPOCH}: "
                                         f"saved; continue with  python -m minivit.train --resume {part}")
    r = run_python(["-m", "minivit.train", "--resume", part, "--no-progress"])  # the printed command
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"({step} steps done in all)" in r.stdout
    assert_same_tensors(full / "resume.safetensors", part / "resume.safetensors")
    history = [json.loads((run / "history.json").read_text()) for run in (full, part)]
    assert [(h["train_loss"], h["val_acc"]) for h in history[0]] == [(h["train_loss"], h["val_acc"]) for h in history[1]]


def test_a_stop_at_the_last_step_of_an_epoch_resumes_with_that_epochs_validation(tmp_path, monkeypatch):
    """The signal lands in an epoch's last step: saved there, the resumed run first validates that epoch."""
    import minivit.train.loop as loop

    real_step = loop.train_step

    def step(run, batches, sums):
        if run.step == 6:  # the 7th and last step of epoch 1 is in flight
            os.kill(os.getpid(), signal.SIGINT)
        real_step(run, batches, sums)

    full = train(TrainConfig(**TINY, out=str(tmp_path / "full")))
    monkeypatch.setattr(loop, "train_step", step)
    part = train(TrainConfig(**TINY, out=str(tmp_path / "part")))
    assert (part["stopped"], part["step"], part["epoch"], part["epoch_step"]) == ("SIGINT", 7, 1, 7)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the process's own handler is back
    monkeypatch.setattr(loop, "train_step", real_step)
    resumed = train(TrainConfig(**TINY, out=str(tmp_path / "part"), resume=str(tmp_path / "part")))
    assert resumed["step"] == full["step"] == 14 and resumed["epochs_done"] == 2
    assert_same_tensors(tmp_path / "full" / "resume.safetensors", tmp_path / "part" / "resume.safetensors")


def test_a_second_ctrl_c_stops_at_once_without_saving(tmp_path, monkeypatch):
    import minivit.train.loop as loop

    real_step = loop.train_step

    def step(run, batches, sums):
        if run.step == 5:  # in the 6th step: Ctrl-C, then Ctrl-C again before the step is done
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
        real_step(run, batches, sums)

    monkeypatch.setattr(loop, "train_step", step)
    out = tmp_path / "run"
    with pytest.raises(Interrupted) as stopped:
        train(TrainConfig(**TINY, out=str(out), ckpt_every=2))
    assert stopped.value.exit_code == 130 and "stopped at once, without saving" in str(stopped.value)
    assert load_resume(out / "resume.safetensors")[2]["step"] == 4  # the last --ckpt-every save, not step 6
    assert not list(out.glob(".*.tmp"))  # nothing half-written
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_save_every_minutes_saves_on_a_timer_and_changes_no_number(tmp_path, monkeypatch):
    saved = []
    save = RunFolder.save_resume

    def recorded(self, model, optimizer, scaler, ema, state):
        saved.append(state["step"])
        save(self, model, optimizer, scaler, ema, state)

    monkeypatch.setattr(RunFolder, "save_resume", recorded)
    train(TrainConfig(**TINY, out=str(tmp_path / "timer"), save_every_minutes=1e-9))  # due after every step
    assert saved == list(range(1, 15))  # every step; the epochs' last ones by end_of_epoch
    saved.clear()
    train(TrainConfig(**TINY, out=str(tmp_path / "off"), save_every_minutes=0))
    assert saved == [7, 14]  # off: the end of each epoch only
    assert_same_tensors(tmp_path / "timer" / "resume.safetensors", tmp_path / "off" / "resume.safetensors")


def test_a_sigkill_loses_at_most_the_time_since_the_timed_save(tmp_path):
    part, log = tmp_path / "part", tmp_path / "log"
    proc = start_python(["-m", "minivit.train", *RUN, "--out", part, "--save-every-minutes", "0.001"],
                        env={SAMPLE_LOG_ENV: str(log)})  # a resume point every 60 ms of training
    wait_for_lines(log / "rank0.txt", 12, proc)  # in epoch 1, which never ends here
    time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    finish(proc)
    step = load_resume(part / "resume.safetensors")[2]["step"]
    assert 1 <= step < STEPS_PER_EPOCH  # mid-epoch 1: written by the timer (nothing else saves there)
    r = run_python(["-m", "minivit.train", "--resume", part, "--no-progress", "--epochs", "1"])
    assert r.returncode == 0 and f"({step} steps done in all)" in r.stdout, r.stderr[-2000:]


def test_a_run_that_saved_nothing_is_not_a_dead_end(tmp_path, capsys):
    from minivit.commands.train import main

    out = tmp_path / "run"
    assert main(["--synthetic-samples", "64", "--img-size", "16", "--dim", "32", "--depth", "1", "--heads", "2",
                 "--mlp-dim", "64", "--batch-size", "16", "--stop-after", "1", "--out", str(out), "--no-progress"]) == 0
    assert RunFolder(out).state == "started"
    capsys.readouterr()
    from minivit.common.cli import run

    for argv in (["--out", str(out)], ["--resume", str(out)]):  # the command again, or --resume: both ways out named
        assert run(main, argv) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "--overwrite" in err and "another --out" in err, err
        assert "use --resume" not in err


def worker_of_rank(torchrun_pid: int, rank: int, timeout: float = 60) -> int:
    """The pid of torchrun's worker process of ``rank`` (its child whose environment says RANK=rank)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for task in Path(f"/proc/{torchrun_pid}/task").iterdir():
            for pid in (task / "children").read_text().split():
                try:
                    env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                except OSError:
                    continue
                if f"RANK={rank}".encode() in env:
                    return int(pid)
        time.sleep(0.05)
    pytest.fail(f"no worker of rank {rank} under torchrun {torchrun_pid}")


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds torchrun's workers in /proc (Linux)")
def test_under_ddp_every_rank_stops_after_the_same_step_and_rank_0_saves_once(tmp_path):
    """Ctrl-C reaches one worker only (here rank 1): both stop after the same step, rank 0 writes the resume
    point, and --resume under torchrun ends with the tensors of an uninterrupted run."""
    torchrun = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "examples/finetune_fer.py"]
    ddp_run = [*RUN, "--drop-path", "0"]  # rank 1's dropout stream is reseeded on resume: none, for exactness
    full, part, log = tmp_path / "full", tmp_path / "part", tmp_path / "log"
    r = run_python([*torchrun, *ddp_run, "--out", full], timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    proc = start_python([*torchrun, *ddp_run, "--out", part], env={SAMPLE_LOG_ENV: str(log)})
    wait_for_lines(log / "rank1.txt", random.randrange(3, 14), proc)  # 8 steps an epoch on each of 2 ranks
    os.kill(worker_of_rank(proc.pid, 1), signal.SIGINT)
    r = finish(proc, timeout=240)
    assert r.returncode != 0, r.stdout[-2000:]  # torchrun reports its workers' 130
    taken = [(log / f"rank{rank}.txt").read_text().count("\n") for rank in (0, 1)]
    step = load_resume(part / "resume.safetensors")[2]["step"]
    assert taken[0] == taken[1] == step, (taken, step)  # the same step on both ranks, saved
    stops = [line for line in r.stdout.splitlines() if line.startswith("interrupted at")]
    assert len(stops) == 1 and stops[0].endswith(f"--resume {part} (under torchrun, as before)"), r.stdout[-2000:]
    r = run_python([*torchrun, "--resume", part, "--no-progress"], timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    assert_same_tensors(full / "resume.safetensors", part / "resume.safetensors")


@pytest.mark.parametrize("signum, last_line", [(signal.SIGINT, "interrupted"), (signal.SIGTERM, "terminated (SIGTERM)")])
def test_a_signal_while_the_decoded_cache_is_built_leaves_no_half_cache(tmp_path, shared_dir, signum, last_line):
    """Before the loop, a signal ends the command at once, and what it was building is removed: the next
    start builds the cache again from nothing, and no run folder was made yet."""
    data, cache = shared_dir / "data" / "fer2013", tmp_path / "cache"
    if not data.is_dir():
        pytest.skip(f"{data} is absent")
    proc = start_python(["-m", "minivit.train", "--data", data, "--out", tmp_path / "run", "--cache-dir", cache])
    deadline = time.monotonic() + 240
    while not list(cache.glob(".building-*")):  # the build's temporary folder: decoding has begun
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()[-2000:]
        time.sleep(0.005)
    proc.send_signal(signum)
    r = finish(proc, timeout=120)
    assert r.returncode == 128 + signum and r.stderr.splitlines()[-1] == last_line, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and "\r" not in r.stderr  # no bars in a redirected log, no spew
    assert not list(cache.glob(".building-*")) and not [p for p in cache.iterdir() if p.name not in ("locks", "index")]
    assert not (tmp_path / "run").exists()


def test_ctrl_c_in_the_final_report_keeps_the_finished_training(tmp_path, monkeypatch):
    import minivit.train.report as report

    score = report.score_best

    def interrupted_score(run, best, split, image_set):
        if split == "test":  # Ctrl-C while the report is being written
            os.kill(os.getpid(), signal.SIGINT)
        return score(run, best, split, image_set)

    monkeypatch.setattr(report, "score_best", interrupted_score)
    out = tmp_path / "run"
    with pytest.raises(Interrupted) as stopped:
        train(TrainConfig(**TINY, out=str(out)))
    assert stopped.value.exit_code == 130 and f"--resume {out} writes the report" in str(stopped.value)
    assert (out / "best.safetensors").is_file() and not (out / "metrics.json").exists()
    assert not list(out.glob(".*.tmp"))
    monkeypatch.setattr(report, "score_best", score)
    result = train(TrainConfig(**TINY, out=str(out), resume=str(out)))  # what the message says to do
    assert result["step"] == 14 and (out / "metrics.json").is_file() and result["val_accuracy"] is not None
