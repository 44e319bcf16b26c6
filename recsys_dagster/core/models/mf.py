"""Matrix factorization trained with BPR (no propagation): the classic baseline."""

from __future__ import annotations

import torch
from torch import nn

from recsys_dagster.core.models.base import Recommender


class MF(Recommender):
    r"""MF-BPR: :math:`\hat y_{ui} = e_u^\top e_i`.

    One embedding table holds users (rows ``0..U-1``) then items, like PyG's ``LightGCN``.

    Args:
        num_users, num_items: table sizes.
        embedding_dim: size of each embedding.
    """

    def __init__(self, num_users: int, num_items: int, embedding_dim: int = 64):
        super().__init__()
        self.num_users, self.num_items = num_users, num_items
        self.embedding = nn.Embedding(num_users + num_items, embedding_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_normal_(self.embedding.weight)

    def forward(self) -> torch.Tensor:
        """Final embeddings of all nodes, users first: ``(U + I, d)``."""
        return self.embedding.weight
