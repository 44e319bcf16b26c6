"""The explanation protocol: are the reasons faithful, specific and varied?

For a seeded sample of users and the top of each user's list (training items excluded,
as served):

* **Deletion fidelity.** The cited history item is removed from the user's history — the
  graph edge (the GNN re-propagates with the same weights: no retraining), the
  item–item model's input row and the text pooling — and the list is re-scored (a cited
  user attribute: its graph edge). The drop of the recommended item's fused score and its
  rank is compared with removing a history item drawn at random from the same user. When the reason cites a KG path, the cited
  item–entity edge is removed likewise and compared with a random other KG edge of the
  item. A faithful explanation cites what the score depends on: its drop is larger.
  ``expl_cited_beats_random`` is the share of recommendations where the cited deletion
  costs more than the random one (robust when random deletions cost almost nothing).
* **Coverage**: the share of recommendations whose leading evidence is specific (a history
  item or a user attribute), not "fits your overall taste" or "popular".
* **Diversity**: per list, distinct pieces of leading evidence per recommendation, and the
  entropy (bits) of the evidence kinds over all lists.

Base and re-scored lists are computed the same way (one user at a time), so the drops
measure the deletion alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

import numpy as np

from recsys_dagster.core.explain import SPECIFIC, Explainer
from recsys_dagster.core.metrics import to_csr
from recsys_dagster.core.threads import one_blas_thread

METRICS = ("expl_coverage", "expl_diversity", "expl_kind_entropy", "expl_score_drop_cited", "expl_score_drop_random",
           "expl_fidelity_ratio", "expl_cited_beats_random", "expl_rank_drop_cited", "expl_rank_drop_random", "expl_leaves_top_cited",
           "expl_leaves_top_random", "expl_kg_score_drop_cited", "expl_kg_score_drop_random", "expl_kg_fidelity_ratio",
           "expl_kg_cited_beats_random")


@dataclass(frozen=True)
class Removal:
    """One deletion: user ``user``'s history item ``item`` and/or the KG edge pair ``kg_pair``."""

    user: int
    item: int | None = None
    kg_pair: tuple[int, int] | None = None


@dataclass
class ExplanationReport:
    metrics: dict
    n_users: int
    n_deletions: int


class Rescorer:
    """One user's fused scores with a history item or a KG edge removed."""

    def __init__(self, scorer, model, data, explainer: Explainer):
        self.scorer, self.model, self.data, self.explainer = scorer, model, data, explainer
        self.rewire = model.rewirer(data) if scorer.user_gnn is not None else None
        # the cold items' content features, and their factorized ridge per set of warm items
        from recsys_dagster.core.cold_start import ContentFeatures

        content = scorer.content
        if content is None and scorer.item_text is not None:  # FusedScorer's default: the text alone
            content = ContentFeatures(scorer.item_text.cpu().numpy())
        self.features = content(scorer.content_map) if content is not None else None
        self.fits: dict = {}
        self.n_train = np.diff(data.train_csr[0])
        self.popularity = np.bincount(data.train_items, minlength=data.n_items)

    def _data_without(self, u: int, item: int | None, kg_pair: tuple[int, int] | None):
        d = self.data
        data = replace(d)
        if item is not None:
            keep = ~((d.train_users == u) & (d.train_items == item))
            data = replace(data, train_users=d.train_users[keep], train_items=d.train_items[keep],
                           train_csr=to_csr(d.train_users[keep], d.train_items[keep], d.n_users))
            if d.user_text is not None:
                ptr, idx = d.train_csr
                hist = idx[ptr[u]: ptr[u + 1]]
                w = self.explainer.attributor.weights[ptr[u]: ptr[u + 1]] * (hist != item)
                pooled = w @ d.item_text[hist]
                text = d.user_text.copy()
                text[u] = pooled / max(float(np.linalg.norm(pooled)), 1e-12)
                data = replace(data, user_text=text)
        if kg_pair is not None:
            a, b = kg_pair
            keep = ~(((d.kg_head == a) & (d.kg_tail == b)) | ((d.kg_head == b) & (d.kg_tail == a)))
            data = replace(data, kg_head=d.kg_head[keep], kg_tail=d.kg_tail[keep], kg_rel=d.kg_rel[keep])
        return data

    def scores(self, u: int, item: int | None = None, kg_pair: tuple[int, int] | None = None) -> np.ndarray:
        """``(I,)`` fused scores of user ``u`` after the removal (none: the base)."""
        import torch

        from recsys_dagster.core.fusion import FusedScorer, map_cold_items

        sc = self.scorer
        data = self._data_without(u, item, kg_pair)
        n_after = int(np.diff(data.train_csr[0])[u])
        pop = self.popularity.copy()
        if item is not None:
            pop[item] -= self.n_train[u] - n_after  # 1, or 0 when the pair was not a training pair
        pop = torch.as_tensor(pop)
        user_gnn = item_gnn = None
        if sc.user_gnn is not None:
            model = self.model
            if item is not None or kg_pair is not None:
                model = self.rewire(data, Removal(u, item, kg_pair))
            users, items = model.user_item_embeddings()
            user_gnn, item_gnn = users[u: u + 1], items
            if self.features is not None:  # as FusedScorer maps them, with the ridge kept across deletions
                item_gnn = map_cold_items(item_gnn, self.features, pop, sc.weights.cold_item_threshold,
                                          sc.content_map.ridge, self.fits)
        user_text = torch.as_tensor(data.user_text[u: u + 1]) if data.user_text is not None and \
            sc.user_text is not None else None
        item_item = None
        if sc.item_item is not None and sc.weights.gamma:
            ptr, idx = data.train_csr
            item_item = sc.item_item.for_history(idx[ptr[u]: ptr[u + 1]])
        n = torch.tensor([float(n_after)])
        one = FusedScorer(user_gnn, item_gnn, user_text, sc.item_text, n, pop, sc.weights, item_item,
                          cold_items_mapped=True, content=sc.content, content_map=sc.content_map)
        with torch.no_grad():
            return one(torch.tensor([0]))[0].numpy()


def _drop(base: np.ndarray, after: np.ndarray, item: int, candidates: np.ndarray, k: int) -> tuple[float, float, bool]:
    rank_before = 1 + int((base[candidates] > base[item]).sum())
    rank_after = 1 + int((after[candidates] > after[item]).sum())
    return float(base[item] - after[item]), float(rank_after - rank_before), rank_after > k


@one_blas_thread
def evaluate_explanations(scorer, model, data, explainer: Explainer, n_users: int = 100, k: int = 10,
                          per_user: int = 3, seed: int = 0) -> ExplanationReport:
    """The protocol of the module docstring on ``n_users`` users with at least two history
    items (seeded); coverage and diversity over their top-``k``, deletions on the top ``per_user``."""
    from recsys_dagster.core.fusion import top_k

    rng = np.random.default_rng(seed)
    ptr, idx = data.train_csr
    eligible = np.flatnonzero(np.diff(ptr) >= 2)
    users = np.sort(rng.choice(eligible, size=min(n_users, len(eligible)), replace=False))
    if not len(users):
        return ExplanationReport({}, 0, 0)
    items, scores = top_k(scorer, users, data.train_csr, data.n_items, k)
    rescorer = Rescorer(scorer, model, data, explainer)
    cache: dict = {}

    def after(u: int, key: tuple, **removal) -> np.ndarray:
        if (u, key) not in cache:
            if any(k[0] != u for k in cache):
                cache.clear()  # one user at a time
            cache[u, key] = rescorer.scores(u, **removal)
        return cache[u, key]

    pos = {str(i): n for n, i in enumerate(data.item_ids)}
    kinds, diversity, deletions = [], [], 0
    cited, random_, kg_cited, kg_random = [], [], [], []
    for row, u in enumerate(users):
        keep = np.isfinite(scores[row])
        _, evidence, _ = explainer.explain_user(int(u), items[row][keep])
        parsed = [json.loads(e) for e in evidence]
        kinds += [p[0]["type"] for p in parsed]
        keys = [p[0].get("item_id") or p[0].get("entity") or p[0]["type"] for p in parsed]
        diversity.append(len(set(keys)) / max(len(keys), 1))
        hist = idx[ptr[u]: ptr[u + 1]]
        candidates = np.setdiff1d(np.arange(data.n_items), hist)
        base = rescorer.scores(int(u))
        for r in range(min(per_user, int(keep.sum()))):
            item = int(items[row][r])
            lead = parsed[r][0]
            removal = None
            if lead["type"] == "history_item":
                h = pos[lead["item_id"]]
                removal, others = (("h", h), {"item": h}), hist[hist != h]
            elif lead["type"] == "user_attribute" and explainer.entity_node(lead["entity"]) is not None:
                node = explainer.entity_node(lead["entity"])
                removal, others = (("u", node), {"kg_pair": (int(u), node)}), hist
            if removal is not None:
                other = int(rng.choice(others))
                cited.append(_drop(base, after(int(u), removal[0], **removal[1]), item, candidates, k))
                random_.append(_drop(base, after(int(u), ("h", other), item=other), item, candidates, k))
                deletions += 2
            path = next((p for p in parsed[r] if p["type"] == "kg_path"), None)
            if path is not None and explainer.kg is not None:
                node = explainer.entity_node(path["entity"])
                edges = [e for e in explainer.kg.out[item] if e != node]
                if node is not None and edges:
                    first = data.n_users
                    kg_cited.append(_drop(base, after(int(u), ("kg", item, node), kg_pair=(first + item, node)), item,
                                          candidates, k))
                    pick = int(rng.choice(edges))
                    kg_random.append(_drop(base, after(int(u), ("kg", item, pick), kg_pair=(first + item, pick)), item,
                                           candidates, k))
                    deletions += 2
    counts = np.unique(np.asarray(kinds), return_counts=True)[1] if kinds else np.zeros(0)
    p = counts / max(counts.sum(), 1)
    metrics = {"expl_coverage": float(np.isin(kinds, SPECIFIC).mean()) if kinds else 0.0,
               "expl_diversity": float(np.mean(diversity)),
               "expl_kind_entropy": float(-(p * np.log2(p)).sum()) if len(p) else 0.0}
    for name, c, r in (("", cited, random_), ("kg_", kg_cited, kg_random)):
        if c:
            c, r = np.asarray(c, dtype=float), np.asarray(r, dtype=float)
            metrics[f"expl_{name}score_drop_cited"] = float(c[:, 0].mean())
            metrics[f"expl_{name}score_drop_random"] = float(r[:, 0].mean())
            if r[:, 0].mean() > 0:  # undefined when random deletions do not lower the score on average
                metrics[f"expl_{name}fidelity_ratio"] = float(c[:, 0].mean() / r[:, 0].mean())
            # robust to a random drop near zero: how often the cited deletion costs more
            metrics[f"expl_{name}cited_beats_random"] = float((c[:, 0] > r[:, 0]).mean())
            if not name:
                metrics["expl_rank_drop_cited"], metrics["expl_rank_drop_random"] = float(c[:, 1].mean()), \
                    float(r[:, 1].mean())
                metrics["expl_leaves_top_cited"], metrics["expl_leaves_top_random"] = float(c[:, 2].mean()), \
                    float(r[:, 2].mean())
    return ExplanationReport(metrics, len(users), deletions)
