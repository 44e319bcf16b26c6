"""Stage 3 — text embeddings: item texts through the transformer, and user behaviour
pooled in the same space."""

import time

import dagster as dg
import numpy as np
import pandas as pd

from recsys_dagster.core import warehouse as wh
from recsys_dagster.defs.resources import (
    WAREHOUSE_POOL,
    ComputeResource,
    LauncherResource,
    TextEncoderResource,
    WarehouseResource,
)

GROUP = "embeddings"


def _neighbours_md(ids, titles: dict, matrix: np.ndarray, queries: list[int], k: int = 5) -> dg.MetadataValue:
    rows = []
    sims = matrix[queries] @ matrix.T
    for q, row in zip(queries, sims, strict=True):
        order = [j for j in np.argsort(-row) if j != q][:k]
        rows.append((titles.get(ids[q], ids[q]), "; ".join(f"{titles.get(ids[j], ids[j])} ({row[j]:.2f})" for j in order)))
    return dg.MetadataValue.md(pd.DataFrame(rows, columns=["item", "nearest by text"]).to_markdown(index=False))


def item_embedding_metadata(emb, items: pd.DataFrame, n_queries: int = 4) -> dict:
    """Counts, throughput, the nearest neighbours of a few items (spread over the catalogue),
    a PCA plot."""
    from recsys_dagster.core.plots import embedding_projection_png, png_markdown

    items = items.sort_values("item_id").reset_index(drop=True)
    queries = sorted({int(q) for q in np.linspace(0, len(items) - 1, min(n_queries, len(items)))})
    titles = dict(zip(items["item_id"], items["title"], strict=True))
    meta = {
        "dagster/row_count": len(emb.frame), "dim": int(emb.matrix.shape[1]),
        "texts_encoded": emb.encoded, "texts_reused": emb.reused, "encode_seconds": round(emb.encode_seconds, 3),
        "texts_per_second": round(emb.encoded / emb.encode_seconds, 1) if emb.encoded and emb.encode_seconds > 0 else 0.0,
        "nearest_neighbours": _neighbours_md(items["item_id"].tolist(), titles, emb.matrix, queries),
        "text_example": emb.texts.iloc[queries[0]] if len(emb.texts) else "",
    }
    if len(emb.frame) >= 3:
        first_genre = [list(g)[0] if g is not None and len(g) else "(none)" for g in items["genres"]]
        png = embedding_projection_png(emb.matrix, first_genre, "item text embeddings (PCA)")
        meta["projection"] = dg.MetadataValue.md(png_markdown(png, "PCA"))
    return meta


@dg.asset(group_name=GROUP, kinds={"pytorch", "duckdb"}, pool=WAREHOUSE_POOL,
          deps=["items"])
def item_text_embeddings(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, text_encoder: TextEncoderResource,
    compute: ComputeResource, launcher: LauncherResource,
) -> dg.MaterializeResult:
    """One L2-normalized transformer embedding per item of ``Title. Genres. Tags.
    Description``. Vectors are cached by (model id, sha256 of the exact text): a
    re-materialization encodes only new or changed texts. With the ``ray`` launcher the
    texts to encode go to Ray tasks (blocks of ~2,000, at least one per worker) in a Ray job."""
    from recsys_dagster.core.parallel import BlockEncoder
    from recsys_dagster.core.text import embed_items

    t0 = time.perf_counter()
    encoder = text_encoder.get("auto" if launcher.on_ray else compute.resolve())
    if launcher.on_ray:  # the workers pick their own device
        encoder = BlockEncoder(encoder, launcher.runner(context, "item_text_embeddings"), per_block=2000,
                               min_blocks=launcher.ray_workers)
    with warehouse.get_connection() as conn:
        items = wh.read_table(conn, "items")
        emb = embed_items(conn, encoder, items)
        wh.write(conn, "item_text_embeddings", emb.frame)
    context.log.info(f"encoded {emb.encoded} texts, reused {emb.reused} from the cache")
    return dg.MaterializeResult(metadata={**item_embedding_metadata(emb, items), "model_id": encoder.model_id,
                                          "device": encoder.device, "seconds": round(time.perf_counter() - t0, 3)})


@dg.asset(group_name=GROUP, kinds={"duckdb"}, pool=WAREHOUSE_POOL,
          deps=[item_text_embeddings, dg.AssetDep("cleaned_interactions", partition_mapping=dg.AllPartitionMapping())])
def user_behavior_embeddings(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """One vector per user in the item-text space (``method = pooled``): the
    recency-weighted mean (60-day half-life) of the text embeddings of every item the user
    interacted with. ``fused_recommendations`` serves from these vectors; training and
    evaluation pool the same way from their own training split, so no valid/test
    interaction reaches a graded model."""
    from recsys_dagster.core.gnn_data import implicit_interactions
    from recsys_dagster.core.user_profiles import behaviour_frame

    t0 = time.perf_counter()
    with warehouse.get_connection() as conn:
        positives = implicit_interactions(conn.execute("SELECT user_id, item_id, ts, rating FROM cleaned_interactions").df())
        item_ids, item_emb = wh.read_embeddings(conn, "item_text_embeddings", "item_id")
        model_id = conn.execute("SELECT any_value(model_id) FROM item_text_embeddings").fetchall()[0][0]
        frame = behaviour_frame(positives, item_ids, item_emb, model_id or "")
        wh.write(conn, "user_behavior_embeddings", frame)
    return dg.MaterializeResult(metadata={
        "dagster/row_count": len(frame), "users": len(frame), "item_text_model": model_id or "-",
        "median_interactions": float(np.median(frame["n_interactions"])) if len(frame) else 0.0,
        "seconds": round(time.perf_counter() - t0, 3)})


@dg.asset_check(asset=item_text_embeddings, blocking=True, description="one unit-norm vector per item")
def item_embeddings_unit_norm(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    with warehouse.get_connection() as conn:
        ids, matrix = wh.read_embeddings(conn, "item_text_embeddings", "item_id")
        n_items = conn.execute("SELECT count(*) FROM items").fetchall()[0][0]
    norms = np.linalg.norm(matrix, axis=1) if len(ids) else np.array([1.0])
    ok = len(ids) == n_items and bool(np.all(np.abs(norms - 1) < 1e-3)) and bool(np.isfinite(matrix).all())
    return dg.AssetCheckResult(passed=ok, metadata={"vectors": len(ids), "items": n_items,
                                                    "max_norm_error": float(np.abs(norms - 1).max())})


EMBEDDING_CHECKS = [item_embeddings_unit_norm]
