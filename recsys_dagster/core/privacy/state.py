"""``privacy_state``: named values (the id space, the retention cutoff), one row per name.

Plain SQL without a transaction of its own, so callers can set a value inside theirs.
"""

from __future__ import annotations

import datetime as dt

from recsys_dagster.core import warehouse as wh

TABLE = "privacy_state"


def get_state(conn, name: str) -> str | None:
    if not wh.table_exists(conn, TABLE):
        return None
    row = conn.execute(f"SELECT value FROM {TABLE} WHERE name = ?", [name]).fetchall()
    return row[0][0] if row else None


def set_state(conn, name: str, value: str) -> None:
    """Replace the value of ``name`` (other names are kept)."""
    wh.ensure_table(conn, TABLE)
    conn.execute(f"DELETE FROM {TABLE} WHERE name = ?", [name])
    conn.execute(f"INSERT INTO {TABLE} VALUES (?, ?, ?)",
                 [name, value, dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)])
