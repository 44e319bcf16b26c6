"""Evaluation and fused recommendations end to end on synthetic data, plus cold start."""

from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
import torch

from tests.conftest import BUDGET, TINY_TRAIN, query, run_assets, synthetic_pipeline


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    return synthetic_pipeline(tmp_path_factory.mktemp("recs"), protocols=("A", "A_recbole", "B", "cold_item", "few_shot"))


def _store(settings):
    from recsys_dagster.core.model_store import ModelStore

    return ModelStore(settings.models_dir)


def test_evaluation_has_every_model_and_protocol(pipeline):
    settings, _, result = pipeline
    rows = query(settings, "SELECT * FROM evaluation_metrics")
    a = set(rows.loc[rows.protocol == "A", "model"])
    assert {"pop", "itemknn", "ease", "mf", "lightgcn", "text_knn", "kgtextgnn", "fused", "kgtextgnn_no_kg",
            "kgtextgnn_no_text"} <= a
    assert {"A", "A_recbole", "B", "cold_item"} <= set(rows.protocol)
    recbole = set(rows.loc[rows.protocol == "A_recbole", "model"])
    assert {"pop", "itemknn", "ease", "mf", "lightgcn", "kgtextgnn", "fused"} <= recbole
    # every row names its split and the hyperparameters the model ran with
    assert rows.split_fingerprint.str.startswith("hash-").all() and rows.run_id.nunique() == 1
    ease = rows[(rows.protocol == "A") & (rows.model == "ease")].params.iloc[0]
    assert "lam" in ease
    assert {"random", "attribute_knn", "kgtextgnn", "fused"} <= set(rows.loc[rows.protocol == "cold_item", "model"])
    few = set(rows.loc[rows.protocol == "few_shot", "model"])
    assert {"pop", "ease", "mf", "lightgcn", "kgtextgnn", "kgtextgnn_no_text", "fused", "fused_without_text",
            "fused_without_gnn", "fused_fold_in_weights", "fused_protocol_weights"} <= few
    # every row of the platform's own models counts as its own (never as a peer to beat)
    from recsys_dagster.core.evaluation import is_own

    assert all(is_own(m) for m in set(rows.model) if m.startswith(("fused", "kgtextgnn")))
    assert {"all", "cold_users", "warm_users"} <= set(rows.slice)
    assert {"coverage", "avg_popularity", "ndcg", "recall", "mrr", "hit", "precision"} <= set(rows.metric)
    ndcg = rows[(rows.metric == "ndcg") & (rows.slice == "all")].value
    assert ndcg.between(0, 1).all()
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks["fused_model_quality_gate"], _store(settings).latest().gate
    assert _store(settings).published().version == rows.model_version.iloc[0]


def test_evaluation_records_paired_comparisons_of_own_models_with_peers(pipeline):
    settings, _, result = pipeline
    rows = query(settings, "SELECT * FROM evaluation_metrics")
    comp = query(settings, "SELECT * FROM evaluation_comparisons")
    assert comp.run_id.unique().tolist() == rows.run_id.unique().tolist()
    assert {"A", "A_recbole", "B", "cold_item"} <= set(comp.protocol)  # the worker protocols' come back too
    a = comp[(comp.protocol == "A") & (comp.metric == "ndcg") & (comp.k == 10) & (comp.slice == "all")]
    from recsys_dagster.core.comparison import ATTRIBUTION
    from recsys_dagster.core.evaluation import is_own

    peers = {"pop", "itemknn", "ease", "mf", "lightgcn", "text_knn"}
    assert peers == {p for p in a[a.model == "fused"].peer if not is_own(p)}
    assert {"fused", "kgtextgnn", "kgtextgnn_no_kg"} <= set(a.model)
    # own models meet each other only as attribution pairs: the main model against its ablations
    own_pairs = {(r.model, r.peer) for r in a.itertuples() if is_own(r.peer)}
    assert {("kgtextgnn", "kgtextgnn_no_kg"), ("kgtextgnn", "kgtextgnn_no_text"), ("fused", "kgtextgnn")} <= own_pairs
    assert own_pairs <= set(ATTRIBUTION)
    value = rows[(rows.protocol == "A") & (rows.slice == "all") & (rows.metric == "ndcg") & (rows.k == 10)]
    value = dict(zip(value.model, value.value, strict=True))
    for r in a.itertuples():  # the paired means are the rows' means; the interval holds the difference
        assert (r.model_value, r.peer_value) == (pytest.approx(value[r.model]), pytest.approx(value[r.peer]))
        assert r.diff == pytest.approx(r.model_value - r.peer_value)
        assert r.ci_low <= r.diff <= r.ci_high and 0 <= r.p_value <= 1
    cold = comp[(comp.protocol == "cold_item") & (comp.metric == "recall") & (comp.k == 20)]
    assert {"random", "attribute_knn"} <= set(cold[cold.model == "fused"].peer)
    meta = result.asset_materializations_for_node("evaluation_metrics")[0].metadata
    assert "| ease | all |" in meta["paired_comparisons"].value
    gate = _store(settings).get(rows.model_version.iloc[0]).gate
    best = gate["best_peer"]
    assert gate["best_peer_paired"]["diff"] == pytest.approx(value["fused"] - value[best])


def test_recommendations_are_complete_unseen_and_explained(pipeline):
    settings, _, result = pipeline
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks["fused_model_quality_gate"] and checks["recommendations_are_valid"]
    recs = query(settings, "SELECT * FROM fused_recommendations")
    n_users = query(settings, "SELECT count(DISTINCT user_id) n FROM cleaned_interactions").n[0]
    assert len(recs) == 20 * n_users
    assert recs.groupby("user_id")["rank"].apply(lambda r: sorted(r) == list(range(1, 21))).all()
    seen = query(settings, "SELECT DISTINCT user_id, item_id FROM cleaned_interactions")
    assert recs.merge(seen, on=["user_id", "item_id"]).empty
    assert recs["reason"].str.len().gt(0).all()
    assert recs["reason"].str.contains(r"same |because you|because of|similar description").any()


def test_cold_item_with_matching_description_is_recommended(pipeline):
    from recsys_dagster.core.recommend import recommend_all

    settings, _, _ = pipeline
    scorer, data, ctx, positives = _production(settings, fusion_override={"alpha": 1.0, "beta": 1.0})
    assert "i_new" in set(data.item_ids) and "i_new" not in set(positives.item_id)
    recs = recommend_all(scorer, data, ctx, k=10)
    items = pd.read_csv(Path(settings.dataset) / "items.csv")
    space_fans = positives.merge(items[["item_id", "genres"]], on="item_id").groupby("user_id")["genres"].agg(
        lambda g: (g == "space").mean())
    fans = space_fans[space_fans > 0.7].index
    got = recs[recs.user_id.isin(fans) & (recs.item_id == "i_new")]
    assert len(got) >= 0.5 * len(fans), "a cold item described like the user's favourite items should be recommended"
    others = space_fans[space_fans < 0.1].index
    assert (recs[recs.user_id.isin(others)].item_id == "i_new").mean() < 0.2


def test_unknown_user_from_items_or_text(pipeline):
    from recsys_dagster.core.recommend import recommend_for_new_user
    from recsys_dagster.core.text import EncoderConfig, TextEncoder

    settings, _, _ = pipeline
    items = query(settings, "SELECT item_id, title, genres FROM items")
    scorer, data, ctx, _ = _production(settings)
    horror = items[items.genres.map(lambda g: "horror" in list(g))].item_id.tolist()
    by_items = recommend_for_new_user(scorer, data, ctx, item_ids=horror[:3], k=10)
    assert len(by_items) == 10 and not set(by_items.item_id) & set(horror[:3])
    genre = items.set_index("item_id").genres.map(lambda g: list(g)[0])
    assert (genre[by_items.item_id] == "horror").mean() >= 0.5
    enc = TextEncoder(EncoderConfig(device="cpu"))
    profile = enc.encode(["I love cooking shows about chefs and family recipes"])[0]
    by_text = recommend_for_new_user(scorer, data, ctx, profile_embedding=profile, k=10)
    assert (genre[by_text.item_id] == "cooking").mean() >= 0.5
    assert (by_text.reason == "matches your description").all()


def test_a_version_that_fails_the_gate_is_never_served(pipeline):
    """A newer version whose gate fails (floor set above any reachable NDCG) blocks the
    recommendations of its run, is not published, and a later recommendations run alone
    still serves the previously published version."""
    settings, defs, _ = pipeline
    store = _store(settings)
    served = store.require_published().version
    run_assets(defs, "gnn_model", run_config={"ops": {"gnn_model": {"config": TINY_TRAIN}}})
    failing = store.latest().version
    assert failing != served
    result = run_assets(defs, "evaluation_metrics,fused_recommendations", raise_on_error=False, run_config={"ops": {
        "evaluation_metrics": {"config": {"protocols": ["A"], "min_ndcg": 1.0, **BUDGET}}}})
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert not checks["fused_model_quality_gate"].passed
    assert "floor" in checks["fused_model_quality_gate"].metadata["failures"].value
    assert not result.asset_materializations_for_node("fused_recommendations")
    assert store.published().version == served and store.get(failing).gate["passed"] is False
    alone = run_assets(defs, "fused_recommendations").asset_materializations_for_node("fused_recommendations")[0]
    assert alone.metadata["model_version"].value == served
    recs = query(settings, "SELECT DISTINCT model_version FROM fused_recommendations")
    assert failing not in set(recs.model_version)


def _production(settings, **kwargs):
    """``(scorer, data, explainer, positives)`` of the published version."""
    from recsys_dagster.core.recommend import load_production_scorer, production_explainer
    from recsys_dagster.core.training_data import read_tables

    conn = duckdb.connect(settings.warehouse, read_only=True)
    tables = read_tables(conn)
    titles = conn.execute("SELECT item_id, title FROM items").df().set_index("item_id")["title"]
    conn.close()
    prod = load_production_scorer(tables, _store(settings).require_published(), **kwargs)
    return prod.scorer, prod.data, production_explainer(prod, tables, titles), prod.positives


def test_a_list_longer_than_the_unseen_catalogue_holds_only_unseen_items(pipeline):
    from recsys_dagster.core.recommend import recommend_all

    settings, _, _ = pipeline
    scorer, data, ctx, _ = _production(settings)
    recs = recommend_all(scorer, data, ctx, k=data.n_items)
    seen = np.diff(data.train_csr[0])
    per_user = recs.groupby("user_id").size().reindex(data.user_ids).fillna(0).to_numpy()
    np.testing.assert_array_equal(per_user, data.n_items - seen)
    assert np.isfinite(recs.score).all()
    assert recs.groupby("user_id")["rank"].apply(lambda r: sorted(r) == list(range(1, len(r) + 1))).all()


def test_serving_uses_the_stored_behaviour_vectors(pipeline):
    settings, _, result = pipeline
    meta = result.asset_materializations_for_node("fused_recommendations")[0].metadata
    assert meta["users_without_stored_behaviour_vector"].value == 0
    stored = query(settings, "SELECT user_id, embedding FROM user_behavior_embeddings ORDER BY user_id")
    assert set(stored.method if "method" in stored else ["pooled"]) == {"pooled"}
    ids = stored.user_id.to_numpy(dtype=object)
    matrix = np.stack(stored.embedding.map(np.asarray)).astype(np.float32)
    scorer, data, _, _ = _production(settings, user_vectors=(ids, matrix))
    row = {u: n for n, u in enumerate(data.user_ids)}
    np.testing.assert_allclose(scorer.user_text[row[ids[0]]].numpy(), matrix[0], atol=1e-6)
    # the stored vectors are the ones serving pools itself, so a changed table changes what is served
    moved = matrix.copy()
    moved[0] = -moved[0]
    scorer2, _, _, _ = _production(settings, user_vectors=(ids, moved))
    np.testing.assert_allclose(scorer2.user_text[row[ids[0]]].numpy(), -matrix[0], atol=1e-6)


def test_serving_refits_the_item_item_part_when_the_fusion_uses_it(pipeline):
    settings, _, _ = pipeline
    plain, data, _, _ = _production(settings, fusion_override={"gamma": 0.0})
    with_ii, _, _, _ = _production(settings, fusion_override={"gamma": 2.0, "ease_lam": 50.0})
    assert plain.item_item is None and with_ii.item_item is not None
    users = torch.arange(min(20, data.n_users))
    assert with_ii.weights.gamma == 2.0
    assert not torch.allclose(plain(users), with_ii(users))
    # the refit saw every positive: its scores for a user come from that user's whole history
    seen = data.train_csr
    u = 0
    hist = seen[1][seen[0][u]: seen[0][u + 1]]
    np.testing.assert_allclose(with_ii.item_item(torch.tensor([u]))[0].numpy(),
                               with_ii.item_item.score_history(list(hist))[0].numpy(), atol=1e-5)


def test_few_shot_weights_are_kept_with_the_version_and_served_to_users_who_just_joined(pipeline):
    from dataclasses import replace

    from recsys_dagster.core.fusion import FewShotWeights
    from recsys_dagster.core.recommend import recommend_for_new_user

    settings, _, _ = pipeline
    stored = _store(settings).require_published().fusion["few_shot"]
    # the few_shot protocol chose between its own weights and protocol A's fold-in ones by
    # cross-validation on its users' validation pairs, and the version keeps the winner
    assert {"alpha", "beta", "gamma", "popularity"} <= set(stored)
    cv = stored["cv"]
    assert cv["users"] > 0 and 0 <= cv["few_shot"] <= 1 and 0 <= cv["fold-in"] <= 1
    assert stored["tuned_on"] == ("fold-in" if cv["fold-in"] > cv["few_shot"] else "few_shot")
    rows = query(settings, "SELECT model, params, value FROM evaluation_metrics WHERE protocol = 'few_shot' "
                           "AND metric = 'ndcg' AND k = 10 AND slice = 'all'").set_index("model")
    assert '"cv"' in rows.params["fused"]
    winner = "fused_protocol_weights" if stored["tuned_on"] == "few_shot" else "fused_fold_in_weights"
    assert rows.value["fused"] == pytest.approx(rows.value[winner])
    scorer, data, explainer, _ = _production(settings)
    assert scorer.weights.few_shot is not None and scorer.weights.few_shot.popularity == stored["popularity"]
    # a new user with two items is a few-shot user: popularity-only weights give the most popular unseen items
    given = [str(data.item_ids[0]), str(data.item_ids[1])]
    scorer.weights = replace(scorer.weights, few_shot=FewShotWeights(0.0, 0.0, 0.0, 1.0))
    recs = recommend_for_new_user(scorer, data, explainer, item_ids=given, k=3)
    pop = scorer.popularity.numpy().astype(float)
    pop[[0, 1]] = -1
    position = {str(i): n for n, i in enumerate(data.item_ids)}
    got = [pop[position[str(i)]] for i in recs.item_id]
    assert got == sorted(pop, reverse=True)[:3]  # the most popular unseen items, in order (ties in any order)


def test_int8_scoring_is_graded_recorded_and_served(pipeline):
    """``scoring: int8`` on the evaluation: the gate grades fused_int8, the store records the
    precision, and recommendations, explanations and new users run on int8 tables."""
    from recsys_dagster.core.quantize import Int8Rows
    from recsys_dagster.core.recommend import recommend_for_new_user

    settings, defs, _ = pipeline
    store = _store(settings)
    run_assets(defs, "gnn_model", run_config={"ops": {"gnn_model": {"config": TINY_TRAIN}}})
    version = store.latest().version
    result = run_assets(defs, "evaluation_metrics,fused_recommendations", run_config={"ops": {
        "evaluation_metrics": {"config": {"protocols": ["A"], "scoring": "int8", "min_variant_retention": 0.9,
                                          **BUDGET}}}})
    rows = query(settings, "SELECT model, value FROM evaluation_metrics WHERE protocol = 'A' AND metric = 'ndcg' "
                           "AND k = 10 AND slice = 'all' AND model_version = ?", (version,)).set_index("model").value
    assert {"fused", "fused_int8"} <= set(rows.index)
    assert rows["fused_int8"] >= 0.9 * rows["fused"]
    mv = store.get(version)
    assert mv.gate["graded"] == "fused_int8" and mv.gate["fused_ndcg@10"] == pytest.approx(rows["fused_int8"])
    assert mv.scoring_precision == "int8" and store.published().version == version
    recs = result.asset_materializations_for_node("fused_recommendations")[0]
    assert recs.metadata["precision"].value == "int8"
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks["recommendations_are_valid"]
    scorer, data, explainer, _ = _production(settings)
    assert scorer.precision == "int8" and isinstance(scorer.item_gnn, Int8Rows)
    users = torch.arange(min(30, data.n_users))
    top = scorer(users).topk(10).indices
    assert top.shape == (len(users), 10)
    one = recommend_for_new_user(scorer, data, explainer, item_ids=list(data.item_ids[:3]), k=5)
    assert len(one) == 5 and one.reason.str.len().gt(0).all()
    # a variant that loses more than allowed is not published
    run_assets(defs, "gnn_model", run_config={"ops": {"gnn_model": {"config": TINY_TRAIN}}})
    strict = run_assets(defs, "evaluation_metrics", raise_on_error=False, run_config={"ops": {
        "evaluation_metrics": {"config": {"protocols": ["A"], "scoring": "int8", "min_variant_retention": 1.5,
                                          **BUDGET}}}})
    gate = {c.check_name: c for c in strict.get_asset_check_evaluations()}["fused_model_quality_gate"]
    assert not gate.passed and "keeps" in gate.metadata["failures"].value
    assert store.published().version == version
