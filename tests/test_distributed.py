"""Several processes (torchrun, gloo on CPU): the process group must be gone before Python shuts down.

A gloo worker thread takes the GIL when it drops a finished collective that still holds a Python
object. If the group outlives ``cleanup_distributed`` its workers live into interpreter shutdown,
and one that asks for the GIL then is ended by pthread_exit, which aborts the process ("terminate
called without an active exception", SIGABRT) after a run that succeeded: a rare failure under
CPU load. Whether the group outlives cleanup_distributed, though, is deterministic, and is what
these tests check, through the training command itself.
"""

import subprocess
from pathlib import Path

import pytest

from processes import run_python

REPO = Path(__file__).resolve().parents[1]

# Runs the training command (minivit.commands.train.main, what examples/finetune_fer.py runs) in a torchrun
# worker, then reports whether the process group it joined still exists once main() has returned.
WORKER = """
import os, sys, weakref
sys.path.insert(0, {repo!r})
import torch.distributed as dist

groups = []
init = dist.init_process_group


def init_and_watch(*args, **kwargs):
    init(*args, **kwargs)
    groups.append(weakref.ref(dist.group.WORLD))


dist.init_process_group = init_and_watch
from minivit.commands.train import main

code = main(sys.argv[1:])
tasks = "/proc/self/task"
threads = sorted(open(f"{{tasks}}/{{t}}/comm").read().strip() for t in os.listdir(tasks)) if os.path.isdir(tasks) else "?"
alive = [g() is not None for g in groups]
report = f"rank {{os.environ['RANK']}}: groups joined {{len(groups)}}, alive after main {{sum(alive)}}, threads {{threads}}\\n"
# one write() of a line under PIPE_BUF bytes: the pipe both ranks share never interleaves it with the
# other rank's (print may write the text and its newline separately: "...]rank 1: ...")
sys.stdout.flush()
os.write(1, report.encode())
sys.exit(code)
"""

TINY = ["--synthetic-samples", "128", "--img-size", "16", "--patch-size", "4", "--dim", "16", "--depth", "1",
        "--heads", "2", "--mlp-dim", "32", "--batch-size", "16", "--epochs", "1", "--device", "cpu", "--no-progress"]


def torchrun(script: Path, args: list, timeout: int = 120) -> subprocess.CompletedProcess:
    """2 CPU processes (a hang kills torchrun and both workers: processes.run_python)."""
    return run_python(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", script, *args],
                      timeout=timeout)


@pytest.mark.parametrize("stop_after", [0, 3], ids=["finished", "stop-after"])
def test_process_group_is_freed_before_interpreter_shutdown(tmp_path, stop_after):
    """After the training command returns, on every rank, the gloo group it joined is freed and its
    threads have stopped: nothing of it is left for interpreter shutdown to tear down. Both exits:
    the finished run (final report) and --stop-after (the simulated crash)."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(repo=str(REPO)))
    r = torchrun(script, [*TINY, "--ckpt-every", "2", "--stop-after", str(stop_after), "--out", str(tmp_path / "run")])
    assert r.returncode == 0, r.stderr[-3000:]
    reports = sorted(line for line in r.stdout.splitlines() if line.startswith("rank "))
    assert len(reports) == 2, r.stdout[-3000:]
    for line in reports:
        assert "groups joined 1, alive after main 0," in line, line
        assert "gloo" not in line.split("threads", 1)[1], line
