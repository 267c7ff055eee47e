"""Fill the code blocks of docs/ that show a function of minivit from its source, so they cannot go stale.

A page marks the block with the file and the function (or class, or Class.method) it shows:

    <!-- include minivit/train/loop.py:train_step -->
    ```python
    def train_step(...):
        ...
    ```
    <!-- end include -->

    python docs/sync_includes.py           # rewrite every marked block from the source
    python docs/sync_includes.py --check   # exit 1, naming each stale block, if any differs

The source of a definition is found with ``ast`` (decorators included, exactly as written in the file),
so a block shows the code that runs. tests/test_sync_includes.py runs ``--check``'s function: a block that
differs from the source fails the suite. tests/test_docs.py does not run these blocks (they define
functions of the package, with its imports); they are checked here instead.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
# The marker, the fenced block it owns, the end marker. Group "target": "path:name"; group "body": the code.
INCLUDE = re.compile(r"^<!-- include (?P<target>\S+) -->\n```python\n(?P<body>.*?)^```\n<!-- end include -->$",
                     re.S | re.M)
MARKER = re.compile(r"^<!-- include (\S+) -->$", re.M)


class IncludeError(Exception):
    """A marker that names no file or no definition, or a marker without its block."""


def definition_source(target: str, repo: Path = REPO) -> str:
    """The source of ``path:name`` (``name`` a function or class, ``Class.method`` a method), decorators
    included, as it is written in the file, ending with a newline."""
    path, _, name = target.partition(":")
    file = repo / path
    if not name or not file.is_file():
        raise IncludeError(f"include {target}: expected <file>:<name> with an existing file under the repository")
    text = file.read_text()
    scope: list[ast.stmt] = ast.parse(text).body
    node = None
    for part in name.split("."):
        node = next((n for n in scope if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                     and n.name == part), None)
        if node is None:
            raise IncludeError(f"include {target}: {path} defines no {name}")
        scope = node.body
    first = min([node.lineno] + [d.lineno for d in node.decorator_list])
    lines = text.splitlines()[first - 1:node.end_lineno]
    indent = len(lines[0]) - len(lines[0].lstrip())  # a method: shown without its class's indent
    return "\n".join(line[indent:] for line in lines) + "\n"


def pages(docs: Path = DOCS) -> list[Path]:
    return sorted(p for p in docs.rglob("*.md") if MARKER.search(p.read_text()))


def synced(text: str, where: str, repo: Path = REPO) -> str:
    """``text`` with every marked block replaced by its source; IncludeError for a marker without a block."""
    if len(MARKER.findall(text)) != len(INCLUDE.findall(text)):
        raise IncludeError(f"{where}: an include marker is not followed by a ```python block and "
                           "<!-- end include -->")
    return INCLUDE.sub(lambda m: (f"<!-- include {m['target']} -->\n```python\n"
                                  f"{definition_source(m['target'], repo)}```\n<!-- end include -->"), text)


def stale(docs: Path = DOCS, repo: Path = REPO) -> list[str]:
    """'page: target' for every marked block that differs from its source."""
    found = []
    for page in pages(docs):
        text = page.read_text()
        synced(text, str(page.relative_to(docs.parent)), repo)  # IncludeError for a marker without its block
        for m in INCLUDE.finditer(text):
            if m["body"] != definition_source(m["target"], repo):
                found.append(f"{page.relative_to(docs.parent)}: {m['target']}")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python docs/sync_includes.py", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a block is stale")
    args = parser.parse_args(argv)
    try:
        if args.check:
            found = stale()
            for line in found:
                print(f"stale: {line} (run python docs/sync_includes.py)", file=sys.stderr)
            return 1 if found else 0
        for page in pages():
            text = page.read_text()
            new = synced(text, str(page.relative_to(REPO)))
            if new != text:
                page.write_text(new)
                print(f"updated {page.relative_to(REPO)}")
    except IncludeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
