"""The small interface every recommendation model implements (the training loop, the
evaluation and serving use only this)."""

from __future__ import annotations

import torch
from torch import nn


class Recommender(nn.Module):
    r"""A model whose node table holds users (rows ``0..U-1``), then items, then any other
    nodes (KG entities). Subclasses implement :meth:`forward` and may override the hooks.

    * :meth:`forward` — final embeddings of at least all users and items, ``(U + I, d)``;
      a score is :math:`e_u^\top e_i`.
    * :meth:`ego` — layer-0 embeddings of the given node indices (the L2 penalty).
    * :meth:`refresh` — called once before each epoch's batches and after loading weights
      (a model with a parameter-dependent operator rebuilds it here).
    * :meth:`aux_loss` — an optional auxiliary loss on ``batch_size`` samples (None: none).
    * :attr:`generator` — the model's own RNG (dropout masks); the loop seeds it and
      checkpoints its state.
    * :meth:`propagation_terms` / :meth:`rewired` — what explanations use: the exact split
      of each final embedding over graph neighbours, and the same weights on an edited graph.
    """

    num_users: int
    num_items: int
    generator: torch.Generator | None = None
    #: score by cosine instead of the dot product (a model trained with the softmax loss)
    cosine: bool = False

    def forward(self) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def ego(self, nodes: torch.Tensor) -> torch.Tensor:
        return self.embedding.weight.index_select(0, nodes)

    def inputs_of(self, nodes: torch.Tensor) -> torch.Tensor:
        """Layer-0 representations of the given nodes (sampled-subgraph training)."""
        return self.embedding.weight.index_select(0, nodes)

    def operator(self) -> torch.Tensor | None:
        """The propagation operator ``A`` (CSR, ``N x N``) or None (no propagation)."""
        return None

    def refresh(self) -> None:
        """Nothing to rebuild by default."""

    def aux_loss(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor | None:
        return None

    @torch.no_grad()
    def user_item_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(users (U, d), items (I, d))`` in eval mode, float32: what scoring uses."""
        self.eval()
        out = self().float()
        users, items = out[: self.num_users], out[self.num_users: self.num_users + self.num_items]
        if self.cosine:
            users, items = (torch.nn.functional.normalize(x, dim=-1) for x in (users, items))
        return users, items

    @torch.no_grad()
    def propagation_terms(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int] | None:
        r"""``(x0, through, adj, L)`` such that ``forward() == ((x0 + adj @ through) / (L + 1))[:U + I]``:
        with :math:`X^{(l+1)} = A X^{(l)}`, :math:`\sum_{l=1}^{L} X^{(l)} = A \sum_{l<L} X^{(l)}`,
        so a node's final embedding is its own layer-0 input plus one term
        :math:`A_{vn}\,\text{through}_n` per graph neighbour :math:`n` (history items, KG
        entities). None for a model without propagation."""
        return None

    def behaviour_projection(self) -> torch.Tensor | None:
        """``W`` (``d x T``) when a user's layer-0 input holds ``W b_u`` with ``b_u`` the
        user's behaviour text vector (its share splits over the user's history)."""
        return None

    def rewired(self, data) -> Recommender:
        """The same parameters on the graph of ``data`` (a :class:`TrainData` with some
        edges or history removed): the deletion test of explanations. Never trains."""
        return self

    def rewirer(self, data):
        """``fn(edited, removal) -> model``: :meth:`rewired` on ``edited``, which is ``data``
        less one ``removal`` (with ``user``, ``item`` and ``kg_pair`` attributes: a history
        item and/or a KG edge pair). A model may answer from structures of ``data`` computed
        once instead of rebuilding its graph per removal."""
        return lambda edited, removal: self.rewired(edited)

