"""The daily refresh schedule: previous day's partition (or the replay clock's day)."""

import datetime as dt
from zoneinfo import ZoneInfo

import dagster as dg

from recsys_dagster.defs.jobs import DAILY_REFRESH_CONFIG
from recsys_dagster.defs.partitions import partition_day_range, partition_key_of_day

#: A refresh of a day already in one of these states is not launched again.
_DONE_OR_RUNNING = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
                    dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.SUCCESS]


def refresh_target(today: dt.date, first: dt.date, last: dt.date, landing: bool,
                   latest_landed: dt.date | None) -> tuple[dt.date | None, str]:
    """Which day the refresh at local date ``today`` should process, and why.

    The previous day when it is a partition. Past the end of a static dataset with the
    landing source (replay mode), the replay clock decides: the latest landed day.
    """
    yesterday = today - dt.timedelta(days=1)
    if first <= yesterday <= last:
        return yesterday, "previous day"
    if landing and latest_landed is not None and first <= latest_landed <= last:
        return latest_landed, f"replay: latest landed day (partitions end {last})"
    if yesterday > last:
        return None, (f"the partitions end on {last}: nothing new to refresh (replay the dataset with "
                      f"RECSYS_SOURCE=landing, or set RECSYS_PARTITIONS_END=open for data that keeps arriving)")
    return None, f"{yesterday} is before the first partition {first}"


def build_refresh_schedule(job, partitions_def: dg.TimeWindowPartitionsDefinition, cron: str, timezone: str,
                           source: str, landing_dir: str) -> dg.ScheduleDefinition:
    @dg.schedule(name="daily_refresh_schedule", cron_schedule=cron, job=job, execution_timezone=timezone,
                 description=f"daily_refresh of the previous day's partition at '{cron}' ({timezone}); in replay "
                             "mode (landing source, static dataset) of the latest landed day. A day already "
                             "refreshed (or being refreshed) is skipped.")
    def daily_refresh_schedule(context: dg.ScheduleEvaluationContext):
        from recsys_dagster.core.landing import day_files, latest_day

        now = context.scheduled_execution_time or dt.datetime.now(dt.timezone.utc)
        today = now.astimezone(ZoneInfo(timezone)).date()
        first = partition_day_range(partitions_def, partitions_def.get_first_partition_key())[0]
        last = partition_day_range(partitions_def, partitions_def.get_last_partition_key())[1]
        landing = source == "landing"
        day, why = refresh_target(today, first, last, landing, latest_day(landing_dir) if landing else None)
        if day is None:
            return dg.SkipReason(why)
        if landing and not day_files(landing_dir, day):
            return dg.SkipReason(f"no files landed for {day} in {landing_dir} yet")
        key = partition_key_of_day(partitions_def, day)  # the day itself, or its week/month
        previous = context.instance.get_run_records(
            dg.RunsFilter(job_name=job.name, tags={"recsys/refresh_day": day.isoformat()}, statuses=_DONE_OR_RUNNING),
            limit=1)
        if previous:
            return dg.SkipReason(f"{day} already refreshed by run {previous[0].dagster_run.run_id} "
                                 f"({previous[0].dagster_run.status.value})")
        # run_config explicitly: the job's config is a default for the launchpad, not every launcher applies it
        return dg.RunRequest(partition_key=key, run_key=f"daily_refresh:{day}", run_config=DAILY_REFRESH_CONFIG,
                             tags={"recsys/refresh_reason": why, "recsys/refresh_day": day.isoformat()})

    return daily_refresh_schedule
