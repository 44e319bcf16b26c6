"""Stage 1 — ingestion: items, users, raw and cleaned interactions (daily partitions)."""

import time

import dagster as dg

from recsys_dagster.core import warehouse as wh
from recsys_dagster.defs.metadata import counts_table, preview
from recsys_dagster.defs.partitions import partition_days
from recsys_dagster.defs.resources import WAREHOUSE_POOL, DatasetResource, WarehouseResource

GROUP = "ingestion"
#: Reading source files can hit a flaky network share or a download in progress.
IO_RETRY = dg.RetryPolicy(max_retries=3, delay=2, backoff=dg.Backoff.EXPONENTIAL)

def _check_key(conn, dataset: DatasetResource) -> bool:
    """The run's key must match the warehouse's id space; a mismatch is not retried (it is
    not transient) and its message says how to proceed. Returns whether ids are pseudonymized."""
    from recsys_dagster.core.privacy import PrivacyError, check_key

    pseudo = dataset.pseudonymizer()
    try:
        check_key(conn, pseudo)
    except PrivacyError as exc:
        raise dg.Failure(str(exc), allow_retries=False) from None
    return pseudo is not None


def _metadata_asset(name: str, reader: str, doc: str):
    @dg.asset(name=name, group_name=GROUP, kinds={"duckdb", "python"}, pool=WAREHOUSE_POOL, retry_policy=IO_RETRY,
              description=doc)
    def _asset(context: dg.AssetExecutionContext, dataset: DatasetResource, warehouse: WarehouseResource):
        from recsys_dagster.core.privacy.forget import skip_forgotten

        t0 = time.perf_counter()
        frame, rejects = getattr(dataset.open(), reader)()
        rejects = rejects.assign(table=name)
        skipped, pseudonymized = 0, False
        with warehouse.get_connection() as conn:
            if personal := wh.TABLES[name].personal:
                pseudonymized = _check_key(conn, dataset)
                frame, skipped = skip_forgotten(conn, frame)
                rejects, rejected_skipped = skip_forgotten(conn, rejects)
                skipped += rejected_skipped
            wh.write(conn, name, frame)
            wh.write(conn, "metadata_quarantine", rejects, table=name)
        if len(rejects):
            context.log.warning(f"{name}: {len(rejects)} rows quarantined in metadata_quarantine")
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": len(frame),
                "rows_quarantined": len(rejects),
                **({"rows_of_forgotten_users_skipped": skipped} if personal else {}),
                "seconds": round(time.perf_counter() - t0, 3),
                "preview": preview(frame, pseudonymized),
            }
        )

    return _asset

items = _metadata_asset(
    "items", "read_items",
    "Item catalogue: title, year, genres, tags, description (e.g. Wikipedia summaries for ML-100K) and "
    "attributes as JSON. Unusable rows go to metadata_quarantine with a reason.",
)
users = _metadata_asset(
    "users", "read_users",
    "Users with demographics where the dataset has them (age, gender, occupation, zip code).",
)

def build_ingestion_assets(partitions_def: dg.PartitionsDefinition) -> list:
    @dg.asset(
        partitions_def=partitions_def,
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name=GROUP,
        kinds={"duckdb", "python"},
        pool=WAREHOUSE_POOL,
        retry_policy=IO_RETRY,
    )
    def raw_interactions(
        context: dg.AssetExecutionContext, dataset: DatasetResource, warehouse: WarehouseResource
    ) -> dg.MaterializeResult:
        """Every line of the interaction source whose event day falls in the partition, kept
        as text (malformed lines too). Reads the dataset's files (rows with an unusable
        timestamp land in the dataset's last day, where cleaning quarantines them) or, with
        ``RECSYS_SOURCE=landing``, the files landed under ``landing/<day>/``. Single-run
        backfills: one file scan and one delete+insert for the whole range."""
        from recsys_dagster.core.privacy.forget import skip_forgotten

        t0 = time.perf_counter()
        start, end = partition_days(context)
        in_range = dataset.raw_interactions(start, end)
        if dataset.source == "landing" and in_range.empty:
            context.log.warning(f"no files landed for {start}..{end} in {dataset.landing_dir}: the partition is now empty")
        with warehouse.get_connection() as conn:
            pseudonymized = _check_key(conn, dataset)
            in_range, skipped = skip_forgotten(conn, in_range)
            wh.replace_partition(conn, {"raw_interactions": in_range}, start, end)
        files = sorted(in_range["source_file"].unique().tolist()) if len(in_range) else []
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": len(in_range),
                "days": (end - start).days + 1,
                "source": dataset.source,
                "source_files": ", ".join(files[:10]) + (f" (+{len(files) - 10} more)" if len(files) > 10 else ""),
                "malformed_lines": int(in_range["parse_error"].notna().sum()),
                "rows_of_forgotten_users_skipped": skipped,
                "seconds": round(time.perf_counter() - t0, 3),
                "preview": preview(in_range.drop(columns=["raw_line"]), pseudonymized),
            }
        )

    @dg.asset(
        partitions_def=partitions_def,
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name=GROUP,
        kinds={"duckdb", "python"},
        pool=WAREHOUSE_POOL,
        deps=[raw_interactions, items, users],
    )
    def cleaned_interactions(
        context: dg.AssetExecutionContext, dataset: DatasetResource, warehouse: WarehouseResource
    ) -> dg.MaterializeResult:
        """Typed, validated interactions (user_id, item_id, ts, rating, event_date). Each bad
        raw row goes to ``interactions_quarantine`` with its reason; raw = cleaned +
        quarantined for every partition (asset check). The rating is kept: conversion to
        implicit feedback happens downstream."""
        from recsys_dagster.core.cleaning import CleaningConfig, clean_interactions
        from recsys_dagster.core.privacy.retention import apply_retention, dropped_days_without_raw

        t0 = time.perf_counter()
        start, end = partition_days(context)
        with warehouse.get_connection() as conn:
            wh.ensure_table(conn, "raw_interactions")
            if dropped_days_without_raw(conn, start, end):
                raise dg.Failure(f"the raw rows of {start}..{end} were dropped by RECSYS_RETENTION_DAYS: materialize "
                                 "raw_interactions for these partitions first (it re-reads the source)")
            raw = conn.execute(
                "SELECT * FROM raw_interactions WHERE event_date BETWEEN ? AND ? ORDER BY source_file, source_row",
                [start, end],
            ).df()
            raw["event_date"] = raw["event_date"].dt.date
            config = CleaningConfig(
                rating_range=dataset.open().rating_range,
                known_users=wh.read_ids(conn, "users", "user_id"),
                known_items=wh.read_ids(conn, "items", "item_id"),
            )
            cleaned, quarantine = clean_interactions(raw, start, end, config)
            wh.replace_partition(conn, {"cleaned_interactions": cleaned, "interactions_quarantine": quarantine}, start, end)
            cutoff, dropped = apply_retention(conn, dataset.retention_days)
        reasons = quarantine["reason"].value_counts().to_dict()
        if len(quarantine):
            context.log.warning(f"{len(quarantine)} of {len(raw)} raw rows quarantined: {reasons}")
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": len(cleaned),
                "raw_rows": len(raw),
                "rows_quarantined": len(quarantine),
                "quarantine_share": round(len(quarantine) / max(len(raw), 1), 6),
                "quarantine_reasons": counts_table(reasons),
                "users": int(cleaned["user_id"].nunique()),
                "items": int(cleaned["item_id"].nunique()),
                **({"raw_rows_dropped_by_retention": dropped, "raw_retained_from": str(cutoff)} if cutoff else {}),
                "seconds": round(time.perf_counter() - t0, 3),
                "preview": preview(cleaned, dataset.pseudonymizer() is not None),
            }
        )

    return [raw_interactions, cleaned_interactions]
