"""The house rules of docs/ARCHITECTURE.md, checked: small modules, no import cycles, stages own their files."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from gliomagen.paths import PROJECT_ROOT

PACKAGE = PROJECT_ROOT / "gliomagen"
MAX_LINES = 400
#: a module longer than MAX_LINES says why in its docstring, in a sentence that names the limit
LONG_MODULE_REASON = "400 lines"


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


def _stage_file_names() -> dict[str, set[str]]:
    """``{file name: owning packages}`` from every stage's ``outputs`` module (declared outputs and markers)."""
    import importlib
    import inspect

    from gliomagen.paths import RunPaths
    from gliomagen.stages import StageOutputs

    owners: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("outputs.py"):
        module_name = ".".join(path.relative_to(PROJECT_ROOT).with_suffix("").parts)
        module = importlib.import_module(module_name)
        package = module_name.rsplit(".", 1)[0]
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, StageOutputs) and cls is not StageOutputs and cls.__module__ == module_name:
                outputs = cls(RunPaths(Path("/run")))
                for file in [*outputs.markers(), *outputs.declared()]:
                    if "*" not in file.name and "." in file.name:
                        owners.setdefault(file.name, set()).add(package)
    return owners


def _string_literals(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    }


def test_only_the_owning_stage_spells_its_file_names() -> None:
    owners = _stage_file_names()
    assert len(owners) >= 10, "every stage declares its outputs"
    offenders = []
    sources = [(name, path) for name, path in _modules().items()]
    sources += [(f"notebooks/{p.name}", p) for p in (PROJECT_ROOT / "notebooks").glob("*.py")]
    for name, path in sources:
        literals = _string_literals(path)
        for file_name, packages in owners.items():
            mine = any(name == pkg or name.startswith(pkg + ".") for pkg in packages)
            whole_name = re.compile(rf"(?<![\w.-]){re.escape(file_name)}")
            if not mine and any(whole_name.search(text) for text in literals):
                offenders.append(f"{name} spells {file_name} (owned by {', '.join(sorted(packages))})")
    assert offenders == []
