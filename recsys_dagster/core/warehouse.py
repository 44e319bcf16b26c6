"""DuckDB warehouse: table schemas (a public contract) and idempotent writes.

All writes are transactional: a partition write deletes that day range and inserts the new
rows in one transaction; a full-table write replaces the table in one transaction. Every
value reaches SQL as a bound parameter or a registered DataFrame, never as SQL text.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd

SCHEMAS: dict[str, str] = {
    "raw_interactions": """
        source_file VARCHAR, source_row BIGINT, user_id VARCHAR, item_id VARCHAR, rating VARCHAR,
        "timestamp" VARCHAR, raw_line VARCHAR, parse_error VARCHAR, event_date DATE""",
    "cleaned_interactions": """
        user_id VARCHAR, item_id VARCHAR, ts TIMESTAMP, rating DOUBLE, event_date DATE,
        source_file VARCHAR, source_row BIGINT""",
    "interactions_quarantine": """
        source_file VARCHAR, source_row BIGINT, user_id VARCHAR, item_id VARCHAR, rating VARCHAR,
        "timestamp" VARCHAR, raw_line VARCHAR, reason VARCHAR, event_date DATE""",
    "items": """
        item_id VARCHAR, title VARCHAR, year INTEGER, genres VARCHAR[], tags VARCHAR[],
        description VARCHAR, attributes JSON""",
    "users": """
        user_id VARCHAR, age INTEGER, gender VARCHAR, occupation VARCHAR, zip_code VARCHAR,
        attributes JSON""",
    "metadata_quarantine": """
        "table" VARCHAR, source_file VARCHAR, source_row BIGINT, raw_line VARCHAR, reason VARCHAR""",
}


def columns_of(table: str) -> list[str]:
    cols = []
    for part in SCHEMAS[table].split(","):
        cols.append(part.split()[0].strip('"'))
    return cols


def ensure_table(conn, table: str) -> None:
    conn.execute(f"CREATE TABLE IF NOT EXISTS {table} ({SCHEMAS[table]})")


def _select_list(table: str) -> str:
    return ", ".join(f'"{c}"' for c in columns_of(table))


def replace_partition(conn, frames: dict[str, pd.DataFrame], start: dt.date, end: dt.date) -> dict[str, int]:
    """Replace the rows with ``event_date`` in ``start..end`` (inclusive) of each table by
    the given frame, all tables in one transaction."""
    return replace_tables(conn, frames, ("event_date BETWEEN ? AND ?", [start, end]))


def replace_tables(
    conn, frames: dict[str, pd.DataFrame], where: tuple[str, list] | None = None
) -> dict[str, int]:
    """Replace each table's rows (all, or those matching ``where`` = ``(sql, params)``) by
    its frame, in one transaction: readers see either the old or the new content."""
    for table in frames:
        ensure_table(conn, table)
    conn.execute("BEGIN TRANSACTION")
    try:
        for table, frame in frames.items():
            if where is None:
                conn.execute(f"DELETE FROM {table}")
            else:
                conn.execute(f"DELETE FROM {table} WHERE {where[0]}", where[1])
            conn.register("_incoming", frame[columns_of(table)])
            conn.execute(f"INSERT INTO {table} SELECT {_select_list(table)} FROM _incoming")
            conn.unregister("_incoming")
        conn.execute("COMMIT")
    except Exception:
        conn.execute("ROLLBACK")
        raise
    return {table: len(frame) for table, frame in frames.items()}


def read_ids(conn, table: str, column: str) -> frozenset[str] | None:
    """All ids of a metadata table, or None when the table does not exist yet."""
    exists = conn.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [table]
    ).fetchone()[0]
    if not exists:
        return None
    return frozenset(r[0] for r in conn.execute(f"SELECT {column} FROM {table}").fetchall())
