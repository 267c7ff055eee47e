"""Running minivit's scripts and torchrun in a child process from a test, the one way every test does it."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def start_python(args, env=None) -> subprocess.Popen:
    """``python *args`` started from the repository root, with one OpenMP thread, in its own session (a signal
    a test sends it reaches it alone; ``finish`` can kill it and every process it started); stdout and
    stderr are pipes, as in a redirected log."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               **(env or {}))
    return subprocess.Popen([sys.executable, *(str(a) for a in args)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def finish(proc: subprocess.Popen, timeout: float = 90) -> subprocess.CompletedProcess:
    """Wait for a process start_python started; a hang kills it and every process it started (torchrun's
    workers), and fails the test with the end of its stderr."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{' '.join(proc.args[1:7])} timed out after {timeout}s: {err[-3000:]}")
    return subprocess.CompletedProcess(proc.args[1:], proc.returncode, out, err)


def run_python(args, env=None, timeout: float = 90) -> subprocess.CompletedProcess:
    """``python *args`` (start_python), waited for (finish)."""
    return finish(start_python(args, env), timeout)
