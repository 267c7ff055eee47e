"""Every notebook in notebooks/ runs top to bottom in a Jupyter kernel, as a student runs it, and fails on
any error (a cell that raises, an assert_close that does not hold).

Each notebook has one parameters cell that reads MINIVIT_NOTEBOOK_QUICK=1: the short form, a few hundred
images instead of thousands, so the three cost about a minute here; the full form is what a student runs.
The faces are FER2013 from ../shared beside the checkout when it is there, else minivit's synthetic faces
(the notebooks' own fallback), so the notebooks run on any clean clone. Notebook 03 runs twice: on a
checkpoint this test makes (the path a shipped model takes) and on a name that cannot be loaded (its
stand-in, trained in the notebook).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import SHARED

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
FER2013 = SHARED / "data" / "fer2013"


@pytest.fixture(scope="module")
def kernel_dir(tmp_path_factory):
    """A "python3" kernel spec that runs this interpreter, first on JUPYTER_PATH: the notebooks run with
    the minivit under test, whatever kernels the machine has installed."""
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (minivit tests)", "language": "python"}))
    return root


def run_notebook(name: str, tmp_path: Path, monkeypatch, kernel_dir: Path, **env) -> dict:
    """Execute notebooks/<name> in its quick form; returns the executed notebook."""
    monkeypatch.setenv("JUPYTER_PATH", str(kernel_dir))
    monkeypatch.setenv("MINIVIT_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("MINIVIT_NOTEBOOK_OUT", str(tmp_path / "runs"))
    monkeypatch.setenv("MINIVIT_NOTEBOOK_DATA", str(FER2013) if FER2013.is_dir() else "synthetic")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()  # raises CellExecutionError, naming the cell, on any error
    return nb


def printed(nb) -> str:
    return "".join(out.get("text", "") for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs)


def test_the_course_is_three_notebooks_with_their_outputs_stripped():
    names = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
    assert names == ["01_build_a_vit.ipynb", "02_train_on_a_laptop.ipynb", "03_look_inside.ipynb"]
    for name in names:
        nb = nbformat.read(NOTEBOOKS / name, as_version=4)
        nbformat.validate(nb)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in code), f"{name}: strip its outputs"
        params = [c for c in code if "MINIVIT_NOTEBOOK_QUICK" in c.source]
        assert len(params) <= 1, f"{name}: one parameters cell"


def test_01_build_a_vit(tmp_path, monkeypatch, kernel_dir):
    out = printed(run_notebook("01_build_a_vit.ipynb", tmp_path, monkeypatch, kernel_dir))
    assert "the same as minivit's" in out and "shuffling the patches changes nothing" in out


def test_02_train_on_a_laptop(tmp_path, monkeypatch, kernel_dir):
    out = printed(run_notebook("02_train_on_a_laptop.ipynb", tmp_path, monkeypatch, kernel_dir))
    assert (tmp_path / "runs" / "laptop" / "best.safetensors").is_file()
    assert "this run: 2 steps" in out  # the quick form: 256 images, the cpu profile's batch of 128, 1 epoch


def test_03_look_inside_the_shipped_model(tmp_path, monkeypatch, kernel_dir):
    """By default the notebook looks inside the model shipped in weights/: loaded offline, nothing trained."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = printed(run_notebook("03_look_inside.ipynb", tmp_path, monkeypatch, kernel_dir))
    assert "Training a stand-in" not in out and "minivit-fer: conv stem, 6x6 grid" in out
    assert not (tmp_path / "runs").exists()  # no stand-in trained


def test_03_look_inside_trains_a_stand_in_when_the_name_cannot_be_loaded(tmp_path, monkeypatch, kernel_dir):
    out = printed(run_notebook("03_look_inside.ipynb", tmp_path, monkeypatch, kernel_dir,
                               MINIVIT_NOTEBOOK_CHECKPOINT="no-such-model"))
    assert "Training a stand-in" in out
    assert (tmp_path / "runs" / "stand-in" / "best.safetensors").is_file()
