"""The package's shape: chapters in one order, no import circles, no function a reader cannot hold in their head.

The chapters of minivit/ import each other bottom up only:

    common -> model.config, model.pos_embed -> checkpoints -> model.vit -> data -> evaluate -> train / inference -> commands

(the commands are the modules directly in minivit/; minivit/__init__.py, the public API, sits above them). The
model is counted module by module: checkpoints needs model/config.py and model/pos_embed.py, and
ViT.from_pretrained in model/vit.py needs checkpoints, which works because model/__init__.py imports nothing.

Every check reads the source with ``ast`` (nothing is imported), and counts imports made inside
functions too: a lazy import hides a circle from Python but not from a reader. Importing minivit.a.b
runs minivit/a/__init__.py first: that is an edge too (packages_initialised).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "minivit"
MAX_FUNCTION_LINES = 80  # about a screen: a function a reader can hold in their head


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(package: Path = PACKAGE) -> dict[str, Path]:
    return {module_name(p, package): p for p in package.rglob("*.py")}


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


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    mods = modules(package)
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
    # minivit.checkpoints.runs runs checkpoints/__init__.py, which imports loading.py, and so on.
    found = cycles(import_graph())
    assert found == [], "import circles: " + "; ".join(" <-> ".join(c) for c in found)


def plant(root: Path, files: dict[str, str]) -> Path:
    """A package "minivit" under ``root`` holding ``files`` (path -> source); returns its folder."""
    for name, source in files.items():
        path = root / "minivit" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    return root / "minivit"


def test_importing_a_submodule_counts_its_packages_init(tmp_path):
    """The circle the rule was written for: hub.py imported checkpoints/io.py, which runs
    checkpoints/__init__.py, which imports loader.py, which imports hub lazily. Without the
    __init__ edge no module imports one that imports it back, and no circle is seen."""
    package = plant(tmp_path, {
        "__init__.py": "",
        "hub.py": "from .checkpoints.io import ensure_folder\n",
        "checkpoints/__init__.py": "from .loader import load_state\n",
        "checkpoints/io.py": "def ensure_folder(): pass\n",
        "checkpoints/loader.py": "from . import io\n\ndef load_state():\n    from .. import hub\n",
    })
    graph = import_graph(package)
    assert cycles(graph) == [["minivit.checkpoints", "minivit.checkpoints.loader", "minivit.hub"]]
    assert "minivit.checkpoints" in graph["minivit.hub"]  # the edge the rule adds
    # a sibling import adds none (the package is initialising already): loader -> io only
    assert graph["minivit.checkpoints.loader"] == {"minivit.checkpoints.io", "minivit.hub"}
    without = {name: targets - {"minivit.checkpoints"} for name, targets in graph.items()}
    assert cycles(without) == []


# The chapters, bottom up (see the module docstring). A module may import its own chapter and those
# below it; train and inference share a layer and never import each other.
LAYERS = [
    ("common",),
    ("model", "model.config", "model.pos_embed", "model.speed"),  # model/__init__.py imports nothing
    ("checkpoints",),
    ("model.vit",),
    ("data",),
    ("evaluate",),
    ("train", "inference"),
    ("commands",),  # predict.py, attention.py, serve.py, export.py, convert.py, hub.py
    ("minivit",),  # __init__.py: the public API
]
RANK = {chapter: i for i, layer in enumerate(LAYERS) for chapter in layer}


def chapter(module: str, package: Path = PACKAGE) -> str:
    """The chapter of a module: its top-level package, the model's file, "commands" or "minivit"."""
    parts = module.split(".")[1:]
    if not parts:
        return "minivit"
    if len(parts) == 1 and not (package / parts[0]).is_dir():
        return "commands"
    if parts[0] == "model" and len(parts) > 1:
        return ".".join(parts[:2])
    return parts[0]


def chapter_violations(graph: dict[str, set[str]], package: Path = PACKAGE) -> list[str]:
    """Imports that go up the layers, or sideways between two chapters of one layer."""
    out = []
    for module, targets in sorted(graph.items()):
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


def test_chapter_order_is_checked(tmp_path):
    package = plant(tmp_path, {
        "__init__.py": "",
        "data/__init__.py": "from ..train.loop import train\n",  # up a layer: refused
        "train/__init__.py": "", "train/loop.py": "from ..inference import predictor\ndef train(): pass\n",
        "inference/__init__.py": "", "inference/predictor.py": "from ..data import labels\n",
        "data/labels.py": "",
    })
    graph = import_graph(package)
    assert chapter_violations(graph, package) == [
        "minivit.data (data) imports minivit.train (train)",
        "minivit.data (data) imports minivit.train.loop (train)",
        "minivit.train.loop (train) imports minivit.inference (inference)",  # sideways
        "minivit.train.loop (train) imports minivit.inference.predictor (inference)",
    ]


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
    assert 5 < lengths["minivit.common.device:pick_device"] < 30
