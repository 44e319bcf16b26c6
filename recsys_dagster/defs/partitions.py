"""Daily event-day partitions covering the dataset's time span."""

import datetime as dt

import dagster as dg

from recsys_dagster.core.datasets.base import Span


def daily_partitions(span: Span) -> dg.DailyPartitionsDefinition:
    # end_date is exclusive in Dagster; the span is inclusive
    return dg.DailyPartitionsDefinition(
        start_date=span.start.isoformat(), end_date=(span.end + dt.timedelta(days=1)).isoformat()
    )

def partition_days(context: dg.AssetExecutionContext) -> tuple[dt.date, dt.date]:
    """Inclusive first and last day of the run's partition (or partition range)."""
    window = context.partition_time_window
    return window.start.date(), (window.end - dt.timedelta(days=1)).date()
