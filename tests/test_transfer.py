"""Cross-domain transfer: towers and relations move between datasets, ids never do; the
zero-shot mode trains nothing; the lineage check knows the source; the protocol's splits."""

from dataclasses import replace

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import torch

from recsys_dagster.core.datasets.synthetic import BOOK_TOPICS
from recsys_dagster.core.model_store import ModelStore, leaked_pairs
from recsys_dagster.core.train import TrainConfig
from recsys_dagster.core.transfer import (
    TransferError,
    encoder_family,
    plan_transfer,
    resolve_source,
    transfer_config,
)
from tests.conftest import TINY_TRAIN, run_assets, synthetic_warehouse

SMALL = dict(n_users=70, n_items=48, n_interactions=1800, days=5)


def _train(defs, **config):
    return run_assets(defs, "gnn_model", run_config={"ops": {"gnn_model": {"config": {**TINY_TRAIN, **config}}}})


@pytest.fixture(scope="module")
def domains(tmp_path_factory):
    """Films (published model) and books (another vocabulary, other users and items)."""
    films_tmp, books_tmp = tmp_path_factory.mktemp("films"), tmp_path_factory.mktemp("books")
    films, films_defs = synthetic_warehouse(films_tmp, "2024-01-05", seed=3, **SMALL)
    _train(films_defs)
    films_store = ModelStore(films.models_dir)
    films_store.record_gate(films_store.latest().version, True, {"fused_ndcg@10": 0.5})
    books, books_defs = synthetic_warehouse(books_tmp, "2024-01-05", seed=11, topics=BOOK_TOPICS,
                                            **{**SMALL, "n_users": 55})
    return films, films_store, books, books_defs


def _payload(mv):
    return torch.load(mv.weights, map_location="cpu", weights_only=True)


def test_zero_shot_loads_towers_across_datasets(domains):
    films, films_store, books, books_defs = domains
    source = films_store.published()
    _train(books_defs, transfer_from=str(films_store.root), transfer_mode="zero_shot", embedding_dim=32)
    store = ModelStore(books.models_dir)
    mv = store.latest()
    src, new = _payload(source), _payload(mv)
    # the source's architecture is adopted (embedding_dim 16, not the 32 asked for)
    assert mv.manifest["config"]["embedding_dim"] == source.manifest["config"]["embedding_dim"] == 16
    assert mv.manifest["config"]["max_epochs"] == 0 and mv.manifest["metrics"]["best_epoch"] == -1
    rec = mv.manifest["transfer_from"]
    assert rec["version"] == source.version and rec["mode"] == "zero_shot"
    assert rec["dataset"] == films.dataset and mv.manifest["dataset"] == books.dataset
    for name in ("text_proj.weight", "behav_proj.weight"):
        assert torch.equal(new["state_dict"][name], src["state_dict"][name])
    # ids of another dataset never transfer: every id row starts (and, untrained, stays) at zero
    assert new["state_dict"]["embedding.weight"].abs().sum() == 0
    assert set(new["ids"]["item"]) & set(src["ids"]["item"])  # same id strings, other items: still not copied
    shared = [r for r in new["relations"] if r in src["relations"]]
    assert shared, "both synthetic KGs name their relations alike"
    for r in shared:
        i, j = new["relations"].index(r), src["relations"].index(r)
        assert torch.equal(new["state_dict"]["rel_W"][i], src["state_dict"]["rel_W"][j])
    # zero-shot scores are real: the towers rank the books' test items better than chance
    assert mv.manifest["metrics"]["test"]["ndcg@10"] > 0.05
    # the leak check knows the source, and that it is another dataset (another id space)
    test_pairs = pd.read_parquet(store.get(mv.version).path / "train_pairs.parquet")
    report = leaked_pairs(store, mv.version, test_pairs.head(50))
    assert report[mv.version] == 50  # own training pairs are found (the check is live)
    assert any("other dataset" in k and v == 0 for k, v in report.items())


def test_finetune_trains_from_the_towers(domains):
    films, films_store, books, books_defs = domains
    source = films_store.published()
    _train(books_defs, transfer_from=str(source.path), transfer_mode="finetune", max_epochs=4)
    mv = ModelStore(books.models_dir).latest()
    new, src = _payload(mv), _payload(source)
    assert mv.manifest["transfer_from"]["mode"] == "finetune" and mv.parent is None
    assert mv.manifest["metrics"]["best_epoch"] >= -1
    if mv.manifest["metrics"]["best_epoch"] >= 0:  # a trained epoch won on validation: weights moved
        assert not torch.equal(new["state_dict"]["text_proj.weight"], src["state_dict"]["text_proj.weight"])
    assert new["state_dict"]["text_proj.weight"].shape == src["state_dict"]["text_proj.weight"].shape


def test_bad_sources_fail_in_one_line(domains, tmp_path):
    films, films_store, books, books_defs = domains
    for spec, message in ((str(tmp_path / "nowhere"), "no such model version folder"),
                          ("20990101T000000-kgtextgnn", "not found")):
        with pytest.raises(TransferError, match=message):
            resolve_source(spec, ModelStore(books.models_dir))
    result = run_assets(books_defs, "gnn_model", raise_on_error=False, run_config={"ops": {"gnn_model": {"config": {
        **TINY_TRAIN, "transfer_from": str(films_store.root), "warm_start": True}}}})
    assert not result.success
    failure = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE][0]
    assert "exclude each other" in failure.event_specific_data.error.message
    # another encoder is refused when the transfer is planned, before training or logging
    with pytest.raises(TransferError, match="encoded by all-MiniLM-L6-v2, the target's by other"):
        plan_transfer(str(films_store.root), "finetune", ModelStore(books.models_dir), TrainConfig(),
                      text_model="other|max_tokens=256")
    # an unpublished version (the books' own, never gated) does not transfer
    latest = ModelStore(books.models_dir).latest()
    with pytest.raises(TransferError, match="not passed the quality gate"):
        resolve_source(str(latest.path), ModelStore(books.models_dir))


def test_transfer_config_and_encoder_checks():
    cfg = TrainConfig(embedding_dim=64, loss="bpr", lr=3e-3)
    src = {"model": "kgtextgnn", "embedding_dim": 32, "num_layers": 3, "loss": "softmax", "temperature": 0.2,
           "kg_weight": 0.5, "use_text": True}
    out = transfer_config(cfg, src)
    assert (out.embedding_dim, out.num_layers, out.loss, out.lr) == (32, 3, "softmax", 3e-3)
    assert transfer_config(cfg, src, "zero_shot").max_epochs == 0
    for bad in ({**src, "model": "lightgcn"}, {**src, "use_text": False}):
        with pytest.raises(TransferError, match="only kgtextgnn with text"):
            transfer_config(cfg, bad)
    with pytest.raises(TransferError, match="choose finetune or zero_shot"):
        transfer_config(cfg, src, "frozen")
    assert encoder_family("all-MiniLM-L6-v2|max_tokens=256|int8") == encoder_family("all-MiniLM-L6-v2|max_tokens=128")


def test_encoder_mismatch_and_towers_shape(domains):
    import duckdb

    from recsys_dagster.core.models import build_model
    from recsys_dagster.core.training_data import data_for_split, make_split, read_tables
    from recsys_dagster.core.transfer import transfer_state

    films, films_store, books, _ = domains

    conn = duckdb.connect(books.warehouse, read_only=True)
    tables = read_tables(conn)
    conn.close()
    assert tables.text_model and tables.text_model.startswith("all-MiniLM-L6-v2")
    cfg = replace(TrainConfig(), embedding_dim=16)
    data = data_for_split(tables, make_split(tables, cfg), cfg)
    model = build_model("kgtextgnn", data, 16)
    payload = _payload(films_store.published())
    with pytest.raises(TransferError, match="encoded by other-encoder"):
        transfer_state(model, {**payload, "text_model": "other-encoder|max_tokens=256"}, data)
    report = transfer_state(model, payload, data)
    assert report.towers == ["text_proj", "behav_proj"] and report.relations
    wide = build_model("kgtextgnn", data, 24)
    with pytest.raises(TransferError, match="another embedding size"):
        transfer_state(wide, payload, data)


def test_protocol_splits_and_nested_subsamples(domains):
    import duckdb

    from recsys_dagster.core.training_data import read_tables
    from recsys_dagster.core.transfer_eval import protocol_splits, subsample

    _, _, books, _ = domains
    conn = duckdb.connect(books.warehouse, read_only=True)
    tables = read_tables(conn)
    conn.close()
    split, cold_test, cold = protocol_splits(tables, TrainConfig(), 0.2)
    assert len(cold) and not split.train["item_id"].isin(cold).any() and not split.valid["item_id"].isin(cold).any()
    assert cold_test["item_id"].isin(cold).all() and not split.test["item_id"].isin(cold).any()
    keys = [set(map(tuple, subsample(split, f, 7).train[["user_id", "item_id"]].to_numpy())) for f in (0.05, 0.25, 1.0)]
    assert keys[0] <= keys[1] <= keys[2] and len(keys[0]) < len(keys[1]) < len(keys[2])
    assert abs(len(keys[1]) / len(keys[2]) - 0.25) < 0.08
    small = subsample(split, 0.25, 7)
    assert small.test["user_id"].isin(set(small.train["user_id"])).all()
    assert np.isin(small.test.index, split.test.index).all()  # test pairs are a subset, never new ones


@pytest.mark.slow
def test_transfer_protocol_rows(domains):
    import duckdb

    from recsys_dagster.core.training_data import read_tables
    from recsys_dagster.core.transfer_eval import TransferProtocol, run_transfer_protocol

    films, films_store, books, _ = domains
    conn = duckdb.connect(books.warehouse, read_only=True)
    tables = read_tables(conn)
    conn.close()
    cfg = replace(TrainConfig(**TINY_TRAIN), max_epochs=3)
    rows = run_transfer_protocol(_payload(films_store.published()), tables, cfg,
                                 TransferProtocol(fractions=(0.25, 1.0), cold_item_share=0.2), log=lambda m: None)
    assert [(r["fraction"], r["arm"]) for r in rows] == [(f, a) for f in (0.25, 1.0)
                                                           for a in ("zero_shot", "transfer", "scratch")]
    for r in rows:
        assert 0.0 <= r["ndcg@10"] <= 1.0 and 0.0 <= r["cold_recall@20"] <= 1.0
        assert r["epochs"] == (0 if r["arm"] == "zero_shot" else 3)
    assert rows[0]["train_pairs"] < rows[3]["train_pairs"]


def test_forgetting_invalidates_versions_transferred_from_an_invalidated_source(domains):
    """Last in this module: it invalidates the films' published version."""
    from recsys_dagster.core.privacy.forget import invalidate_versions

    films, films_store, books, _ = domains
    store = ModelStore(books.models_dir)
    transferred = [mv.version for mv in store.versions() if mv.manifest.get("transfer_from")]
    assert transferred
    assert invalidate_versions(store, set(), None)[0] == []  # a valid source: nothing to withdraw
    films_store.invalidate(films_store.published().version, "trained on data of a forgotten user")
    withdrawn, _ = invalidate_versions(store, set(), None)
    assert sorted(mv.version for mv in withdrawn) == sorted(transferred)
    assert all("transferred from" in store.get(v).manifest["invalidated"]["reason"] for v in transferred)
    with pytest.raises(TransferError, match="no published version"):
        resolve_source(str(films_store.root), store)
