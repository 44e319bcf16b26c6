"""Sensors: new files in the landing folder, and a concise summary of every failed run."""

import datetime as dt
import hashlib
import json
from pathlib import Path

import dagster as dg

#: Files modified more recently than this are assumed to be still written.
SETTLE_SECONDS = 2.0
#: At most this many day runs per evaluation; the rest follow on the next ticks.
MAX_RUNS_PER_TICK = 50


def build_landing_sensor(job, partitions_def: dg.PartitionsDefinition, source: str, landing_dir: str,
                         interval_s: int) -> dg.SensorDefinition:
    @dg.sensor(name="landing_sensor", job=job, minimum_interval_seconds=interval_s,
               description=f"A new or changed file under {landing_dir}/YYYY-MM-DD/ launches ingest_interactions "
                           "for that day (run key = day + file fingerprint; the cursor remembers what was seen). "
                           "Needs RECSYS_SOURCE=landing.")
    def landing_sensor(context: dg.SensorEvaluationContext):
        from recsys_dagster.core.landing import scan
        from recsys_dagster.defs.partitions import partition_key_of_day

        if source != "landing":
            return dg.SkipReason("RECSYS_SOURCE is 'dataset': ingestion reads the dataset files, not the landing "
                                 "folder (set RECSYS_SOURCE=landing to ingest landed days)")
        seen = json.loads(context.cursor) if context.cursor else {}
        days, problems = scan(landing_dir, settle_seconds=SETTLE_SECONDS)
        for problem in problems:
            context.log.warning(problem)
        by_key: dict[str, list] = {}
        for landed in days:  # several days share a partition with weekly/monthly partitions
            by_key.setdefault(partition_key_of_day(partitions_def, landed.day), []).append(landed)
        requests, outside = [], []
        for key, group in by_key.items():
            fingerprint = group[0].fingerprint if len(group) == 1 else hashlib.sha1(
                "|".join(f"{d.day}:{d.fingerprint}" for d in group).encode()).hexdigest()[:16]
            if seen.get(key) == fingerprint:
                continue
            if not partitions_def.has_partition_key(key):
                outside.append(key)
                continue
            if len(requests) >= MAX_RUNS_PER_TICK:
                break
            seen[key] = fingerprint
            files = ",".join(f"{d.day}/{f.name}" for d in group for f in d.files)
            requests.append(dg.RunRequest(partition_key=key, run_key=f"{key}:{fingerprint}",
                                          tags={"recsys/landing_files": files[:200]}))
        if outside:
            context.log.warning(f"landed days outside the partitions ({len(outside)}, e.g. {outside[:3]}): "
                                "ignored; see RECSYS_PARTITIONS_END")
        if not requests:
            return dg.SkipReason(f"no new files in {landing_dir} ({len(days)} day(s) landed, all seen)")
        return dg.SensorResult(run_requests=requests, cursor=json.dumps(seen, sort_keys=True))

    return landing_sensor


def _root_error(error) -> str:
    """The innermost cause's message, first line (the user error, not Dagster's wrapper)."""
    while error is not None and getattr(error, "cause", None) is not None:
        error = error.cause
    if error is None:
        return "unknown error"
    text = f"{error.cls_name}: {error.message}" if error.cls_name and not error.message.startswith(error.cls_name) \
        else error.message
    return text.strip().splitlines()[0][:500] if text.strip() else error.cls_name or "unknown error"


def failure_summary(run: dg.DagsterRun, step_failures: list) -> dict:
    steps = [e.step_key for e in step_failures if e.step_key]
    errors = [_root_error(e.event_specific_data.error) for e in step_failures
              if getattr(e.event_specific_data, "error", None) is not None]
    return {
        "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "run_id": run.run_id,
        "job": run.job_name,
        "partition": run.tags.get("dagster/partition")
        or "..".join(filter(None, [run.tags.get("dagster/asset_partition_range_start"),
                                   run.tags.get("dagster/asset_partition_range_end")])) or None,
        "failed_steps": steps,
        "error": errors[0] if errors else "run failed before any step (see the run's event log)",
    }


def build_failure_sensor(home: str) -> dg.SensorDefinition:
    @dg.run_failure_sensor(name="run_failure_summary", default_status=dg.DefaultSensorStatus.RUNNING,
                           minimum_interval_seconds=30,
                           description=f"Logs one line per failed run (job, partition, step, root error) and "
                                       f"appends it to {home}/ops/run_failures.jsonl")
    def run_failure_summary(context: dg.RunFailureSensorContext):
        summary = failure_summary(context.dagster_run, context.get_step_failure_events())
        context.log.error(f"run {summary['run_id'][:8]} of {summary['job']} failed"
                          f"{' (partition ' + summary['partition'] + ')' if summary['partition'] else ''}"
                          f" at {', '.join(summary['failed_steps']) or 'launch'}: {summary['error']}")
        path = Path(home) / "ops" / "run_failures.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as f:
            f.write(json.dumps(summary) + "\n")

    return run_failure_summary
