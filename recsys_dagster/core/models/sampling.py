r"""Sampled-subgraph propagation: a step's cost is O(batch × fan-out^L), not O(edges).

For the batch's target nodes :math:`T`, the L-hop neighbourhoods are sampled hop by hop from
the model's propagation operator (CSR): a node with more than ``fanout`` neighbours keeps
``fanout`` of them drawn uniformly (with replacement), each weighted :math:`A_{vn}\,d_v/k`,
so the sampled product is an unbiased estimate of :math:`(A X)_v`; a node with at most
``fanout`` neighbours keeps all of them, exactly. With ``fanout`` ≥ the largest degree the
result equals full-graph propagation (a test checks it).

Frontiers are nested (:math:`F_0 = T \subseteq F_1 \subseteq \dots \subseteq F_L`, each a
prefix of the next), so layer :math:`l` is computed on :math:`F_{L-l}` only, and the final
embedding :math:`\frac{1}{L+1}\sum_l X^{(l)}` of each target reads the prefix.

PyG's ``NeighborLoader``/``LinkNeighborLoader`` do the same on an ``edge_index`` but need
``pyg-lib`` or ``torch-sparse``, which have no wheels for this torch; this pure-torch CSR
sampler is vectorized (one ``repeat_interleave`` and one ``randint`` per hop) and keeps the
operator's edge weights (normalization, KG attention), which the loaders do not.
"""

from __future__ import annotations

import torch


class NeighbourSampler:
    """Samples from a CSR operator ``adj`` (``N x N``); ``fanout`` neighbours per node and hop."""

    def __init__(self, adj: torch.Tensor, fanout: int, generator: torch.Generator | None = None):
        adj = adj.to("cpu")
        self.crow, self.col, self.val = adj.crow_indices(), adj.col_indices(), adj.values()
        self.n = adj.shape[0]
        self.fanout = int(fanout)
        self.generator = generator
        self._local = torch.full((self.n,), -1, dtype=torch.long)

    def hop(self, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(rows, cols, weights)``: for each node (row = its position in ``nodes``) its sampled
        neighbours (global ids) and the edge weights scaled for the sample."""
        start, end = self.crow[nodes], self.crow[nodes + 1]
        deg = end - start
        small = deg <= self.fanout
        rows, cols, weights = [], [], []
        if bool(small.any()):
            s_pos = torch.nonzero(small).squeeze(1)
            s_deg = deg[s_pos]
            r = torch.repeat_interleave(s_pos, s_deg)
            offsets = torch.arange(int(s_deg.sum())) - torch.repeat_interleave(torch.cumsum(s_deg, 0) - s_deg, s_deg)
            e = torch.repeat_interleave(start[s_pos], s_deg) + offsets
            rows.append(r)
            cols.append(self.col[e])
            weights.append(self.val[e])
        if not bool(small.all()):
            b_pos = torch.nonzero(~small).squeeze(1)
            k = self.fanout
            draw = (torch.rand(len(b_pos), k, generator=self.generator) * deg[b_pos].unsqueeze(1)).long()
            e = (start[b_pos].unsqueeze(1) + draw).reshape(-1)
            rows.append(b_pos.repeat_interleave(k))
            cols.append(self.col[e])
            weights.append(self.val[e] * (deg[b_pos].float() / k).repeat_interleave(k))
        return torch.cat(rows), torch.cat(cols), torch.cat(weights)

    def frontiers(self, targets: torch.Tensor, layers: int):
        """Nested frontiers ``[F_0 .. F_L]`` (global ids, each a prefix of the next) and per hop
        the sampled operator ``F_k x F_{k+1}`` as a sparse COO matrix."""
        frontier = [targets]
        ops = []
        local = self._local
        try:
            for _ in range(layers):
                cur = frontier[-1]
                rows, cols, w = self.hop(cur)
                local[cur] = torch.arange(len(cur))
                new = torch.unique(cols[local[cols] < 0])
                nxt = torch.cat([cur, new])
                local[new] = torch.arange(len(cur), len(nxt))
                op = torch.sparse_coo_tensor(torch.stack([rows, local[cols]]), w, (len(cur), len(nxt)),
                                             check_invariants=False).coalesce()
                local[nxt] = -1
                frontier.append(nxt)
                ops.append(op)
        finally:
            local.fill_(-1)
        return frontier, ops


def sampled_embeddings(model, targets: torch.Tensor, sampler: NeighbourSampler) -> torch.Tensor:
    """Final embeddings ``(len(targets), d)`` of the target nodes (global ids: users first,
    then items) by propagation over the sampled neighbourhoods; differentiable."""
    layers = model.num_layers
    frontier, ops = sampler.frontiers(targets, layers)
    device = next(model.parameters()).device
    x = model.inputs_of(frontier[-1].to(device))  # layer 0 on F_L
    n_t = len(targets)
    out = x[:n_t]
    for level in range(layers - 1, -1, -1):  # layer l = layers - level lives on F_level
        x = torch.sparse.mm(ops[level].to(device), x)
        out = out + x[:n_t]
    return out / (layers + 1)


__all__ = ["NeighbourSampler", "sampled_embeddings"]
