"""Stage 5 — fused recommendations: top-K per user with scores and reasons."""

import json
import time
from pathlib import Path

import dagster as dg
from pydantic import Field

from recsys_dagster.core import warehouse as wh
from recsys_dagster.defs.resources import WAREHOUSE_POOL, WarehouseResource
from recsys_dagster.defs.training import latest_weights

TABLE_SQL = ("user_id VARCHAR, rank INTEGER, item_id VARCHAR, score DOUBLE, gnn_score DOUBLE, text_score DOUBLE, "
             "reason VARCHAR, model_version VARCHAR, generated_at TIMESTAMP")


class RecommendationConfig(dg.Config):
    k: int = Field(default=20, description="items per user")
    alpha: float | None = Field(default=None, description="override the tuned GNN weight")
    beta: float | None = Field(default=None, description="override the tuned text weight")
    cold_user_threshold: int = Field(default=5, description="users with fewer interactions lean on text")


def load_production_scorer(tables, weights: Path, fusion_override: dict | None = None, cold_user_threshold: int = 5):
    """Weights of ``gnn_model`` on the graph of *all* interactions (propagation sees the
    newest edges without retraining), fusion weights from the model version."""
    import torch

    from recsys_dagster.core.fusion import FusionWeights
    from recsys_dagster.core.gnn_data import implicit_interactions
    from recsys_dagster.core.recommend import build_scorer
    from recsys_dagster.core.splits import Split
    from recsys_dagster.core.train import TrainConfig, load_weights
    from recsys_dagster.core.training_data import data_for_split

    payload = torch.load(weights, map_location="cpu", weights_only=True)
    cfg = TrainConfig.from_dict(payload["config"])
    positives = implicit_interactions(tables.interactions, cfg.min_rating)
    data = data_for_split(tables, Split(positives, positives.iloc[:0], positives.iloc[:0], "all"), cfg)
    model, _ = load_weights(weights, data, "cpu")
    fusion = {"alpha": 1.0, "beta": 0.0}
    if (weights.parent / "fusion.json").is_file():
        fusion.update(json.loads((weights.parent / "fusion.json").read_text()))
    fusion.update({k: v for k, v in (fusion_override or {}).items() if v is not None})
    scorer = build_scorer(model, data, FusionWeights(fusion["alpha"], fusion["beta"], cold_user_threshold))
    return scorer, data, positives, fusion


@dg.asset(group_name="recommendations", kinds={"pytorch", "duckdb"}, pool=WAREHOUSE_POOL,
          deps=["evaluation_metrics", "gnn_model", "user_behavior_embeddings"])
def fused_recommendations(context: dg.AssetExecutionContext, config: RecommendationConfig,
                          warehouse: WarehouseResource) -> dg.MaterializeResult:
    """Top-K unseen items per user: ``α·z(GNN score) + β·z(text score)`` with α, β tuned
    on validation (stored with the model version; overridable), text-leaning weights for
    users with few interactions, popularity as last resort, and a reason per row (shared KG
    entity, most similar history item, or similar description). Published only after the
    evaluation gate passes; rewriting a model version replaces its rows."""
    from recsys_dagster.core.explain import item_entity_lists
    from recsys_dagster.core.recommend import explain_context, history_positive, recommend_all
    from recsys_dagster.core.training_data import read_tables

    t0 = time.perf_counter()
    weights = latest_weights(str(Path(warehouse.database).parent))
    if weights is None:
        raise dg.Failure("fused_recommendations needs a trained gnn_model: materialize it first")
    with warehouse.get_connection() as conn:
        tables = read_tables(conn)
        titles = wh.read_table(conn, "items").set_index("item_id")["title"]
    scorer, data, positives, fusion = load_production_scorer(
        tables, weights, {"alpha": config.alpha, "beta": config.beta}, config.cold_user_threshold)
    item_pos = {i: n for n, i in enumerate(data.item_ids)}
    ctx = explain_context(scorer, titles.reindex(data.item_ids).fillna("").to_numpy(),
                          item_entity_lists(data.n_items, item_pos, tables.entities, tables.relations, tables.triples))
    positive, explicit = history_positive(positives, data)
    if not explicit:
        ctx.verb_other = "interacted with"
    version = weights.parent.name
    recs = recommend_all(scorer, data, ctx, positive, config.k, version)
    with warehouse.get_connection() as conn:
        conn.execute(f"CREATE TABLE IF NOT EXISTS fused_recommendations ({TABLE_SQL})")
        conn.execute("BEGIN TRANSACTION")
        conn.execute("DELETE FROM fused_recommendations WHERE model_version = ?", [version])
        conn.register("_recs", recs)
        conn.execute("INSERT INTO fused_recommendations SELECT * FROM _recs")
        conn.unregister("_recs")
        conn.execute("COMMIT")
    sample = recs[recs.user_id == recs.user_id.iloc[0]].head(10).merge(
        titles.rename("title"), left_on="item_id", right_index=True, how="left") if len(recs) else recs
    reason_kinds = recs["reason"].str.extract(r"^(same [a-z ]+?|similar description|because you|popular)")[0].value_counts()
    return dg.MaterializeResult(metadata={
        "dagster/row_count": len(recs),
        "users": int(recs["user_id"].nunique()),
        "distinct_items": int(recs["item_id"].nunique()),
        "catalog_coverage": round(recs["item_id"].nunique() / max(data.n_items, 1), 4),
        "alpha": fusion["alpha"], "beta": fusion["beta"],
        "model_version": version,
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
