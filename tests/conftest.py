import os
from pathlib import Path

import dagster as dg
import pytest

from recsys_dagster.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("RECSYS_DATA_DIR") or ROOT.parent / "shared" / "data").resolve()
HAS_ML100K = (DATA_DIR / "ml-100k" / "u.data").is_file()
HAS_MLSMALL = (DATA_DIR / "ml-latest-small" / "ratings.csv").is_file()

#: In CI (CI=true) a test whose real data is missing fails instead of skipping: a green run
#: must mean the real-data tests ran.
IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
requires_ml100k = pytest.mark.real_data(HAS_ML100K, f"ML-100K mirror not found in {DATA_DIR} (set RECSYS_DATA_DIR)")
requires_mlsmall = pytest.mark.real_data(HAS_MLSMALL, f"ml-latest-small not found in {DATA_DIR} (set RECSYS_DATA_DIR)")


def pytest_runtest_setup(item):
    for mark in item.iter_markers("real_data"):
        present, reason = mark.args
        if not present:
            if IN_CI:
                pytest.fail(f"CI=true: {reason}", pytrace=False)
            pytest.skip(reason)


def make_settings(tmp_path: Path, dataset: str, **kw) -> Settings:
    home = tmp_path / "home"
    return Settings(
        dataset=dataset,
        data_dir=str(DATA_DIR),
        home=str(home),
        warehouse=str(home / "warehouse.duckdb"),
        verify_checksums=True,
        snapshot_date=kw.pop("snapshot_date", None),
        **kw,
    )


def run_assets(defs: dg.Definitions, selection: str, partition_range: tuple[str, str] | None = None,
               partition: str | None = None, raise_on_error: bool = True, run_config: dict | None = None):
    """Materialize ``selection`` in-process through the code location's implicit job."""
    job = defs.resolve_implicit_global_asset_job_def()
    tags = {}
    if partition_range:
        tags = {"dagster/asset_partition_range_start": partition_range[0],
                "dagster/asset_partition_range_end": partition_range[1]}
    return job.execute_in_process(
        asset_selection=list(dg.AssetSelection.from_coercible(selection.split(",")).resolve(defs.resolve_asset_graph())),
        partition_key=partition,
        tags=tags,
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=raise_on_error,
        run_config=run_config or {},
    )


@pytest.fixture
def synthetic_folder(tmp_path):
    from recsys_dagster.core.datasets.synthetic import generate

    return generate(tmp_path / "synthetic", n_users=60, n_items=40, n_interactions=900, days=5, seed=1)


def synthetic_tables(tmp: Path, folder: Path, last_day: str = "2024-01-05"):
    """The core's ``WarehouseTables`` of a synthetic folder ingested with its KG and item text."""
    import duckdb

    from recsys_dagster.core.training_data import read_tables
    from recsys_dagster.definitions import build_definitions

    settings = make_settings(tmp, str(folder))
    defs = build_definitions(settings)
    run_assets(defs, "items,users")
    run_assets(defs, "raw_interactions,cleaned_interactions", partition_range=("2024-01-01", last_day))
    run_assets(defs, "knowledge_graph,item_text_embeddings")
    conn = duckdb.connect(settings.warehouse, read_only=True)
    try:
        return read_tables(conn)
    finally:
        conn.close()


def synthetic_warehouse(tmp: Path, last_day: str, prepare=None, extra_assets: str = "", **generate_kw):
    """A synthetic generic dataset ingested from 2024-01-01 through ``last_day``, with its KG and
    item text embeddings (plus ``extra_assets``); ``prepare(folder)`` may edit the files first.
    Returns ``(settings, defs)``."""
    from recsys_dagster.core.datasets.synthetic import generate
    from recsys_dagster.definitions import build_definitions

    folder = generate(tmp / "synthetic", **generate_kw)
    if prepare is not None:
        prepare(folder)
    settings = make_settings(tmp, str(folder))
    defs = build_definitions(settings)
    run_assets(defs, "items,users")
    run_assets(defs, "raw_interactions,cleaned_interactions", partition_range=("2024-01-01", last_day))
    run_assets(defs, ",".join(a for a in ("knowledge_graph,item_text_embeddings", extra_assets) if a))
    return settings, defs


#: Small training / evaluation budgets for the end-to-end synthetic pipeline.
TINY_TRAIN = {"embedding_dim": 16, "batch_size": 256, "max_epochs": 8, "min_epochs": 1}
BUDGET = {"max_epochs": 8, "min_epochs": 1}  # epoch budget of the models trained inside the evaluation


def synthetic_pipeline(tmp: Path, protocols=("A", "A_recbole", "B", "cold_item"), ablations: bool = True,
                       extra_assets: str = ""):
    """A synthetic dataset (plus one cold item described like the "space" items) through the
    whole pipeline: ingestion, KG, embeddings, gnn_model, evaluation (gate), fused
    recommendations (+ ``extra_assets``). Returns ``(settings, defs, result)``."""
    import pandas as pd

    def add_cold_item(folder):
        items = pd.read_csv(folder / "items.csv")
        cold = pd.DataFrame({"item_id": ["i_new"], "title": ["Starship Odyssey"], "year": [2024], "studio": ["studio1"],
                             "genres": ["space"], "description": [items.loc[items.genres == "space", "description"].iloc[0]]})
        pd.concat([items, cold]).to_csv(folder / "items.csv", index=False)

    settings, defs = synthetic_warehouse(tmp, "2024-01-06", add_cold_item, "user_behavior_embeddings", n_users=90,
                                         n_items=60, n_interactions=2500, days=6, seed=5)
    run_assets(defs, "gnn_model", run_config={"ops": {"gnn_model": {"config": TINY_TRAIN}}})
    selection = ",".join(a for a in ("evaluation_metrics,fused_recommendations", extra_assets) if a)
    result = run_assets(defs, selection, run_config={"ops": {"evaluation_metrics": {"config": {
        "protocols": list(protocols), "ablations": ablations, **BUDGET}}}})
    return settings, defs, result


def query(settings, sql: str, params=()):
    """Rows of ``sql`` on the settings' warehouse (read-only) as a DataFrame."""
    import duckdb

    conn = duckdb.connect(settings.warehouse, read_only=True)
    try:
        return conn.execute(sql, list(params)).df()
    finally:
        conn.close()
