"""Data-quality gates on the ingestion tables (run after each materialization)."""

import datetime as dt

import dagster as dg

from recsys_dagster.core import warehouse as wh
from recsys_dagster.defs.resources import WarehouseResource

RECONCILE_SQL = """
WITH r AS (SELECT event_date, count(*) AS n FROM raw_interactions GROUP BY 1),
     c AS (SELECT event_date, count(*) AS n FROM cleaned_interactions GROUP BY 1),
     q AS (SELECT event_date, count(*) AS n FROM interactions_quarantine GROUP BY 1)
SELECT coalesce(r.event_date, c.event_date, q.event_date) AS event_date,
       coalesce(r.n, 0) AS raw, coalesce(c.n, 0) AS cleaned, coalesce(q.n, 0) AS quarantined
FROM r FULL OUTER JOIN c ON r.event_date = c.event_date
       FULL OUTER JOIN q ON coalesce(r.event_date, c.event_date) = q.event_date
WHERE coalesce(c.n, 0) + coalesce(q.n, 0) > 0
  AND coalesce(r.n, 0) <> coalesce(c.n, 0) + coalesce(q.n, 0)
  AND NOT (coalesce(r.n, 0) = 0 AND coalesce(r.event_date, c.event_date, q.event_date) < ?)  -- retention dropped raw
ORDER BY 1
"""

def _ensure(conn, *tables: str) -> None:
    for t in tables:
        wh.ensure_table(conn, t)

@dg.asset_check(asset="cleaned_interactions", blocking=True,
                description="raw rows = cleaned + quarantined on every cleaned day (days whose raw rows "
                            "RECSYS_RETENTION_DAYS dropped excepted): nothing lost, nothing duplicated")
def reconciliation(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    with warehouse.get_connection() as conn:
        _ensure(conn, "raw_interactions", "cleaned_interactions", "interactions_quarantine")
        from recsys_dagster.core.privacy.retention import retained_from

        bad = conn.execute(RECONCILE_SQL, [retained_from(conn) or dt.date.min]).df()
        totals = conn.execute(
            "SELECT (SELECT count(*) FROM raw_interactions), (SELECT count(*) FROM cleaned_interactions), "
            "(SELECT count(*) FROM interactions_quarantine)"
        ).fetchall()[0]
    return dg.AssetCheckResult(
        passed=bad.empty,
        metadata={
            "raw_rows": totals[0], "cleaned_rows": totals[1], "quarantined_rows": totals[2],
            "mismatched_days": len(bad),
            "first_mismatches": dg.MetadataValue.md(bad.head(10).to_markdown(index=False) if len(bad) else "_none_"),
        },
    )

@dg.asset_check(asset="cleaned_interactions", blocking=True,
                description="no two cleaned rows are the same event (user, item, ts, rating)")
def no_duplicate_events(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    with warehouse.get_connection() as conn:
        _ensure(conn, "cleaned_interactions")
        dups = conn.execute(
            "SELECT count(*) FROM (SELECT user_id, item_id, ts, rating FROM cleaned_interactions "
            "GROUP BY ALL HAVING count(*) > 1)"
        ).fetchall()[0][0]
    return dg.AssetCheckResult(passed=dups == 0, metadata={"duplicate_events": dups})

@dg.asset_check(asset="cleaned_interactions", blocking=True,
                description="every cleaned interaction refers to a known item and a known user")
def referential_integrity(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    with warehouse.get_connection() as conn:
        _ensure(conn, "cleaned_interactions", "items", "users")
        orphan_items = conn.execute(
            "SELECT count(*) FROM cleaned_interactions c WHERE NOT EXISTS (SELECT 1 FROM items i WHERE i.item_id = c.item_id)"
        ).fetchall()[0][0]
        orphan_users = conn.execute(
            "SELECT count(*) FROM cleaned_interactions c WHERE NOT EXISTS (SELECT 1 FROM users u WHERE u.user_id = c.user_id)"
        ).fetchall()[0][0]
    return dg.AssetCheckResult(
        passed=orphan_items == 0 and orphan_users == 0,
        metadata={"rows_with_unknown_item": orphan_items, "rows_with_unknown_user": orphan_users},
    )

@dg.asset_check(asset="items", blocking=True, description="item ids are unique and non-empty")
def unique_item_ids(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    with warehouse.get_connection() as conn:
        _ensure(conn, "items")
        n, distinct, empty = conn.execute(
            "SELECT count(*), count(DISTINCT item_id), count(*) FILTER (WHERE coalesce(trim(item_id), '') = '') FROM items"
        ).fetchall()[0]
    return dg.AssetCheckResult(passed=n == distinct and empty == 0, metadata={"rows": n, "distinct_ids": distinct})

INGESTION_CHECKS = [reconciliation, no_duplicate_events, referential_integrity, unique_item_ids]
