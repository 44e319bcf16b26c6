"""DuckDB warehouse: one spec per table (the public contract: columns, types, keys) and
idempotent writes.

All writes are transactional: a partition write deletes that day range and inserts the new
rows in one transaction; a full-table write replaces the table in one transaction. Every
value reaches SQL as a bound parameter or a registered DataFrame, never as SQL text.
"""

from __future__ import annotations

import datetime as dt
from contextlib import contextmanager
from dataclasses import dataclass

import pandas as pd


@dataclass(frozen=True)
class TableSpec:
    """One table's contract: its columns and DuckDB types in order, the primary key, and
    the columns a partial replace selects rows by (``replace_by``; empty: the writer
    replaces the whole table)."""

    name: str
    columns: tuple[tuple[str, str], ...]
    replace_by: tuple[str, ...] = ()
    primary_key: tuple[str, ...] = ()
    doc: str = ""
    personal: bool = False  # rows belong to the user in the ``user_id`` column (forget-user deletes them)

    @property
    def names(self) -> list[str]:
        return [c for c, _ in self.columns]

    def ddl(self) -> str:
        cols = [f'"{c}" {t}' for c, t in self.columns]
        if self.primary_key:
            cols.append(f"PRIMARY KEY ({', '.join(self.primary_key)})")
        return f"CREATE TABLE IF NOT EXISTS {self.name} ({', '.join(cols)})"

    def empty(self) -> pd.DataFrame:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in self.names})


def _spec(name: str, columns: str, replace_by: tuple[str, ...] = (), primary_key: tuple[str, ...] = (),
          doc: str = "", personal: bool = False) -> TableSpec:
    cols = tuple((part.split(maxsplit=1)[0].strip('"'), part.split(maxsplit=1)[1].strip())
                 for part in columns.split(","))
    return TableSpec(name, cols, replace_by, primary_key, doc, personal)


_DAY = ("event_date",)
#: Every table the pipeline writes. Readers and writers take columns from here; nothing
#: else spells a column list.
TABLES: dict[str, TableSpec] = {t.name: t for t in (
    _spec("raw_interactions", """source_file VARCHAR, source_row BIGINT, user_id VARCHAR, item_id VARCHAR,
          rating VARCHAR, "timestamp" VARCHAR, raw_line VARCHAR, parse_error VARCHAR, event_date DATE""", _DAY,
          doc="one row per landed line, all text (raw means raw)", personal=True),
    _spec("cleaned_interactions", """user_id VARCHAR, item_id VARCHAR, ts TIMESTAMP, rating DOUBLE,
          event_date DATE, source_file VARCHAR, source_row BIGINT""", _DAY, personal=True),
    _spec("interactions_quarantine", """source_file VARCHAR, source_row BIGINT, user_id VARCHAR, item_id VARCHAR,
          rating VARCHAR, "timestamp" VARCHAR, raw_line VARCHAR, reason VARCHAR, event_date DATE""", _DAY, personal=True),
    _spec("items", """item_id VARCHAR, title VARCHAR, year INTEGER, genres VARCHAR[], tags VARCHAR[],
          description VARCHAR, attributes JSON"""),
    _spec("users", "user_id VARCHAR, age INTEGER, gender VARCHAR, occupation VARCHAR, zip_code VARCHAR, attributes JSON",
          personal=True),
    _spec("metadata_quarantine", """"table" VARCHAR, source_file VARCHAR, source_row BIGINT, raw_line VARCHAR,
          reason VARCHAR, user_id VARCHAR""", ("table",), personal=True,
          doc="rejected catalogue/user rows; user_id: the rejected users row's id (users table only)"),
    _spec("kg_entities", "entity_id BIGINT, entity_key VARCHAR, kind VARCHAR, name VARCHAR"),
    _spec("kg_relations", "relation_id BIGINT, name VARCHAR, source VARCHAR"),
    _spec("kg_triples", "head BIGINT, relation BIGINT, tail BIGINT"),
    _spec("kg_quarantine", "source VARCHAR, source_row BIGINT, raw VARCHAR, reason VARCHAR"),
    _spec("text_embedding_cache", "model_id VARCHAR, text_sha256 VARCHAR, embedding FLOAT[], created_at TIMESTAMP DEFAULT current_timestamp",
          primary_key=("model_id", "text_sha256"), doc="encoder outputs by (model id, sha256 of the text)"),
    _spec("item_text_embeddings", "item_id VARCHAR, model_id VARCHAR, text_sha256 VARCHAR, text VARCHAR, embedding FLOAT[]"),
    _spec("user_behavior_embeddings", """user_id VARCHAR, method VARCHAR, model_id VARCHAR, n_interactions BIGINT,
          embedding FLOAT[]""", personal=True),
    _spec("evaluation_metrics", """run_id VARCHAR, model_version VARCHAR, split_fingerprint VARCHAR, protocol VARCHAR,
          model VARCHAR, params VARCHAR, slice VARCHAR, metric VARCHAR, k INTEGER, value DOUBLE, created_at TIMESTAMP""",
          ("run_id",)),
    _spec("evaluation_comparisons", """run_id VARCHAR, model_version VARCHAR, split_fingerprint VARCHAR,
          protocol VARCHAR, model VARCHAR, peer VARCHAR, slice VARCHAR, metric VARCHAR, k INTEGER, n_users INTEGER,
          model_value DOUBLE, peer_value DOUBLE, diff DOUBLE, ci_low DOUBLE, ci_high DOUBLE, p_value DOUBLE,
          created_at TIMESTAMP""", ("run_id",),
          doc="paired t-tests over the same test users: each own model against each peer "
              "(core.comparison); diff = model - peer, 95% interval"),
    _spec("fused_recommendations", """user_id VARCHAR, rank INTEGER, item_id VARCHAR, score DOUBLE, gnn_score DOUBLE,
          text_score DOUBLE, reason VARCHAR, evidence VARCHAR, model_version VARCHAR, generated_at TIMESTAMP""", ("model_version",),
          personal=True),
    _spec("model_hyperparameters", """model VARCHAR, params VARCHAR, valid_ndcg DOUBLE, trials VARCHAR,
          split_fingerprint VARCHAR, tuned_at TIMESTAMP""", ("tuned_at",)),
    _spec("privacy_state", "name VARCHAR, value VARCHAR, updated_at TIMESTAMP",
          doc="id_space: the pseudonymization key's fingerprint, or 'off' (raw user ids)"),
    _spec("forgotten_users", "user_id VARCHAR, forgotten_at TIMESTAMP", primary_key=("user_id",),
          doc="tombstones: user_id is a one-way digest of the forgotten id (privacy.forget.tombstone_of); "
              "ingestion skips matching rows"),
    _spec("privacy_audit", """at TIMESTAMP, action VARCHAR, user_id VARCHAR, detail VARCHAR""",
          doc="one line per privacy action (forget, invalidate_models, retokenize, retention); user_id: the "
              "tombstone digest, never a raw id or a token"),
)}

#: Tables whose rows belong to one user (``user_id``); the KG's user entities are handled apart.
PERSONAL_TABLES = tuple(name for name, spec in TABLES.items() if spec.personal)


def columns_of(table: str, exclude: tuple[str, ...] = ()) -> list[str]:
    """The table's column names in order (less ``exclude``)."""
    return [c for c in TABLES[table].names if c not in exclude]


def ensure_table(conn, table: str) -> None:
    """Create the table, or add the columns a newer spec has to a table written by an older one."""
    spec = TABLES[table]
    conn.execute(spec.ddl())
    have = {r[0] for r in conn.execute("SELECT column_name FROM information_schema.columns WHERE table_name = ?",
                                       [table]).fetchall()}
    for name, sql_type in spec.columns:
        if name not in have:
            conn.execute(f'ALTER TABLE {table} ADD COLUMN "{name}" {sql_type}')


def _select_list(table: str) -> str:
    return ", ".join(f'"{c}"' for c in columns_of(table))


def write(conn, table: str, frame: pd.DataFrame, /, **key) -> int:
    """Replace the rows of ``table`` whose ``replace_by`` columns equal ``key`` (all rows
    when no key is given) by ``frame``, in one transaction. A key column that is not the
    table's replace key raises, so a writer cannot delete by an arbitrary column."""
    allowed = set(TABLES[table].replace_by)
    if not set(key) <= allowed:
        raise ValueError(f"{table}: rows are replaced by {sorted(allowed) or 'the whole table'}, not {sorted(key)}")
    where = None
    if key:
        where = (" AND ".join(f'"{c}" = ?' for c in key), list(key.values()))
    return replace_tables(conn, {table: frame}, where)[table]


def replace_partition(conn, frames: dict[str, pd.DataFrame], start: dt.date, end: dt.date) -> dict[str, int]:
    """Replace the rows with ``event_date`` in ``start..end`` (inclusive) of each table by
    the given frame, all tables in one transaction."""
    for table in frames:
        if TABLES[table].replace_by != ("event_date",):
            raise ValueError(f"{table} is not partitioned by event_date")
    return replace_tables(conn, frames, ("event_date BETWEEN ? AND ?", [start, end]))


@contextmanager
def transaction(conn):
    """``BEGIN`` ... ``COMMIT``, or ``ROLLBACK`` when the body raises."""
    conn.execute("BEGIN TRANSACTION")
    try:
        yield conn
        conn.execute("COMMIT")
    except Exception:
        conn.execute("ROLLBACK")
        raise


def replace_tables(
    conn, frames: dict[str, pd.DataFrame], where: tuple[str, list] | None = None
) -> dict[str, int]:
    """Replace each table's rows (all, or those matching ``where`` = ``(sql, params)``) by
    its frame, in one transaction: readers see either the old or the new content."""
    for table in frames:
        ensure_table(conn, table)
    with transaction(conn):
        for table, frame in frames.items():
            if where is None:
                conn.execute(f"DELETE FROM {table}")
            else:
                conn.execute(f"DELETE FROM {table} WHERE {where[0]}", where[1])
            conn.register("_incoming", frame[columns_of(table)])
            conn.execute(f"INSERT INTO {table} ({_select_list(table)}) SELECT {_select_list(table)} FROM _incoming")
            conn.unregister("_incoming")
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
