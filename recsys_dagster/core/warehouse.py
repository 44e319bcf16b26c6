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
    "kg_entities": "entity_id BIGINT, entity_key VARCHAR, kind VARCHAR, name VARCHAR",
    "kg_relations": "relation_id BIGINT, name VARCHAR, source VARCHAR",
    "kg_triples": "head BIGINT, relation BIGINT, tail BIGINT",
    "kg_quarantine": "source VARCHAR, source_row BIGINT, raw VARCHAR, reason VARCHAR",
    "item_text_embeddings": "item_id VARCHAR, model_id VARCHAR, text_sha256 VARCHAR, text VARCHAR, embedding FLOAT[]",
    "user_behavior_embeddings": """
        user_id VARCHAR, method VARCHAR, model_id VARCHAR, n_interactions BIGINT, embedding FLOAT[]""",
    "metadata_quarantine": """
        "table" VARCHAR, source_file VARCHAR, source_row BIGINT, raw_line VARCHAR, reason VARCHAR""",
    "evaluation_metrics": """
        run_id VARCHAR, model_version VARCHAR, split_fingerprint VARCHAR, protocol VARCHAR, model VARCHAR,
        params VARCHAR, slice VARCHAR, metric VARCHAR, k INTEGER, value DOUBLE, created_at TIMESTAMP""",
    "fused_recommendations": """
        user_id VARCHAR, rank INTEGER, item_id VARCHAR, score DOUBLE, gnn_score DOUBLE, text_score DOUBLE,
        reason VARCHAR, model_version VARCHAR, generated_at TIMESTAMP""",
    "model_hyperparameters": """
        model VARCHAR, params VARCHAR, valid_ndcg DOUBLE, trials VARCHAR, split_fingerprint VARCHAR,
        tuned_at TIMESTAMP""",
}


def columns_of(table: str) -> list[str]:
    cols = []
    for part in SCHEMAS[table].split(","):
        cols.append(part.split()[0].strip('"'))
    return cols


def ensure_table(conn, table: str) -> None:
    """Create the table, or add the columns a newer spec has to a table written by an older one."""
    conn.execute(f"CREATE TABLE IF NOT EXISTS {table} ({SCHEMAS[table]})")
    have = {r[0] for r in conn.execute("SELECT column_name FROM information_schema.columns WHERE table_name = ?",
                                       [table]).fetchall()}
    for part in SCHEMAS[table].split(","):
        name = part.split()[0].strip('"')
        if name not in have:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {part.strip()}")


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
            conn.execute(f"INSERT INTO {table} ({_select_list(table)}) SELECT {_select_list(table)} FROM _incoming")
            conn.unregister("_incoming")
        conn.execute("COMMIT")
    except Exception:
        conn.execute("ROLLBACK")
        raise
    return {table: len(frame) for table, frame in frames.items()}


def table_exists(conn, table: str) -> bool:
    return bool(conn.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [table]).fetchall()[0][0])


def read_table(conn, table: str, where: tuple[str, list] | None = None):
    """The whole table (or the rows matching ``where``) as a DataFrame; None if it does not exist."""
    if not table_exists(conn, table):
        return None
    if where is None:
        return conn.execute(f"SELECT * FROM {table}").df()
    return conn.execute(f"SELECT * FROM {table} WHERE {where[0]}", where[1]).df()


def read_ids(conn, table: str, column: str) -> frozenset[str] | None:
    """All ids of a metadata table, or None when the table does not exist yet."""
    if not table_exists(conn, table):
        return None
    return frozenset(r[0] for r in conn.execute(f"SELECT {column} FROM {table}").fetchall())


def read_embeddings(conn, table: str, id_column: str, where: tuple[str, list] | None = None):
    """``(ids, matrix)`` from a table with an ``embedding FLOAT[]`` column, ordered by id."""
    import numpy as np

    sql = f"SELECT {id_column}, embedding FROM {table}"
    params: list = []
    if where is not None:
        sql += f" WHERE {where[0]}"
        params = where[1]
    rel = conn.sql(sql + f" ORDER BY {id_column}", params=params or None)
    # duckdb >= 2 names it to_arrow_table; 1.x arrow
    arrow = (rel.to_arrow_table if hasattr(rel, "to_arrow_table") else rel.arrow)()
    ids = np.asarray(arrow.column(0).to_pylist(), dtype=object)
    if len(ids) == 0:
        return ids, np.zeros((0, 0), dtype=np.float32)
    flat = arrow.column(1).combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return ids, np.asarray(flat, dtype=np.float32).reshape(len(ids), -1)
