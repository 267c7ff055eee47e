"""The package's shape: chapters in one order, no import circles, no function a reader cannot hold in their head.

The chapters of minivit/ import each other bottom up only:

    common -> model -> checkpoints -> data -> evaluate -> train / inference -> commands -> entries

(the entries are what ``python -m`` runs: the modules directly in minivit/ and the __main__.py of a chapter;
minivit/__init__.py, the public API, sits above them).
One import runs up, and it is named here (UP): ViT.from_pretrained (model/vit.py) calls the checkpoint
layer, which reads files and takes nothing from the model chapter but its config (model/config.py).

Every check reads the source with ``ast`` (nothing is imported), and counts imports made inside
functions too: a lazy import hides a circle from Python but not from a reader. Importing minivit.a.b
runs minivit/a/__init__.py first: that is an edge too (packages_initialised).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "minivit"
MAX_FUNCTION_LINES = 80  # about a screen: a function a reader can hold in their head


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(package: Path = PACKAGE) -> dict[str, Path]:
    return {module_name(p, package): p for p in package.rglob("*.py")}


def imports_of(name: str, path: Path, known: set[str], packages: bool = True) -> set[str]:
    """minivit modules that ``name`` imports anywhere in its source (top level or inside functions); with
    ``packages``, also the packages whose __init__ those imports run (packages_initialised)."""
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
                if packages:
                    out |= packages_initialised(name, t, known)
    return out


def packages_initialised(name: str, target: str, known: set[str]) -> set[str]:
    """The packages whose ``__init__`` importing ``target`` from ``name`` runs: every package above
    ``target`` that ``name`` is not inside. Importing minivit.a.b first runs minivit/a/__init__.py,
    an edge as real as the import itself; a module inside minivit.a importing its sibling adds none
    (the package is already initialising), and every module is inside minivit, the root."""
    parts = target.split(".")
    above = (".".join(parts[:i]) for i in range(1, len(parts)))
    return {p for p in above if p in known and p != name and not name.startswith(p + ".")}


def import_graph(package: Path = PACKAGE, packages: bool = True) -> dict[str, set[str]]:
    mods = modules(package)
    known = set(mods)
    return {name: imports_of(name, path, known, packages) for name, path in mods.items()}


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


# The one import that runs up a chapter: ViT.from_pretrained reads its checkpoint through the checkpoint layer.
UP = ("minivit.model.vit", "minivit.checkpoints")


def without_up(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    return {name: targets - {UP[1]} if name == UP[0] else targets for name, targets in graph.items()}


def test_no_import_circles_in_the_package():
    # Every edge counts, a package's __init__ re-exporting its submodules included: importing
    # minivit.model.config runs model/__init__.py, which imports vit.py, and so on.
    graph = import_graph()
    found = cycles(without_up(graph))
    assert found == [], "import circles: " + "; ".join(" <-> ".join(c) for c in found)
    # The walk sees what it must: from_pretrained's import sits inside a function, and with it the
    # circle model -> model.vit -> checkpoints -> checkpoints.loading -> model (its __init__) is there.
    assert UP[1] in graph[UP[0]]
    assert any({"minivit.model", "minivit.model.vit", "minivit.checkpoints.loading"} <= set(c) for c in cycles(graph))


def test_checkpoints_take_nothing_from_the_model_but_its_config():
    taken = {target for name, targets in import_graph(packages=False).items() if name.startswith("minivit.checkpoints")
             for target in targets if target.startswith("minivit.model")}
    assert taken == {"minivit.model.config"}


# The chapters, bottom up (see the module docstring). A module may import its own chapter and those
# below it; train and inference share a layer and never import each other.
LAYERS = [
    ("common",),
    ("model",),
    ("checkpoints",),
    ("data",),
    ("evaluate",),
    ("train", "inference"),
    ("commands",),  # minivit/commands/: each command's parser and main
    ("entries",),  # python -m minivit.<command>: minivit/<command>.py, the chapters' __main__.py, minivit/__main__.py
    ("minivit",),  # __init__.py: the public API
]
RANK = {chapter: i for i, layer in enumerate(LAYERS) for chapter in layer}


def chapter(module: str, package: Path = PACKAGE) -> str:
    """The chapter of a module: its top-level package, "entries" or "minivit"."""
    parts = module.split(".")[1:]
    if not parts:
        return "minivit"
    if parts[-1] == "__main__" or (len(parts) == 1 and not (package / parts[0]).is_dir()):
        return "entries"
    return parts[0]


def chapter_violations(graph: dict[str, set[str]], package: Path = PACKAGE) -> list[str]:
    """Imports that go up the layers, or sideways between two chapters of one layer (but UP)."""
    out = []
    for module, targets in sorted(without_up(graph).items()):
        for target in sorted(targets):
            a, b = chapter(module, package), chapter(target, package)
            if a != b and not RANK[b] < RANK[a]:
                out.append(f"{module} ({a}) imports {target} ({b})")
    return out


def test_every_module_belongs_to_a_chapter():
    assert {chapter(m) for m in modules()} <= set(RANK)
    assert {chapter(m) for m in modules()} == set(RANK), "a chapter of LAYERS has no module: update LAYERS"


def test_chapters_import_bottom_up_only():
    found = chapter_violations(import_graph())
    assert found == [], "imports against the chapter order: " + "; ".join(found)


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
    lengths = function_lengths()
    defs = sum(len(re.findall(r"^\s*(?:async )?def ", p.read_text(), re.M)) for p in modules().values())
    assert len(lengths) == defs  # every function measured
    too_long = [f"{where} ({n} lines)" for n, where in lengths if n > MAX_FUNCTION_LINES]
    assert too_long == [], f"functions over {MAX_FUNCTION_LINES} lines (without docstring): " + ", ".join(too_long)


