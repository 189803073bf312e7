"""No import cycle between the packages of `adversa`, imports inside functions included.

A package is a top-level subpackage (`adversa.attacks`) or a top-level module
(`adversa.threat`); `adversa/__init__.py` (the public API) is left out, since it imports
from everything by design. `python tests/test_import_graph.py` prints the graph.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "adversa"


def _package_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "adversa" or len(parts) < 2:
        return None
    return parts[1]


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> Iterator[str]:
    """Every module `path` imports, at any depth of its syntax tree (absolute names)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    here = _module_name(path).split(".")
    if path.name != "__init__.py":
        here = here[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            yield module
            # `from adversa import zoo` imports the subpackage itself
            yield from (f"{module}.{alias.name}" for alias in node.names)


def package_graph() -> dict[str, set[str]]:
    """package -> the other packages it imports."""
    graph: dict[str, set[str]] = {}
    for path in sorted(SRC.rglob("*.py")):
        source = _package_of(_module_name(path))
        if source is None:
            continue
        targets = graph.setdefault(source, set())
        for name in _imports(path):
            target = _package_of(name)
            if target is None or target == source:
                continue
            if (SRC / target).is_dir() or (SRC / f"{target}.py").is_file():
                targets.add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one package (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_cycle_between_packages() -> None:
    graph = package_graph()
    assert "attacks" in graph and "threat" in graph["attacks"]  # the walker sees imports
    found = cycles(graph)
    assert not found, f"import cycles between packages: {found}"


if __name__ == "__main__":
    g = package_graph()
    for pkg in sorted(g):
        print(f"{pkg:<14} -> {', '.join(sorted(g[pkg]))}")
    print("cycles:", cycles(g))
