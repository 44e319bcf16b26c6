"""Stage 5 — fused recommendations: top-K per user with scores and reasons, from the
published model version only."""

import time

import dagster as dg

from recsys_dagster.core import warehouse as wh
from recsys_dagster.core.recommend import RecommendConfig
from recsys_dagster.defs.config import config_fields, core_values, derive_config
from recsys_dagster.defs.resources import (
    WAREHOUSE_POOL,
    ComputeResource,
    DatasetResource,
    LauncherResource,
    ModelStoreResource,
    WarehouseResource,
)

RecommendationConfig = derive_config("RecommendationConfig", "Launchpad config of fused_recommendations.",
                                     config_fields(RecommendConfig))


@dg.asset(group_name="recommendations", kinds={"pytorch", "duckdb"}, pool=WAREHOUSE_POOL,
          deps=["gnn_model", "evaluation_metrics", "user_behavior_embeddings",
                dg.AssetDep("cleaned_interactions", partition_mapping=dg.AllPartitionMapping()), "knowledge_graph",
                "item_text_embeddings", "items"])
def fused_recommendations(context: dg.AssetExecutionContext, config: RecommendationConfig,
                          warehouse: WarehouseResource, model_store: ModelStoreResource,
                          compute: ComputeResource, dataset: DatasetResource,
                          launcher: LauncherResource) -> dg.MaterializeResult:
    """Top-K unseen items per user from the *published* model version (the newest one that
    passed the evaluation gate; a version that failed it is never served):
    ``α·z(GNN) + β·z(text) + γ·z(EASE)`` with β, γ tuned on validation (stored with the
    version; overridable), the users' behaviour vectors from ``user_behavior_embeddings``,
    few-shot weights chosen on validation for users with few interactions (popularity among
    the parts), popularity as last resort. Each
    row has a reason naming the largest contributor to its score (a history item, with the
    KG path of highest attention to it; a user attribute; the user's overall taste;
    popularity) and that evidence as JSON (``core.explain``). Rewriting a model version
    replaces its rows. With the ``ray`` launcher every user's top-K is scored by Ray tasks
    (blocks of ~4,096 users) in a Ray job; the reasons are computed here."""
    from recsys_dagster.core.explain import Verbs
    from recsys_dagster.core.fusion import top_k
    from recsys_dagster.core.model_store import ModelStoreError
    from recsys_dagster.core.parallel import block_top_k
    from recsys_dagster.core.recommend import production_recommendations
    from recsys_dagster.core.training_data import read_tables

    t0 = time.perf_counter()
    try:
        version = model_store.store().require_published()
    except ModelStoreError as exc:
        raise dg.Failure(str(exc)) from None
    with warehouse.get_connection() as conn:
        tables = read_tables(conn)
        titles = wh.read_table(conn, "items").set_index("item_id")["title"]
        vectors = wh.read_embeddings(conn, "user_behavior_embeddings", "user_id") \
            if wh.table_exists(conn, "user_behavior_embeddings") else None
    source = dataset.open()
    scoring = block_top_k(launcher.runner(context, "fused_recommendations"), min_blocks=launcher.ray_workers) \
        if launcher.on_ray else top_k
    recs = production_recommendations(tables, titles, version, RecommendConfig(**core_values(config, RecommendConfig)),
                                      vectors, "cpu" if launcher.on_ray else compute.resolve(),
                                      Verbs(source.verb, source.verb_positive), top_k_fn=scoring)
    with warehouse.get_connection() as conn:
        wh.write(conn, "fused_recommendations", recs.frame, model_version=version.version)
    summary = recs.summary(titles, mask_users=dataset.pseudonymizer() is not None)
    return dg.MaterializeResult(metadata={
        "dagster/row_count": len(recs.frame), "users": summary["users"], "distinct_items": summary["distinct_items"],
        "catalog_coverage": summary["catalog_coverage"], "alpha": recs.fusion["alpha"], "beta": recs.fusion["beta"],
        "gamma": recs.fusion.get("gamma", 0.0), "precision": recs.fusion.get("precision", "fp32"),
        "model_version": version.version, "published_at": version.manifest.get("published_at", ""),
        "users_without_stored_behaviour_vector": recs.users_without_stored_vector,
        "evidence_kinds": dg.MetadataValue.md(summary["evidence_kinds"]), "sample": dg.MetadataValue.md(summary["sample"]),
        "seconds": round(time.perf_counter() - t0, 2),
    })


@dg.asset(group_name="recommendations", kinds={"parquet"}, pool=WAREHOUSE_POOL, deps=[fused_recommendations])
def serving_snapshot(context: dg.AssetExecutionContext, warehouse: WarehouseResource, model_store: ModelStoreResource,
                     dataset: DatasetResource) -> dg.MaterializeResult:
    """What the HTTP service (``make serve``) reads: the serving tables and the published
    version's recommendations as Parquet in ``<models>/<version>/serving/<export id>/``,
    then ``<models>/SERVING`` pointed at it. A running service reloads it within seconds,
    without a restart; it never opens the warehouse, so pipeline writes never block it."""
    from recsys_dagster.core.model_store import ModelStoreError
    from recsys_dagster.core.snapshot import export_snapshot

    t0 = time.perf_counter()
    store = model_store.store()
    try:
        version = store.require_published()
    except ModelStoreError as exc:
        raise dg.Failure(str(exc)) from None
    from recsys_dagster.core.privacy.pseudonyms import id_space, recorded_space

    source = dataset.open()
    with warehouse.get_connection() as conn:  # the id space the warehouse's rows are in (not this run's key)
        space = recorded_space(conn) or id_space(dataset.pseudonymizer())
        manifest = export_snapshot(conn, store, version, {"verb": source.verb, "verb_positive": source.verb_positive,
                                                          "id_space": space})
    context.log.info(f"serving snapshot {version.version}/{manifest['export_id']}")
    return dg.MaterializeResult(metadata={
        "model_version": version.version, "export_id": manifest["export_id"],
        "path": str((version.path / "serving" / manifest["export_id"]).resolve()),
        "dagster/row_count": manifest["rows"]["fused_recommendations"],
        "rows": dg.MetadataValue.json(manifest["rows"]), "seconds": round(time.perf_counter() - t0, 2)})


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
        "model_version": v, "users_with_bad_lists": bad_counts, "seen_items_recommended": seen,
        "empty_reasons": empty})
