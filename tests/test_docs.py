"""Every ```python block in docs/ (its subfolders included) and README.md runs, and every docstring
example passes.

Blocks of one Markdown file run in order in one namespace, so a page can build a model in
one block and use it in the next, as a reader would in a notebook. A block between
``<!-- include path:name -->`` and ``<!-- end include -->`` is the package's own source, shown on
the page (docs/sync_includes.py fills it in): tests/test_sync_includes.py checks it against the source,
and it is not run here.
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
INCLUDED = re.compile(r"^<!-- include \S+ -->\n.*?^<!-- end include -->$", re.S | re.M)


def blocks(page: Path) -> list[str]:
    """The page's python blocks, in order, without the included source."""
    return BLOCK.findall(INCLUDED.sub("", page.read_text()))


PAGES = [p for p in sorted((REPO / "docs").rglob("*.md")) + [REPO / "README.md"] if blocks(p)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_code_blocks_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # pages may write files; keep them out of the checkout
    namespace = {"__name__": f"docs_{page.stem}"}
    for i, block in enumerate(blocks(page), 1):
        try:
            exec(compile(block, f"{page.relative_to(REPO)}[block {i}]", "exec"), namespace)
        except Exception as e:
            raise AssertionError(f"{page.relative_to(REPO)}, python block {i} failed: {e!r}") from e


MODULES = ["minivit"] + sorted(
    name for _, name, _ in pkgutil.walk_packages(minivit.__path__, "minivit.") if not name.endswith("__main__")
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"


LINK = re.compile(r"\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("page", sorted((REPO / "docs").rglob("*.md")) + [REPO / "README.md"],
                         ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(page):
    """Pages move (docs/reference/): every link to a file of the repository, and to a heading in it, still lands."""
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)  # links in code blocks are code
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue  # a URL
        path, _, anchor = target.partition("#")
        file = (page.parent / path) if path else page
        assert file.exists(), f"{page.relative_to(REPO)}: link to {target}, no such file"
        if anchor and file.suffix == ".md":
            headings = re.findall(r"^#+ (.*)$", re.sub(r"^```.*?^```", "", file.read_text(), flags=re.S | re.M),
                                  re.M)
            assert anchor in {slug(h) for h in headings}, f"{page.relative_to(REPO)}: no heading for #{anchor}"
