"""KGTextGNN: the platform's main model — text-initialized, knowledge-aware propagation."""

from __future__ import annotations

import torch
from torch import nn

from recsys_dagster.core.models.base import Recommender
from recsys_dagster.core.models.sparse import spmm


class KGTextGNN(Recommender):
    r"""Graph model over the collaborative knowledge graph (users, items, KG entities).

    Input representations (users first, then items, then entities, one index space):

    .. math::
        x_u = e_u + W_b\, b_u, \qquad x_i = e_i + W_t\, t_i, \qquad x_e = e_e

    where :math:`t_i` is the item's transformer text embedding, :math:`b_u` the user's
    behaviour embedding (pooled text of the user's training items), :math:`e_*` learned id
    embeddings and :math:`W_t, W_b` learned projections.

    Relation-aware attention over KG edges :math:`(h, r, t)`, as in KGAT:

    .. math::
        \pi(h, r, t) = (W_r x_t)^\top \tanh(W_r x_h + r), \qquad
        \alpha(h, r, t) = \operatorname{softmax}_{(r', t') \in N_{kg}(h)} \pi(h, r', t')

    Like KGAT, attention is refreshed once per epoch (:meth:`refresh_attention`) and held
    fixed within the epoch, so propagation is a sparse product:

    .. math::
        X^{(l+1)} = \hat A_{ui} X^{(l)} + \gamma\, A_{kg}(\alpha) X^{(l)}, \qquad
        X = \frac{1}{L+1}\sum_{l=0}^{L} X^{(l)}, \qquad \hat y_{ui} = x_u^\top x_i

    with :math:`\hat A_{ui}` LightGCN's normalized user–item adjacency. An item without
    interactions still has :math:`W_t t_i` and its KG neighbourhood, which is what makes
    it recommendable (cold start).

    Args:
        num_users, num_items, num_entities: node counts.
        adj_ui: normalized user–item adjacency, CSR over all ``N`` nodes.
        kg_head, kg_tail, kg_rel: KG edges in the unified index (both directions present,
            reverse relations with their own ids), ``num_relations`` relation ids.
        item_text, user_text: optional ``(I, T)`` / ``(U, T)`` text features.
        embedding_dim, num_layers: model size. kg_weight: :math:`\gamma`.
        id_dropout: probability of dropping an item's id embedding in training, so the
            model learns to score from text and KG alone (cold start).
    """

    def __init__(
        self,
        num_users: int,
        num_items: int,
        num_entities: int,
        adj_ui: torch.Tensor,
        kg_head: torch.Tensor,
        kg_tail: torch.Tensor,
        kg_rel: torch.Tensor,
        num_relations: int,
        item_text: torch.Tensor | None = None,
        user_text: torch.Tensor | None = None,
        embedding_dim: int = 64,
        num_layers: int = 2,
        kg_weight: float = 0.5,
        id_dropout: float = 0.0,
    ):
        super().__init__()
        self.num_users, self.num_items, self.num_entities = num_users, num_items, num_entities
        self.num_nodes = num_users + num_items + num_entities
        self.num_layers, self.kg_weight, self.id_dropout = num_layers, kg_weight, id_dropout
        self.embedding = nn.Embedding(self.num_nodes, embedding_dim)  # users, items, entities
        self.rel_W = nn.Parameter(torch.empty(max(num_relations, 1), embedding_dim, embedding_dim))
        self.rel_emb = nn.Embedding(max(num_relations, 1), embedding_dim)
        self.text_proj = nn.Linear(item_text.shape[1], embedding_dim, bias=False) if item_text is not None else None
        self.behav_proj = nn.Linear(user_text.shape[1], embedding_dim, bias=False) if user_text is not None else None
        self.register_buffer("item_text", item_text, persistent=False)
        self.register_buffer("user_text", user_text, persistent=False)
        self.adj_ui = adj_ui
        order = torch.argsort(kg_rel, stable=True)
        self.kg_head, self.kg_tail, self.kg_rel = kg_head[order], kg_tail[order], kg_rel[order]
        self.adj = adj_ui
        self.adj_t = adj_ui
        self.generator: torch.Generator | None = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_normal_(self.embedding.weight)
        with torch.no_grad():  # start attention as a plain similarity: W_r = I, r = 0
            self.rel_W.copy_(torch.eye(self.rel_W.shape[1]).expand_as(self.rel_W))
            self.rel_emb.weight.zero_()
        for proj in (self.text_proj, self.behav_proj):
            if proj is not None:
                nn.init.xavier_normal_(proj.weight)

    def inputs(self) -> torch.Tensor:
        """Layer-0 representations of all nodes, ``(N, d)``."""
        x = self.embedding.weight
        u, i = self.num_users, self.num_items
        if self.training and self.id_dropout > 0:
            keep = torch.rand(i, 1, device=x.device, generator=self.generator) >= self.id_dropout
            x = torch.cat([x[:u], x[u: u + i] * keep, x[u + i:]])
        parts = []
        if self.behav_proj is not None or self.text_proj is not None:
            d = x.shape[1]
            zeros = x.new_zeros
            parts = [self.behav_proj(self.user_text) if self.behav_proj is not None else zeros(u, d),
                     self.text_proj(self.item_text) if self.text_proj is not None else zeros(i, d),
                     zeros(self.num_entities, d)]
            x = x + torch.cat(parts)
        return x

    def inputs_of(self, nodes: torch.Tensor) -> torch.Tensor:
        """:meth:`inputs` of the given nodes only (sampled-subgraph training)."""
        x = self.embedding(nodes)
        u, i = self.num_users, self.num_items
        is_user, is_item = nodes < u, (nodes >= u) & (nodes < u + i)
        if self.training and self.id_dropout > 0:
            keep = torch.rand(len(nodes), 1, device=x.device, generator=self.generator) >= self.id_dropout
            x = x * (keep | ~is_item.unsqueeze(1))
        add = torch.zeros_like(x)
        if self.behav_proj is not None and bool(is_user.any()):
            add[is_user] = self.behav_proj(self.user_text[nodes[is_user]])
        if self.text_proj is not None and bool(is_item.any()):
            add[is_item] = self.text_proj(self.item_text[nodes[is_item] - u])
        return x + add

    def operator(self) -> torch.Tensor:
        return self.adj

    def attention_logits(self, x: torch.Tensor, head: torch.Tensor, tail: torch.Tensor,
                         rel: torch.Tensor) -> torch.Tensor:
        """:math:`\\pi(h, r, t)` of the given KG edges (sorted by relation) from layer-0 inputs ``x``."""
        logits = torch.empty(head.numel(), device=x.device)
        bounds = torch.searchsorted(rel, torch.arange(self.rel_W.shape[0] + 1, device=x.device))
        for r in range(self.rel_W.shape[0]):
            s, e = int(bounds[r]), int(bounds[r + 1])
            if s == e:
                continue
            w = self.rel_W[r]
            h = x[head[s:e]] @ w
            t = x[tail[s:e]] @ w
            logits[s:e] = (t * torch.tanh(h + self.rel_emb.weight[r])).sum(-1)
        return logits

    @torch.no_grad()
    def refresh_attention(self) -> None:
        """Recompute :math:`\\alpha` from the current parameters and rebuild the operator."""
        from torch_geometric.utils import softmax

        n = self.num_nodes
        if self.kg_head.numel() == 0:
            self.adj = self.adj_t = self.adj_ui
            return
        logits = self.attention_logits(self.inputs(), self.kg_head, self.kg_tail, self.kg_rel)
        alpha = softmax(logits, self.kg_head, num_nodes=n) * self.kg_weight
        ui = self.adj_ui.to_sparse_coo().coalesce()
        rows = torch.cat([ui.indices()[0], self.kg_head])
        cols = torch.cat([ui.indices()[1], self.kg_tail])
        vals = torch.cat([ui.values(), alpha])
        a = torch.sparse_coo_tensor(torch.stack([rows, cols]), vals, (n, n), check_invariants=False).coalesce()
        self.adj = a.to_sparse_csr()
        self.adj_t = a.t().coalesce().to_sparse_csr()

    def forward(self) -> torch.Tensor:
        """Final embeddings of users and items (entities dropped): ``(U + I, d)``."""
        x = self.inputs()
        out = x
        for _ in range(self.num_layers):
            x = spmm(self.adj, x, self.adj_t)
            out = out + x
        return out[: self.num_users + self.num_items] / (self.num_layers + 1)

    def refresh(self) -> None:
        self.refresh_attention()

    @torch.no_grad()
    def propagation_terms(self):
        was = self.training
        self.eval()
        x0 = self.inputs()
        self.train(was)
        x, through = x0, torch.zeros_like(x0)
        for _ in range(self.num_layers):
            through = through + x
            x = spmm(self.adj, x, self.adj_t)
        return x0, through, self.adj, self.num_layers

    def behaviour_projection(self) -> torch.Tensor | None:
        return None if self.behav_proj is None else self.behav_proj.weight

    @torch.no_grad()
    def rewired(self, data) -> KGTextGNN:
        import copy

        from recsys_dagster.core.models import user_item_adjacency

        device = self.embedding.weight.device
        new = copy.copy(self)
        new._buffers = dict(self._buffers)  # a shallow copy shares the dict; the new user text is its own
        if data.user_text is not None and self.user_text is not None:
            new.user_text = torch.as_tensor(data.user_text, dtype=torch.float32, device=device)
        new.adj_ui = user_item_adjacency(data, device)
        order = torch.argsort(torch.as_tensor(data.kg_rel, device=device), stable=True)
        new.kg_head, new.kg_tail, new.kg_rel = (torch.as_tensor(a, dtype=torch.long, device=device)[order]
                                                for a in (data.kg_head, data.kg_tail, data.kg_rel))
        new.refresh_attention()
        return new

    def rewirer(self, data) -> Deletions:
        return Deletions(self, data)

    def aux_loss(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor | None:
        """KGAT's TransR loss on ``batch_size`` KG triples drawn uniformly, each against a
        uniformly drawn corrupt tail; None without KG edges."""
        n = self.kg_head.numel()
        if n == 0:
            return None
        device = self.kg_head.device
        k = torch.randint(0, n, (batch_size,), generator=generator).to(device)
        neg = torch.randint(0, self.num_nodes, (batch_size,), generator=generator).to(device)
        return self.kg_loss(self.kg_head[k], self.kg_rel[k], self.kg_tail[k], neg)

    def kg_loss(self, head, rel, tail, neg_tail) -> torch.Tensor:
        """KGAT's TransR-style loss on KG triples (optional auxiliary term)."""
        x = self.inputs()
        w = self.rel_W[rel]
        r = self.rel_emb(rel)
        h = torch.bmm(x[head].unsqueeze(1), w).squeeze(1)
        t = torch.bmm(x[tail].unsqueeze(1), w).squeeze(1)
        tn = torch.bmm(x[neg_tail].unsqueeze(1), w).squeeze(1)
        pos = ((h + r - t) ** 2).sum(-1)
        neg = ((h + r - tn) ** 2).sum(-1)
        return nn.functional.softplus(pos - neg).mean()


class Deletions:
    """:meth:`KGTextGNN.rewired` for one removal at a time (the explanation protocol's
    deletions), without rebuilding the graph.

    The operator's structure (the sorted union of user-item and KG entries, and its
    transpose), the degrees and the attention logits of ``data``'s graph are computed once. A
    removal then recomputes only what it changes: the normalized user-item values from the
    new degrees, the logits of the KG edges of the user whose behaviour text changed, and the
    attention softmax; a removed entry keeps its place with value 0, which propagates exactly
    like an absent one. The scores equal those of ``rewired`` up to float rounding (tests
    check it). Measured on ML-100K (14.6k nodes, 160k user-item and 159k KG entries, 2 cores):
    ``rewired`` 300 ms per removal, this 16 ms, with bitwise-equal embeddings (the
    propagation both are followed by takes 15-18 ms).

    A returned model is for scoring only: it is never trained or refreshed (its operator is
    not rebuilt from ``adj_ui``, which it does not carry).
    """

    def __init__(self, model: KGTextGNN, data):
        from recsys_dagster.core.models.sparse import bipartite_entries

        self.model = model
        n = model.num_nodes
        device = model.embedding.weight.device
        self.rows, self.cols = bipartite_entries(data.train_users, data.train_items, model.num_users)
        order = torch.argsort(torch.as_tensor(data.kg_rel, device=device), stable=True)
        self.head, self.tail, self.rel = (torch.as_tensor(a, dtype=torch.long, device=device)[order]
                                          for a in (data.kg_head, data.kg_tail, data.kg_rel))
        was = model.training
        model.eval()
        with torch.no_grad():
            self.logits = model.attention_logits(model.inputs(), self.head, self.tail, self.rel)
        model.train(was)
        rows, cols = (torch.as_tensor(x, dtype=torch.long, device=device) for x in (self.rows, self.cols))
        keys = torch.cat([rows * n + cols, self.head * n + self.tail])  # int64: n^2 exceeds int32 past 46k nodes
        entries, self.slot = torch.unique(keys, return_inverse=True)  # slot: raw entry -> CSR position
        r, c = entries // n, entries % n
        self.col, self.crow = c, self._crow(r, n)
        self.t_order = torch.argsort(c * n + r)
        self.col_t, self.crow_t = r[self.t_order], self._crow(c, n)

    @staticmethod
    def _crow(rows: torch.Tensor, n: int) -> torch.Tensor:
        return torch.cat([rows.new_zeros(1), torch.cumsum(torch.bincount(rows, minlength=n), 0)])

    @torch.no_grad()
    def __call__(self, edited, removal) -> KGTextGNN:
        """The model on ``edited`` (``data`` less ``removal``: a user's history item, whose
        behaviour text ``edited`` recomputed, and/or a KG edge pair, both directions)."""
        import copy

        from torch_geometric.utils import softmax

        from recsys_dagster.core.models.sparse import symmetric_norm

        m = self.model
        n, device = m.num_nodes, self.logits.device
        new = copy.copy(m)
        new._buffers = dict(m._buffers)  # a shallow copy shares the dict; the new user text is its own
        new.adj_ui = None
        ui_keep = None
        logits, kg_keep = self.logits, torch.ones_like(self.head, dtype=torch.bool)
        if removal.item is not None:
            a, b = removal.user, m.num_users + removal.item
            ui_keep = ~(((self.rows == a) & (self.cols == b)) | ((self.rows == b) & (self.cols == a)))
            if edited.user_text is not None and m.user_text is not None:
                new.user_text = torch.as_tensor(edited.user_text, dtype=torch.float32, device=device)
                touched = (self.head == a) | (self.tail == a)
                if bool(touched.any()):
                    new.training = False  # layer-0 inputs without id dropout (not recursive: shared modules)
                    logits = logits.clone()
                    logits[touched] = m.attention_logits(new.inputs(), self.head[touched], self.tail[touched],
                                                         self.rel[touched])
        if removal.kg_pair is not None:
            a, b = removal.kg_pair
            kg_keep = ~(((self.head == a) & (self.tail == b)) | ((self.head == b) & (self.tail == a)))
        ui = torch.as_tensor(symmetric_norm(self.rows, self.cols, n, ui_keep), device=device)
        alpha = torch.zeros_like(logits)
        if bool(kg_keep.any()):
            alpha[kg_keep] = softmax(logits[kg_keep], self.head[kg_keep], num_nodes=n) * m.kg_weight
        values = torch.zeros(len(self.col), device=device).index_add_(0, self.slot, torch.cat([ui, alpha]))
        new.adj = torch.sparse_csr_tensor(self.crow, self.col, values, (n, n), check_invariants=False)
        new.adj_t = torch.sparse_csr_tensor(self.crow_t, self.col_t, values[self.t_order], (n, n),
                                             check_invariants=False)
        new.kg_head, new.kg_tail, new.kg_rel = self.head[kg_keep], self.tail[kg_keep], self.rel[kg_keep]
        return new
