"""A generic folder without timestamps, exported today: its snapshot day is today, whose
partition has not ended. It must still exist, and the whole pipeline must run on it."""

import datetime as dt
import os
import subprocess
import sys

import pandas as pd
import pytest

from recsys_dagster.definitions import build_definitions
from recsys_dagster.defs.partitions import event_partitions
from tests.conftest import ROOT, make_settings, run_assets


def test_a_partition_that_has_not_ended_still_exists():
    from recsys_dagster.core.datasets.base import Span

    today = dt.datetime.now(dt.timezone.utc).date()
    for grain in ("day", "week", "month"):
        parts = event_partitions(Span(today - dt.timedelta(days=40), today), "span", grain)
        last = parts.time_window_for_partition_key(parts.get_last_partition_key())
        assert last.start.date() <= today < last.end.date(), grain
    # a span that ended long ago is unchanged: no extra period
    old = event_partitions(Span(dt.date(1998, 1, 1), dt.date(1998, 1, 31)), "span", "day")
    assert old.get_last_partition_key() == "1998-01-31"


def test_a_snapshot_written_today_goes_through_the_whole_pipeline(tmp_path):
    from recsys_dagster.core.datasets.synthetic import generate

    folder = generate(tmp_path / "snapshot", n_users=50, n_items=35, n_interactions=800, days=3, seed=2)
    frame = pd.read_csv(folder / "interactions.csv").drop(columns=["timestamp"])
    frame.to_csv(folder / "interactions.csv", index=False)  # mtime: now
    settings = make_settings(tmp_path, str(folder))
    env = {**os.environ, "RECSYS_DATASET": str(folder), "RECSYS_HOME": settings.home,
           "RECSYS_WAREHOUSE": settings.warehouse}
    span = subprocess.run([sys.executable, "-m", "recsys_dagster.cli", "span"], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=True).stdout.strip()
    today = dt.datetime.now(dt.timezone.utc).date().isoformat()
    assert span == f"{today}...{today}"
    defs = build_definitions(settings)
    run_assets(defs, "items,users")
    run_assets(defs, "raw_interactions,cleaned_interactions", partition_range=(today, today))
    run_assets(defs, "knowledge_graph,item_text_embeddings,user_behavior_embeddings")
    run_assets(defs, "gnn_model", run_config={"ops": {"gnn_model": {"config": {
        "embedding_dim": 16, "batch_size": 256, "max_epochs": 6, "min_epochs": 1}}}})
    result = run_assets(defs, "evaluation_metrics,fused_recommendations", run_config={"ops": {
        "evaluation_metrics": {"config": {"max_epochs": 6, "min_epochs": 1}}}})
    assert result.success
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks == {"fused_model_quality_gate": True, "recommendations_are_valid": True}
    recs = result.asset_materializations_for_node("fused_recommendations")[0].metadata
    assert recs["users"].value == frame.user_id.nunique()


@pytest.mark.slow
def test_make_demo_on_a_snapshot_written_today(tmp_path):
    """``make demo`` itself (full_rebuild over the partition range, then the summary) on a
    timestamp-less folder exported today, in its own Dagster instance."""
    from recsys_dagster.core.datasets.synthetic import generate

    folder = generate(tmp_path / "snapshot", n_users=40, n_items=30, n_interactions=600, days=3, seed=4)
    frame = pd.read_csv(folder / "interactions.csv").drop(columns=["timestamp"])
    frame.to_csv(folder / "interactions.csv", index=False)  # mtime: now
    (tmp_path / "dagster_home").mkdir()
    env = {**os.environ, "RECSYS_DATASET": str(folder), "RECSYS_HOME": str(tmp_path / "home"),
           "RECSYS_WAREHOUSE": str(tmp_path / "home" / "warehouse.duckdb"), "RECSYS_PARTITIONS_END": "span",
           "DAGSTER_HOME": str(tmp_path / "dagster_home")}
    done = subprocess.run(["make", "demo"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "fused_recommendations" in done.stdout and "(gate: passed)" in done.stdout
    counts = dict(line.split()[:2] for line in done.stdout.splitlines()
                  if line.split()[:1] and line.split()[0] in ("cleaned_interactions", "user_behavior_embeddings"))
    assert int(counts["cleaned_interactions"].replace(",", "")) == len(frame)
    assert int(counts["user_behavior_embeddings"].replace(",", "")) == frame.user_id.nunique()
