r"""Cold items: an item without (enough) training interactions gets its GNN embedding from
its content, with each content source weighted by how well it predicts warm items.

Content features of item :math:`i` (every part optional, per dataset):

.. math:: c_i = [\, w_t\, t_i \;;\; w_k\, a_i \;;\; 1 \,]

with :math:`t_i` the item's text embedding (left out when the dataset has no text: empty
text carries nothing) and :math:`a_i` its knowledge-graph attributes (genres, people,
tags: the item→entity edges), reduced to at most ``kg_dims`` dimensions by a truncated SVD
of the row-normalized item × entity matrix and scaled to the text rows' unit norm. A ridge
regression :math:`c_i \mapsto e_i` fitted on warm items maps content into the GNN space
(:func:`ridge_map`).

The source weights :math:`(w_t, w_k)` and the ridge are chosen on validation, per dataset,
by *pseudo-cold* folds (:func:`tune_content_map`): warm items are split into folds; each
fold's items get the embedding the map fitted on the other folds predicts, and are ranked
among themselves for the validation pairs that contain them (Recall@20) — the cold-item
protocol without retraining the GNN. The grid includes each source alone and the bias
alone (the mean warm embedding), so a source that carries nothing (no text, a KG without
attributes) gets weight 0 instead of overriding the one that does.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass

import numpy as np

from recsys_dagster.core.threads import one_blas_thread


@dataclass(frozen=True)
class ContentMap:
    """How cold items' embeddings are predicted: source weights and the ridge."""

    text_weight: float = 1.0
    kg_weight: float = 0.0
    ridge: float = 1.0

    def as_dict(self) -> dict:
        return {"content_text": self.text_weight, "content_kg": self.kg_weight, "content_ridge": self.ridge}

    @classmethod
    def from_dict(cls, values: dict) -> ContentMap:
        """From :meth:`as_dict` keys (a fusion record); absent keys: text only, ridge 1
        (what versions recorded before the KG was a content source)."""
        return cls(float(values.get("content_text", 1.0)), float(values.get("content_kg", 0.0)),
                   float(values.get("content_ridge", 1.0)))


#: The validation grid of :func:`tune_content_map`.
TEXT_WEIGHTS = (0.0, 1.0)
KG_WEIGHTS = (0.0, 0.5, 1.0, 2.0)
RIDGES = (1.0, 10.0, 100.0)


def item_attributes(data):
    """The items' KG attributes as a SciPy CSR ``(I, E)`` 0/1 matrix (item→entity edges of
    ``data``'s graph, either direction), or None without KG entities."""
    from scipy.sparse import csr_matrix

    n_users, n_items = data.n_users, data.n_items
    h, t = np.asarray(data.kg_head), np.asarray(data.kg_tail)
    first_entity = n_users + n_items
    keep = (h >= n_users) & (h < first_entity) & (t >= first_entity)
    if not keep.any():
        return None
    m = csr_matrix((np.ones(int(keep.sum()), np.float32), (h[keep] - n_users, t[keep] - first_entity)),
                   shape=(n_items, max(data.n_entities, 1)))
    m.sum_duplicates()
    m.data[:] = 1.0
    return m


class ContentFeatures:
    """An item's content sources (module docstring); :meth:`__call__` weights them. The KG
    attributes are reduced on first use (a version mapping from text alone never pays for it)."""

    def __init__(self, item_text: np.ndarray | None, attributes=None, kg_dims: int = 128):
        n = None if item_text is None else len(item_text)
        self.text = None
        if item_text is not None and np.abs(item_text).sum() > 0:
            self.text = np.asarray(item_text, dtype=np.float32)
        if attributes is not None:
            n = attributes.shape[0]
        self._attributes = attributes if attributes is not None and attributes.nnz else None
        self._kg_dims = kg_dims
        self.n_items = n  # None: neither source is known (no mapping at all)

    @functools.cached_property
    def kg(self) -> np.ndarray | None:
        """``(I, ≤ kg_dims)`` reduced attributes (:func:`_reduce_attributes`), or None."""
        return None if self._attributes is None else _reduce_attributes(self._attributes, self._kg_dims)

    @property
    def sources(self) -> tuple[str, ...]:
        return tuple(name for name, part in (("text", self.text), ("kg", self._attributes)) if part is not None)

    def __call__(self, cmap: ContentMap) -> np.ndarray | None:
        """``(I, F)`` features ``[w_t t; w_k a; 1]``: the bias alone (the mean warm embedding)
        when every source is empty or weighted 0; None when no source is known."""
        if self.n_items is None:
            return None
        parts = [np.ones((self.n_items, 1), np.float32)]
        for name, w in (("text", cmap.text_weight), ("kg", cmap.kg_weight)):
            if w and name in self.sources:
                parts.append(w * getattr(self, name))
        return np.concatenate(parts, axis=1)


def _reduce_attributes(attributes, k: int) -> np.ndarray:
    """Row-normalized item × entity matrix, truncated SVD to ``k`` dimensions (ridge cost stays
    independent of the number of entities), rows scaled to mean norm 1 over items that have
    attributes. SciPy's ``svds`` (ARPACK) on the sparse matrix, never a dense ``I x E`` one."""
    from scipy.sparse import diags
    from scipy.sparse.linalg import svds

    counts = np.asarray(attributes.sum(axis=1)).ravel()
    norm = diags(1.0 / np.sqrt(np.maximum(counts, 1.0))) @ attributes
    k = min(k, min(norm.shape) - 1)
    if k < 1:
        dense = norm.toarray().astype(np.float32)
    else:
        u, s, _ = svds(norm.astype(np.float64), k=k, random_state=0)
        dense = (u * s).astype(np.float32)
    scale = np.linalg.norm(dense[counts > 0], axis=1).mean()
    return dense / max(float(scale), 1e-12)


def ridge_map(features: np.ndarray, targets: np.ndarray, fit_rows: np.ndarray, ridge: float,
              rows: np.ndarray | None = None) -> np.ndarray:
    """``features[rows] @ W`` (every row by default) with ``W`` the ridge solution fitted on
    the rows ``fit_rows`` (a bias column, as :class:`ContentFeatures` has, is penalized like
    the rest; the ridge is small against warm item counts). Float64 on the CPU: ``F`` is a few
    hundred, the solve is cheap."""
    return RidgeFit(features, fit_rows, ridge).map(targets, rows)


class RidgeFit:
    """:func:`ridge_map` for fixed ``features``, ``fit_rows`` and ``ridge``: the Gram matrix is
    factorized once (Cholesky; it is positive definite for any ridge > 0), and each :meth:`map`
    fits new targets with one ``F x fit`` product and two triangular solves. The explanation
    protocol re-maps the cold items after every deletion, with new GNN embeddings as targets
    and, unless the deletion makes an item cold, the same warm items."""

    def __init__(self, features: np.ndarray, fit_rows: np.ndarray, ridge: float):
        from scipy.linalg import cho_factor

        self.features, self.fit_rows = features, fit_rows
        self.a = features[fit_rows].astype(np.float64)
        gram = self.a.T @ self.a
        gram[np.diag_indices_from(gram)] += ridge
        self.factor = cho_factor(gram)

    def map(self, targets: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        from scipy.linalg import cho_solve

        w = cho_solve(self.factor, self.a.T @ targets[self.fit_rows].astype(np.float64))
        return ((self.features if rows is None else self.features[rows]).astype(np.float64) @ w).astype(np.float32)


def grid(sources: tuple[str, ...]) -> list[ContentMap]:
    """Every weighting of the available sources (absent ones stay 0), the bias alone included."""
    texts = TEXT_WEIGHTS if "text" in sources else (0.0,)
    kgs = KG_WEIGHTS if "kg" in sources else (0.0,)
    points = [ContentMap(t, k, r) for t, k, r in itertools.product(texts, kgs, RIDGES) if t or k]
    return points + [ContentMap(0.0, 0.0, RIDGES[0])]


@one_blas_thread
def tune_content_map(user_emb, item_emb, content: ContentFeatures, popularity, valid_csr, train_csr,
                     threshold: int, folds: int = 5, seed: int = 0, k: int = 20) -> tuple[ContentMap, list]:
    """The :class:`ContentMap` with the best pseudo-cold validation Recall@``k`` (module
    docstring); ties go to the earlier grid point. Returns ``(choice, [(map, recall), ...])``;
    ``(ContentMap(), [])`` when there is no content or too few warm items to fold."""
    import torch

    from recsys_dagster.core.metrics import full_ranking

    pop = np.asarray(popularity)
    warm = np.flatnonzero(pop >= max(threshold, 1))
    if content.n_items is None or len(warm) < 2 * folds:
        return ContentMap(), []
    fold = np.random.default_rng(seed).permutation(len(warm)) % folds
    users = torch.as_tensor(user_emb, dtype=torch.float32)
    items = np.asarray(item_emb, dtype=np.float32)
    n_items = len(items)
    trials = []
    for cmap in grid(content.sources):
        feats = content(cmap)
        recalls = []
        for f in range(folds):
            held = warm[fold == f]
            fit = np.zeros(n_items, dtype=bool)
            fit[warm[fold != f]] = True
            emb = torch.as_tensor(ridge_map(feats, items, fit, cmap.ridge, held))
            held_t = torch.as_tensor(held)

            def fn(ub, emb=emb, held_t=held_t):  # the fold's items only, every other item -inf
                out = torch.full((len(ub), n_items), -torch.inf)
                out[:, held_t] = users[ub] @ emb.T
                return out

            truth = _restrict(valid_csr, held, n_items)
            if len(truth[1]):
                recalls.append(full_ranking(fn, truth, train_csr, n_items, ks=(k,))[f"recall@{k}"])
        trials.append((cmap, float(np.mean(recalls)) if recalls else 0.0))
    best = max(trials, key=lambda t: t[1])  # max keeps the first of equal values
    return best[0], trials


def _restrict(csr: tuple, items: np.ndarray, n_items: int) -> tuple:
    """The pairs of a ``(indptr, indices)`` CSR whose item is in ``items``."""
    from recsys_dagster.core.metrics import to_csr

    ptr, idx = csr
    users = np.repeat(np.arange(len(ptr) - 1), np.diff(ptr))
    keep = np.isin(idx, items)
    return to_csr(users[keep], idx[keep], len(ptr) - 1)
