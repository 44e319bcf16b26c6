"""Stage 3 — text embeddings: item texts and user behaviour through the transformer."""

import base64
import time

import dagster as dg
import numpy as np
import pandas as pd

from recsys_dagster.core import warehouse as wh
from recsys_dagster.defs.resources import (
    WAREHOUSE_POOL,
    ComputeResource,
    TextEncoderResource,
    WarehouseResource,
)

GROUP = "embeddings"


def _png_md(png: bytes, alt: str) -> dg.MetadataValue:
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})")


def _neighbours_md(ids, titles: dict, matrix: np.ndarray, queries: list[int], k: int = 5) -> dg.MetadataValue:
    rows = []
    sims = matrix[queries] @ matrix.T
    for q, row in zip(queries, sims, strict=True):
        order = [j for j in np.argsort(-row) if j != q][:k]
        rows.append((titles.get(ids[q], ids[q]), "; ".join(f"{titles.get(ids[j], ids[j])} ({row[j]:.2f})" for j in order)))
    return dg.MetadataValue.md(pd.DataFrame(rows, columns=["item", "nearest by text"]).to_markdown(index=False))


@dg.asset(group_name=GROUP, kinds={"pytorch", "duckdb"}, pool=WAREHOUSE_POOL, deps=["items"])
def item_text_embeddings(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, text_encoder: TextEncoderResource,
    compute: ComputeResource,
) -> dg.MaterializeResult:
    """One L2-normalized transformer embedding per item of ``Title. Genres. Tags.
    Description``. Vectors are cached by (model id, sha256 of the exact text): a
    re-materialization encodes only new or changed texts."""
    from recsys_dagster.core.plots import embedding_projection_png
    from recsys_dagster.core.text import item_texts, text_sha256

    t0 = time.perf_counter()
    encoder = text_encoder.get(compute.resolve())
    with warehouse.get_connection() as conn:
        items = wh.read_table(conn, "items").sort_values("item_id").reset_index(drop=True)
        texts = item_texts(items)
        t1 = time.perf_counter()
        from recsys_dagster.core.text import encode_cached

        matrix, encoded, reused = encode_cached(conn, encoder, texts.tolist())
        encode_s = time.perf_counter() - t1
        frame = pd.DataFrame({
            "item_id": items["item_id"], "model_id": encoder.model_id,
            "text_sha256": [text_sha256(t) for t in texts], "text": texts.to_numpy(), "embedding": list(matrix),
        })
        wh.write(conn, "item_text_embeddings", frame)
        popular = []
        if wh.table_exists(conn, "cleaned_interactions"):
            popular = [r[0] for r in conn.execute(
                "SELECT item_id FROM cleaned_interactions GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 4").fetchall()]
    pos = {i: n for n, i in enumerate(items["item_id"])}
    queries = [pos[i] for i in popular if i in pos] or list(range(min(4, len(items))))
    titles = dict(zip(items["item_id"], items["title"], strict=True))
    first_genre = [list(g)[0] if g is not None and len(g) else "(none)" for g in items["genres"]]
    meta = {
        "dagster/row_count": len(frame),
        "model_id": encoder.model_id,
        "device": encoder.device,
        "dim": int(matrix.shape[1]),
        "texts_encoded": encoded,
        "texts_reused": reused,
        "encode_seconds": round(encode_s, 3),
        "texts_per_second": round(encoded / encode_s, 1) if encoded and encode_s > 0 else 0.0,
        "seconds": round(time.perf_counter() - t0, 3),
        "nearest_neighbours": _neighbours_md(items["item_id"].tolist(), titles, matrix, queries),
        "text_example": texts.iloc[queries[0]] if len(texts) else "",
    }
    if len(frame) >= 3:
        meta["projection"] = _png_md(embedding_projection_png(matrix, first_genre, "item text embeddings (PCA)"), "PCA")
    context.log.info(f"encoded {encoded} texts, reused {reused} from the cache")
    return dg.MaterializeResult(metadata=meta)


@dg.asset(group_name=GROUP, kinds={"pytorch", "duckdb"}, pool=WAREHOUSE_POOL,
          deps=[item_text_embeddings, dg.AssetDep("cleaned_interactions", partition_mapping=dg.AllPartitionMapping()),
                "users"])
def user_behavior_embeddings(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, text_encoder: TextEncoderResource,
    compute: ComputeResource,
) -> dg.MaterializeResult:
    """Two representations per user in the text space: ``pooled`` (recency-weighted mean of
    the user's item text embeddings) and ``profile`` (the language model's encoding of a
    short profile: recent titles, favourite genres, demographics). Built from all cleaned
    interactions here; evaluation rebuilds them from its training split."""
    from recsys_dagster.core.text import encode_cached
    from recsys_dagster.core.user_profiles import pooled_user_embeddings, profile_texts

    t0 = time.perf_counter()
    encoder = text_encoder.get(compute.resolve())
    with warehouse.get_connection() as conn:
        inter = conn.execute("SELECT user_id, item_id, ts FROM cleaned_interactions").df()
        item_ids, item_emb = wh.read_embeddings(conn, "item_text_embeddings", "item_id")
        items = wh.read_table(conn, "items")
        users = wh.read_table(conn, "users")
        user_ids, pooled, counts = pooled_user_embeddings(inter, item_ids, item_emb)
        profiles = profile_texts(inter, items, users)
        prof_emb, encoded, reused = encode_cached(conn, encoder, profiles.tolist())
        n_by_user = dict(zip(user_ids, counts, strict=True))
        frame = pd.concat([
            pd.DataFrame({"user_id": user_ids, "method": "pooled", "model_id": encoder.model_id,
                          "n_interactions": counts, "embedding": list(pooled)}),
            pd.DataFrame({"user_id": profiles.index, "method": "profile", "model_id": encoder.model_id,
                          "n_interactions": [n_by_user.get(u, 0) for u in profiles.index], "embedding": list(prof_emb)}),
        ], ignore_index=True)
        wh.write(conn, "user_behavior_embeddings", frame)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(frame),
            "users": len(user_ids),
            "profile_texts_encoded": encoded,
            "profile_texts_reused": reused,
            "profile_example": profiles.iloc[0] if len(profiles) else "",
            "seconds": round(time.perf_counter() - t0, 3),
        }
    )


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
