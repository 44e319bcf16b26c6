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
