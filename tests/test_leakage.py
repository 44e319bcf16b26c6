"""Leak-free grading through the assets: a new day arrives, gnn_model warm-starts from the
previous version, and the evaluation of the new version grades no pair that it or its
ancestor trained on; weights from another split or a leaking lineage are refused."""


import dagster as dg
import duckdb
import numpy as np
import pytest

from tests.conftest import run_assets, synthetic_warehouse

TINY = {"embedding_dim": 16, "batch_size": 256, "max_epochs": 6, "min_epochs": 1}
LENIENT = {"protocols": ["A"], "trained_baselines": ["mf"], "required_peers": ["pop"], "min_ndcg": 0.0,
           "max_epochs": 6, "min_epochs": 1}


@pytest.fixture(scope="module")
def grown(tmp_path_factory):
    from recsys_dagster.core.model_store import ModelStore

    settings, defs = synthetic_warehouse(tmp_path_factory.mktemp("leak"), "2024-01-05", n_users=70, n_items=45,
                                         n_interactions=1800, days=6, seed=11)
    run_assets(defs, "gnn_model", run_config={"ops": {"gnn_model": {"config": TINY}}})
    run_assets(defs, "evaluation_metrics", run_config={"ops": {"evaluation_metrics": {"config": LENIENT}}})
    store = ModelStore(settings.models_dir)
    first = store.latest().version
    run_assets(defs, "raw_interactions,cleaned_interactions", partition="2024-01-06")  # a new day
    run_assets(defs, "gnn_model", run_config={"ops": {"gnn_model": {"config": {**TINY, "warm_start": True}}}})
    result = run_assets(defs, "evaluation_metrics", run_config={"ops": {"evaluation_metrics": {"config": LENIENT}}})
    return settings, defs, store, first, result


def _pairs(frame):
    return set(zip(frame.user_id.astype(str), frame.item_id.astype(str), strict=True))


def test_new_test_pairs_were_never_trained_on_by_the_model_or_its_ancestors(grown):
    from recsys_dagster.core.train import TrainConfig
    from recsys_dagster.core.training_data import make_split, read_tables

    settings, _, store, first, result = grown
    second = store.latest()
    assert second.parent == first and second.version != first
    conn = duckdb.connect(settings.warehouse, read_only=True)
    tables = read_tables(conn)
    conn.close()
    assert str(tables.interactions.ts.max())[:10] == "2024-01-06"
    split = make_split(tables, TrainConfig.from_dict(second.manifest["config"]))
    graded = _pairs(split.test) | _pairs(split.valid)
    assert len(split.test) > 50
    for version in (first, second.version):
        assert not graded & _pairs(store.train_pairs(version)), version
    # the training pairs of the new version are exactly the split's train part
    assert _pairs(store.train_pairs(second.version)) == _pairs(split.train)
    meta = result.asset_materializations_for_node("evaluation_metrics")[0].metadata
    assert meta["leak_check"].value == {first: 0, second.version: 0}


def test_user_text_comes_from_training_interactions_only(grown):
    from recsys_dagster.core.train import TrainConfig
    from recsys_dagster.core.training_data import data_for_split, make_split, read_tables
    from recsys_dagster.core.user_profiles import pooled_user_embeddings

    settings, _, store, _, _ = grown
    conn = duckdb.connect(settings.warehouse, read_only=True)
    tables = read_tables(conn)
    conn.close()
    cfg = TrainConfig.from_dict(store.latest().manifest["config"])
    split = make_split(tables, cfg)
    data = data_for_split(tables, split, cfg)
    users, pooled, _ = pooled_user_embeddings(split.train, data.item_ids, data.item_text)
    pos = {u: n for n, u in enumerate(data.user_ids)}
    assert np.allclose(data.user_text[[pos[u] for u in users]], pooled, atol=1e-6)
    everything = pooled_user_embeddings(split.train._append(split.test), data.item_ids, data.item_text)[1]
    assert not np.allclose(pooled, everything[: len(pooled)], atol=1e-3)  # test pairs would have changed them


def test_weights_from_another_split_are_refused(grown):
    settings, defs, store, _, _ = grown
    run_assets(defs, "gnn_model", run_config={"ops": {"gnn_model": {"config": {**TINY, "split_seed": 99}}}})
    result = run_assets(defs, "evaluation_metrics", raise_on_error=False,
                        run_config={"ops": {"evaluation_metrics": {"config": LENIENT}}})
    assert not result.success
    failure = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE][0]
    message = failure.step_failure_data.error.message
    assert "trained on split" in message and store.latest().version in message and "\n" not in message.strip()


def test_a_lineage_that_trained_on_graded_pairs_is_refused(grown, tmp_path):
    import shutil

    import pandas as pd

    from recsys_dagster.core.evaluation import EvalConfig
    from recsys_dagster.core.model_evaluation import EvaluationRefused, evaluate_version
    from recsys_dagster.core.model_store import ModelStore
    from recsys_dagster.core.splits import SplitSpec
    from recsys_dagster.core.train import TrainConfig
    from recsys_dagster.core.training_data import make_split, read_tables

    settings, _, store, first, _ = grown
    copy = ModelStore(tmp_path / "store")
    shutil.copytree(store.root, copy.root)
    conn = duckdb.connect(settings.warehouse, read_only=True)
    tables = read_tables(conn)
    conn.close()
    second = [v for v in copy.versions() if v.parent == first][0]
    split = make_split(tables, TrainConfig.from_dict(second.manifest["config"]))
    # the ancestor "trained" on five test pairs: the grade must be refused
    leaked = pd.concat([copy.train_pairs(first), split.test[["user_id", "item_id"]].head(5)])
    leaked.astype(str).to_parquet(copy.get(first).path / "train_pairs.parquet", index=False)
    with pytest.raises(EvaluationRefused, match=f"5 of the .* training pairs of model version {first}"):
        evaluate_version(copy, second.version, tables, EvalConfig(protocols=("A",), trained_baselines=()),
                         SplitSpec("hash", 2020))
