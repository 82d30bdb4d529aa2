"""ARCHITECTURE.md's module table is the code's: every module listed once with its menas imports as written
(lazy ones only inside functions), imports pointing only to lower layers, and the torch column true."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "menas"
ROW = re.compile(r"\| (\d+) \| `([\w/]+)\.py` \|")


def module_path(module: str) -> Path:
    """The file of a menas module named as the table names it ("search.store" -> src/menas/search/store.py)."""
    return PACKAGE.joinpath(*module.split(".")).with_suffix(".py")


def package_modules() -> set[str]:
    """Every module of the package as the table names it, packages' `__init__` and `__main__` left out."""
    found = set()
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE).with_suffix("")
        if relative.name not in ("__init__", "__main__"):
            found.add(".".join(relative.parts))
    return found


def _table() -> dict[str, tuple[int, dict[str, bool], bool]]:
    """module -> (layer, {imported module: lazy}, imports torch) from the table in ARCHITECTURE.md."""
    rows: dict[str, tuple[int, dict[str, bool], bool]] = {}
    for line in (ROOT / "ARCHITECTURE.md").read_text().splitlines():
        if not ROW.match(line):
            continue
        layer, name, _owns, imports, torch = (cell.strip() for cell in line.strip().strip("|").split("|"))
        module = name.strip("`").removesuffix(".py").replace("/", ".")
        assert module not in rows, f"{module} is listed twice"
        deps = {}
        for item in (i.strip() for i in imports.split(",")):
            if item not in ("", "—"):
                deps[item.removesuffix(" (lazy)")] = item.endswith(" (lazy)")
        rows[module] = (int(layer), deps, torch == "yes")
    return rows


def _imports(path: Path) -> dict[str, bool]:
    """The menas modules a file imports -> True when it imports them only inside functions."""
    found: dict[str, bool] = {}

    def visit(node: ast.AST, in_function: bool) -> None:
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and (node.module + ".").startswith("menas."):
            base = node.module.removeprefix("menas").lstrip(".")
            for alias in node.names:
                full = f"{base}.{alias.name}".lstrip(".")
                if module_path(full).is_file():  # `from menas.search import store`
                    names.append(full)
                elif base:  # `from menas.search.store import Store`
                    names.append(base)
        elif isinstance(node, ast.Import):
            names = [a.name.removeprefix("menas.") for a in node.names if a.name.startswith("menas.")]
        for name in names:
            found[name] = found.get(name, True) and in_function
        inner = in_function or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(ast.parse(path.read_text()), False)
    found.pop(".".join(path.relative_to(PACKAGE).with_suffix("").parts), None)
    return found


def test_every_module_is_in_the_table_with_its_real_imports() -> None:
    table = _table()
    modules = package_modules()
    assert set(table) == modules, f"missing: {sorted(modules - set(table))}, stale: {sorted(set(table) - modules)}"
    for module, (_, deps, _) in table.items():
        assert _imports(module_path(module)) == deps, f"{module}: the table's imports differ from the code"


def test_imports_point_only_to_lower_layers() -> None:
    table = _table()
    for module, (layer, deps, _) in table.items():
        upward = [d for d in deps if table[d][0] >= layer]
        assert not upward, f"{module} (layer {layer}) imports {upward} of layer >= {layer}"


def test_modules_marked_torch_free_import_no_torch() -> None:
    free = [m for m, (_, _, torch) in _table().items() if not torch]
    code = ("import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module('menas.' + m)\n"
            "    if 'torch' in sys.modules:\n        sys.exit(f'menas.{m} imports torch')")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code, *free], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert {"search.strategies", "search.store", "report.build", "search.ranking", "cli.main"} <= set(free)
