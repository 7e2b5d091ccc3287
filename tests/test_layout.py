"""The package's shape: few top-level modules, a docstring per subpackage, no private name imported across modules.

The import rules themselves (layers, no circles, models without the Hub) are import-linter contracts in
pyproject.toml, run by `make test` (lint-imports)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "python" / "warpload"
SUBPACKAGES = sorted(path.parent for path in PACKAGE.glob("*/__init__.py"))


def test_at_most_eight_modules_beside_the_subpackages():
    modules = sorted(path.name for path in PACKAGE.glob("*.py") if path.name != "__init__.py")
    assert len(modules) <= 8, modules


@pytest.mark.parametrize("package", SUBPACKAGES, ids=[p.name for p in SUBPACKAGES])
def test_every_subpackage_says_what_it_holds_and_may_use(package):
    docstring = ast.get_docstring(ast.parse((package / "__init__.py").read_text()))
    assert docstring and "may import" in docstring, package.name


def private_imports(path: Path) -> list[str]:
    """`from X import _name` where X is another warpload module (a module's own _core/_native/_fileio are modules,
    named as such by their file, and allowed)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("warpload")):
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__") and alias.name not in (
                        "_core", "_native", "_fileio"):
                    found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} imports {alias.name}")
    return found


def test_no_module_imports_another_modules_private_names():
    offenders = [line for path in sorted(PACKAGE.rglob("*.py")) for line in private_imports(path)]
    assert offenders == []


def long_functions(path: Path, limit: int) -> list[str]:
    """Functions whose code (docstring left out) runs over `limit` lines."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            first = node.body[0]
            has_docstring = isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and len(node.body) > 1
            start = first.end_lineno if has_docstring else node.lineno
            if node.end_lineno - start > limit:
                found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name}")
    return found


def test_no_function_runs_over_eighty_lines():
    assert [line for path in sorted(PACKAGE.rglob("*.py")) for line in long_functions(path, 80)] == []


def test_only_native_imports_the_extension():
    """The compiled `_core` has one owner (grimp, behind import-linter, sees only Python source, so this is
    checked here)."""
    importers = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.ImportFrom) else
                     [alias.name.rsplit(".", 1)[-1] for alias in node.names] if isinstance(node, ast.Import) else [])
            module = getattr(node, "module", None) or ""
            if "_core" in names or module.endswith("_core"):
                importers.append(path.name)
    assert importers == ["_native.py"]
