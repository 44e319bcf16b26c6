"""Reliability under concurrency and re-runs, determinism, and safety."""

import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import duckdb
import pandas as pd
import pytest
from conftest import ROOT, make_settings, run_assets

from recsys_dagster.core.datasets import open_dataset

TABLES = ["items", "users", "raw_interactions", "cleaned_interactions", "interactions_quarantine", "kg_entities",
          "kg_relations", "kg_triples", "kg_quarantine", "item_text_embeddings", "text_embedding_cache"]
VOLATILE = {"created_at", "updated_at", "encoded_at"}


def _exports(warehouse: str) -> dict[str, pd.DataFrame]:
    conn = duckdb.connect(warehouse, read_only=True)
    out = {}
    for t in TABLES:
        cols = [r[0] for r in conn.execute("SELECT column_name FROM information_schema.columns WHERE table_name = ? "
                                           "ORDER BY ordinal_position", [t]).fetchall()]
        keep = ", ".join(f'"{c}"' for c in cols if c not in VOLATILE)
        if keep:
            out[t] = conn.execute(f"SELECT {keep} FROM {t} ORDER BY ALL").df()
    conn.close()
    return out


@pytest.mark.slow  # subprocesses / a real webserver: `make test` only, not `make check`
def test_four_partition_runs_at_once_in_separate_processes(tmp_path, synthetic_folder):
    """Four `dagster asset materialize` processes (each with the multiprocess executor) write
    one warehouse at the same time: no lock error, every row exactly once."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text().replace("data/dagster", str(home / "s")))
    warehouse = tmp_path / "wh.duckdb"
    env = {**os.environ, "DAGSTER_HOME": str(home), "RECSYS_DATASET": str(synthetic_folder),
           "RECSYS_WAREHOUSE": str(warehouse), "RECSYS_HOME": str(tmp_path / "rhome")}
    base = [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "recsys_dagster.definitions"]
    subprocess.run([*base, "--select", "items,users"], cwd=ROOT, env=env, check=True, capture_output=True)
    days = ["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04"]

    def materialize(day):
        return subprocess.run([*base, "--select", "raw_interactions,cleaned_interactions", "--partition", day],
                              cwd=ROOT, env=env, capture_output=True, text=True)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(materialize, days))
    for day, r in zip(days, results, strict=True):
        assert r.returncode == 0, f"{day}: {r.stderr[-2000:]}"
        assert not re.search(r"Could not set lock|IO Error.*lock|database is locked", r.stdout + r.stderr), day
    source = open_dataset(str(synthetic_folder)).raw_interactions()
    expected = source[source["event_date"].astype(str).isin(days)].groupby("event_date").size()
    conn = duckdb.connect(str(warehouse), read_only=True)
    raw = dict(conn.execute("SELECT event_date, count(*) FROM raw_interactions GROUP BY 1").fetchall())
    dup = conn.execute("SELECT count(*) FROM (SELECT source_file, source_row FROM raw_interactions "
                       "GROUP BY ALL HAVING count(*) > 1)").fetchall()[0][0]
    clean, quarantined = (conn.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0]
                          for t in ("cleaned_interactions", "interactions_quarantine"))
    conn.close()
    assert {str(k): v for k, v in raw.items()} == {str(k): int(v) for k, v in expected.items()}
    assert dup == 0 and clean + quarantined == sum(raw.values())


def test_every_asset_rerun_leaves_byte_identical_tables(tmp_path, synthetic_folder):
    from recsys_dagster.definitions import build_definitions

    settings = make_settings(tmp_path, str(synthetic_folder))
    defs = build_definitions(settings)
    span = ("2024-01-01", "2024-01-05")
    steps = [("items,users", None, None), ("raw_interactions,cleaned_interactions", span, None),
             ("knowledge_graph,item_text_embeddings", None, None)]
    for selection, rng, part in steps:
        run_assets(defs, selection, partition_range=rng, partition=part)
    first = _exports(settings.warehouse)
    # again, in a different shape: single partitions, an overlapping range, then the rest
    run_assets(defs, "items,users")
    run_assets(defs, "raw_interactions,cleaned_interactions", partition="2024-01-02")
    run_assets(defs, "raw_interactions,cleaned_interactions", partition_range=("2024-01-02", "2024-01-04"))
    run_assets(defs, "knowledge_graph,item_text_embeddings")
    second = _exports(settings.warehouse)
    assert set(first) == set(second) and len(first) == len(TABLES)
    for table in first:
        pd.testing.assert_frame_equal(first[table], second[table], obj=table)


def test_same_seed_same_metrics_on_cpu(tmp_path, synthetic_folder):
    """Two evaluations (every model trained inside, all protocols) with the same seed agree exactly."""
    from recsys_dagster.core.evaluation import EvalConfig, evaluate_protocols
    from recsys_dagster.core.train import TrainConfig
    from tests.conftest import synthetic_tables

    tables = synthetic_tables(tmp_path, synthetic_folder)
    config = EvalConfig(train=TrainConfig(device="cpu", max_epochs=6, min_epochs=6, embedding_dim=16), ablations=True)
    runs = [evaluate_protocols(tables, config, log=lambda m: None).rows for _ in range(2)]
    assert len(runs[0]) > 50 and runs[0] == runs[1]


def test_protocols_in_worker_processes_give_the_rows_of_one_process(tmp_path, synthetic_folder):
    """cold_item and B in a worker process while A runs here: the same rows, in the same order, as
    one protocol after another at the same thread count; the caller's threads come back."""
    import torch

    from recsys_dagster.core.evaluation import EvalConfig, evaluate_protocols, protocol_processes
    from recsys_dagster.core.train import TrainConfig
    from tests.conftest import synthetic_tables

    tables = synthetic_tables(tmp_path, synthetic_folder)
    config = EvalConfig(train=TrainConfig(device="cpu", max_epochs=3, min_epochs=3, embedding_dim=16),
                        protocols=("A", "B", "cold_item"), explanation_users=5)
    threads = torch.get_num_threads()
    concurrent = evaluate_protocols(tables, replace(config, protocol_processes=2), log=lambda m: None)
    assert torch.get_num_threads() == threads
    torch.set_num_threads(1)  # what each of two processes gets from two threads, or one
    try:
        sequential = evaluate_protocols(tables, replace(config, protocol_processes=1), log=lambda m: None)
    finally:
        torch.set_num_threads(threads)
    assert {r[0] for r in concurrent.rows} == {"A", "B", "cold_item"}
    assert concurrent.rows == sequential.rows
    assert set(concurrent.seconds) == set(sequential.seconds)
    assert protocol_processes(replace(config, protocol_processes=1), 3) == 1
    assert protocol_processes(replace(config, protocol_processes=5), 2) == 2
    assert protocol_processes(config, 1) == 1
    with pytest.raises(ValueError, match="protocol_processes=-1"):
        EvalConfig(protocol_processes=-1)


def test_a_failed_protocol_worker_says_which_protocols_and_why(tmp_path, synthetic_folder):
    from recsys_dagster.core.evaluation import EvalConfig
    from recsys_dagster.core.protocol_worker import ProtocolWorkers
    from tests.conftest import synthetic_tables

    workers = ProtocolWorkers(["no_such_protocol"], synthetic_tables(tmp_path, synthetic_folder), EvalConfig(), 2)
    lines: list[str] = []
    try:
        with pytest.raises(RuntimeError, match=r"protocols \['no_such_protocol'\] exited with status 1: .*expected one of"):
            workers.result("no_such_protocol", lines.append)
    finally:
        workers.close()
    assert any("Traceback" in line for line in lines)


def test_weights_are_only_loaded_with_weights_only():
    offenders = []
    for path in (ROOT / "recsys_dagster").rglob("*.py"):
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            if "torch.load(" in line and "weights_only=True" not in line:
                offenders.append(f"{path.relative_to(ROOT)}:{lineno}")
    assert not offenders


def test_credentials_never_reach_metadata_or_links():
    from recsys_dagster.defs.mlflow_resource import MLflowResource, redact

    uri = "https://alice:s3cret@mlflow.example.com:8443/prefix"
    assert redact(uri) == "https://mlflow.example.com:8443/prefix"
    assert redact("sqlite:////tmp/mlflow.db") == "sqlite:////tmp/mlflow.db"

    class Run:
        class info:
            experiment_id, run_id = "1", "abc"

    assert "s3cret" not in MLflowResource(tracking_uri=uri).run_url(Run)


def test_tracking_uri_from_the_environment_is_an_env_var_in_the_ui(tmp_path, synthetic_folder, monkeypatch):
    import dagster as dg

    from recsys_dagster.definitions import build_definitions

    uri = "https://alice:s3cret@mlflow.example.com"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    settings = make_settings(tmp_path, str(synthetic_folder), mlflow_tracking_uri=uri)
    resource = build_definitions(settings).resources["mlflow_tracking"]
    assert isinstance(resource.tracking_uri, dg.EnvVar)  # shown by name, not value
    assert "s3cret" not in json.dumps(resource.model_dump(), default=str)
