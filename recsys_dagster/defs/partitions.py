"""Event-time partitions (UTC) covering the dataset's time span: daily by default, weekly or
monthly for datasets spanning many years (``RECSYS_PARTITION_GRAIN``)."""

import datetime as dt

import dagster as dg

from recsys_dagster.core.datasets.base import Span

GRAINS = ("day", "week", "month")


def _floor(day: dt.date, grain: str) -> dt.date:
    if grain == "week":
        return day - dt.timedelta(days=day.weekday())  # Monday
    if grain == "month":
        return day.replace(day=1)
    return day


def _next_start(day: dt.date, grain: str) -> dt.date:
    """Start of the partition after the one holding ``day`` (Dagster's exclusive end_date)."""
    start = _floor(day, grain)
    if grain == "week":
        return start + dt.timedelta(days=7)
    if grain == "month":
        return (start.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    return start + dt.timedelta(days=1)


def event_partitions(span: Span, end: str = "span", grain: str = "day") -> dg.TimeWindowPartitionsDefinition:
    """Partitions from the dataset's first day to ``end``: ``span`` (its last day, for a
    static dataset), ``open`` (through the current period, for data that keeps arriving:
    today's partition exists so same-day landings can be ingested) or an ISO date. Weeks
    start on Monday, months on the 1st; the first partition starts on or before the
    dataset's first day.

    A last day whose partition has not ended yet (a snapshot exported today, a dataset whose
    newest event is today) still gets its partition: Dagster only lists periods that have
    ended, so the definition then reaches one period past the current one (``end_offset``),
    still capped at the dataset's last period."""
    start = _floor(span.start, grain).isoformat()
    cls = {"day": dg.DailyPartitionsDefinition, "week": dg.WeeklyPartitionsDefinition,
           "month": dg.MonthlyPartitionsDefinition}[grain]
    kwargs = {"day_offset": 1} if grain == "week" else {}
    if end == "open":
        return cls(start_date=start, end_offset=1, **kwargs)
    last = span.end if end == "span" else max(dt.date.fromisoformat(end), span.start)
    end_date = _next_start(last, grain)
    if end_date > dt.datetime.now(dt.timezone.utc).date():
        kwargs["end_offset"] = 1
    return cls(start_date=start, end_date=end_date.isoformat(), **kwargs)


def partition_key_of_day(partitions_def: dg.TimeWindowPartitionsDefinition, day: dt.date) -> str:
    """The key of the partition holding UTC day ``day`` (may be outside the definition)."""
    ts = dt.datetime(day.year, day.month, day.day, 12, tzinfo=dt.timezone.utc).timestamp()
    return partitions_def.get_partition_key_for_timestamp(ts)


def partition_day_range(partitions_def: dg.TimeWindowPartitionsDefinition, key: str) -> tuple[dt.date, dt.date]:
    window = partitions_def.time_window_for_partition_key(key)
    return window.start.date(), (window.end - dt.timedelta(days=1)).date()


def partition_days(context: dg.AssetExecutionContext) -> tuple[dt.date, dt.date]:
    """Inclusive first and last day of the run's partition (or partition range)."""
    window = context.partition_time_window
    return window.start.date(), (window.end - dt.timedelta(days=1)).date()
