"""Operations: landing folder + replay, the landing sensor, the daily refresh schedule, the
run-failure sensor, jobs selected by group, lazy imports."""

import datetime as dt
import json
import os
import time

import dagster as dg
import duckdb
import pytest
from conftest import make_settings, requires_ml100k

from recsys_dagster.core import landing
from recsys_dagster.core.datasets import open_dataset
from recsys_dagster.defs.schedules import refresh_target


def _defs(tmp_path, dataset, **kw):
    from recsys_dagster.definitions import build_definitions

    settings = make_settings(tmp_path, str(dataset), **kw)
    return settings, build_definitions(settings)


def _landed_bytes(folder):
    return b"".join(p.read_bytes().split(b"\n", 1)[1] for p in sorted(folder.rglob("interactions.csv")))


def test_replay_lands_every_source_line_once_byte_for_byte(tmp_path, synthetic_folder):
    source = synthetic_folder / "interactions.csv"
    with source.open("ab") as f:  # a malformed line and latin-1 bytes must travel too
        f.write(b"u1,i1,not-a-time\n" + "u2,i2,1704100000,4,caf\xe9\n".encode("latin-1"))
    dataset = open_dataset(str(synthetic_folder))
    rows = landing.replay_days(dataset)
    out = tmp_path / "landing"
    for day in rows:
        landing.land_day(dataset, out, day, rows)
    header, *lines = source.read_bytes().splitlines()
    landed = sorted(b for p in out.rglob("interactions.csv") for b in p.read_bytes().splitlines()[1:])
    assert landed == sorted(line for line in lines if line.strip())
    assert all(p.read_bytes().startswith(header + b"\n") for p in out.rglob("interactions.csv"))
    # reading the landing folder gives the same rows as reading the source
    span = dataset.span()
    from_landing = landing.read_landed(dataset, out, span.start, span.end)
    from_source = dataset.raw_interactions()
    key = ["user_id", "item_id", "timestamp", "rating"]
    assert len(from_landing) == len(from_source)
    assert (from_landing[key].fillna("").sort_values(key).to_numpy().tolist()
            == from_source[key].fillna("").sort_values(key).to_numpy().tolist())
    assert from_landing["source_file"].str.match(r"^landing/\d{4}-\d{2}-\d{2}/interactions\.csv$").all()


def test_land_day_is_atomic_and_idempotent(tmp_path, synthetic_folder):
    dataset = open_dataset(str(synthetic_folder))
    out = tmp_path / "landing"
    first = landing.next_days(dataset, out, 2)
    path = landing.land_day(dataset, out, first[0])
    before = path.stat().st_mtime_ns
    days, _ = landing.scan(out)
    time.sleep(0.01)
    assert landing.land_day(dataset, out, first[0]) == path and path.stat().st_mtime_ns == before
    assert landing.scan(out)[0] == days  # same fingerprint: the sensor does not fire again
    assert not list(out.rglob(".*.tmp"))
    assert landing.next_days(dataset, out, 1) == [first[1]]
    assert landing.land_day(dataset, out, dt.date(1990, 1, 1)) is None  # a day without events
    (out / "notes.txt").write_text("x")
    (out / "2024-02-30").mkdir()
    _, problems = landing.scan(out)
    assert len(problems) == 2 and "not a calendar date" in problems[0] and "notes.txt" in problems[1]


def test_landing_source_ingests_exactly_the_landed_days(tmp_path, synthetic_folder):
    from conftest import run_assets

    settings, defs = _defs(tmp_path, synthetic_folder, source="landing")
    dataset = open_dataset(str(synthetic_folder))
    days = landing.next_days(dataset, settings.landing, 5)
    for day in (days[0], days[2]):
        landing.land_day(dataset, settings.landing, day)
    span = (days[0].isoformat(), days[3].isoformat())
    run_assets(defs, "items,users")
    run_assets(defs, "raw_interactions,cleaned_interactions", partition_range=span)
    conn = duckdb.connect(settings.warehouse, read_only=True)
    loaded = [r[0] for r in conn.execute("SELECT DISTINCT event_date FROM raw_interactions ORDER BY 1").fetchall()]
    raw, clean, quarantined = (conn.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0]
                               for t in ("raw_interactions", "cleaned_interactions", "interactions_quarantine"))
    files = {r[0] for r in conn.execute("SELECT DISTINCT source_file FROM cleaned_interactions").fetchall()}
    conn.close()
    source = dataset.raw_interactions()
    assert loaded == [days[0], days[2]]
    assert raw == int(source["event_date"].isin([days[0], days[2]]).sum()) == clean + quarantined
    assert files == {f"landing/{d}/interactions.csv" for d in (days[0], days[2])}


def test_landing_sensor_requests_each_new_day_once(tmp_path, synthetic_folder):
    settings, defs = _defs(tmp_path, synthetic_folder, source="landing")
    sensor = defs.resolve_sensor_def("landing_sensor")
    dataset = open_dataset(str(synthetic_folder))
    days = landing.next_days(dataset, settings.landing, 3)
    for day in days[:2]:
        landing.land_day(dataset, settings.landing, day)
    old = time.time() - 60  # settled files
    for p in (tmp_path / "home" / "landing").rglob("*.csv"):
        os.utime(p, (old, old))

    result = sensor.evaluate_tick(dg.build_sensor_context(cursor=None, definitions=defs))
    assert [r.partition_key for r in result.run_requests] == [d.isoformat() for d in days[:2]]
    assert len({r.run_key for r in result.run_requests}) == 2
    assert all(r.job_name in (None, "ingest_interactions") for r in result.run_requests)
    cursor = result.cursor

    again = sensor.evaluate_tick(dg.build_sensor_context(cursor=cursor, definitions=defs))
    assert not again.run_requests and again.skip_message  # restart with the stored cursor: nothing new

    landing.land_day(dataset, settings.landing, days[2])
    fresh = sensor.evaluate_tick(dg.build_sensor_context(cursor=cursor, definitions=defs))
    assert not fresh.run_requests  # still being written (not settled)
    path = next((tmp_path / "home" / "landing" / days[2].isoformat()).iterdir())
    os.utime(path, (old, old))
    third = sensor.evaluate_tick(dg.build_sensor_context(cursor=cursor, definitions=defs))
    assert [r.partition_key for r in third.run_requests] == [days[2].isoformat()]

    # a corrected file for an already-ingested day triggers a new run with a new run key
    changed = tmp_path / "home" / "landing" / days[0].isoformat() / "interactions.csv"
    changed.write_bytes(changed.read_bytes() + b"u1,i1,1704067200,3\n")
    os.utime(changed, (old + 1, old + 1))
    fix = sensor.evaluate_tick(dg.build_sensor_context(cursor=third.cursor, definitions=defs))
    assert [r.partition_key for r in fix.run_requests] == [days[0].isoformat()]
    assert fix.run_requests[0].run_key not in {r.run_key for r in result.run_requests}


def test_landing_sensor_skips_with_the_dataset_source(tmp_path, synthetic_folder):
    _, defs = _defs(tmp_path, synthetic_folder)
    result = defs.resolve_sensor_def("landing_sensor").evaluate_tick(dg.build_sensor_context(definitions=defs))
    assert not result.run_requests and "RECSYS_SOURCE" in result.skip_message


def test_refresh_target_previous_day_and_replay_clock():
    first, last = dt.date(1997, 9, 20), dt.date(1998, 4, 22)
    assert refresh_target(dt.date(1998, 1, 2), first, last, False, None)[0] == dt.date(1998, 1, 1)
    assert refresh_target(dt.date(2026, 11, 28), first, last, True, dt.date(1997, 9, 22))[0] == dt.date(1997, 9, 22)
    day, why = refresh_target(dt.date(2026, 11, 28), first, last, False, None)
    assert day is None and "partitions end on 1998-04-22" in why
    assert refresh_target(dt.date(1997, 9, 20), first, last, False, None)[0] is None


def test_daily_refresh_schedule(tmp_path, synthetic_folder):
    settings, defs = _defs(tmp_path, synthetic_folder, source="landing", timezone="America/New_York")
    schedule = defs.resolve_schedule_def("daily_refresh_schedule")
    assert schedule.execution_timezone == "America/New_York" and schedule.job_name == "daily_refresh"
    dataset = open_dataset(str(synthetic_folder))
    days = landing.next_days(dataset, settings.landing, 2)
    with dg.instance_for_test() as instance:
        tick = dt.datetime(2030, 5, 1, 3, tzinfo=dt.timezone.utc)
        empty = schedule.evaluate_tick(dg.build_schedule_context(instance, scheduled_execution_time=tick, repository_def=defs.get_repository_def()))
        assert not empty.run_requests and "partitions end" in empty.skip_message
        for day in days:
            landing.land_day(dataset, settings.landing, day)
        result = schedule.evaluate_tick(dg.build_schedule_context(instance, scheduled_execution_time=tick, repository_def=defs.get_repository_def()))
        (request,) = result.run_requests
        assert request.partition_key == days[1].isoformat() and request.run_key == f"daily_refresh:{days[1]}"
        assert "replay" in request.tags["recsys/refresh_reason"]
        # a day already refreshed is not launched again
        instance.add_run(dg.DagsterRun(job_name="daily_refresh", run_id="r1", status=dg.DagsterRunStatus.SUCCESS,
                                       tags={"dagster/partition": days[1].isoformat(), "recsys/refresh_day": days[1].isoformat()}))
        again = schedule.evaluate_tick(dg.build_schedule_context(instance, scheduled_execution_time=tick, repository_def=defs.get_repository_def()))
        assert not again.run_requests and "already refreshed" in again.skip_message


def test_daily_refresh_schedule_targets_the_previous_local_day(tmp_path, synthetic_folder):
    _, defs = _defs(tmp_path, synthetic_folder, partitions_end="open", timezone="Asia/Tokyo")
    schedule = defs.resolve_schedule_def("daily_refresh_schedule")
    with dg.instance_for_test() as instance:
        # 2025-03-09 20:00 UTC is 2025-03-10 05:00 in Tokyo: the previous local day is 2025-03-09
        tick = dt.datetime(2025, 3, 9, 20, tzinfo=dt.timezone.utc)
        (request,) = schedule.evaluate_tick(dg.build_schedule_context(instance, scheduled_execution_time=tick, repository_def=defs.get_repository_def())).run_requests
        assert request.partition_key == "2025-03-09"


def test_jobs_are_selected_by_group(tmp_path, synthetic_folder):
    from recsys_dagster.defs.jobs import DAILY_REFRESH_CONFIG

    _, defs = _defs(tmp_path, synthetic_folder)
    graph = defs.resolve_asset_graph()
    every = {k.to_user_string() for k in graph.get_all_asset_keys() if graph.get(k).group_name != "tuning"}
    tuning = {k.to_user_string() for k in graph.get_all_asset_keys()} - every
    assert tuning == {"model_hyperparameters"}  # slow: its own job and weekly schedule, not the refreshes
    assert {k.to_user_string() for k in
            defs.resolve_job_def("tune_hyperparameters").asset_layer.selected_asset_keys} == tuning
    ingestion = {k.to_user_string() for k in graph.get_all_asset_keys() if graph.get(k).group_name == "ingestion"}
    assert {k.to_user_string() for k in defs.resolve_job_def("full_rebuild").asset_layer.selected_asset_keys} == every
    assert {k.to_user_string() for k in defs.resolve_job_def("daily_refresh").asset_layer.selected_asset_keys} == every
    assert {k.to_user_string() for k in
            defs.resolve_job_def("ingest_interactions").asset_layer.selected_asset_keys} == ingestion
    assert DAILY_REFRESH_CONFIG["ops"]["gnn_model"]["config"]["warm_start"] is True
    # the refresh's gate needs the tuned MF-BPR of the same run
    assert "mf" in DAILY_REFRESH_CONFIG["ops"]["evaluation_metrics"]["config"]["trained_baselines"]
    # training consumes every interaction partition (explicit AllPartitionMapping)
    dep = graph.get(dg.AssetKey("gnn_model"))
    assert isinstance(graph.get_partition_mapping(dep.key, dg.AssetKey("cleaned_interactions")), dg.AllPartitionMapping)


def test_run_failure_sensor_writes_a_one_line_summary(tmp_path):
    from recsys_dagster.defs.sensors import build_failure_sensor

    @dg.asset
    def broken():
        raise ValueError("interactions.csv: line 7: rating 'abc' is not a number")

    job = dg.define_asset_job("broken_job", [broken]).resolve(asset_graph=dg.Definitions(assets=[broken]).resolve_asset_graph())
    sensor = build_failure_sensor(str(tmp_path))
    with dg.instance_for_test() as instance:
        result = job.execute_in_process(instance=instance, raise_on_error=False)
        failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.RUN_FAILURE)
        context = dg.build_run_status_sensor_context(
            sensor_name="run_failure_summary", dagster_instance=instance, dagster_run=result.dagster_run,
            dagster_event=failure).for_run_failure()
        sensor(context)
    (line,) = (tmp_path / "ops" / "run_failures.jsonl").read_text().splitlines()
    summary = json.loads(line)
    assert summary["job"] == "broken_job" and summary["failed_steps"] == ["broken"]
    assert summary["error"] == "ValueError: interactions.csv: line 7: rating 'abc' is not a number"


@requires_ml100k
def test_replay_movielens_day_matches_the_source(tmp_path):
    from conftest import DATA_DIR

    dataset = open_dataset("movielens-100k", mirror_dir=str(DATA_DIR))
    rows = landing.replay_days(dataset)
    assert sum(len(v) for v in rows.values()) == 100_000
    path = landing.land_day(dataset, tmp_path, dt.date(1997, 10, 1), rows)
    assert path.name == "u.data" and len(path.read_bytes().splitlines()) == len(rows[dt.date(1997, 10, 1)]) == 975


pytestmark = pytest.mark.filterwarnings("ignore::dagster.BetaWarning")


def test_weekly_and_monthly_partitions_cover_the_span():
    from recsys_dagster.core.datasets.base import Span
    from recsys_dagster.defs.partitions import (
        event_partitions,
        partition_day_range,
        partition_key_of_day,
    )

    span = Span(dt.date(1996, 3, 29), dt.date(2018, 9, 24))
    months = event_partitions(span, grain="month")
    assert months.get_first_partition_key() == "1996-03-01" and months.get_last_partition_key() == "2018-09-01"
    assert len(months.get_partition_keys()) == 271  # instead of 8,215 days
    weeks = event_partitions(span, grain="week")
    first, last = (partition_day_range(weeks, k) for k in (weeks.get_first_partition_key(), weeks.get_last_partition_key()))
    assert first[0] <= span.start <= first[1] and last[0] <= span.end <= last[1] and first[0].weekday() == 0
    assert partition_key_of_day(months, dt.date(2018, 9, 24)) == "2018-09-01"


def test_monthly_grain_ingests_and_senses_by_month(tmp_path, synthetic_folder):
    from conftest import run_assets

    settings, defs = _defs(tmp_path, synthetic_folder, source="landing", partition_grain="month")
    dataset = open_dataset(str(synthetic_folder))
    days = landing.next_days(dataset, settings.landing, 3)
    for day in days:
        landing.land_day(dataset, settings.landing, day)
    old = time.time() - 60
    for p in (tmp_path / "home" / "landing").rglob("*.csv"):
        os.utime(p, (old, old))
    result = defs.resolve_sensor_def("landing_sensor").evaluate_tick(dg.build_sensor_context(definitions=defs))
    assert [r.partition_key for r in result.run_requests] == ["2024-01-01"]  # three days, one month
    run_assets(defs, "items,users")
    run_assets(defs, "raw_interactions,cleaned_interactions", partition="2024-01-01")
    conn = duckdb.connect(settings.warehouse, read_only=True)
    loaded = [r[0] for r in conn.execute("SELECT DISTINCT event_date FROM raw_interactions ORDER BY 1").fetchall()]
    conn.close()
    assert loaded == days
