"""The package's layers: every internal import points down (or sideways) the layer list, and nothing imports in a circle.

The graph is built from the source with ``ast``: every ``import`` statement,
at module level or inside a function or an ``if TYPE_CHECKING:`` block,
counts, so a deferred import cannot hide a cycle. Internal imports inside
functions are not allowed at all.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("bench", "tickets", "baselines")

# Bottom to top; a module may import modules of its own layer or below. First matching prefix wins.
LAYERS: List[Tuple[str, ...]] = [
    ("bench.core",),
    ("bench.data", "bench.nn", "bench.attacks", "bench.trainers"),
    ("bench.spec",),
    ("bench.train",),
    ("bench.methods", "tickets", "baselines"),
    ("bench.evaluation",),
    ("bench.harness",),
    ("bench.sweep", "bench.zoo", "bench.external", "bench.reporting", "bench.gate"),
    ("bench.commands",),
    ("bench.cli", "bench.__main__", "bench"),
]


def module_name(path: Path) -> str:
    """Dotted module name of a source file (a package's ``__init__`` is the package)."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> int:
    """The layer index of a module (the most specific prefix listed)."""
    best, best_len = -1, -1
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best_len:
                best, best_len = i, len(p)
    if best < 0:
        raise AssertionError(f"module {module} is in no layer: add it to LAYERS in tests/test_layers.py")
    return best


def internal(name: str) -> bool:
    """Whether a dotted name belongs to this project."""
    return name.split(".")[0] in PACKAGES


def import_graph() -> Tuple[Dict[str, Set[str]], List[str]]:
    """Edges module -> imported internal modules, and the internal imports made inside functions."""
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]
    modules = {module_name(p) for p in files}
    edges: Dict[str, Set[str]] = {m: set() for m in modules}
    deferred: List[str] = []
    for path in files:
        src = module_name(path)
        tree = ast.parse(path.read_text(), filename=str(path))
        functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        in_function = {id(n) for f in functions for n in ast.walk(f)}
        for node in ast.walk(tree):
            names: List[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # ``from pkg import sub`` imports the submodule; other names come from the package itself.
                subs = [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules]
                names = subs + ([node.module] if len(subs) < len(node.names) else [])
            for name in names:
                if not internal(name):
                    continue
                target = name
                if target in modules and target != src:
                    edges[src].add(target)
                    if id(node) in in_function:
                        deferred.append(f"{src} imports {target} inside a function (line {node.lineno})")
    return edges, deferred


def cycles(edges: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on: Set[str] = set()
    out: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle() -> None:
    edges, _ = import_graph()
    assert cycles(edges) == []


def test_every_import_points_down_the_layers() -> None:
    edges, _ = import_graph()
    upward = [f"{a} (layer {layer_of(a)}) imports {b} (layer {layer_of(b)})"
              for a, targets in edges.items() for b in targets if layer_of(b) > layer_of(a)]
    assert upward == []


def test_no_internal_import_inside_a_function() -> None:
    _, deferred = import_graph()
    assert deferred == []


def test_the_checker_sees_cycles_and_upward_imports() -> None:
    """The checks can fire: a two-module circle and an upward edge are found."""
    assert cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b"]]
    assert layer_of("bench.cli") > layer_of("bench.spec") > layer_of("bench.attacks.pgd")


@pytest.mark.parametrize("module", ["bench.spec", "bench.attacks", "bench.core.config"])
def test_low_modules_do_not_import_the_harness(module: str) -> None:
    """Reaching a low module never pulls in the harness or the command line (transitively)."""
    edges, _ = import_graph()
    seen, todo = set(), [module]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(edges.get(m, ()))
    assert not {"bench.harness", "bench.cli", "bench.commands"} & seen


def test_the_architecture_doc_draws_the_same_layers() -> None:
    """docs/architecture.md's picture names every layer's folder or module, drawn top (cli) to bottom (core) in the
    order of LAYERS, so the folders, the doc and this test tell one story."""
    picture = (ROOT / "docs" / "architecture.md").read_text().split("```")[1]
    places = []
    for i, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if prefix == "bench":
                continue
            path = prefix.replace(".", "/")
            shown = path + "/" if (ROOT / path).is_dir() else path + ".py"
            assert shown in picture, f"docs/architecture.md does not draw {shown} (layer {i})"
            places.append((i, picture.index(shown)))
    # A lower layer is drawn further down the picture.
    assert all(p > q for i, p in places for j, q in places if i < j), places
