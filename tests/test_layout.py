"""The size limits of docs/architecture.md: no module in `src/adversa` over 400 lines, and no
function in `src/adversa/cli/` over 60 lines (a command parses, loads, calls one library
function and prints). Each test names every offender with its length."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "adversa"
MAX_MODULE_LINES = 400
MAX_CLI_FUNCTION_LINES = 60


def _modules(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def _name(path: Path) -> str:
    return str(path.relative_to(SRC.parent))


def long_modules(root: Path = SRC, limit: int = MAX_MODULE_LINES) -> list[str]:
    """`path: N lines` for every module longer than `limit` lines."""
    found = []
    for path in _modules(root):
        n = len(path.read_text(encoding="utf-8").splitlines())
        if n > limit:
            found.append(f"{_name(path)}: {n} lines")
    return found


def long_functions(root: Path = SRC / "cli", limit: int = MAX_CLI_FUNCTION_LINES) -> list[str]:
    """`path:line name: N lines` for every function (decorators and docstring included, nested
    functions counted on their own as well) longer than `limit` lines."""
    found = []
    for path in _modules(root):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                n = (node.end_lineno or node.lineno) - start + 1
                if n > limit:
                    found.append(f"{_name(path)}:{node.lineno} {node.name}: {n} lines")
    return found


def test_no_module_over_400_lines() -> None:
    offenders = long_modules()
    assert not offenders, "modules over 400 lines:\n" + "\n".join(offenders)


def test_no_cli_function_over_60_lines() -> None:
    offenders = long_functions()
    assert not offenders, "cli functions over 60 lines:\n" + "\n".join(offenders)


def test_the_checks_see_the_tree() -> None:
    assert len(_modules(SRC)) > 50 and len(_modules(SRC / "cli")) > 3


if __name__ == "__main__":
    for line in long_modules() + long_functions():
        print(line)
