"""The house rules of docs/ARCHITECTURE.md, checked: small modules, no import cycles, stages own their files."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from gliomagen.paths import PROJECT_ROOT

PACKAGE = PROJECT_ROOT / "gliomagen"
MAX_LINES = 400
#: a module longer than MAX_LINES says why in its docstring, in a sentence starting with this
LONG_MODULE_REASON = "Why this module is long:"


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PROJECT_ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every gliomagen module ``name`` imports, at the top or inside a function."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [module] + [f"{module}.{alias.name}" for alias in node.names]
        for target in targets:
            # a package's __init__ re-exporting its own submodules is not a dependency between stages
            own_submodule = is_package and target.startswith(name + ".")
            if target in modules and target != name and not own_submodule:
                found.add(target)
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_no_import_cycles() -> None:
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert _cycles(graph) == []


def test_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_long_modules_say_why() -> None:
    long = []
    for name, path in _modules().items():
        text = path.read_text()
        if text.count("\n") > MAX_LINES and LONG_MODULE_REASON not in (
            ast.get_docstring(ast.parse(text)) or ""
        ):
            long.append(f"{name} ({text.count(chr(10))} lines)")
    assert long == [], f"split these modules or say why at their top ({LONG_MODULE_REASON!r})"


def test_no_side_effects_on_import() -> None:
    """No module switches matplotlib's backend when imported (it turned notebooks' inline figures off)."""
    offenders = []
    for name, path in _modules().items():
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Expr) and re.search(r"matplotlib\.use\(", ast.unparse(node)):
                offenders.append(name)
    assert offenders == []
