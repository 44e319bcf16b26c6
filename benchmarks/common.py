"""Shared helpers: machine description, warehouse tables, result tables and JSON."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import resource
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def machine() -> dict:
    import torch

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": sys.version.split()[0], "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def median(values) -> float:
    return float(statistics.median(values))


def warehouse_tables():
    """Tables of the warehouse built by ``make warehouse`` (RECSYS_WAREHOUSE)."""
    import duckdb

    from recsys_dagster.core.training_data import read_tables
    from recsys_dagster.settings import load_settings

    path = load_settings().warehouse
    if not Path(path).exists():
        raise SystemExit(f"{path}: no warehouse; run `make warehouse` (or `make demo`) first")
    conn = duckdb.connect(path, read_only=True)
    try:
        return read_tables(conn)
    finally:
        conn.close()


def print_table(rows: list[dict], title: str) -> None:
    if not rows:
        return
    cols = list(rows[0])
    widths = {c: max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in cols}
    print(f"\n{title}")
    print("  ".join(c.ljust(widths[c]) for c in cols))
    for r in rows:
        print("  ".join(_fmt(r.get(c)).ljust(widths[c]) for c in cols))


def _fmt(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def write_json(name: str, payload: dict, folder: Path | None = None) -> Path:
    folder = Path(folder or RESULTS)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2, default=str))
    print(f"\nwrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return path
