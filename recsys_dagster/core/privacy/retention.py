"""Retention of raw interaction rows (opt-in, ``RECSYS_RETENTION_DAYS``).

After a partition is cleaned, raw rows whose ``event_date`` is more than N days before the
newest cleaned day are deleted (the data's clock, not the wall clock, so a replayed
historical dataset ages as it is replayed; for live data the two agree). Cleaned rows and
the quarantine stay. ``privacy_state`` records the cutoff (``raw_retained_from``): the
reconciliation check skips days before it, and cleaning such a day again needs its raw rows
first (re-materializing ``raw_interactions`` re-reads the source).
"""

from __future__ import annotations

import datetime as dt
import json

import pandas as pd

from recsys_dagster.core import warehouse as wh
from recsys_dagster.core.privacy.state import get_state, set_state

STATE = "raw_retained_from"


def retained_from(conn) -> dt.date | None:
    value = get_state(conn, STATE)
    return dt.date.fromisoformat(value) if value else None


def apply_retention(conn, days: int | None) -> tuple[dt.date | None, int]:
    """Delete raw rows older than ``days`` before the newest cleaned day. Returns
    ``(cutoff, rows deleted)``; ``(None, 0)`` when retention is off or nothing is cleaned."""
    if not days or not wh.table_exists(conn, "cleaned_interactions"):
        return None, 0
    newest = conn.execute("SELECT max(event_date) FROM cleaned_interactions").fetchone()[0]
    if newest is None:
        return None, 0
    cutoff = pd.Timestamp(newest).date() - dt.timedelta(days=int(days))
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    for table in ("privacy_state", "privacy_audit", "raw_interactions"):
        wh.ensure_table(conn, table)
    with wh.transaction(conn):
        n = int(conn.execute("DELETE FROM raw_interactions WHERE event_date < ?", [cutoff]).fetchone()[0])
        previous = retained_from(conn)
        keep = max(cutoff, previous) if previous else cutoff
        set_state(conn, STATE, keep.isoformat())
        if n:
            conn.execute("INSERT INTO privacy_audit VALUES (?, 'retention', NULL, ?)",
                         [now, json.dumps({"raw_rows_deleted": n, "before": cutoff.isoformat(), "days": int(days)})])
    return cutoff, n


def dropped_days_without_raw(conn, start: dt.date, end: dt.date) -> bool:
    """True when ``start..end`` reaches before the retention cutoff and has no raw rows there
    (cleaning it now would replace its cleaned rows with nothing)."""
    cutoff = retained_from(conn)
    if cutoff is None or start >= cutoff:
        return False
    n = conn.execute("SELECT count(*) FROM raw_interactions WHERE event_date BETWEEN ? AND ?",
                     [start, min(end, cutoff - dt.timedelta(days=1))]).fetchone()[0]
    return n == 0
