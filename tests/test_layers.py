"""The package's import structure, read statically from the source (issue "One runtime", section 6).

- No import circles between simharmon modules (module-level imports).
- Layers point down: io/config -> ops -> models -> runtime -> front doors -> cli.
- No imports inside functions, except optional dependencies and the documented exceptions below.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "simharmon"

# Optional dependencies (extras in pyproject.toml), imported where they are used.
OPTIONAL = {"cupy", "torch_tensorrt", "transformers"}
# (module, imported module) pairs allowed inside a function, with why.
FUNCTION_IMPORTS_ALLOWED = {
    # KeyboardInterrupt during the CLI's own import must end quietly (issue 12).
    ("simharmon.__main__", "simharmon.cli"),
    # diffusers costs about twice the rest of the CLI's start-up; only `harmonize` and the inverse
    # curation recipe need it, so `serve` and the other commands never load it.
    ("simharmon.cli", "simharmon.harmonize.inverse"),
    ("simharmon.harmonize.cli", "simharmon.harmonize.methods"),
    ("simharmon.harmonize.cli", "simharmon.harmonize.run"),
    # modules that need an optional extra (ray[serve], grpcio): the CLI stays importable without
    # them and says which extra to install
    ("simharmon.fleet.cli", "simharmon.fleet.service"),
    ("simharmon.sensorsim.cli", "simharmon.sensorsim.proxy"),
}
# package -> packages it must never import (directly): the layers above it.
FRONT_DOORS = {"bridge", "hooks", "replay", "harmonize", "cli", "fleet", "serve", "sensorsim"}
FORBIDDEN = {
    "io": {"ops", "models", "runtime", "train", "eval", "data"} | FRONT_DOORS,
    "ops": {"models", "runtime", "train", "eval", "data"} | FRONT_DOORS,
    "models": {"runtime", "train"} | FRONT_DOORS,
    "runtime": {"train"} | FRONT_DOORS,
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: Dict[str, Path] = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def resolve(module: str, path: Path, node: ast.ImportFrom) -> List[str]:
    """The simharmon modules a ``from ... import ...`` statement loads."""
    if node.level:
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{node.module}" if node.module else package
    else:
        base = node.module or ""
    if not base.startswith("simharmon"):
        return [base]
    names = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in MODULES]
    return names or [base]


def imports(module: str, path: Path) -> Iterator[Tuple[str, bool, int]]:
    """(imported module, inside a function, line) for every import statement of ``module`` that runs."""
    tree = ast.parse(path.read_text(), str(path))

    def visit(node: ast.AST, in_function: bool) -> Iterator[Tuple[str, bool, int]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield alias.name, in_function, child.lineno
            elif isinstance(child, ast.ImportFrom):
                for name in resolve(module, path, child):
                    yield name, in_function, child.lineno
            elif isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue  # annotations only: never imported at run time
            else:
                yield from visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))

    yield from visit(tree, False)


def graph() -> Dict[str, Set[str]]:
    edges: Dict[str, Set[str]] = {}
    for module, path in MODULES.items():
        edges[module] = {name for name, inside, _ in imports(module, path)
                         if not inside and name in MODULES and name != module}
    return edges


def cycles(edges: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                connect(w)
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
                found.append(sorted(component))

    for v in edges:
        if v not in index:
            connect(v)
    return found


def test_the_checker_sees_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles():
    # A package's __init__ importing its own submodules is not a circle: only edges between
    # different modules count, and __init__ -> submodule -> __init__ would be one.
    assert cycles(graph()) == []


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layers_point_down(layer):
    wrong = []
    for module, path in MODULES.items():
        if not module.startswith(f"simharmon.{layer}.") and module != f"simharmon.{layer}":
            continue
        for name, _, line in imports(module, path):
            parts = name.split(".")
            if parts[0] == "simharmon" and len(parts) > 1 and parts[1] in FORBIDDEN[layer]:
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert wrong == []


def test_no_imports_inside_functions():
    wrong = []
    for module, path in MODULES.items():
        for name, inside, line in imports(module, path):
            if not inside or name.split(".")[0] in OPTIONAL or (module, name) in FUNCTION_IMPORTS_ALLOWED:
                continue
            wrong.append(f"{path.relative_to(ROOT)}:{line} imports {name} inside a function")
    assert wrong == []
