"""Stage 5 — fused recommendations: top-K per user with scores and reasons, from the
published model version only."""

import time

import dagster as dg
from pydantic import Field

from recsys_dagster.core import warehouse as wh
from recsys_dagster.defs.resources import WAREHOUSE_POOL, ModelStoreResource, WarehouseResource


class RecommendationConfig(dg.Config):
    k: int = Field(default=20, description="items per user")
    alpha: float | None = Field(default=None, description="override the tuned GNN weight")
    beta: float | None = Field(default=None, description="override the tuned text weight")
    cold_user_threshold: int = Field(default=5, description="users with fewer interactions lean on text")


@dg.asset(group_name="recommendations", kinds={"pytorch", "duckdb"}, pool=WAREHOUSE_POOL,
          deps=["evaluation_metrics", "gnn_model", "user_behavior_embeddings"])
def fused_recommendations(context: dg.AssetExecutionContext, config: RecommendationConfig,
                          warehouse: WarehouseResource, model_store: ModelStoreResource) -> dg.MaterializeResult:
    """Top-K unseen items per user from the *published* model version (the newest one that
    passed the evaluation gate; a version that failed it is never served):
    ``α·z(GNN score) + β·z(text score)`` with α, β tuned on validation (stored with the
    version; overridable), text-leaning weights for users with few interactions,
    popularity as last resort, and a reason per row (shared KG entity, most similar history
    item, or similar description). Rewriting a model version replaces its rows."""
    from recsys_dagster.core.explain import item_entity_lists
    from recsys_dagster.core.model_store import ModelStoreError
    from recsys_dagster.core.recommend import (
        explain_context,
        history_positive,
        load_production_scorer,
        recommend_all,
    )
    from recsys_dagster.core.training_data import read_tables

    t0 = time.perf_counter()
    try:
        version = model_store.store().require_published()
    except ModelStoreError as exc:
        raise dg.Failure(str(exc)) from None
    with warehouse.get_connection() as conn:
        tables = read_tables(conn)
        titles = wh.read_table(conn, "items").set_index("item_id")["title"]
    scorer, data, positives, fusion = load_production_scorer(
        tables, version, {"alpha": config.alpha, "beta": config.beta}, config.cold_user_threshold)
    ctx = explain_context(scorer, titles.reindex(data.item_ids).fillna("").to_numpy(),
                          item_entity_lists(data.n_items, {i: n for n, i in enumerate(data.item_ids)},
                                            tables.entities, tables.relations, tables.triples))
    positive, explicit = history_positive(positives, data)
    if not explicit:
        ctx.verb_other = "interacted with"
    recs = recommend_all(scorer, data, ctx, positive, config.k, version.version)
    with warehouse.get_connection() as conn:
        wh.write(conn, "fused_recommendations", recs, model_version=version.version)
    sample = recs[recs.user_id == recs.user_id.iloc[0]].head(10).merge(
        titles.rename("title"), left_on="item_id", right_index=True, how="left") if len(recs) else recs
    reason_kinds = recs["reason"].str.extract(r"^(same [a-z ]+?|similar description|because you|popular)")[0].value_counts()
    return dg.MaterializeResult(metadata={
        "dagster/row_count": len(recs), "users": int(recs["user_id"].nunique()),
        "distinct_items": int(recs["item_id"].nunique()),
        "catalog_coverage": round(recs["item_id"].nunique() / max(data.n_items, 1), 4),
        "alpha": fusion["alpha"], "beta": fusion["beta"], "model_version": version.version,
        "published_at": version.manifest.get("published_at", ""),
        "reason_kinds": dg.MetadataValue.md(reason_kinds.rename_axis("reason").reset_index().to_markdown(index=False)),
        "sample": dg.MetadataValue.md(sample[["user_id", "rank", "title", "score", "reason"]].to_markdown(index=False)),
        "seconds": round(time.perf_counter() - t0, 2),
    })


@dg.asset_check(asset=fused_recommendations, blocking=True,
                description="K rows per user, ranks 1..K, no item the user has seen, a reason on every row")
def recommendations_are_valid(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    with warehouse.get_connection() as conn:
        version = conn.execute("SELECT model_version FROM fused_recommendations ORDER BY generated_at DESC LIMIT 1").fetchall()
        if not version:
            return dg.AssetCheckResult(passed=False, metadata={"reason": "empty table"})
        v = version[0][0]
        bad_counts = conn.execute("SELECT count(*) FROM (SELECT user_id, count(*) n, count(DISTINCT item_id) d, max(rank) m "
                                  "FROM fused_recommendations WHERE model_version = ? GROUP BY 1 HAVING n <> d OR m <> n)",
                                  [v]).fetchall()[0][0]
        seen = conn.execute("SELECT count(*) FROM fused_recommendations r JOIN cleaned_interactions c "
                            "USING (user_id, item_id) WHERE r.model_version = ?", [v]).fetchall()[0][0]
        empty = conn.execute("SELECT count(*) FROM fused_recommendations WHERE model_version = ? "
                             "AND coalesce(trim(reason), '') = ''", [v]).fetchall()[0][0]
    return dg.AssetCheckResult(passed=bad_counts == 0 and seen == 0 and empty == 0, metadata={
        "model_version": v, "users_with_bad_lists": bad_counts, "seen_items_recommended": seen, "empty_reasons": empty})
