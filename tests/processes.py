"""Running minivit's scripts and torchrun in a child process from a test, the one way every test does it."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_python(args, env=None, timeout: float = 90) -> subprocess.CompletedProcess:
    """``python *args`` from the repository root, with one OpenMP thread, in its own session: a hang kills it
    and every process it started (torchrun's workers), and fails the test with the end of its stderr."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               **(env or {}))
    args = [str(a) for a in args]
    proc = subprocess.Popen([sys.executable, *args], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{' '.join(args[:6])} timed out after {timeout}s: {err[-3000:]}")
    return subprocess.CompletedProcess(args, proc.returncode, out, err)
