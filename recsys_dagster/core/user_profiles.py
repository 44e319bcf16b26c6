"""User behaviour in the text-embedding space: :func:`pooled_user_embeddings`, the
recency-weighted mean of the text embeddings of the items a user interacted with,
``w = 2^(-(t_last - t) / half_life)`` relative to the user's own latest interaction,
L2-normalized. It takes the interactions the caller passes, so training and evaluation
pass their training split only (no leakage) and ``user_behavior_embeddings`` passes every
positive (serving).

An LM-encoded text profile per user (recent titles, favourite genres, demographics) was
measured and dropped: as the text side on ML-100K (hash split, seeds 2020-2022) its
validation NDCG@10 was 0.016 against 0.023 for the pooled vector (0.68x), averaging the
two scored 0.015, and encoding the profiles cost 16-18 s per run.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def recency_weights(user_codes: np.ndarray, ts, half_life_days: float = 60.0) -> np.ndarray:
    """``2^(-(t_last - t) / half_life)`` per interaction, ``t_last`` the user's latest one
    (``user_codes``: 0..U-1 per interaction)."""
    ts = pd.to_datetime(pd.Series(ts)).to_numpy("datetime64[s]").astype(np.int64).astype(np.float64)
    user_codes = np.asarray(user_codes, dtype=np.int64)
    last = np.full(int(user_codes.max()) + 1 if len(user_codes) else 0, -np.inf)
    np.maximum.at(last, user_codes, ts)
    return np.power(2.0, -((last[user_codes] - ts) / 86400.0) / half_life_days)


def pooled_user_embeddings(
    interactions: pd.DataFrame, item_ids, item_emb: np.ndarray, half_life_days: float = 60.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Returns ``(user_ids, matrix, counts)``; interactions with unknown items are skipped
    in the pooling (they have no text) and not counted."""
    pos = pd.Series(np.arange(len(item_ids)), index=pd.Index(item_ids))
    frame = interactions[["user_id", "item_id", "ts"]].copy()
    frame["i"] = frame["item_id"].map(pos)
    frame = frame.dropna(subset=["i"])
    users, u = np.unique(frame["user_id"].to_numpy(dtype=object), return_inverse=True)
    w = recency_weights(u, frame["ts"], half_life_days)
    # sparse (users x items) weights @ item embeddings: memory O(interactions + users x dim),
    # not O(interactions x dim) (13 GB at 5M interactions)
    from scipy.sparse import csr_matrix

    weights = csr_matrix((w, (u, frame["i"].to_numpy(np.int64))), shape=(len(users), len(item_emb)))
    out = np.asarray(weights @ item_emb.astype(np.float64))
    norm = np.linalg.norm(out, axis=1, keepdims=True)
    out = out / np.maximum(norm, 1e-12)
    counts = np.bincount(u, minlength=len(users))
    return users, out.astype(np.float32), counts


def behaviour_frame(positives: pd.DataFrame, item_ids, item_emb: np.ndarray, model_id: str,
                    half_life_days: float = 60.0) -> pd.DataFrame:
    """The rows of ``user_behavior_embeddings``: one pooled vector per user of ``positives``."""
    users, pooled, counts = pooled_user_embeddings(positives, item_ids, item_emb, half_life_days)
    return pd.DataFrame({"user_id": users, "method": "pooled", "model_id": model_id, "n_interactions": counts,
                         "embedding": list(pooled)})
