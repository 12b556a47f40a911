"""The `curate` package's import graph, read statically: no import cycles beyond a named
allow-list, and no module imports from a higher layer (`LAYERS`: the foundation, then
models/scoring/sources/..., the stage runner and stages, inspect/report, recipes/commands).

Every import statement counts, at module level or inside a function (and under
`TYPE_CHECKING`): a function-level import breaks a cycle at load time only, the modules
still depend on each other. Relative imports are resolved, and `from curate.x import y`
counts as an import of the submodule `curate.x.y` when there is one. Importing
`curate.x.y` also runs `curate/x/__init__.py`; that implicit edge is not counted.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "curate"

# Add nothing here: move the shared piece into a lower module instead.
ALLOWED_CYCLES: set[frozenset[str]] = set()
LOWER_LAYERS = ("curate.models", "curate.scoring", "curate.sources", "curate.index")
HIGHER_LAYERS = ("curate.stages", "curate.commands", "curate.cli")
# lower-layer imports of higher layers that stay, with the reason (none today)
ALLOWED_UPWARD: dict[tuple[str, str], str] = {}
# The layers, lowest first (docs/architecture.md); a module imports only from its own layer
# and the ones below. Modules not named (dataset, schema, manifest, engine, text, ...) are
# the foundation, layer 0.
LAYERS = (
    ("curate.models", "curate.scoring", "curate.sources", "curate.index", "curate.export",
     "curate.generation", "curate.train"),
    ("curate.pipeline", "curate.stages"),
    ("curate.inspect", "curate.report"),
    ("curate.recipes", "curate.commands", "curate.cli", "curate.__main__"),
)


def layer(module: str) -> int:
    for i, prefixes in enumerate(LAYERS, start=1):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return i
    return 0


def modules(root: Path = PACKAGE) -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package's __init__)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return out


def imported_names(tree: ast.AST, module: str, is_package: bool) -> Iterator[str]:
    """Every module name an import statement in `tree` may refer to, relative ones resolved
    (`from a import b` yields `a` and `a.b`: b may be a submodule)."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            yield source
            yield from (f"{source}.{alias.name}" for alias in node.names)


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the package's modules it imports."""
    mods = modules(root)
    graph: dict[str, set[str]] = {}
    for name, (path, is_package) in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        graph[name] = {t for t in imported_names(tree, name, is_package)
                       if t in mods and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> set[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: set[frozenset[str]] = set()
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.add(frozenset(component))
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph()


def test_the_graph_sees_every_kind_of_import(tmp_path: Path) -> None:
    pkg = tmp_path / "curate"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "low.py").write_text("X = 1\n")
    (pkg / "sub" / "a.py").write_text("from . import b\nfrom ..low import X\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from curate.sub import c\n")
    (pkg / "sub" / "c.py").write_text("import curate.sub.a\n")
    g = import_graph(pkg)
    assert g["curate.sub.a"] == {"curate.sub", "curate.sub.b", "curate.low"}
    assert g["curate.sub.b"] == {"curate.sub", "curate.sub.c"}  # a function-level import
    assert g["curate.sub.c"] == {"curate.sub.a"}
    assert cycles(g) == {frozenset({"curate.sub.a", "curate.sub.b", "curate.sub.c"})}


def test_the_graph_reads_the_package(graph: dict[str, set[str]]) -> None:
    assert "curate.text" in graph["curate.stages.decontam"]
    assert "curate.text" in graph["curate.inspect.check_rules"]
    assert "curate.stages.shard_shuffle" in graph["curate.stages.shard"]


def test_no_import_cycles_but_the_named_ones(graph: dict[str, set[str]]) -> None:
    found = cycles(graph)
    new = [sorted(c) for c in found - ALLOWED_CYCLES]
    assert not new, f"new import cycles: {new}"
    gone = [sorted(c) for c in ALLOWED_CYCLES - found]
    assert not gone, f"these cycles are gone: take them off ALLOWED_CYCLES: {gone}"


def test_lower_layers_do_not_import_the_stages(graph: dict[str, set[str]]) -> None:
    upward = {(m, t) for m, targets in graph.items() if m.startswith(LOWER_LAYERS)
              for t in targets if t.startswith(HIGHER_LAYERS)}
    assert sorted(upward - set(ALLOWED_UPWARD)) == []
    assert sorted(set(ALLOWED_UPWARD) - upward) == []  # the allow-list stays exact


def test_no_module_imports_from_a_higher_layer(graph: dict[str, set[str]]) -> None:
    upward = sorted((m, t) for m, targets in graph.items() for t in targets
                    if layer(t) > layer(m))
    assert upward == []
    assert {layer(m) for m in graph} == set(range(len(LAYERS) + 1))  # every layer is used


def test_every_import_of_curate_names_a_module_that_exists() -> None:
    """A module moved without every import following it fails here, not at run time in a
    function-level import (mypy's ignore_missing_imports does not see it)."""
    mods = modules()
    missing = set()
    for name, (path, _) in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                sources = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                sources = [node.module or ""]
            else:
                continue
            missing.update((name, s) for s in sources
                           if s.startswith("curate.") and s not in mods)
    assert sorted(missing) == []
