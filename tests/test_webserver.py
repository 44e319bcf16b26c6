"""The real UI server: `dagster dev` on a free loopback port, queried and driven over GraphQL."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import duckdb
import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.webserver


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gql(url: str, query: str, variables: dict | None = None) -> dict:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    req = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    return json.loads(urllib.request.urlopen(req, timeout=60).read())


def test_dev_server_lists_assets_and_runs_a_backfill(tmp_path, synthetic_folder):
    home = tmp_path / "dagster_home"
    home.mkdir()
    config = (ROOT / "dagster.yaml").read_text().replace("data/dagster", str(home / "storage"))
    (home / "dagster.yaml").write_text(config)
    warehouse = tmp_path / "wh.duckdb"
    env = {**os.environ, "DAGSTER_HOME": str(home), "RECSYS_DATASET": str(synthetic_folder),
           "RECSYS_WAREHOUSE": str(warehouse), "RECSYS_HOME": str(tmp_path / "rhome")}
    port = _free_port()
    url = f"http://127.0.0.1:{port}/graphql"
    proc = subprocess.Popen(
        [sys.executable, "-m", "dagster", "dev", "-w", str(ROOT / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 180
        nodes = None
        while time.time() < deadline:
            try:
                nodes = _gql(url, "{ assetNodes { assetKey { path } groupName } }")["data"]["assetNodes"]
                if nodes:
                    break
            except Exception:
                time.sleep(1)
        assert nodes, "the webserver did not come up"
        groups = {n["assetKey"]["path"][0]: n["groupName"] for n in nodes}
        assert groups["cleaned_interactions"] == "ingestion" and groups["gnn_model"] == "training"
        assert groups["fused_recommendations"] == "recommendations" and len(groups) == 10

        days = ["2024-01-01", "2024-01-02", "2024-01-03"]
        launched = _gql(url, """mutation($p: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $p) {
            __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } } }""",
                        {"p": {"partitionNames": days, "fromFailure": False,
                               "assetSelection": [{"path": ["raw_interactions"]}, {"path": ["cleaned_interactions"]}]}})
        backfill = launched["data"]["launchPartitionBackfill"]
        assert backfill["__typename"] == "LaunchBackfillSuccess", backfill
        status = None
        while time.time() < deadline + 240:
            status = _gql(url, "query($id: String!) { partitionBackfillOrError(backfillId: $id) { ... on PartitionBackfill { status } } }",
                          {"id": backfill["backfillId"]})["data"]["partitionBackfillOrError"]["status"]
            if status.startswith("COMPLETED") or status in ("FAILED", "CANCELED"):
                break
            time.sleep(2)
        assert status == "COMPLETED_SUCCESS"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    conn = duckdb.connect(str(warehouse), read_only=True)
    days_loaded = [str(r[0]) for r in conn.execute("SELECT DISTINCT event_date FROM raw_interactions ORDER BY 1").fetchall()]
    conn.close()
    assert days_loaded == days
