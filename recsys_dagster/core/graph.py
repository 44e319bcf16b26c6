"""Warehouse tables -> PyG ``HeteroData`` (users, items, KG entities; typed edges).

Node types: ``user``, ``item`` and ``entity`` (every KG entity that is neither a user nor
an item: genres, years, tags, demographics, external entities). Edge types:
``(user, interacts, item)`` from the interaction set the caller passes (training
interactions only, so evaluation never leaks), one edge type per KG relation named by the
relation (``(item, film.film.directed_by, entity)``), and a reverse ``rev_<name>`` edge
type for each. ``data.to_homogeneous()`` gives the unified graph (KGAT's "collaborative
knowledge graph") with an ``edge_type`` per relation and direction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

NODE_TYPES = ("user", "item", "entity")


@dataclass
class GraphIndex:
    """Row order of each node type: ``user_ids[k]`` is the user at node index ``k``."""

    user_ids: np.ndarray
    item_ids: np.ndarray
    entity_keys: np.ndarray

    def user_pos(self) -> dict[str, int]:
        return {u: i for i, u in enumerate(self.user_ids)}

    def item_pos(self) -> dict[str, int]:
        return {u: i for i, u in enumerate(self.item_ids)}


def build_index(user_ids, item_ids, entities: pd.DataFrame | None) -> GraphIndex:
    other = np.array([], dtype=object)
    if entities is not None and len(entities):
        other = entities.loc[~entities["kind"].isin(["user", "item"]), "entity_key"].to_numpy(dtype=object)
    return GraphIndex(np.asarray(user_ids, dtype=object), np.asarray(item_ids, dtype=object), other)


def build_hetero_graph(
    index: GraphIndex,
    interactions: pd.DataFrame,
    entities: pd.DataFrame | None = None,
    relations: pd.DataFrame | None = None,
    triples: pd.DataFrame | None = None,
    item_x=None,
    user_x=None,
    reverse: bool = True,
):
    """Build the heterogeneous graph (see module docstring).

    Args:
        interactions: ``user_id``, ``item_id`` pairs that become edges (rows whose ids are
            not in ``index`` raise, so a caller cannot silently lose edges).
        entities, relations, triples: the ``kg_*`` tables (optional).
        item_x, user_x: optional node features (e.g. text embeddings), aligned with the index.
    """
    import torch
    from torch_geometric.data import HeteroData

    data = HeteroData()
    data["user"].num_nodes = len(index.user_ids)
    data["item"].num_nodes = len(index.item_ids)
    data["entity"].num_nodes = len(index.entity_keys)
    if item_x is not None:
        data["item"].x = torch.as_tensor(item_x, dtype=torch.float32)
    if user_x is not None:
        data["user"].x = torch.as_tensor(user_x, dtype=torch.float32)

    upos, ipos = index.user_pos(), index.item_pos()
    u = interactions["user_id"].map(upos)
    i = interactions["item_id"].map(ipos)
    if u.isna().any() or i.isna().any():
        bad = interactions[u.isna() | i.isna()].iloc[0]
        raise ValueError(f"interaction ({bad.user_id!r}, {bad.item_id!r}) refers to a node not in the graph index")
    edge = torch.as_tensor(np.stack([u.to_numpy(np.int64), i.to_numpy(np.int64)]))
    data["user", "interacts", "item"].edge_index = edge
    if reverse:
        data["item", "rev_interacts", "user"].edge_index = edge.flip(0)

    if triples is not None and len(triples):
        ent = entities.set_index("entity_id")
        node_type = ent["kind"].where(ent["kind"].isin(["user", "item"]), "entity")
        epos = pd.Series(np.arange(len(index.entity_keys)), index=pd.Index(index.entity_keys))
        upos_s = pd.Series(upos, dtype="int64")
        ipos_s = pd.Series(ipos, dtype="int64")
        raw_id = ent["entity_key"].str.split(":", n=1).str[1]
        pos = pd.Series(-1, index=ent.index, dtype="int64")
        for kind, lookup, keys in (("user", upos_s, raw_id), ("item", ipos_s, raw_id), ("entity", epos, ent["entity_key"])):
            m = (node_type == kind).to_numpy()
            pos[m] = keys[m].map(lookup).fillna(-1).astype("int64").to_numpy()

        def locate(ids: pd.Series) -> tuple[np.ndarray, np.ndarray]:
            return ids.map(node_type).to_numpy(), ids.map(pos).fillna(-1).astype("int64").to_numpy()

        h_kind, h_pos = locate(triples["head"])
        t_kind, t_pos = locate(triples["tail"])
        names = relations.set_index("relation_id")["name"]
        frame = pd.DataFrame({"hk": h_kind, "h": h_pos, "r": triples["relation"].map(names).to_numpy(),
                              "tk": t_kind, "t": t_pos})
        frame = frame[(frame.h >= 0) & (frame.t >= 0)]  # users/items outside this index (e.g. a subset graph)
        for (hk, r, tk), grp in frame.groupby(["hk", "r", "tk"], sort=True):
            ei = torch.as_tensor(np.stack([grp.h.to_numpy(), grp.t.to_numpy()]))
            data[hk, r, tk].edge_index = ei
            if reverse:
                data[tk, f"rev_{r}", hk].edge_index = ei.flip(0)
    return data
