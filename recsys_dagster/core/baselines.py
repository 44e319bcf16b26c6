"""Non-neural baselines, each a ``score_fn(user_index_tensor) -> (B, I)`` scorer.

* :class:`PopScorer` — training popularity.
* :class:`ItemKNN` — RecBole's ItemKNN: cosine item–item similarity on the training
  matrix, ``k`` nearest neighbours per item, user score ``r_u S``.
* :class:`TextKNN` — cosine between the user's behaviour embedding and item text.
* :class:`AttributeKNN` — item–item cosine over KG attribute entities (genre, director,
  ...): the content baseline for cold items.
"""

from __future__ import annotations

import numpy as np
import torch


class PopScorer:
    def __init__(self, train_items: np.ndarray, n_items: int):
        self.pop = torch.as_tensor(np.bincount(train_items, minlength=n_items), dtype=torch.float32)

    def __call__(self, users):
        return self.pop.unsqueeze(0).expand(len(users), -1).clone()


def _topk_cosine(matrix: torch.Tensor, k: int, chunk: int = 2048) -> torch.Tensor:
    """Row-normalized ``matrix`` (items x features, dense) -> sparse item-item cosine with
    ``k`` neighbours per item (self excluded), built in chunks (never I x I at once)."""
    norm = matrix / matrix.norm(dim=1, keepdim=True).clamp_min(1e-12)
    n = norm.shape[0]
    rows, cols, vals = [], [], []
    k = min(k, max(n - 1, 1))
    for s in range(0, n, chunk):
        sim = norm[s: s + chunk] @ norm.T
        idx = torch.arange(s, min(s + chunk, n))
        sim[torch.arange(len(idx)), idx] = 0.0
        top = torch.topk(sim, k, dim=1)
        rows.append(idx.repeat_interleave(k))
        cols.append(top.indices.reshape(-1))
        vals.append(top.values.reshape(-1))
    r, c, v = torch.cat(rows), torch.cat(cols), torch.cat(vals)
    keep = v > 0
    return torch.sparse_coo_tensor(torch.stack([r[keep], c[keep]]), v[keep], (n, n), check_invariants=False).coalesce()


def _dense_rows(csr: tuple, users, n_items: int) -> torch.Tensor:
    """Rows of a 0/1 user x item matrix given as ``(indptr, indices)``, densified per batch."""
    from recsys_dagster.core.metrics import _gather_rows

    batch = users.cpu().numpy()
    rows, cols = _gather_rows(csr, batch)
    out = torch.zeros(len(batch), n_items)
    out[torch.as_tensor(rows), torch.as_tensor(cols)] = 1.0
    return out


class ItemKNN:
    def __init__(self, train_csr: tuple, n_items: int, k: int = 100):
        ptr, idx = train_csr
        users = np.repeat(np.arange(len(ptr) - 1), np.diff(ptr))
        item_user = torch.zeros(n_items, len(ptr) - 1)
        item_user[torch.as_tensor(idx), torch.as_tensor(users)] = 1.0
        self.train_csr, self.n_items = train_csr, n_items
        self.sim_t = _topk_cosine(item_user, k).t().coalesce().to_sparse_csr()  # S^T: neighbours of each item

    def __call__(self, users):
        r = _dense_rows(self.train_csr, users, self.n_items)
        return torch.sparse.mm(self.sim_t, r.T.contiguous()).T


class TextKNN:
    def __init__(self, user_text: np.ndarray, item_text: np.ndarray):
        self.user_text = torch.as_tensor(user_text)
        self.item_text = torch.as_tensor(item_text)

    def __call__(self, users):
        return self.user_text[users] @ self.item_text.T


class AttributeKNN:
    """``score(u, i) = sum_h cos(a_i, a_h)`` over the user's training items ``h``, where
    ``a`` are binary item x KG-entity vectors."""

    def __init__(self, item_entities: list[list[tuple]], train_csr: tuple, n_items: int):
        rows = [i for i, ents in enumerate(item_entities) for _ in ents]
        ent_ids = sorted({e for ents in item_entities for e, *_ in ents})
        pos = {e: n for n, e in enumerate(ent_ids)}
        cols = [pos[e] for ents in item_entities for e, *_ in ents]
        feats = torch.zeros(n_items, max(len(ent_ids), 1))
        if rows:
            feats[torch.as_tensor(rows), torch.as_tensor(cols)] = 1.0
        norm = feats / feats.norm(dim=1, keepdim=True).clamp_min(1e-12)
        self.sim = norm @ norm.T
        self.sim.fill_diagonal_(0.0)
        self.train_csr, self.n_items = train_csr, n_items

    def __call__(self, users):
        return _dense_rows(self.train_csr, users, self.n_items) @ self.sim
