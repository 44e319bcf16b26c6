"""Leak-free grading through the assets: a new day arrives, gnn_model warm-starts from the
previous version, and the evaluation of the new version grades no pair that it or its
ancestor trained on; weights from another split or a leaking lineage are refused."""


import dagster as dg
import duckdb
import numpy as np
import pytest

from tests.conftest import run_assets, synthetic_warehouse

TINY = {"embedding_dim": 16, "batch_size": 256, "max_epochs": 6, "min_epochs": 1}
#: A warm start's budget, smaller than the evaluation's (6 epochs): the kept peer continues with it.
WARM = {"warm_start": True, "max_epochs": 3, "patience": 1}
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
    run_assets(defs, "gnn_model", run_config={"ops": {"gnn_model": {"config": {**TINY, **WARM}}}})
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
    assert meta["leak_check"].value == {first: 0, second.version: 0, f"{first}/mf": 0}


def test_the_trained_peer_is_kept_and_continued_like_the_graded_version(grown):
    """MF of the first evaluation trained from scratch with the evaluation's budget; the
    second evaluation's MF continued from it with the warm-started version's budget, on the
    same split, and neither trained on a graded pair."""
    import pandas as pd

    from recsys_dagster.core.train import TrainConfig
    from recsys_dagster.core.training_data import make_split, read_tables

    settings, _, store, first, _ = grown
    second = store.latest()
    before, after = store.get(first).peers["mf"], second.peers["mf"]
    assert before["parent"] is None and before["epochs_run"] == LENIENT["max_epochs"]
    assert after["parent"] == first and after["epochs_run"] <= WARM["max_epochs"]
    conn = duckdb.connect(settings.warehouse, read_only=True)
    tables = read_tables(conn)
    conn.close()
    split = make_split(tables, TrainConfig.from_dict(second.manifest["config"]))
    assert _pairs(pd.read_parquet(second.peer_pairs("mf"))) == _pairs(split.train)
    graded = _pairs(split.test) | _pairs(split.valid)
    for version in (first, second.version):
        assert not graded & _pairs(pd.read_parquet(store.get(version).peer_pairs("mf"))), version


@pytest.mark.parametrize("case", ["continued", "leaked", "other settings", "disabled", "no parent"])
def test_a_kept_peer_is_continued_only_when_its_lineage_is_clean_and_its_settings_match(grown, tmp_path, case):
    import shutil
    from dataclasses import replace

    import pandas as pd
    import torch

    from recsys_dagster.core.model_evaluation import StoredPeers
    from recsys_dagster.core.model_store import ModelStore
    from recsys_dagster.core.train import TrainConfig
    from recsys_dagster.core.training_data import make_split, read_tables

    settings, _, store, first, _ = grown
    copy = ModelStore(tmp_path / "store")
    shutil.copytree(store.root, copy.root)
    second = [v for v in copy.versions() if v.parent == first][0]
    conn = duckdb.connect(settings.warehouse, read_only=True)
    tables = read_tables(conn)
    conn.close()
    split = make_split(tables, TrainConfig.from_dict(second.manifest["config"]))
    kept = copy.get(first)
    config = TrainConfig.from_dict(torch.load(kept.peer_weights("mf"), weights_only=True)["config"])
    if case == "leaked":  # the kept peer "trained" on three test pairs
        pairs = pd.concat([pd.read_parquet(kept.peer_pairs("mf")), split.test[["user_id", "item_id"]].head(3)])
        pairs.astype(str).to_parquet(kept.peer_pairs("mf"), index=False)
    elif case == "other settings":
        config = replace(config, lr=config.lr * 2)
    version = kept if case == "no parent" else second
    peers = StoredPeers(copy, version, enabled=case != "disabled")
    lines = []
    got, payload = peers.start("mf", config, split, lines.append)
    if case == "continued":
        assert payload is not None and peers.started == {"mf": first}
        assert got.max_epochs == WARM["max_epochs"] and got.patience == WARM["patience"]
        assert peers.leak_check == {f"{first}/mf": 0}
    else:
        assert payload is None and got == config and peers.started == {}
    if case == "leaked":
        assert peers.leak_check == {f"{first}/mf": 3} and "from scratch" in lines[-1]
    if case == "other settings":
        assert "other settings" in lines[-1]


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
