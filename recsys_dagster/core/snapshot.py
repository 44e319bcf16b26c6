"""Serving snapshots: what the HTTP service reads, exported per published model version.

DuckDB admits one read-write process per file, and a read-only process cannot open a file
another process writes. So the service never opens the warehouse: after
``fused_recommendations`` the ``serving_snapshot`` asset copies the tables serving needs
(interactions, users, items, the knowledge graph, text and behaviour vectors, the version's
recommendations) to Parquet files in a new folder ``<store>/<version>/serving/<export id>/``
and then points ``<store>/SERVING`` at it (``<version>/<export id>``, rewritten atomically:
a half-written snapshot is never visible, and a re-export of the same version is a new
snapshot the service reloads). The service opens those files as views of an in-memory DuckDB, so the same
``read_tables`` code builds the same scorer as the pipeline, and a pipeline run writing the
warehouse meanwhile neither blocks nor breaks it.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

#: Warehouse tables a snapshot copies (whole), besides the version's recommendations.
SNAPSHOT_TABLES = ("users", "items", "cleaned_interactions", "kg_entities", "kg_relations", "kg_triples",
                   "item_text_embeddings", "user_behavior_embeddings")
RECOMMENDATIONS = "fused_recommendations"
SNAPSHOT_DIR, SNAPSHOT_MANIFEST, POINTER = "serving", "snapshot.json", "SERVING"


class SnapshotError(ValueError):
    """A one-line problem with a serving snapshot (missing, incomplete)."""


def export_snapshot(conn, store, version, extra: dict | None = None, keep: int = 2) -> dict:
    """Copy the serving tables of ``conn`` and ``version``'s recommendations to a new
    ``<version>/serving/<export id>/`` and point ``SERVING`` at it; older exports of the
    version beyond the newest ``keep`` are removed. Returns the snapshot manifest (row
    counts, times, ``extra`` such as the dataset's verbs)."""
    from recsys_dagster.core import warehouse as wh
    from recsys_dagster.core.model_store import _write_atomic

    now = dt.datetime.now(dt.timezone.utc)
    export_id = now.strftime("%Y%m%dT%H%M%S%fZ")
    target = version.path / SNAPSHOT_DIR / export_id
    tmp = version.path / SNAPSHOT_DIR / f".{export_id}.tmp"
    tmp.mkdir(parents=True)
    rows = {}
    for table in SNAPSHOT_TABLES:
        if wh.table_exists(conn, table):
            rel = conn.table(table)
            rel.write_parquet(str(tmp / f"{table}.parquet"))
            rows[table] = int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    recs = conn.execute(f"SELECT * FROM {RECOMMENDATIONS} WHERE model_version = ? ORDER BY user_id, rank",
                        [version.version]).df()
    if recs.empty:
        raise SnapshotError(f"no {RECOMMENDATIONS} rows for model version {version.version}: materialize "
                            f"{RECOMMENDATIONS} first")
    recs.to_parquet(tmp / f"{RECOMMENDATIONS}.parquet", index=False)
    rows[RECOMMENDATIONS] = len(recs)
    manifest = {"model_version": version.version, "export_id": export_id,
                "published_at": version.manifest.get("published_at", ""),
                "exported_at": now.isoformat(timespec="seconds"),
                "generated_at": _utc_iso(recs["generated_at"].max()), "rows": rows, **(extra or {})}
    (tmp / SNAPSHOT_MANIFEST).write_text(json.dumps(manifest, indent=2))
    tmp.rename(target)
    _write_atomic(store.root / POINTER, f"{version.version}/{export_id}")
    exports = sorted(p for p in (version.path / SNAPSHOT_DIR).iterdir() if not p.name.startswith("."))
    for old in exports[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return manifest


def _utc_iso(value) -> str:
    import pandas as pd

    ts = pd.Timestamp(value)
    return (ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")).isoformat(timespec="seconds")


def current_snapshot(store) -> tuple[object, str]:
    """``(version, export id)`` that ``SERVING`` points at (else SnapshotError)."""
    pointer = store.root / POINTER
    if not pointer.is_file():
        raise SnapshotError(f"{pointer} does not exist: no serving snapshot has been exported yet "
                            "(materialize serving_snapshot, e.g. with `make demo`)")
    name, _, export_id = pointer.read_text().strip().partition("/")
    version = store.get(name)
    if not export_id or not (version.path / SNAPSHOT_DIR / export_id / SNAPSHOT_MANIFEST).is_file():
        raise SnapshotError(f"{pointer}: snapshot {export_id!r} of {name} is missing or incomplete")
    return version, export_id


def open_snapshot(version, export_id: str):
    """``(conn, manifest)``: an in-memory DuckDB whose views read the snapshot's Parquet
    files under the warehouse's table names."""
    import duckdb

    folder = version.path / SNAPSHOT_DIR / export_id
    manifest = json.loads((folder / SNAPSHOT_MANIFEST).read_text())
    conn = duckdb.connect()
    for path in sorted(Path(folder).glob("*.parquet")):
        conn.read_parquet(str(path)).create_view(path.stem)
    return conn, manifest


__all__ = ["SnapshotError", "current_snapshot", "export_snapshot", "open_snapshot"]
