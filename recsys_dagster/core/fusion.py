r"""Score fusion, top-K, cold start and explanations.

.. math::
    \text{score}(u, i) = \alpha_u\, z_u(s_{gnn}(u, i)) + \beta_u\, z_u(s_{text}(u, i))
                       + \gamma_u\, z_u(s_{ii}(u, i))

with :math:`s_{gnn}` the GNN score, :math:`s_{text}` the cosine between the user's
behaviour embedding and the item's text embedding, :math:`s_{ii}` an optional closed-form
item–item model over the user's history (EASE: :math:`x_u B`), :math:`z_u` standardization
over all items for that user. The weights are tuned on validation (:func:`tune_fusion`).

*Few-shot users* (``0 < n_u <`` ``cold_user_threshold`` training interactions: users who have
just joined) get weights of their own, ``few_shot`` (:class:`FewShotWeights`), with a fourth
part, :math:`\pi\, z_u(\log(1 + \text{popularity}_i))`, all four tuned on the validation
pairs of users cut to a few interactions (:func:`tune_few_shot`): in every evaluation by
fold-in (:func:`fold_in_scorer`: protocol A's validation users cut to a few training items
and scored as the service scores a new user), and by the few-shot protocol when it runs
(users who trained with their first few interactions only,
:func:`~recsys_dagster.core.splits.few_shot_user_split`), which keeps its own or the fold-in
weights by cross-validation on its users. Without them these users get the
weights of everyone else. (A fixed rule used to shift their weight to the text
part, :math:`\beta_u = \beta + (\alpha + \gamma)(1 - n_u / N)`; measured on few-shot users it
ranked far below popularity, and nothing had chosen it on validation.) A user without
interactions gets the text part alone when it has a text vector, else popularity.

Items with fewer than ``cold_item_threshold`` training interactions get their GNN embedding
from their content: a ridge regression from content features (text and KG attributes,
each source weighted as validation chose: :mod:`recsys_dagster.core.cold_start`) to GNN
embedding, fitted on the warm items (:func:`map_cold_items`), blended with the item's own
embedding by :math:`w_i = n_i / N_i`. Mapped embeddings live on the GNN's scale, so a
brand-new item competes with warm items without flooding the lists (raw text z-scores would).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, replace

import numpy as np


@dataclass(frozen=True)
class FewShotWeights:
    """The fusion's weights for few-shot users: GNN, text, item–item and popularity."""

    alpha: float = 1.0
    beta: float = 0.0
    gamma: float = 0.0
    popularity: float = 0.0

    def as_dict(self) -> dict:
        return {"alpha": self.alpha, "beta": self.beta, "gamma": self.gamma, "popularity": self.popularity}

    @classmethod
    def from_dict(cls, d: dict | None) -> FewShotWeights | None:
        return cls(**{k: float(d[k]) for k in ("alpha", "beta", "gamma", "popularity")}) if d else None


@dataclass(frozen=True)
class FusionWeights:
    alpha: float = 1.0
    beta: float = 0.0
    cold_user_threshold: int = 5
    gamma: float = 0.0
    cold_item_threshold: int = 5
    few_shot: FewShotWeights | None = None


def _z(scores):
    mean = scores.mean(dim=1, keepdim=True)
    std = scores.std(dim=1, keepdim=True).clamp_min(1e-8)
    return (scores - mean) / std


class FusedScorer:
    """Scores batches of users; all inputs are torch tensors on one device.

    Args:
        user_gnn, item_gnn: ``(U, d)``, ``(I, d)`` GNN embeddings (or None).
        user_text, item_text: ``(U, T)``, ``(I, T)`` normalized text embeddings (or None).
        n_interactions: ``(U,)`` interaction counts (cold-user weighting).
        popularity: ``(I,)`` interaction counts per item (last-resort fallback).
        item_item: optional ``users -> (B, I)`` scores of a closed-form item–item model.
        cold_items_mapped: ``item_gnn`` comes from a scorer that already mapped its cold items.
        content: the items' :class:`~recsys_dagster.core.cold_start.ContentFeatures` that map
            cold items (default: the item text alone), weighted by ``content_map``
            (:class:`~recsys_dagster.core.cold_start.ContentMap`; default text only, ridge 1).
        precision: ``fp32``, or ``int8``: the four embedding tables are kept as int8 rows with
            per-row scales (:mod:`recsys_dagster.core.quantize`, a quarter of the memory) and
            dequantized block by block while scoring.
    """

    def __init__(self, user_gnn, item_gnn, user_text, item_text, n_interactions, popularity,
                 weights: FusionWeights = FusionWeights(), item_item=None, cold_items_mapped: bool = False,
                 precision: str = "fp32", content=None, content_map=None):
        import torch

        from recsys_dagster.core.cold_start import ContentFeatures, ContentMap

        anchor = next(t for t in (item_gnn, item_text) if t is not None)
        device = anchor.device

        def on(t):
            return None if t is None else t.to(device)

        user_gnn, item_gnn, user_text, item_text = on(user_gnn), on(item_gnn), on(user_text), on(item_text)
        popularity = on(popularity)
        self.user_gnn, self.item_gnn, self.raw_item_gnn = user_gnn, item_gnn, item_gnn
        self.user_text, self.item_text = user_text, item_text
        self.n = on(n_interactions).float()
        self.popularity = popularity
        self.pop_z = _z(torch.log1p(popularity.float()).unsqueeze(0))
        self.weights = weights
        if content is None and item_text is not None and not cold_items_mapped:
            content = ContentFeatures(item_text.cpu().numpy())
        self.content, self.content_map = content, content_map or ContentMap()
        if item_gnn is not None and content is not None and not cold_items_mapped:
            self.remap_cold_items(self.content_map)
        self.item_item = item_item
        self._cache: dict | None = None
        if precision not in ("fp32", "int8"):
            raise ValueError(f"precision={precision!r}: expected fp32 or int8")
        self.precision = precision
        if precision == "int8":
            from recsys_dagster.core.quantize import quantize_rows

            self.user_gnn, self.item_gnn, self.user_text, self.item_text = (
                None if t is None else quantize_rows(t) for t in (self.user_gnn, self.item_gnn, self.user_text,
                                                                  self.item_text))

    def remap_cold_items(self, content_map) -> None:
        """Map the cold items' GNN embeddings from content with ``content_map`` (fp32 tables)."""
        self.content_map = content_map
        feats = self.content(content_map) if self.content is not None else None
        if feats is None or self.raw_item_gnn is None:
            return
        self.item_gnn = map_cold_items(self.raw_item_gnn, feats, self.popularity, self.weights.cold_item_threshold,
                                       content_map.ridge)

    def table_bytes(self) -> int:
        """Memory of the four embedding tables."""
        from recsys_dagster.core.quantize import Int8Rows

        tables = (self.user_gnn, self.item_gnn, self.user_text, self.item_text)
        return sum(t.nbytes() if isinstance(t, Int8Rows) else t.numel() * t.element_size()
                   for t in tables if t is not None)

    def few_shot_users(self, users):
        """``(B, 1)``: 1.0 for the batch's few-shot users (``0 < n_u < cold_user_threshold``)."""
        n = self.n[users].unsqueeze(1)
        return ((n > 0) & (n < self.weights.cold_user_threshold)).float()

    def parts(self, users, gamma: float | None = None, few_shot: FewShotWeights | None = None):
        """``(z_gnn, z_text, z_item_item)`` for a batch (any may be None); ``gamma`` and
        ``few_shot`` override the scorer's weights as in :meth:`__call__` (they decide whether
        the item–item part is needed). Inside :meth:`caching` a batch's parts are computed once
        (weight grids on validation)."""
        key = (int(users[0]), len(users)) if self._cache is not None and len(users) else None
        if key is not None and key in self._cache:
            return self._cache[key]
        zg = _z(_dot(self.user_gnn, self.item_gnn, users)) if self.user_gnn is not None else None
        zt = None
        if self.user_text is not None and self.item_text is not None:
            zt = _z(_dot(self.user_text, self.item_text, users))
        zc = _z(self.item_item(users).to(self.n.device)) if self._uses_item_item(gamma, few_shot) else None
        if key is not None:
            self._cache[key] = (zg, zt, zc)
        return zg, zt, zc

    def _uses_item_item(self, gamma: float | None = None, few_shot: FewShotWeights | None = None) -> bool:
        """The item-item part is computed when the weights in use (the scorer's, or a call's
        overrides) weight it, or while a weight grid may weight it."""
        if self.item_item is None:
            return False
        gamma = self.weights.gamma if gamma is None else gamma
        few = self.weights.few_shot if few_shot is None else few_shot
        return self._cache is not None or gamma != 0 or (few is not None and few.gamma != 0)

    @contextmanager
    def caching(self):
        """Remember each batch's parts while a weight grid is evaluated (same batches each time)."""
        self._cache = {}
        try:
            yield self
        finally:
            self._cache = None

    def coefficients(self, users, alpha: float | None = None, beta: float | None = None, gamma: float | None = None,
                     few_shot: FewShotWeights | None = None):
        """``(a_u, b_u, c_u, p_u)``, each ``(B, 1)``: the weights of z(GNN), z(text) (zero
        for a user without a text vector), z(item-item) and z(log popularity) in the score.
        ``alpha``/``beta``/``gamma`` override everyone's weights, ``few_shot`` the few-shot
        users' (weight grids on validation)."""
        import torch

        w = self.weights
        alpha = w.alpha if alpha is None else alpha
        beta = w.beta if beta is None else beta
        gamma = w.gamma if gamma is None else gamma
        has_gnn, has_ii = self.user_gnn is not None, self._uses_item_item(gamma, few_shot)
        few_shot = w.few_shot if few_shot is None else few_shot
        known = (self.n[users].unsqueeze(1) > 0).float()
        pi = torch.zeros_like(known)
        if few_shot is not None:  # few-shot users: their own weights, popularity among the parts
            few = self.few_shot_users(users)
            alpha = alpha * (1 - few) + few_shot.alpha * few
            beta = beta * (1 - few) + few_shot.beta * few
            gamma = gamma * (1 - few) + few_shot.gamma * few
            pi = few * few_shot.popularity
        a_u = alpha * known if has_gnn else torch.zeros_like(known)
        c_u = gamma * known if has_ii else torch.zeros_like(known)
        no_signal = 1 - known
        if self.user_text is not None and self.item_text is not None:
            has_text = (self.user_text[users].abs().sum(1, keepdim=True) > 0).float()
            # a user without interactions: every weight on the text part
            behaviour = (alpha if has_gnn else 0.0) + (gamma if has_ii else 0.0)
            b_u = (beta + behaviour * no_signal) * has_text
            no_signal = no_signal * (1 - has_text)
        else:
            b_u = torch.zeros_like(known)
        return a_u, b_u, c_u, pi + no_signal + 1e-3  # popularity also breaks ties

    def __call__(self, users, alpha: float | None = None, beta: float | None = None, gamma: float | None = None,
                 few_shot: FewShotWeights | None = None):
        import torch

        zg, zt, zc = self.parts(users, gamma, few_shot)
        a_u, b_u, c_u, p_u = self.coefficients(users, alpha, beta, gamma, few_shot)
        score = torch.zeros((len(users), self.popularity.shape[0]), device=self.n.device)
        for coef, z in ((a_u, zg), (b_u, zt), (c_u, zc)):
            if z is not None:
                score = score + coef * z
        return score + p_u * self.pop_z


def _dot(users_table, items_table, users):
    """``users_table[users] @ items_table.T`` for fp32 tables or int8 rows."""
    from recsys_dagster.core.quantize import Int8Rows, int8_scores

    if isinstance(items_table, Int8Rows):
        return int8_scores(users_table, items_table, users)
    return users_table[users] @ items_table.T


def map_cold_items(item_gnn, content, popularity, threshold: int, ridge: float = 1.0, fits: dict | None = None):
    """Replace (blend) the GNN embeddings of items with < ``threshold`` interactions by a
    ridge mapping content -> GNN embedding fitted on the other items
    (:func:`~recsys_dagster.core.cold_start.ridge_map`). ``content``: ``(I, F)`` features;
    :class:`~recsys_dagster.core.cold_start.ContentFeatures` include the bias column. ``fits``
    (a dict the caller keeps) caches the factorized ridge per set of warm items, for callers
    that map the same ``content`` again and again with new embeddings."""
    import torch

    from recsys_dagster.core.cold_start import RidgeFit

    pop = popularity.float()
    warm = pop >= max(threshold, 1)
    if threshold <= 0 or warm.sum() < 2 or bool(warm.all()):
        return item_gnn
    cold = ~warm  # only they are blended (a warm item keeps its own embedding)
    features, fit_rows = np.asarray(content.cpu() if hasattr(content, "cpu") else content), warm.cpu().numpy()
    key = (fit_rows.tobytes(), ridge)
    fit = fits.get(key) if fits is not None else None
    if fit is None:
        fit = RidgeFit(features, fit_rows, ridge)
        if fits is not None:
            fits[key] = fit
    mapped = fit.map(item_gnn.detach().float().cpu().numpy(), cold.cpu().numpy())
    blend = (pop[cold] / threshold).unsqueeze(1)
    out = item_gnn.clone()
    out[cold] = blend * item_gnn[cold] + (1 - blend) * torch.as_tensor(mapped, device=item_gnn.device)
    return out


def tune_fusion(scorer: FusedScorer, evaluate_fn, betas=(0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0),
                gammas=(0.0,)) -> tuple[FusionWeights, list]:
    """Grid search of β (text) x γ (item–item; only when the scorer has that part) with
    α = 1 on validation; ``evaluate_fn(score_fn) -> metric``. Ties go to the smaller
    weights. Returns the weights and ``[(beta, gamma, value), ...]``."""
    gammas = gammas if scorer.item_item is not None else (0.0,)
    results = []
    with scorer.caching():
        for gamma in gammas:
            for beta in betas:
                value = evaluate_fn(lambda ub, b=beta, g=gamma: scorer(ub, 1.0, b, g))
                results.append((beta, gamma, value))
    best = max(results, key=lambda r: (r[2], -r[1], -r[0]))
    return replace(scorer.weights, alpha=1.0, beta=best[0], gamma=best[1]), results


def tune_few_shot(scorer: FusedScorer, evaluate_fn, alphas=(0.0, 1.0), betas=(0.0, 0.25, 0.5, 1.0),
                  gammas=(0.0, 0.5, 1.0, 2.0), popularities=(0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
                  ) -> tuple[FewShotWeights, list]:
    """Grid search of the few-shot users' weights (:class:`FewShotWeights`) on validation;
    ``evaluate_fn(score_fn) -> metric`` over few-shot users (the few-shot protocol's
    validation pairs). A part the scorer lacks keeps weight 0; ties go to the smaller weights
    (all zero is no grid point). Returns the weights and ``[(alpha, beta, gamma, popularity, value), ...]``."""
    from itertools import product

    alphas = alphas if scorer.user_gnn is not None else (0.0,)
    betas = betas if scorer.user_text is not None and scorer.item_text is not None else (0.0,)
    gammas = gammas if scorer.item_item is not None else (0.0,)
    results = []
    with scorer.caching():
        for a, b, g, p in product(alphas, betas, gammas, popularities):
            if a == b == g == p == 0:
                continue
            fs = FewShotWeights(a, b, g, p)
            results.append((a, b, g, p, evaluate_fn(lambda ub, fs=fs: scorer(ub, few_shot=fs))))
    best = max(results, key=lambda r: (r[4], -sum(r[:4])))
    return FewShotWeights(*best[:4]), results


def few_shot_histories(train_csr, users: np.ndarray, keep: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A CSR over all users where each of ``users`` keeps ``keep`` of its training items
    (chosen by a seeded hash of the pair, the same whatever else changes) and every other
    user none: users cut to a few interactions."""
    from recsys_dagster.core.metrics import rows_of, to_csr
    from recsys_dagster.core.splits import pair_uniform

    ptr, idx = rows_of(train_csr, users)
    owner = np.repeat(np.arange(len(ptr) - 1), np.diff(ptr))
    order = np.lexsort((pair_uniform(owner, idx, seed), owner))  # per user, by the pair's hash
    owner, idx = owner[order], idx[order]
    rank = np.arange(len(owner)) - ptr[owner]  # position within the user's row
    return to_csr(owner[rank < keep], idx[rank < keep], len(ptr) - 1)


def fold_in_scorer(scorer: FusedScorer, histories: tuple) -> FusedScorer:
    """``scorer`` for users represented by the items in ``histories`` alone, as the service
    scores a new user from a few items (``recommend_for_new_user``): the GNN vector is the
    mean of the items' GNN vectors, the text vector the normalized mean of their text
    vectors, the item–item part their EASE rows; same item tables and weights."""
    import torch

    ptr, idx = histories
    n_users = len(ptr) - 1
    counts = torch.as_tensor(np.diff(ptr))
    owner = torch.as_tensor(np.repeat(np.arange(n_users), np.diff(ptr)), dtype=torch.long)
    items = torch.as_tensor(idx, dtype=torch.long)

    def mean_of(table):
        if table is None:
            return None
        table = table.float()
        out = torch.zeros(n_users, table.shape[1], device=table.device)
        out.index_add_(0, owner.to(table.device), table[items.to(table.device)])
        return out / counts.clamp_min(1).unsqueeze(1).to(table.device)

    user_text = mean_of(scorer.item_text)
    if user_text is not None:
        user_text = torch.nn.functional.normalize(user_text, dim=1)
    item_item = scorer.item_item.with_histories(histories) if hasattr(scorer.item_item, "with_histories") else None
    return FusedScorer(mean_of(scorer.item_gnn), scorer.item_gnn, user_text, scorer.item_text, counts,
                       scorer.popularity, scorer.weights, item_item=item_item, cold_items_mapped=True)


def top_k(score_fn, users: np.ndarray, exclude_csr, n_items: int, k: int = 20, batch_size: int = 1024, device="cpu"):
    """``(items (U, k), scores (U, k))`` with excluded items masked; batched ``torch.topk``."""
    import torch

    from recsys_dagster.core.metrics import masked_scores

    all_items, all_scores = [], []
    for s in range(0, len(users), batch_size):
        with torch.no_grad():
            scores = masked_scores(score_fn, users[s: s + batch_size], exclude_csr, device)
            top = torch.topk(scores, k=min(k, n_items), dim=1)
        all_items.append(top.indices.cpu().numpy())
        all_scores.append(top.values.cpu().numpy())
    if not all_items:
        return np.zeros((0, k), dtype=np.int64), np.zeros((0, k), dtype=np.float32)
    return np.concatenate(all_items), np.concatenate(all_scores)
