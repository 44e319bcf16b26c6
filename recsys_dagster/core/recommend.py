"""Top-K fused recommendations with reasons, for known users and for new ones."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from recsys_dagster.core.explain import (
    Attributor,
    Explainer,
    KGPaths,
    Verbs,
    display_names,
    entity_display,
    escape_md,
    item_entity_lists,
)
from recsys_dagster.core.fusion import FewShotWeights, FusedScorer, FusionWeights, top_k
from recsys_dagster.core.options import option
from recsys_dagster.core.threads import one_blas_thread
from recsys_dagster.core.warehouse import columns_of

REC_COLUMNS = columns_of("fused_recommendations")


@dataclass
class RecommendConfig:
    k: int = option(20, "items per user")
    alpha: float | None = option(None, "override the tuned GNN weight")
    beta: float | None = option(None, "override the tuned text weight")
    gamma: float | None = option(None, "override the tuned item-item (EASE) weight (0: GNN and text only)")
    cold_user_threshold: int = option(5, "users with fewer interactions (but at least one) get the version's "
                                         "few-shot weights (tuned on validation by the evaluation)")


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


@dataclass
class Production:
    """A published version ready to score: the fused scorer on the graph of every
    positive, its data, the positives, the fusion weights and the GNN."""

    scorer: FusedScorer
    data: object
    positives: pd.DataFrame
    fusion: dict
    model: object


def load_production_scorer(tables, version, fusion_override: dict | None = None, cold_user_threshold: int = 5,
                           device: str = "cpu", user_vectors=None) -> Production:
    """A store :class:`~recsys_dagster.core.model_store.ModelVersion`'s weights on the graph
    of *all* interactions (propagation sees the newest edges without retraining), fusion
    weights from the version (tuned on validation), optionally overridden; the users' text
    vectors from ``user_vectors`` (see :func:`use_behaviour_vectors`) when given."""
    from recsys_dagster.core.cold_start import ContentMap
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
    few_shot = dict(version.fusion.get("few_shot") or {})
    if few_shot and (fusion_override or {}).get("gamma") == 0:  # "no item-item part" holds for every user
        few_shot["gamma"] = 0.0
    item_item = None
    lam = fusion.get("ease_lam") if fusion["gamma"] else None
    if lam is None and few_shot.get("gamma"):  # EASE weighted for few-shot users only
        lam = few_shot.get("ease_lam")
    if lam is not None:  # refit on every positive with the λ chosen on validation
        from recsys_dagster.core.baselines import EASE

        item_item = EASE(data.train_csr, data.n_items, lam, device)
    if item_item is None:
        few_shot["gamma"] = 0.0
    weights = FusionWeights(fusion["alpha"], fusion["beta"], cold_user_threshold, gamma=fusion["gamma"],
                            few_shot=FewShotWeights.from_dict(few_shot))
    if few_shot:
        fusion["few_shot"] = weights.few_shot.as_dict()
    fusion["precision"] = version.scoring_precision  # what the gate graded (EvalConfig.scoring)
    scorer = build_scorer(model, data, weights, item_item, fusion["precision"], ContentMap.from_dict(version.fusion))
    return Production(scorer, data, positives, fusion, model)


def build_scorer(model, data, weights: FusionWeights, item_item=None, precision: str = "fp32",
                 content_map=None) -> FusedScorer:
    """The fused scorer of ``model`` on ``data``; cold items mapped from text and KG
    attributes with ``content_map`` (:mod:`recsys_dagster.core.cold_start`; default text only)."""
    import torch

    from recsys_dagster.core.cold_start import ContentFeatures, item_attributes

    users, items = model.user_item_embeddings()
    ut = torch.as_tensor(data.user_text) if data.user_text is not None else None
    it = torch.as_tensor(data.item_text) if data.item_text is not None else None
    counts = torch.as_tensor(np.diff(data.train_csr[0]))
    pop = torch.as_tensor(np.bincount(data.train_items, minlength=data.n_items))
    content = ContentFeatures(data.item_text, item_attributes(data))
    return FusedScorer(users, items, ut, it, counts, pop, weights, item_item, precision=precision, content=content,
                       content_map=content_map)


def history_signals(interactions: pd.DataFrame, data, half_life_days: float = 60.0) -> tuple[np.ndarray, np.ndarray]:
    """Aligned with ``data.train_csr[1]``: does each history entry count as "rated highly"
    (top quarter of the observed rating range; all False with constant ratings), and its
    recency weight in the text pooling (:func:`~recsys_dagster.core.user_profiles.recency_weights`)."""
    from recsys_dagster.core.user_profiles import recency_weights

    ptr, idx = data.train_csr
    users = np.repeat(np.arange(data.n_users), np.diff(ptr))
    keys = pd.MultiIndex.from_arrays([data.user_ids[users], data.item_ids[idx]])
    frame = interactions.drop_duplicates(["user_id", "item_id"], keep="last").set_index(["user_id", "item_id"])
    rating = frame["rating"].reindex(keys).to_numpy(dtype=float)
    lo, hi = np.nanmin(rating, initial=np.inf), np.nanmax(rating, initial=-np.inf)
    positive = rating >= lo + 0.75 * (hi - lo) if hi > lo else np.zeros(len(idx), dtype=bool)
    ts = frame["ts"].reindex(keys)
    weights = recency_weights(users, ts, half_life_days) if len(idx) else np.zeros(0)
    return positive, np.nan_to_num(weights, nan=1.0)


def build_explainer(scorer: FusedScorer, data, model, interactions: pd.DataFrame, titles: pd.Series | None,
                    entities: pd.DataFrame | None = None, verbs: Verbs | None = None,
                    item_entities=None) -> Explainer:
    """An :class:`Explainer` for lists scored by ``scorer`` over ``data``'s history."""
    positive, weights = history_signals(interactions, data)
    attributor = Attributor(scorer, model, data.train_csr, weights)
    return Explainer(attributor, display_names(data.item_ids, titles), np.asarray(data.item_ids, dtype=object),
                     verbs or Verbs(), positive, KGPaths.from_model(attributor, data), data.entity_keys,
                     entity_display(entities), item_entities)


def production_explainer(prod: Production, tables, titles: pd.Series | None, verbs: Verbs | None = None) -> Explainer:
    ents = item_entity_lists(prod.data.n_items, {i: n for n, i in enumerate(prod.data.item_ids)},
                             tables.entities, tables.relations, tables.triples)
    return build_explainer(prod.scorer, prod.data, prod.model, prod.positives, titles, tables.entities, verbs, ents)


def recommend_all(scorer: FusedScorer, data, explainer: Explainer, k: int = 20, model_version: str = "",
                  generated_at=None, batch_size: int = 1024, top_k_fn=top_k) -> pd.DataFrame:
    """Top-``k`` unseen items for every user with a reason and its evidence (JSON);
    ``top_k_fn`` may score elsewhere (:func:`recsys_dagster.core.parallel.block_top_k`)."""
    import torch

    users = np.arange(data.n_users)
    items, scores = top_k_fn(scorer, users, data.train_csr, data.n_items, k, batch_size)
    frames = []
    for s in range(0, len(users), batch_size):
        ub = torch.as_tensor(users[s: s + batch_size])
        top = torch.as_tensor(items[s: s + batch_size])
        with torch.no_grad():
            raw_gnn = (scorer.user_gnn[ub].unsqueeze(1) * scorer.item_gnn[top]).sum(-1)
            raw_text = (scorer.user_text[ub].unsqueeze(1) * scorer.item_text[top]).sum(-1) \
                if scorer.user_text is not None and scorer.item_text is not None else torch.full_like(raw_gnn, float("nan"))
        for row, u in enumerate(users[s: s + batch_size]):
            # a user who has seen all but fewer than k items gets the unseen ones only (the
            # rest are masked to -inf and sorted last)
            keep = np.isfinite(scores[u])
            reasons, evidence, _ = explainer.explain_user(int(u), items[u][keep])
            frames.append(pd.DataFrame({
                "user_id": data.user_ids[u], "rank": np.arange(1, keep.sum() + 1), "item_id": data.item_ids[items[u][keep]],
                "score": scores[u][keep], "gnn_score": raw_gnn[row].numpy()[keep], "text_score": raw_text[row].numpy()[keep],
                "reason": reasons, "evidence": evidence,
            }))
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=REC_COLUMNS)
    out["model_version"] = model_version
    out["generated_at"] = generated_at if generated_at is not None else pd.Timestamp.now(tz="UTC").tz_localize(None)
    return out[REC_COLUMNS]


def recommend_for_new_user(scorer: FusedScorer, data, explainer: Explainer, item_ids: list[str] | None = None,
                           profile_embedding: np.ndarray | None = None, k: int = 20) -> pd.DataFrame:
    """Score a user unknown to the warehouse from a list of item ids and/or a text profile
    embedding (``TextEncoder.encode([profile])[0]``). Items given are excluded.

    The user's GNN vector is the mean of the given items' (fold-in), which the explanation
    splits exactly over those items; with a text profile as well, the text part's share
    of the profile is left to "fits your overall taste"."""
    import torch

    pos = {str(i): n for n, i in enumerate(data.item_ids)}
    known = sorted({pos[str(i)] for i in (item_ids or []) if str(i) in pos})
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
    item_item = scorer.item_item.for_history(known) if scorer.item_item is not None and known else None
    one = FusedScorer(user_gnn, scorer.item_gnn, user_text, scorer.item_text, torch.tensor([len(known)]),
                      scorer.popularity, scorer.weights, item_item, cold_items_mapped=True)
    exclude = (np.array([0, len(known)]), np.array(known, dtype=np.int64))
    items, scores = top_k(one, np.array([0]), exclude, data.n_items, k)
    keep = np.isfinite(scores[0])
    chosen = items[0][keep]
    fold_in = FoldIn(known, scorer.item_gnn)
    one_explainer = replace(explainer, attributor=Attributor(one, fold_in, exclude), positive=None, kg=None)
    reasons, evidence, _ = one_explainer.explain_user(0, chosen)
    if not known and profile_embedding is not None:
        reasons = ["matches your description"] * len(reasons)
    return pd.DataFrame({"rank": np.arange(1, len(chosen) + 1), "item_id": data.item_ids[chosen],
                         "title": explainer.names[chosen], "score": scores[0][keep], "reason": reasons,
                         "evidence": evidence})


class FoldIn:
    """The propagation terms of a new user whose GNN vector is the mean of its items'
    (one user node, then the items): ``e_u = sum_h (1/|H|) v_h``."""

    num_users = 1

    def __init__(self, known: list[int], item_gnn):
        import torch

        from recsys_dagster.core.models.sparse import csr

        self.num_items, d = item_gnn.shape
        self.x0 = torch.zeros(1 + self.num_items, d)
        self.through = torch.cat([torch.zeros(1, d), item_gnn.float().cpu()])
        cols = np.asarray(known, dtype=np.int64) + 1
        self.adj = csr(np.zeros(len(cols), dtype=np.int64), cols, np.full(len(cols), 1.0 / max(len(cols), 1)),
                       1 + self.num_items)

    def propagation_terms(self):
        return self.x0, self.through, self.adj, 0


@dataclass
class Recommendations:
    frame: pd.DataFrame
    fusion: dict
    n_items: int
    users_without_stored_vector: int

    def summary(self, titles: pd.Series, sample_users: int = 3, per_user: int = 5, mask_users: bool = False) -> dict:
        """Coverage, evidence kinds and a few users' lists with reasons (the asset's metadata)."""
        from recsys_dagster.core.explain import display_names, kind_of

        recs = self.frame
        users = recs["user_id"].drop_duplicates().head(sample_users)
        sample = recs[recs.user_id.isin(users) & (recs["rank"] <= per_user)].copy()
        sample["item"] = display_names(sample["item_id"], titles)
        sample["item"] = sample["item"].map(escape_md)
        sample["score"] = sample["score"].round(3)
        if mask_users:  # pseudonyms stay out of Dagster's (permanent) event log
            sample["user_id"] = sample["user_id"].astype(str).str[:6] + "…"
        kinds = recs["evidence"].map(kind_of).value_counts()
        return {"users": int(recs["user_id"].nunique()), "distinct_items": int(recs["item_id"].nunique()),
                "catalog_coverage": round(recs["item_id"].nunique() / max(self.n_items, 1), 4),
                "evidence_kinds": kinds.rename_axis("evidence").reset_index().to_markdown(index=False),
                "sample": sample[["user_id", "rank", "item", "score", "reason"]].to_markdown(index=False)}


@one_blas_thread
def production_recommendations(tables, titles: pd.Series, version, config: RecommendConfig, user_vectors=None,
                               device: str = "cpu", verbs: Verbs | None = None, top_k_fn=top_k) -> Recommendations:
    """Top-``config.k`` recommendations with reasons for every user from a published model
    version (see :func:`load_production_scorer`); ``verbs`` from the dataset; ``top_k_fn``
    as in :func:`recommend_all`."""
    prod = load_production_scorer(
        tables, version, {"alpha": config.alpha, "beta": config.beta, "gamma": config.gamma}, config.cold_user_threshold,
        device, user_vectors)
    explainer = production_explainer(prod, tables, titles, verbs)
    frame = recommend_all(prod.scorer, prod.data, explainer, config.k, version.version, top_k_fn=top_k_fn)
    data = prod.data
    served = user_vectors is not None and data.user_text is not None and version.manifest["config"].get("min_rating") is None
    missing = int((~np.isin(data.user_ids, user_vectors[0])).sum()) if served else data.n_users
    return Recommendations(frame, prod.fusion, data.n_items, missing)
