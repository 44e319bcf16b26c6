"""Non-neural baselines, each a ``score_fn(user_index_tensor) -> (B, I)`` scorer.

* :class:`PopScorer` — training popularity.
* :class:`ItemKNN` — RecBole's ItemKNN: shrunk cosine item–item similarity on the
  training matrix, ``k`` nearest neighbours per item, item ``j`` scored over its own
  neighbours (``r_u S^T``).
* :class:`EASE` — Steck's closed-form item–item model with L2 weight ``λ``.
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
        return self.pop.to(users.device).unsqueeze(0).expand(len(users), -1).clone()


def _csr_matrix(train_csr: tuple, n_items: int):
    """The 0/1 user x item training matrix as a SciPy CSR matrix."""
    from scipy.sparse import csr_matrix

    ptr, idx = train_csr
    return csr_matrix((np.ones(len(idx), dtype=np.float32), idx, ptr), shape=(len(ptr) - 1, n_items))


def _dense_rows(csr: tuple, users, n_items: int, device=None) -> torch.Tensor:
    """Rows of a 0/1 user x item matrix given as ``(indptr, indices)``, densified per batch."""
    from recsys_dagster.core.metrics import _gather_rows

    batch = users.cpu().numpy()
    rows, cols = _gather_rows(csr, batch)
    out = torch.zeros(len(batch), n_items, device=device or users.device)
    out[torch.as_tensor(rows, device=out.device), torch.as_tensor(cols, device=out.device)] = 1.0
    return out


def item_knn_similarity(train_csr: tuple, n_items: int, k: int = 100, shrink: float = 0.0,
                        chunk: int = 512) -> torch.Tensor:
    r"""RecBole's ItemKNN similarity: row :math:`j` holds item :math:`j`'s ``k`` nearest
    neighbours by shrunk cosine over training users,

    .. math:: s_{ji} = \frac{x_j^\top x_i}{\lVert x_j\rVert \lVert x_i\rVert + \text{shrink}},

    self excluded, zeros dropped. Built from the sparse co-occurrence matrix in row chunks,
    never a dense I x I matrix. Returns a sparse CSR ``(I, I)`` tensor."""
    x = _csr_matrix(train_csr, n_items)
    co = (x.T @ x).tocsr()
    norms = np.sqrt(np.asarray(x.sum(axis=0)).ravel()).astype(np.float32)
    k = min(k, max(n_items - 1, 1))
    rows, cols, vals = [], [], []
    for s in range(0, n_items, chunk):
        e = min(s + chunk, n_items)
        block = torch.as_tensor(co[s:e].toarray())
        block /= torch.as_tensor(norms[s:e, None] * norms[None, :] + shrink).clamp_min(1e-12)
        block[torch.arange(e - s), torch.arange(s, e)] = 0.0
        top = torch.topk(block, k, dim=1)
        rows.append(torch.arange(s, e).repeat_interleave(k))
        cols.append(top.indices.reshape(-1))
        vals.append(top.values.reshape(-1))
    if not rows:
        return torch.sparse_coo_tensor(torch.zeros(2, 0, dtype=torch.long), torch.zeros(0), (n_items, n_items)).to_sparse_csr()
    r, c, v = torch.cat(rows), torch.cat(cols), torch.cat(vals)
    keep = v > 0
    sim = torch.sparse_coo_tensor(torch.stack([r[keep], c[keep]]), v[keep], (n_items, n_items), check_invariants=False)
    return sim.coalesce().to_sparse_csr()


class ItemKNN:
    """``score(u, j) = sum_{i in I_u} s_{ji}``: item ``j`` scored over its own ``k``
    neighbours that the user has (:func:`item_knn_similarity`)."""

    def __init__(self, train_csr: tuple, n_items: int, k: int = 100, shrink: float = 0.0):
        self.train_csr, self.n_items = train_csr, n_items
        self.params = {"k": int(k), "shrink": float(shrink)}
        self.sim = item_knn_similarity(train_csr, n_items, k, shrink)

    def __call__(self, users):
        r = _dense_rows(self.train_csr, users, self.n_items, device="cpu")
        # (S @ R^T)^T = R S^T: row j of S holds j's neighbours
        return torch.sparse.mm(self.sim, r.T.contiguous()).T.to(users.device)


def ease_weights(train_csr: tuple, n_items: int, lam: float, device: str = "cpu") -> torch.Tensor:
    r"""EASE (Steck, 2019): the closed-form item-item model

    .. math:: P = (X^\top X + \lambda I)^{-1}, \qquad B = I - P\,\mathrm{diag}(1/P_{jj}),

    i.e. :math:`B_{ij} = -P_{ij}/P_{jj}` with a zero diagonal; ``score(u) = x_u B``."""
    x = _csr_matrix(train_csr, n_items)
    gram = torch.as_tensor((x.T @ x).toarray(), dtype=torch.float64 if n_items <= 4000 else torch.float32,
                           device=device)
    gram.diagonal().add_(lam)
    p = torch.linalg.inv(gram)
    b = -p / p.diagonal().unsqueeze(0)
    b.fill_diagonal_(0.0)
    return b.float()


class EASE:
    """Scores ``x_u B`` with :func:`ease_weights` (dense ``I x I``: catalogues up to a few
    tens of thousands of items)."""

    def __init__(self, train_csr: tuple, n_items: int, lam: float = 500.0, device: str = "cpu"):
        self.train_csr, self.n_items = train_csr, n_items
        self.params = {"lam": float(lam)}
        self.b = ease_weights(train_csr, n_items, lam, device)

    def __call__(self, users):
        return _dense_rows(self.train_csr, users, self.n_items, device=self.b.device) @ self.b

    def cpu(self) -> EASE:
        """The same weights on the CPU (explanations run there)."""
        if self.b.device.type == "cpu":
            return self
        new = object.__new__(EASE)
        new.train_csr, new.n_items, new.params, new.b = self.train_csr, self.n_items, self.params, self.b.cpu()
        return new

    def with_histories(self, csr: tuple) -> EASE:
        """The same weights scoring the users' histories in ``csr`` instead of the training
        rows (users cut to a few items: the few-shot fold-in, :func:`~recsys_dagster.core.fusion.fold_in_scorer`)."""
        new = object.__new__(EASE)
        new.train_csr, new.n_items, new.params, new.b = csr, self.n_items, self.params, self.b
        return new

    def score_history(self, items: list[int]) -> torch.Tensor:
        """``(1, I)`` scores of a user outside the training data with history ``items``."""
        return self.b[torch.as_tensor(items, dtype=torch.long, device=self.b.device)].sum(0, keepdim=True)

    def for_history(self, items) -> OneHistory:
        """The model for one user with history ``items`` (a new user, or a training user
        with an item removed): scores ``x B`` for any batch, and ``b`` for explanations."""
        return OneHistory(self.b, self.score_history(list(items)))


class OneHistory:
    """:meth:`EASE.for_history`: one user's item–item scores, whatever user index is asked."""

    def __init__(self, b: torch.Tensor, scores: torch.Tensor):
        self.b, self.scores = b, scores

    def __call__(self, users):
        return self.scores


class TextKNN:
    def __init__(self, user_text: np.ndarray, item_text: np.ndarray):
        self.user_text = torch.as_tensor(user_text)
        self.item_text = torch.as_tensor(item_text)

    def __call__(self, users):
        self.user_text, self.item_text = self.user_text.to(users.device), self.item_text.to(users.device)
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
        return (_dense_rows(self.train_csr, users, self.n_items, device="cpu") @ self.sim).to(users.device)
