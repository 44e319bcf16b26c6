"""Full-ranking top-K metrics (RecBole's definitions), computed in batches of users.

For a user with ground-truth set ``G`` (|G| = g) and top-K list ``R`` (training items
masked out before ranking; ``rel_k = 1`` when the item at rank k is in G):

* Hit@K       = 1 if any rel_k = 1 else 0
* Precision@K = sum_k rel_k / K
* Recall@K    = sum_k rel_k / g
* MRR@K       = 1 / (rank of the first hit), 0 without a hit
* NDCG@K      = DCG / IDCG, DCG = sum_k rel_k / log2(k + 1), IDCG = sum_{k <= min(g, K)} 1 / log2(k + 1)

Each metric is averaged over users with at least one ground-truth item.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

METRICS = ("recall", "ndcg", "mrr", "hit", "precision")


def metrics_from_hits(hits, n_truth, ks=(10, 20)) -> dict[str, object]:
    """Per-user metric values from a ``(users, K)`` 0/1 hit matrix and truth counts."""
    import torch

    hits = hits.float()
    n_truth = n_truth.float()
    max_k = hits.shape[1]
    discount = 1.0 / torch.log2(torch.arange(2, max_k + 2, dtype=torch.float32, device=hits.device))
    out = {}
    for k in ks:
        h = hits[:, :k]
        n_hit = h.sum(1)
        idcg_len = torch.clamp(n_truth, max=k).long()
        ideal = torch.cumsum(discount[:k], 0)
        idcg = ideal[(idcg_len - 1).clamp(min=0)]
        first = torch.where(h.any(1), h.argmax(1).float() + 1, torch.full_like(n_hit, float("inf")))
        out[f"recall@{k}"] = n_hit / n_truth
        out[f"ndcg@{k}"] = (h * discount[:k]).sum(1) / idcg
        out[f"mrr@{k}"] = 1.0 / first
        out[f"hit@{k}"] = (n_hit > 0).float()
        out[f"precision@{k}"] = n_hit / k
    return out


def full_ranking(
    score_fn: Callable,
    truth: object,
    exclude: object | None,
    n_items: int,
    ks=(10, 20),
    batch_size: int = 1024,
    device: str = "cpu",
    return_per_user: bool = False,
):
    """Evaluate ``score_fn(user_index_tensor) -> (B, n_items)`` scores over all items.

    Args:
        truth: CSR-like ``(indptr, indices)`` numpy arrays of ground-truth items per user
            (users indexed 0..U-1); users without truth are skipped.
        exclude: same format, items masked to -inf before ranking (training items; and
            validation items when testing), or None.
    Returns mean metrics (dict of floats), plus per-user tensors when asked.
    """
    import torch

    t_ptr, t_idx = truth
    users = np.flatnonzero(np.diff(t_ptr) > 0)
    max_k = max(ks)
    per_user = {}
    sums = {}
    for start in range(0, len(users), batch_size):
        batch = users[start:start + batch_size]
        with torch.no_grad():
            scores = masked_scores(score_fn, batch, exclude, device)
            top = torch.topk(scores, k=min(max_k, n_items), dim=1).indices
            truth_mask = torch.zeros_like(scores, dtype=torch.bool)
            rows, cols = _gather_rows(truth, batch)
            truth_mask[torch.as_tensor(rows, device=device), torch.as_tensor(cols, device=device)] = True
            hits = torch.gather(truth_mask, 1, top)
            if hits.shape[1] < max_k:
                hits = torch.nn.functional.pad(hits, (0, max_k - hits.shape[1]))
            n_truth = truth_mask.sum(1)
            values = metrics_from_hits(hits, n_truth, ks)
        for name, v in values.items():
            sums[name] = sums.get(name, 0.0) + float(v.sum())
            if return_per_user:
                per_user.setdefault(name, []).append(v.cpu())
    n = max(len(users), 1)
    means = {name: total / n for name, total in sums.items()}
    if return_per_user:
        import torch

        return means, users, {k: torch.cat(v).numpy() for k, v in per_user.items()}
    return means


def masked_scores(score_fn, batch: np.ndarray, exclude, device: str = "cpu"):
    """``score_fn`` on a batch of user indices, with the ``exclude`` CSR items set to -inf."""
    import torch

    scores = score_fn(torch.as_tensor(batch, device=device)).float()
    if exclude is not None:
        rows, cols = _gather_rows(exclude, batch)
        scores[torch.as_tensor(rows, device=device), torch.as_tensor(cols, device=device)] = -torch.inf
    return scores


def _gather_rows(csr, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row position within batch, column) pairs of a CSR ``(indptr, indices)`` for ``rows``."""
    ptr, idx = csr
    starts, ends = ptr[rows], ptr[rows + 1]
    lengths = ends - starts
    batch_rows = np.repeat(np.arange(len(rows)), lengths)
    offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    cols = idx[np.repeat(starts, lengths) + offsets]
    return batch_rows, cols


def rows_of(csr: tuple, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``csr`` with every row but ``users`` emptied."""
    ptr, idx = csr
    keep = np.zeros(len(ptr) - 1, dtype=bool)
    keep[np.asarray(users, dtype=np.int64)] = True
    owner = np.repeat(np.arange(len(ptr) - 1), np.diff(ptr))
    return to_csr(owner[keep[owner]], np.asarray(idx)[keep[owner]], len(ptr) - 1)


def to_csr(user_index: np.ndarray, item_index: np.ndarray, n_users: int) -> tuple[np.ndarray, np.ndarray]:
    """Group item indices by user: ``(indptr, indices)``."""
    order = np.lexsort((item_index, user_index))
    counts = np.bincount(user_index, minlength=n_users)
    ptr = np.concatenate([[0], np.cumsum(counts)])
    return ptr, np.asarray(item_index)[order]
