"""Warehouse tables -> a typed graph of users, items and KG entities.

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


def kg_edges(index: GraphIndex, entities: pd.DataFrame, relations: pd.DataFrame,
             triples: pd.DataFrame) -> pd.DataFrame:
    """The KG triples as typed edges between positions of ``index``: columns ``src_type``,
    ``relation`` (name), ``dst_type``, ``src``, ``dst``. Triples touching users or items
    outside the index (a subset graph) are left out."""
    if triples is None or not len(triples):
        return pd.DataFrame({"src_type": [], "relation": [], "dst_type": [], "src": [], "dst": []})
    ent = entities.set_index("entity_id")
    node_type = ent["kind"].where(ent["kind"].isin(["user", "item"]), "entity")
    epos = pd.Series(np.arange(len(index.entity_keys)), index=pd.Index(index.entity_keys))
    raw_id = ent["entity_key"].str.split(":", n=1).str[1]
    pos = pd.Series(-1, index=ent.index, dtype="int64")
    for kind, lookup, keys in (("user", pd.Series(index.user_pos(), dtype="int64"), raw_id),
                               ("item", pd.Series(index.item_pos(), dtype="int64"), raw_id),
                               ("entity", epos, ent["entity_key"])):
        m = (node_type == kind).to_numpy()
        pos[m] = keys[m].map(lookup).fillna(-1).astype("int64").to_numpy()
    names = relations.set_index("relation_id")["name"]
    frame = pd.DataFrame({
        "src_type": triples["head"].map(node_type).to_numpy(), "relation": triples["relation"].map(names).to_numpy(),
        "dst_type": triples["tail"].map(node_type).to_numpy(),
        "src": triples["head"].map(pos).fillna(-1).astype("int64").to_numpy(),
        "dst": triples["tail"].map(pos).fillna(-1).astype("int64").to_numpy()})
    return frame[(frame.src >= 0) & (frame.dst >= 0)].reset_index(drop=True)


def interaction_edges(index: GraphIndex, interactions: pd.DataFrame) -> np.ndarray:
    """``(2, E)`` user and item positions of ``interactions``; ids not in ``index`` raise,
    so a caller cannot silently lose edges."""
    u = interactions["user_id"].map(index.user_pos())
    i = interactions["item_id"].map(index.item_pos())
    if u.isna().any() or i.isna().any():
        bad = interactions[u.isna() | i.isna()].iloc[0]
        raise ValueError(f"interaction ({bad.user_id!r}, {bad.item_id!r}) refers to a node not in the graph index")
    return np.stack([u.to_numpy(np.int64), i.to_numpy(np.int64)])


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
    """The same edges as a PyG ``HeteroData`` (see module docstring), for PyG's
    heterogeneous models and notebooks; the platform's models train from the arrays of
    :func:`interaction_edges` and :func:`kg_edges` directly.

    Args:
        interactions: ``user_id``, ``item_id`` pairs that become edges.
        entities, relations, triples: the ``kg_*`` tables (optional).
        item_x, user_x: optional node features (e.g. text embeddings), aligned with the index.
    """
    import torch
    from torch_geometric.data import HeteroData

    data = HeteroData()
    for kind, ids in (("user", index.user_ids), ("item", index.item_ids), ("entity", index.entity_keys)):
        data[kind].num_nodes = len(ids)
    if item_x is not None:
        data["item"].x = torch.as_tensor(item_x, dtype=torch.float32)
    if user_x is not None:
        data["user"].x = torch.as_tensor(user_x, dtype=torch.float32)
    edge = torch.as_tensor(interaction_edges(index, interactions))
    data["user", "interacts", "item"].edge_index = edge
    if reverse:
        data["item", "rev_interacts", "user"].edge_index = edge.flip(0)
    if triples is not None and len(triples):
        for (src, rel, dst), grp in kg_edges(index, entities, relations, triples).groupby(
                ["src_type", "relation", "dst_type"], sort=True):
            ei = torch.as_tensor(np.stack([grp.src.to_numpy(), grp.dst.to_numpy()]))
            data[src, rel, dst].edge_index = ei
            if reverse:
                data[dst, f"rev_{rel}", src].edge_index = ei.flip(0)
    return data
