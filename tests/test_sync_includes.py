"""docs/sync_includes.py: the code that docs/ shows from the package is the package's code, to the character.

A page marks a block with ``<!-- include path:name -->`` (docs/training.md shows the real ``train`` and
``train_step`` that way); these tests fail when such a block differs from the source, and check on
copies that a changed block is found and rewritten, and that a bad marker is an error.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "docs" / "sync_includes.py"


@pytest.fixture(scope="module")
def si():
    spec = importlib.util.spec_from_file_location("sync_includes", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["sync_includes"] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("sync_includes", None)


def test_every_included_block_equals_its_source(si):
    assert si.stale() == [], "a block in docs/ differs from the code it shows: run python docs/sync_includes.py"
    assert si.main(["--check"]) == 0


def test_training_page_shows_the_real_train_step(si):
    text = (REPO / "docs" / "training.md").read_text()
    targets = [m["target"] for m in si.INCLUDE.finditer(text)]
    assert "minivit/train/loop.py:train_step" in targets and "minivit/train/loop.py:train" in targets
    source = (REPO / "minivit" / "train" / "loop.py").read_text()
    assert si.definition_source("minivit/train/loop.py:train_step") in source
    assert si.definition_source("minivit/train/loop.py:train_step").startswith("def train_step(run: Run, batches")


def page(tmp_path: Path, body: str, target: str = "minivit/train/loop.py:train_step") -> Path:
    docs = tmp_path / "docs"
    docs.mkdir(exist_ok=True)
    path = docs / "p.md"
    path.write_text(f"# A page\n\n<!-- include {target} -->\n```python\n{body}```\n<!-- end include -->\n\nText.\n")
    return docs


def test_a_changed_block_is_found_and_rewritten(si, tmp_path):
    real = si.definition_source("minivit/train/loop.py:train_step")
    docs = page(tmp_path, real.replace("run.state[\"step\"] += 1", "run.state[\"step\"] += 2"))
    assert si.stale(docs, REPO) == ["docs/p.md: minivit/train/loop.py:train_step"]
    text = (docs / "p.md").read_text()
    fixed = si.synced(text, "p.md", REPO)
    assert fixed != text and real in fixed and fixed.endswith("<!-- end include -->\n\nText.\n")
    (docs / "p.md").write_text(fixed)
    assert si.stale(docs, REPO) == []
    assert si.synced(fixed, "p.md", REPO) == fixed  # a second pass changes nothing


def test_methods_come_with_their_decorators_and_without_the_class_indent(si):
    source = si.definition_source("minivit/model/vit.py:ViT.from_pretrained")
    assert source.startswith("@classmethod\ndef from_pretrained(cls, source, *,")
    assert "\n    config, state, report = load_state(" in source  # the body, one level in


@pytest.mark.parametrize("target", ["minivit/train/loop.py:no_such_function", "minivit/nowhere.py:train",
                                    "minivit/train/loop.py", "minivit/model/vit.py:ViT.no_such_method"])
def test_a_marker_naming_nothing_is_an_error(si, tmp_path, target):
    docs = page(tmp_path, "pass\n", target)
    with pytest.raises(si.IncludeError, match="include "):
        si.stale(docs, REPO)


def test_a_marker_without_its_block_is_an_error(si, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "p.md").write_text("<!-- include minivit/train/loop.py:train_step -->\nno block here\n")
    with pytest.raises(si.IncludeError, match="not followed by"):
        si.stale(docs, REPO)
