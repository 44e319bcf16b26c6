"""The core must stay free of Dagster; heavy libraries load lazily."""

import ast
import subprocess
import sys
from pathlib import Path

CORE = Path(__file__).resolve().parents[1] / "recsys_dagster" / "core"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_core_never_imports_dagster():
    offenders = [str(p) for p in CORE.rglob("*.py") if {"dagster", "dagster_duckdb"} & _imports(p)]
    assert offenders == []


def test_code_location_import_is_lazy_about_heavy_libraries():
    code = (
        "import sys, recsys_dagster.definitions as d; "
        "print(sorted(m for m in ('torch', 'transformers', 'torch_geometric', 'sentence_transformers', 'mlflow') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


DEFS = CORE.parent / "defs"


def _asset_bodies():
    """``(module, function, lines)`` of every function decorated as an asset in defs/
    (docstring excluded)."""
    for path in sorted(DEFS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and any(
                    "asset" in ast.unparse(d).split("(")[0] and "check" not in ast.unparse(d).split("(")[0]
                    for d in node.decorator_list):
                body = node.body
                if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and len(body) > 1:
                    body = body[1:]
                yield path.name, node.name, node.end_lineno - body[0].lineno + 1


def test_asset_bodies_are_thin():
    bodies = list(_asset_bodies())
    assert len(bodies) >= 10  # the scan finds the assets
    assert [b for b in bodies if b[2] > 40] == []


def test_only_the_warehouse_spells_table_ddl():
    offenders = [str(p) for p in CORE.parent.rglob("*.py")
                 if "CREATE TABLE" in p.read_text() and p.name != "warehouse.py"]
    assert offenders == []
