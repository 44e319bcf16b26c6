"""Top-K fused recommendations with reasons, for known users and for new ones."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from recsys_dagster.core.explain import ExplainContext, explain_user, item_entity_lists
from recsys_dagster.core.fusion import FusedScorer, FusionWeights, top_k
from recsys_dagster.core.options import option
from recsys_dagster.core.warehouse import columns_of

REC_COLUMNS = columns_of("fused_recommendations")


@dataclass
class RecommendConfig:
    k: int = option(20, "items per user")
    alpha: float | None = option(None, "override the tuned GNN weight")
    beta: float | None = option(None, "override the tuned text weight")
    gamma: float | None = option(None, "override the tuned item-item (EASE) weight (0: GNN and text only)")
    cold_user_threshold: int = option(5, "users with fewer interactions lean on text")


def use_behaviour_vectors(data, user_vectors: tuple[np.ndarray, np.ndarray] | None) -> None:
    """Put the stored behaviour vectors (``user_behavior_embeddings``: ids, matrix) in
    ``data.user_text``; users the table lacks (it is older than the interactions) keep the
    vector pooled from ``data``."""
    if data.user_text is None or user_vectors is None or len(user_vectors[0]) == 0:
        return
    ids, matrix = user_vectors
    if matrix.shape[1] != data.user_text.shape[1]:
        raise ValueError(f"user_behavior_embeddings has {matrix.shape[1]}-d vectors, the item text {data.user_text.shape[1]}-d:"
                         " materialize user_behavior_embeddings again")
    rows = pd.Series(np.arange(len(ids)), index=pd.Index(ids)).reindex(data.user_ids).to_numpy()
    found = ~np.isnan(rows)
    data.user_text[found] = matrix[rows[found].astype(np.int64)]


def load_production_scorer(tables, version, fusion_override: dict | None = None, cold_user_threshold: int = 5,
                           device: str = "cpu", user_vectors=None):
    """A store :class:`~recsys_dagster.core.model_store.ModelVersion`'s weights on the graph
    of *all* interactions (propagation sees the newest edges without retraining), fusion
    weights from the version (tuned on validation), optionally overridden; the users' text
    vectors from ``user_vectors`` (see :func:`use_behaviour_vectors`) when given.

    Returns ``(scorer, data, positives, fusion)``."""
    from recsys_dagster.core.gnn_data import implicit_interactions
    from recsys_dagster.core.splits import Split
    from recsys_dagster.core.train import TrainConfig, load_weights
    from recsys_dagster.core.training_data import data_for_split

    cfg = TrainConfig.from_dict(version.manifest["config"])
    positives = implicit_interactions(tables.interactions, cfg.min_rating)
    data = data_for_split(tables, Split(positives, positives.iloc[:0], positives.iloc[:0], "all"), cfg)
    if cfg.min_rating is None:  # the table pools every interaction; a rating threshold pools its own positives
        use_behaviour_vectors(data, user_vectors)
    model, _ = load_weights(version.weights, data, device)
    fusion = {"alpha": 1.0, "beta": 0.0, "gamma": 0.0,
              **{k: v for k, v in version.fusion.items() if k in ("alpha", "beta", "gamma", "ease_lam")}}
    fusion.update({k: v for k, v in (fusion_override or {}).items() if v is not None})
    item_item = None
    if fusion["gamma"] and "ease_lam" in fusion:  # refit on every positive with the λ chosen on validation
        from recsys_dagster.core.baselines import EASE

        item_item = EASE(data.train_csr, data.n_items, fusion["ease_lam"], device)
    weights = FusionWeights(fusion["alpha"], fusion["beta"], cold_user_threshold, gamma=fusion["gamma"])
    scorer = build_scorer(model, data, weights, item_item)
    return scorer, data, positives, fusion


def build_scorer(model, data, weights: FusionWeights, item_item=None) -> FusedScorer:
    import torch

    users, items = model.user_item_embeddings()
    ut = torch.as_tensor(data.user_text) if data.user_text is not None else None
    it = torch.as_tensor(data.item_text) if data.item_text is not None else None
    counts = torch.as_tensor(np.diff(data.train_csr[0]))
    pop = torch.as_tensor(np.bincount(data.train_items, minlength=data.n_items))
    return FusedScorer(users, items, ut, it, counts, pop, weights, item_item)


def explain_context(scorer: FusedScorer, titles: np.ndarray, item_entities) -> ExplainContext:
    vec = scorer.item_gnn / scorer.item_gnn.norm(dim=1, keepdim=True).clamp_min(1e-12)
    text = scorer.item_text.numpy() if scorer.item_text is not None else None
    return ExplainContext(np.asarray(titles, dtype=object), vec.numpy(), text, item_entities)


def history_positive(positives: pd.DataFrame, data) -> tuple[np.ndarray, bool]:
    """For each entry of ``data.train_csr``: does it count as "rated highly" (top quarter of
    the observed rating range)? Returns ``(flags, explicit)``; with constant ratings
    (implicit feedback) every flag is False and ``explicit`` is False."""
    lo, hi = float(positives["rating"].min()), float(positives["rating"].max())
    ptr, idx = data.train_csr
    if not hi > lo:
        return np.zeros(len(idx), dtype=bool), False
    ratings = positives.set_index(["user_id", "item_id"])["rating"]
    keys = pd.MultiIndex.from_arrays([np.repeat(data.user_ids, np.diff(ptr)), data.item_ids[idx]])
    return ratings.reindex(keys).to_numpy() >= lo + 0.75 * (hi - lo), True


def recommend_all(scorer: FusedScorer, data, ctx: ExplainContext, positive: np.ndarray, k: int = 20,
                  model_version: str = "", generated_at=None, batch_size: int = 1024) -> pd.DataFrame:
    """Top-``k`` unseen items for every user with reasons. ``positive`` is aligned with
    ``data.train_csr[1]`` (True where the interaction counts as "rated highly")."""
    import torch

    users = np.arange(data.n_users)
    items, scores = top_k(scorer, users, data.train_csr, data.n_items, k, batch_size)
    ptr, hist = data.train_csr
    frames = []
    for s in range(0, len(users), batch_size):
        ub = torch.as_tensor(users[s: s + batch_size])
        top = torch.as_tensor(items[s: s + batch_size])
        with torch.no_grad():
            raw_gnn = (scorer.user_gnn[ub].unsqueeze(1) * scorer.item_gnn[top]).sum(-1)
            zg, zt, zc = scorer.parts(ub)
            if zt is not None:
                raw_text = (scorer.user_text[ub].unsqueeze(1) * scorer.item_text[top]).sum(-1)
                w = scorer.weights
                trust = scorer.trust(ub)
                behaviour = w.alpha + (w.gamma if zc is not None else 0.0)
                text_part = (w.beta + behaviour * (1 - trust)) * torch.gather(zt, 1, top)
                gnn_part = w.alpha * trust * torch.gather(zg, 1, top)
                if zc is not None:
                    gnn_part = gnn_part + w.gamma * trust * torch.gather(zc, 1, top)
                dominant = (text_part > gnn_part).numpy()
            else:
                raw_text = torch.full_like(raw_gnn, float("nan"))
                dominant = np.zeros(top.shape, dtype=bool)
        for row, u in enumerate(users[s: s + batch_size]):
            h = hist[ptr[u]: ptr[u + 1]]
            reasons = explain_user(items[u], h, positive[ptr[u]: ptr[u + 1]], dominant[row], ctx)
            frame = pd.DataFrame({
                "user_id": data.user_ids[u], "rank": np.arange(1, items.shape[1] + 1), "item_id": data.item_ids[items[u]],
                "score": scores[u], "gnn_score": raw_gnn[row].numpy(), "text_score": raw_text[row].numpy(),
                "reason": reasons,
            })
            # a user who has seen all but fewer than k items gets the unseen ones only (the
            # rest are masked to -inf and sorted last)
            frames.append(frame[np.isfinite(scores[u])])
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=REC_COLUMNS)
    out["model_version"] = model_version
    out["generated_at"] = generated_at if generated_at is not None else pd.Timestamp.now(tz="UTC").tz_localize(None)
    return out[REC_COLUMNS]


def recommend_for_new_user(scorer: FusedScorer, data, ctx: ExplainContext, item_ids: list[str] | None = None,
                           profile_embedding: np.ndarray | None = None, k: int = 20) -> pd.DataFrame:
    """Score a user unknown to the warehouse from a list of item ids and/or a text profile
    embedding (``TextEncoder.encode([profile])[0]``). Items given are excluded."""
    import torch

    pos = {str(i): n for n, i in enumerate(data.item_ids)}
    known = [pos[str(i)] for i in (item_ids or []) if str(i) in pos]
    user_gnn = scorer.item_gnn[known].mean(0, keepdim=True) if known else torch.zeros(1, scorer.item_gnn.shape[1])
    text_parts = []
    if scorer.item_text is not None and known:
        text_parts.append(scorer.item_text[known].mean(0))
    if profile_embedding is not None:
        text_parts.append(torch.as_tensor(np.asarray(profile_embedding, dtype=np.float32)))
    user_text = None
    if text_parts and scorer.item_text is not None:
        v = torch.stack(text_parts).mean(0, keepdim=True)
        user_text = v / v.norm().clamp_min(1e-12)
    item_item = None
    if scorer.item_item is not None and known:
        history = scorer.item_item.score_history(known)
        item_item = lambda ub: history  # noqa: E731 - one user
    one = FusedScorer(user_gnn, scorer.item_gnn, user_text, scorer.item_text, torch.tensor([len(known)]),
                      scorer.popularity, scorer.weights, item_item)
    exclude = (np.array([0, len(known)]), np.array(sorted(known), dtype=np.int64))
    items, scores = top_k(one, np.array([0]), exclude, data.n_items, k)
    dominant = np.full(items.shape[1], len(known) == 0)
    reasons = explain_user(items[0], np.array(known, dtype=np.int64), np.ones(len(known), dtype=bool), dominant, ctx)
    if not known and profile_embedding is not None:
        reasons = ["matches your description"] * len(reasons)
    out = pd.DataFrame({"rank": np.arange(1, items.shape[1] + 1), "item_id": data.item_ids[items[0]],
                        "title": ctx.titles[items[0]], "score": scores[0], "reason": reasons})
    return out[np.isfinite(scores[0])].reset_index(drop=True)


@dataclass
class Recommendations:
    frame: pd.DataFrame
    fusion: dict
    n_items: int
    users_without_stored_vector: int

    def summary(self, titles: pd.Series) -> dict:
        """Coverage, reason kinds and one user's list (for the asset's metadata)."""
        recs = self.frame
        sample = recs[recs.user_id == recs.user_id.iloc[0]].head(10).merge(
            titles.rename("title"), left_on="item_id", right_index=True, how="left") if len(recs) else recs
        kinds = recs["reason"].str.extract(r"^(same [a-z ]+?|similar description|because you|popular)")[0].value_counts()
        return {"users": int(recs["user_id"].nunique()), "distinct_items": int(recs["item_id"].nunique()),
                "catalog_coverage": round(recs["item_id"].nunique() / max(self.n_items, 1), 4),
                "reason_kinds": kinds.rename_axis("reason").reset_index().to_markdown(index=False),
                "sample": sample[["user_id", "rank", "title", "score", "reason"]].to_markdown(index=False)}


def production_recommendations(tables, titles: pd.Series, version, config: RecommendConfig,
                               user_vectors=None, device: str = "cpu") -> Recommendations:
    """Top-``config.k`` recommendations with reasons for every user from a published model
    version (see :func:`load_production_scorer`)."""
    scorer, data, positives, fusion = load_production_scorer(
        tables, version, {"alpha": config.alpha, "beta": config.beta, "gamma": config.gamma}, config.cold_user_threshold,
        device, user_vectors)
    ctx = explain_context(scorer, titles.reindex(data.item_ids).fillna("").to_numpy(),
                          item_entity_lists(data.n_items, {i: n for n, i in enumerate(data.item_ids)},
                                            tables.entities, tables.relations, tables.triples))
    positive, explicit = history_positive(positives, data)
    if not explicit:
        ctx.verb_other = "interacted with"
    frame = recommend_all(scorer, data, ctx, positive, config.k, version.version)
    served = user_vectors is not None and data.user_text is not None and version.manifest["config"].get("min_rating") is None
    missing = int((~np.isin(data.user_ids, user_vectors[0])).sum()) if served else data.n_users
    return Recommendations(frame, fusion, data.n_items, missing)
