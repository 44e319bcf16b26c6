"""Sparse propagation helpers: CSR adjacency and an SpMM whose backward reuses a
precomputed transpose.

torch's CPU ``sparse.mm`` backward rebuilds the transposed matrix on every call; for a
symmetric adjacency the transpose is the matrix itself, and for a fixed non-symmetric one
it can be built once. That makes LightGCN-style propagation several times faster.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")


class _SpMM(torch.autograd.Function):
    # cuSPARSE has no fp32-sparse x bf16-dense SpMM, so under autocast the product runs in
    # the adjacency's dtype (fp32) and AMP speeds up the dense parts only.
    @staticmethod
    def forward(ctx, a, a_t, x):
        ctx.a_t = a_t
        ctx.dtype = x.dtype
        with torch.autocast(x.device.type, enabled=False):
            return torch.sparse.mm(a, x.to(a.dtype))

    @staticmethod
    def backward(ctx, grad):
        with torch.autocast(grad.device.type, enabled=False):
            out = torch.sparse.mm(ctx.a_t, grad.contiguous().to(ctx.a_t.dtype))
        return None, None, out.to(ctx.dtype)


def spmm(a: torch.Tensor, x: torch.Tensor, a_t: torch.Tensor | None = None) -> torch.Tensor:
    """``a @ x`` with gradient w.r.t. ``x`` only; ``a_t`` defaults to ``a`` (symmetric)."""
    return _SpMM.apply(a, a if a_t is None else a_t, x)


def csr(rows: np.ndarray, cols: np.ndarray, values: np.ndarray, n: int, device="cpu") -> torch.Tensor:
    coo = torch.sparse_coo_tensor(
        torch.as_tensor(np.stack([rows, cols]), dtype=torch.long),
        torch.as_tensor(values, dtype=torch.float32), (n, n), check_invariants=False,
    ).coalesce()
    return coo.to_sparse_csr().to(device)


def bipartite_entries(users: np.ndarray, items: np.ndarray, n_users: int) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, cols)`` of ``A = [[0, R], [R^T, 0]]``: each user-item pair in both directions."""
    return np.concatenate([users, items + n_users]), np.concatenate([items + n_users, users])


def symmetric_norm(rows: np.ndarray, cols: np.ndarray, n: int, keep: np.ndarray | None = None) -> np.ndarray:
    """The values ``1 / sqrt(d_row d_col)`` (float32) of the entries ``(rows, cols)`` of a
    symmetric 0/1 matrix, degrees counted over the entries; with a boolean ``keep``, over the
    kept entries only, and a dropped entry's value is 0."""
    deg = np.bincount(rows, weights=keep, minlength=n)
    inv = np.zeros_like(deg, dtype=np.float64)
    np.power(deg, -0.5, out=inv, where=deg > 0)
    values = (inv[rows] * inv[cols]).astype(np.float32)
    return values if keep is None else values * keep


def normalized_bipartite(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int, device="cpu") -> torch.Tensor:
    """LightGCN's ``D^-1/2 A D^-1/2`` for ``A = [[0, R], [R^T, 0]]`` (symmetric), as CSR."""
    n = n_users + n_items
    rows, cols = bipartite_entries(users, items, n_users)
    return csr(rows, cols, symmetric_norm(rows, cols, n), n, device)
