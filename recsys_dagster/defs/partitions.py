"""Daily event-day partitions covering the dataset's time span."""

import datetime as dt

import dagster as dg

from recsys_dagster.core.datasets.base import Span


def daily_partitions(span: Span, end: str = "span") -> dg.DailyPartitionsDefinition:
    """UTC event days from the dataset's first day to ``end``: ``span`` (its last day, for a
    static dataset), ``open`` (through today, for data that keeps arriving: today's
    partition exists so same-day landings can be ingested) or an ISO date."""
    if end == "open":
        return dg.DailyPartitionsDefinition(start_date=span.start.isoformat(), end_offset=1)
    last = span.end if end == "span" else max(dt.date.fromisoformat(end), span.start)
    # end_date is exclusive in Dagster; the span is inclusive
    return dg.DailyPartitionsDefinition(start_date=span.start.isoformat(), end_date=(last + dt.timedelta(days=1)).isoformat())


def partition_days(context: dg.AssetExecutionContext) -> tuple[dt.date, dt.date]:
    """Inclusive first and last day of the run's partition (or partition range)."""
    window = context.partition_time_window
    return window.start.date(), (window.end - dt.timedelta(days=1)).date()
