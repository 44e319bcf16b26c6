"""Explanations: decomposed from the score, faithful under deletion, readable on any domain."""

import json
import re

import duckdb
import numpy as np
import pandas as pd
import pytest

from tests.conftest import run_assets, synthetic_warehouse

TINY_TRAIN = {"embedding_dim": 16, "batch_size": 256, "max_epochs": 8, "min_epochs": 1}
BUDGET = {"max_epochs": 8, "min_epochs": 1}


@pytest.fixture(scope="module")
def music(tmp_path_factory):
    """A listening log in the generic format: play counts (``weight``), no item titles, a KG
    whose entities have opaque ids and no labels, and "listened to" as the verb."""

    def as_play_counts(folder):
        inter = pd.read_csv(folder / "interactions.csv")
        inter["weight"] = np.random.default_rng(0).integers(1, 60, len(inter))
        inter.drop(columns=["rating"]).to_csv(folder / "interactions.csv", index=False)

    settings, defs = synthetic_warehouse(tmp_path_factory.mktemp("music"), "2024-01-06", as_play_counts,
                                         "user_behavior_embeddings", n_users=80, n_items=50, n_interactions=2000,
                                         days=6, seed=7, titles=False, entity_labels=False, verb="listened to")
    run_assets(defs, "gnn_model", run_config={"ops": {"gnn_model": {"config": TINY_TRAIN}}})
    result = run_assets(defs, "evaluation_metrics,fused_recommendations", run_config={"ops": {
        "evaluation_metrics": {"config": {"protocols": ["A"], "explanation_users": 12, **BUDGET}}}})
    return settings, result


def _q(settings, sql):
    conn = duckdb.connect(settings.warehouse, read_only=True)
    try:
        return conn.execute(sql).df()
    finally:
        conn.close()


def _production(settings):
    from recsys_dagster.core.explain import Verbs
    from recsys_dagster.core.model_store import ModelStore
    from recsys_dagster.core.recommend import load_production_scorer, production_explainer
    from recsys_dagster.core.training_data import read_tables

    conn = duckdb.connect(settings.warehouse, read_only=True)
    tables = read_tables(conn)
    conn.close()
    prod = load_production_scorer(tables, ModelStore(settings.models_dir).require_published())
    return prod, production_explainer(prod, tables, None, Verbs("listened to"))


def test_reasons_read_well_without_titles_or_entity_labels(music):
    settings, result = music
    recs = _q(settings, "SELECT * FROM fused_recommendations")
    entity_ids = set(_q(settings, "SELECT entity_key FROM kg_entities WHERE kind = 'synthetic'")
                     .entity_key.str.split(":", n=1).str[1])
    assert len(recs) and recs.reason.str.len().gt(0).all()
    assert not recs.reason.str.contains(r"\*\*").any(), "an empty emphasis: a name is missing"
    assert not recs.reason.str.contains("watched|rated highly").any(), "verbs come from the dataset"
    words = set(re.findall(r"[\w.]+", " ".join(recs.reason)))
    assert not words & entity_ids, f"bare KG ids in reasons: {sorted(words & entity_ids)[:5]}"
    assert recs.reason.str.contains("listened to").any()
    cited = recs.reason.str.extract(r"\*(i\d+)\*")[0].dropna()
    assert len(cited) and set(cited) <= set(_q(settings, "SELECT item_id FROM items").item_id)
    # the unlabeled KG path is named by its relation and the neighbouring item
    assert recs.reason.str.contains(r"^shares \*director\* with \*i\d+\*, which you listened to$").any()
    evidence = recs.evidence.map(json.loads)
    assert evidence.map(lambda e: e[0]["type"] in {"history_item", "user_attribute", "profile", "popularity"}).all()
    assert evidence.map(lambda e: 0 <= e[0]["share"] <= 1).all()
    meta = result.asset_materializations_for_node("fused_recommendations")[0].metadata
    sample = meta["sample"].value
    assert sample.count("\n") >= 6 and len(set(re.findall(r"\| (u\d+) ", sample))) >= 2


def test_contributions_add_up_to_the_served_score(music):
    from recsys_dagster.core.fusion import top_k

    settings, _ = music
    prod, explainer = _production(settings)
    data = prod.data
    assert prod.fusion["gamma"] or prod.fusion["beta"] or True
    import torch

    users = np.arange(0, data.n_users, 7)
    items, _ = top_k(prod.scorer, users, data.train_csr, data.n_items, 10)
    weighted = 0
    for row, u in enumerate(users):
        _, evidence, att = explainer.explain_user(int(u), items[row])
        np.testing.assert_allclose(att.total(), att.score, atol=1e-4)
        assert len(att.history) == np.diff(data.train_csr[0])[u]
        # the GNN part is split over the history: it is not all "profile" (when the user's
        # weights give the GNN any: a few-shot user's may not)
        if float(prod.scorer.coefficients(torch.tensor([int(u)]))[0]) > 0:
            weighted += 1
            assert np.abs(att.channels[0]).sum() > 0
    assert weighted > len(users) // 2


def test_the_gnn_split_matches_the_models_own_embeddings(music):
    import torch

    settings, _ = music
    prod, _ = _production(settings)
    x0, through, adj, layers = prod.model.propagation_terms()
    with torch.no_grad():
        full = prod.model()
    np.testing.assert_allclose(((x0 + torch.sparse.mm(adj, through)) / (layers + 1))[: len(full)].numpy(),
                               full.numpy(), atol=1e-5)


def test_explanation_protocol_rows(music):
    settings, result = music
    rows = _q(settings, "SELECT * FROM evaluation_metrics WHERE metric LIKE 'expl_%'")
    got = rows.pivot_table(index="metric", columns="model", values="value")
    assert {"fused", "kgtextgnn"} <= set(got.columns)
    assert got.loc["expl_coverage"].between(0, 1).all()
    assert got.loc["expl_diversity", "fused"] > 0
    assert {"expl_score_drop_cited", "expl_score_drop_random", "expl_cited_beats_random"} <= set(got.index)
    for model in ("fused", "kgtextgnn"):  # the ratio exists exactly where random deletions cost something
        cited, random_ = got.loc["expl_score_drop_cited", model], got.loc["expl_score_drop_random", model]
        if random_ > 0:
            assert got.loc["expl_fidelity_ratio", model] == pytest.approx(cited / random_)
        else:
            assert "expl_fidelity_ratio" not in got.index or np.isnan(got.loc["expl_fidelity_ratio", model])
    params = json.loads(rows[rows.model == "fused"].params.iloc[0])
    assert params["users"] == 12 and params["deletions"] > 0
    table = result.asset_materializations_for_node("evaluation_metrics")[0].metadata["explanations"].value
    assert "coverage" in table and "fused" in table and "kgtextgnn" in table


def test_deleting_the_cited_item_costs_more_than_a_random_one(music):
    """Deletion fidelity on the synthetic log: the cited history item carries the score."""
    from recsys_dagster.core.explain_eval import evaluate_explanations

    settings, _ = music
    prod, explainer = _production(settings)
    report = evaluate_explanations(prod.scorer, prod.model, prod.data, explainer, n_users=25, per_user=2)
    m = report.metrics
    assert m["expl_score_drop_cited"] > m["expl_score_drop_random"]
    assert m["expl_score_drop_cited"] > 0


def test_a_new_user_is_explained_by_the_items_they_gave(music):
    from recsys_dagster.core.recommend import recommend_for_new_user

    settings, _ = music
    prod, explainer = _production(settings)
    given = ["i1", "i2", "i3"]
    recs = recommend_for_new_user(prod.scorer, prod.data, explainer, item_ids=given, k=5)
    cited = [json.loads(e)[0].get("item_id") for e in recs.evidence]
    assert any(c in given for c in cited)
    assert recs.reason.str.len().gt(0).all() and not set(recs.item_id) & set(given)


def test_names_and_markdown():
    from recsys_dagster.core.explain import display_names, escape_md

    assert escape_md("M*A*S*H (1970)") == r"M\*A\*S\*H (1970)"
    assert escape_md("a_b [c]") == r"a\_b \[c\]"
    names = display_names(["1", "2", "3"], pd.Series({"1": "Heat (1995)", "2": "  ", "3": None}))
    assert list(names) == ["Heat (1995)", "2", "3"]


def test_entity_labels_come_from_the_label_file(tmp_path):
    from recsys_dagster.core.datasets.generic import GenericFolder
    from recsys_dagster.core.datasets.synthetic import generate
    from recsys_dagster.core.explain import entity_display
    from recsys_dagster.core.knowledge_graph import build_knowledge_graph

    folder = generate(tmp_path / "labelled", n_users=20, n_items=12, n_interactions=200, entity_labels=True,
                      verb="bought")
    ds = GenericFolder(folder)
    assert ds.verb == "bought" and ds.verb_positive == "rated highly"
    kg = build_knowledge_graph(ds.read_items()[0], ds.read_users()[0], ds.external_kg())
    labels = entity_display(kg.entities)
    external = {k: v for k, v in labels.items() if k.startswith(f"{ds.name}:")}
    assert external and all(label for _, label in external.values())
    assert any("Director" in label for _, label in external.values())
    unlabelled = generate(tmp_path / "plain", n_users=20, n_items=12, n_interactions=200)
    plain = GenericFolder(unlabelled)
    kg = build_knowledge_graph(plain.read_items()[0], plain.read_users()[0], plain.external_kg())
    assert all(label == "" for k, (_, label) in entity_display(kg.entities).items() if k.startswith(f"{plain.name}:"))
    assert plain.verb == "interacted with"
