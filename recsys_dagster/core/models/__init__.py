"""Recommendation models: MF-BPR, LightGCN and the main KGTextGNN (all ``nn.Module``)."""

from __future__ import annotations

from recsys_dagster.core.models.base import Recommender
from recsys_dagster.core.models.kgtextgnn import KGTextGNN
from recsys_dagster.core.models.lightgcn import LightGCN
from recsys_dagster.core.models.mf import MF

MODELS = ("mf", "lightgcn", "kgtextgnn")


def build_model(name: str, data, dim: int = 64, layers: int = 2, kg_weight: float = 0.5,
                id_dropout: float = 0.0, device: str = "cpu"):
    """Instantiate ``name`` for a :class:`~recsys_dagster.core.gnn_data.TrainData`."""
    import torch

    from recsys_dagster.core.models.sparse import normalized_bipartite

    if name == "mf":
        return MF(data.n_users, data.n_items, dim).to(device)
    if name == "lightgcn":
        adj = normalized_bipartite(data.train_users, data.train_items, data.n_users, data.n_items, device)
        return LightGCN(data.n_users, data.n_items, adj, dim, layers).to(device)
    if name == "kgtextgnn":
        adj_ui = user_item_adjacency(data, device)

        def t(a, dtype=torch.long):
            return torch.as_tensor(a, dtype=dtype, device=device)

        item_text = None if data.item_text is None else t(data.item_text, torch.float32)
        user_text = None if data.user_text is None else t(data.user_text, torch.float32)
        return KGTextGNN(
            data.n_users, data.n_items, data.n_entities, adj_ui, t(data.kg_head), t(data.kg_tail), t(data.kg_rel),
            len(data.relation_names), item_text, user_text, dim, layers, kg_weight, id_dropout,
        ).to(device)
    raise ValueError(f"unknown model {name!r}; choose from {MODELS}")


def user_item_adjacency(data, device: str = "cpu"):
    """LightGCN's normalized user-item adjacency over all ``U + I + E`` nodes (KGTextGNN's
    node table), as CSR."""
    from recsys_dagster.core.models.sparse import csr, normalized_bipartite

    n = data.n_users + data.n_items + data.n_entities
    ui = normalized_bipartite(data.train_users, data.train_items, data.n_users, data.n_items, "cpu")
    coo = ui.to_sparse_coo().coalesce()
    idx = coo.indices().numpy()
    return csr(idx[0], idx[1], coo.values().numpy(), n, device)


__all__ = ["KGTextGNN", "LightGCN", "MF", "MODELS", "Recommender", "build_model", "user_item_adjacency"]
