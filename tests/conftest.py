"""Shared test fixtures.

``shared_dir`` points at ``../shared`` beside the checkout (reference fixtures and the
FER2013 images made with the official implementations). Tests that need it skip with a
message where it is absent, so the core suite runs on any clean clone.
"""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MINIVIT_SHARED", REPO.parent / "shared"))


def pytest_configure(config):
    """Under pytest-xdist (README's test command: ``-n 2``), the workers share the machine's cores: each
    computes with its share of them, as the processes the tests start do (OMP_NUM_THREADS=1,
    tests/processes.py). Two workers each running two threads on two cores would wait on each other."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        import torch

        threads = max(1, (os.cpu_count() or 1) // workers)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"reference data folder {SHARED} is absent (set MINIVIT_SHARED to its path)")
    return SHARED


@pytest.fixture(scope="session")
def fixtures_dir(shared_dir) -> Path:
    path = shared_dir / "fixtures"
    if not path.is_dir():
        pytest.skip(f"reference checkpoints {path} are absent")
    return path


@pytest.fixture(scope="session", autouse=True)
def decoded_cache_in_a_temporary_folder(tmp_path_factory):
    """Training runs on image folders build decoded caches (minivit.data.cache): in the tests, in a temporary
    folder (subprocesses inherit it), never in the user's ~/.cache/minivit."""
    before = os.environ.get("MINIVIT_CACHE_DIR")
    os.environ["MINIVIT_CACHE_DIR"] = str(tmp_path_factory.mktemp("minivit-cache"))
    yield
    if before is None:
        os.environ.pop("MINIVIT_CACHE_DIR", None)
    else:
        os.environ["MINIVIT_CACHE_DIR"] = before
