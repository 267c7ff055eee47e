"""Every ```python block in docs/ and README.md runs, and every docstring example passes.

Blocks of one Markdown file run in order in one namespace, so a page can build a model in
one block and use it in the next, as a reader would in a notebook.
"""

import doctest
import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import minivit

REPO = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
PAGES = [p for p in sorted((REPO / "docs").glob("*.md")) + [REPO / "README.md"] if BLOCK.search(p.read_text())]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_code_blocks_run(page, tmp_path, monkeypatch):
    blocks = BLOCK.findall(page.read_text())
    monkeypatch.chdir(tmp_path)  # pages may write files; keep them out of the checkout
    namespace = {"__name__": f"docs_{page.stem}"}
    for i, block in enumerate(blocks, 1):
        try:
            exec(compile(block, f"{page.name}[block {i}]", "exec"), namespace)
        except Exception as e:
            raise AssertionError(f"{page.name}, python block {i} failed: {e!r}") from e


MODULES = ["minivit"] + sorted(
    name for _, name, _ in pkgutil.walk_packages(minivit.__path__, "minivit.") if not name.endswith("__main__")
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"
