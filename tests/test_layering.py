"""The package's shape: no import circles, no function a reader cannot hold in their head.

Both checks read the source with ``ast`` (nothing is imported), and count imports made inside
functions too: a lazy import hides a circle from Python but not from a reader.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "minivit"
MAX_FUNCTION_LINES = 80  # issue 10: "every function in minivit/ under ~80 lines"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """minivit modules that ``name`` imports anywhere in its source (top level or inside functions)."""
    is_package = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            # "from pkg import sub" imports the submodule when there is one, else a name of pkg
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:  # "minivit.x.y" where y is a name: the module is minivit.x
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports_of(name, path, known) for name, path in mods.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_a_planted_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_import_resolution_sees_lazy_and_relative_imports(tmp_path):
    (tmp_path / "pkg").mkdir()
    src = "def f():\n    from ..other import thing\n    from . import sibling\n"
    p = tmp_path / "pkg" / "mod.py"
    p.write_text(src)
    known = {"minivit", "minivit.other", "minivit.pkg", "minivit.pkg.sibling", "minivit.pkg.mod"}
    assert imports_of("minivit.pkg.mod", p, known) == {"minivit.other", "minivit.pkg.sibling"}


def test_no_import_circles_in_the_package():
    # Every edge counts, a package's __init__ re-exporting its submodules included: importing
    # minivit.checkpoints runs checkpoints/__init__.py, which imports loader.py, and so on.
    found = cycles(import_graph())
    assert found == [], "import circles: " + "; ".join(" <-> ".join(c) for c in found)


def function_lengths() -> list[tuple[int, str]]:
    """(lines, 'module:function') for every function, not counting its docstring."""
    out = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                body = node.body
                if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None),
                                                                          ast.Constant) \
                        and isinstance(body[0].value.value, str):
                    lines -= body[0].end_lineno - body[0].lineno + 1
                out.append((lines, f"{name}:{node.name}"))
    return sorted(out, reverse=True)


def test_no_function_longer_than_a_screen():
    too_long = [f"{where} ({n} lines)" for n, where in function_lengths() if n > MAX_FUNCTION_LINES]
    assert too_long == [], f"functions over {MAX_FUNCTION_LINES} lines (without docstring): " + ", ".join(too_long)


def test_function_length_counts_the_body():
    lengths = dict((where, n) for n, where in function_lengths())
    # a known small function: pick_device is a few lines, far from 0 and from the limit
    assert 5 < lengths["minivit.device:pick_device"] < 30
