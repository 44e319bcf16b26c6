"""The real UI server: `dagster dev` (webserver + daemon) on a free loopback port with a
temporary DAGSTER_HOME, queried and driven over GraphQL as the UI does."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.webserver
REPO = {"repositoryLocationName": "recsys_dagster", "repositoryName": "__repository__"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gql(url: str, query: str, variables: dict | None = None) -> dict:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    req = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    out = json.loads(urllib.request.urlopen(req, timeout=60).read())
    assert "errors" not in out, out["errors"]
    return out["data"]


@contextmanager
def dev_server(tmp_path: Path, env_extra: dict):
    home = tmp_path / "dagster_home"
    home.mkdir()
    config = (ROOT / "dagster.yaml").read_text().replace("data/dagster", str(home / "storage"))
    (home / "dagster.yaml").write_text(config)
    env = {**os.environ, "DAGSTER_HOME": str(home), "RECSYS_HOME": str(tmp_path / "rhome"), **env_extra}
    port = _free_port()
    url = f"http://127.0.0.1:{port}/graphql"
    log = (tmp_path / "dagster_dev.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "dagster", "dev", "-w", str(ROOT / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            try:
                if _gql(url, "{ assetNodes { id } }")["assetNodes"]:
                    break
            except Exception:
                time.sleep(1)
        else:
            pytest.fail(f"the webserver did not come up; log: {tmp_path / 'dagster_dev.log'}")
        yield url, env
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def _wait(fn, timeout: float, what: str):
    t0 = time.time()
    deadline = t0 + timeout
    while time.time() < deadline:
        value = fn()
        if value is not None:
            print(f"{what}: {time.time() - t0:.0f} s")
            return value
        time.sleep(2)
    pytest.fail(f"timed out waiting for {what}")


def _backfill(url: str, days: list[str]) -> str:
    launched = _gql(url, """mutation($p: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $p) {
        __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } } }""",
                    {"p": {"partitionNames": days, "fromFailure": False,
                           "assetSelection": [{"path": ["raw_interactions"]}, {"path": ["cleaned_interactions"]}]}})
    backfill = launched["launchPartitionBackfill"]
    assert backfill["__typename"] == "LaunchBackfillSuccess", backfill

    def status():
        s = _gql(url, "query($id: String!) { partitionBackfillOrError(backfillId: $id) { ... on PartitionBackfill { status } } }",
                 {"id": backfill["backfillId"]})["partitionBackfillOrError"]["status"]
        return s if s.startswith("COMPLETED") or s in ("FAILED", "CANCELED") else None

    return _wait(status, 300, "the backfill")


def _runs(url: str, job: str) -> list[dict]:
    return _gql(url, """query($f: RunsFilter) { runsOrError(filter: $f) { ... on Runs { results {
        runId status tags { key value } } } } }""", {"f": {"pipelineName": job}})["runsOrError"]["results"]


def _counts(warehouse: Path) -> dict:
    conn = duckdb.connect(str(warehouse), read_only=True)
    out = {t: conn.execute(f"SELECT event_date, count(*) FROM {t} GROUP BY 1 ORDER BY 1").fetchall()
           for t in ("raw_interactions", "cleaned_interactions", "interactions_quarantine")}
    conn.close()
    return out


@pytest.mark.slow  # subprocesses / a real webserver: `make test` only, not `make check`
def test_dev_server_graph_schedule_sensor_materialization_and_backfills(tmp_path):
    from recsys_dagster.core.datasets.synthetic import generate

    folder = generate(tmp_path / "synthetic", n_users=60, n_items=40, n_interactions=1200, days=10, seed=1)
    warehouse = tmp_path / "wh.duckdb"
    with dev_server(tmp_path, {"RECSYS_DATASET": str(folder), "RECSYS_WAREHOUSE": str(warehouse)}) as (url, _):
        nodes = _gql(url, "{ assetNodes { assetKey { path } groupName } }")["assetNodes"]
        groups = {n["assetKey"]["path"][0]: n["groupName"] for n in nodes}
        assert groups["cleaned_interactions"] == "ingestion" and groups["gnn_model"] == "training"
        assert groups["fused_recommendations"] == groups["serving_snapshot"] == "recommendations" and len(groups) == 12
        assert groups["model_hyperparameters"] == "tuning"
        schedules = _gql(url, """query($r: RepositorySelector!) { schedulesOrError(repositorySelector: $r) {
            ... on Schedules { results { name cronSchedule executionTimezone } } } }""", {"r": REPO})
        assert sorted(schedules["schedulesOrError"]["results"], key=lambda s: s["name"]) == [
            {"name": "daily_refresh_schedule", "cronSchedule": "0 3 * * *", "executionTimezone": "UTC"},
            {"name": "weekly_tuning_schedule", "cronSchedule": "0 4 * * 0", "executionTimezone": "UTC"}]
        sensors = _gql(url, """query($r: RepositorySelector!) { sensorsOrError(repositorySelector: $r) {
            ... on Sensors { results { name sensorState { status } } } } }""", {"r": REPO})
        states = {s["name"]: s["sensorState"]["status"] for s in sensors["sensorsOrError"]["results"]}
        assert states == {"landing_sensor": "STOPPED", "run_failure_summary": "RUNNING"}
        jobs = _gql(url, """query($r: RepositorySelector!) { repositoryOrError(repositorySelector: $r) {
            ... on Repository { jobs { name } } } }""", {"r": REPO})["repositoryOrError"]["jobs"]
        assert {"daily_refresh", "full_rebuild", "ingest_interactions"} <= {j["name"] for j in jobs}

        # a materialization launched like the UI's "Materialize" button
        run = _gql(url, """mutation($p: ExecutionParams!) { launchRun(executionParams: $p) { __typename
            ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } } }""",
                   {"p": {"selector": {**REPO, "jobName": "__ASSET_JOB",
                                       "assetSelection": [{"path": ["items"]}, {"path": ["users"]}]}}})["launchRun"]
        assert run["__typename"] == "LaunchRunSuccess", run

        def run_status():
            s = _gql(url, "query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }",
                     {"id": run["run"]["runId"]})["runOrError"]["status"]
            return s if s in ("SUCCESS", "FAILURE", "CANCELED") else None

        assert _wait(run_status, 240, "the materialization") == "SUCCESS"

        days = [f"2024-01-{d:02d}" for d in range(2, 9)]  # 7 daily partitions
        assert _backfill(url, days) == "COMPLETED_SUCCESS"
        first = _counts(warehouse)
        assert _backfill(url, days) == "COMPLETED_SUCCESS"  # again: nothing changes
        assert _counts(warehouse) == first
    assert [str(d) for d, _ in first["raw_interactions"]] == days
    raw = sum(n for _, n in first["raw_interactions"])
    assert raw == sum(n for _, n in first["cleaned_interactions"]) + sum(n for _, n in first["interactions_quarantine"])


@pytest.mark.slow  # subprocesses / a real webserver: `make test` only, not `make check`
def test_replayed_days_reach_the_warehouse_through_the_landing_sensor(tmp_path, synthetic_folder):
    warehouse = tmp_path / "wh.duckdb"
    extra = {"RECSYS_DATASET": str(synthetic_folder), "RECSYS_WAREHOUSE": str(warehouse), "RECSYS_SOURCE": "landing",
             "RECSYS_SENSOR_INTERVAL": "3"}
    with dev_server(tmp_path, extra) as (url, env):
        started = _gql(url, """mutation($s: SensorSelector!) { startSensor(sensorSelector: $s) { __typename
            ... on Sensor { sensorState { status } } ... on PythonError { message } } }""",
                       {"s": {**REPO, "sensorName": "landing_sensor"}})["startSensor"]
        assert started["__typename"] == "Sensor" and started["sensorState"]["status"] == "RUNNING", started
        out = subprocess.run([sys.executable, "-m", "recsys_dagster.cli", "replay", "--days", "3"], cwd=ROOT, env=env,
                             capture_output=True, text=True, check=True).stdout
        landed = [line.split(":")[0] for line in out.splitlines() if "landed" in line]
        assert len(landed) == 3

        def three_done():
            runs = _runs(url, "ingest_interactions")
            done = [r for r in runs if r["status"] in ("SUCCESS", "FAILURE", "CANCELED")]
            return runs if len(done) >= 3 else None

        runs = _wait(three_done, 300, "three sensor runs")
        assert sorted(r["status"] for r in runs) == ["SUCCESS"] * 3
        partitions = sorted(next(t["value"] for t in r["tags"] if t["key"] == "dagster/partition") for r in runs)
        assert partitions == landed
    counts = _counts(warehouse)
    assert [str(d) for d, _ in counts["raw_interactions"]] == landed
