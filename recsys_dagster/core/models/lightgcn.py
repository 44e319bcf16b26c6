"""LightGCN (He et al., 2020) with CSR propagation."""

from __future__ import annotations

import torch
from torch import nn

from recsys_dagster.core.models.base import Recommender
from recsys_dagster.core.models.sparse import spmm


class LightGCN(Recommender):
    r"""LightGCN over the user–item graph.

    .. math::
        E^{(l+1)} = \hat A E^{(l)}, \quad \hat A = D^{-1/2} A D^{-1/2}, \quad
        E = \frac{1}{L+1} \sum_{l=0}^{L} E^{(l)}, \quad \hat y_{ui} = e_u^\top e_i

    Same math as ``torch_geometric.nn.models.LightGCN`` (one embedding table, users then
    items); propagation is a CSR SpMM whose backward reuses the symmetric adjacency,
    measured faster than ``edge_index`` message passing on CPU
    (``benchmarks/bench_training.py``).

    Args:
        num_users, num_items: node counts.
        adj: normalized symmetric adjacency (CSR, ``(U+I) x (U+I)``, users first).
        embedding_dim, num_layers: model size.
    """

    def __init__(self, num_users: int, num_items: int, adj: torch.Tensor, embedding_dim: int = 64, num_layers: int = 2):
        super().__init__()
        self.num_users, self.num_items, self.num_layers = num_users, num_items, num_layers
        self.embedding = nn.Embedding(num_users + num_items, embedding_dim)
        self.adj = adj
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_normal_(self.embedding.weight)

    def forward(self) -> torch.Tensor:
        """Final embeddings of all nodes, users first: ``(U + I, d)``."""
        x = self.embedding.weight
        out = x
        for _ in range(self.num_layers):
            x = spmm(self.adj, x)
            out = out + x
        return out / (self.num_layers + 1)

    def operator(self) -> torch.Tensor:
        return self.adj

    @torch.no_grad()
    def propagation_terms(self):
        x = self.embedding.weight
        through = torch.zeros_like(x)
        for _ in range(self.num_layers):
            through = through + x
            x = spmm(self.adj, x)
        return self.embedding.weight, through, self.adj, self.num_layers

    def rewired(self, data) -> LightGCN:
        import copy

        from recsys_dagster.core.models.sparse import normalized_bipartite

        new = copy.copy(self)
        new.adj = normalized_bipartite(data.train_users, data.train_items, data.n_users, data.n_items,
                                       self.embedding.weight.device)
        return new

