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
