"""Everything a graph model trains on, built from warehouse tables and a split."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from recsys_dagster.core.graph import build_index, kg_edges
from recsys_dagster.core.metrics import to_csr
from recsys_dagster.core.splits import Split


@dataclass
class TrainData:
    user_ids: np.ndarray
    item_ids: np.ndarray
    entity_keys: np.ndarray
    train_users: np.ndarray
    train_items: np.ndarray
    train_csr: tuple
    valid_csr: tuple
    test_csr: tuple
    item_text: np.ndarray | None = None
    user_text: np.ndarray | None = None
    kg_head: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    kg_tail: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    kg_rel: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    relation_names: list[str] = field(default_factory=list)
    text_model: str | None = None  # the encoder's model id of item_text (what a transfer checks)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_entities(self) -> int:
        return len(self.entity_keys)

    def train_plus_valid_csr(self) -> tuple:
        ptr_a, idx_a = self.train_csr
        ptr_b, idx_b = self.valid_csr
        users = np.concatenate([np.repeat(np.arange(self.n_users), np.diff(ptr_a)),
                                np.repeat(np.arange(self.n_users), np.diff(ptr_b))])
        return to_csr(users, np.concatenate([idx_a, idx_b]), self.n_users)

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for arr in (self.train_users, self.train_items, self.kg_head, self.kg_tail, self.kg_rel,
                    self.valid_csr[1], self.valid_csr[0]):
            h.update(np.ascontiguousarray(arr).tobytes())
        h.update("\x1f".join(map(str, self.user_ids)).encode())
        h.update("\x1f".join(map(str, self.item_ids)).encode())
        if self.item_text is not None:
            h.update(np.ascontiguousarray(self.item_text[: min(50, len(self.item_text))]).tobytes())
        return h.hexdigest()[:16]


def pairs_csr(frame: pd.DataFrame, user_pos: dict, item_pos: dict) -> tuple:
    """CSR (users in ``user_pos`` order) of the ``(user_id, item_id)`` pairs of ``frame``
    whose user and item are both indexed."""
    frame = frame[frame["user_id"].isin(user_pos) & frame["item_id"].isin(item_pos)]
    return to_csr(frame["user_id"].map(user_pos).to_numpy(np.int64), frame["item_id"].map(item_pos).to_numpy(np.int64),
                  len(user_pos))


def implicit_interactions(interactions: pd.DataFrame, min_rating: float | None = None) -> pd.DataFrame:
    """One positive per (user, item): the latest event, optionally only ratings >= ``min_rating``."""
    frame = interactions
    if min_rating is not None:
        frame = frame[frame["rating"] >= min_rating]
    return frame.sort_values("ts").drop_duplicates(["user_id", "item_id"], keep="last").sort_values(
        ["user_id", "ts", "item_id"]).reset_index(drop=True)


def build_train_data(
    split: Split,
    user_ids,
    item_ids,
    entities: pd.DataFrame | None = None,
    relations: pd.DataFrame | None = None,
    triples: pd.DataFrame | None = None,
    item_text: tuple[np.ndarray, np.ndarray] | None = None,
    use_kg: bool = True,
    use_text: bool = True,
    half_life_days: float = 60.0,
    min_entity_degree: int = 2,
) -> TrainData:
    """Index every known user and item (items without training interactions included, so
    they can be scored), graph edges from ``split.train`` only, user behaviour embeddings
    pooled from ``split.train`` only (no leakage into validation or test).

    KG entities (not users/items) with fewer than ``min_entity_degree`` edges are dropped,
    as KGAT/KGIN preprocessing does: an entity tied to a single item carries no signal
    between items, and Freebase has tens of thousands of them."""
    from recsys_dagster.core.user_profiles import pooled_user_embeddings

    all_users = np.array(sorted(set(user_ids) | set(split.train["user_id"])), dtype=object)
    all_items = np.array(sorted(set(item_ids) | set(split.train["item_id"])), dtype=object)
    index = build_index(all_users, all_items, entities if use_kg else None)
    upos, ipos = index.user_pos(), index.item_pos()

    def csr_of(frame: pd.DataFrame):
        return pairs_csr(frame, upos, ipos)

    train = split.train
    tu = train["user_id"].map(upos).to_numpy(np.int64)
    ti = train["item_id"].map(ipos).to_numpy(np.int64)
    data = TrainData(all_users, all_items, index.entity_keys, tu, ti, to_csr(tu, ti, len(all_users)),
                     csr_of(split.valid), csr_of(split.test))
    if use_text and item_text is not None:
        ids, matrix = item_text
        pos = pd.Series(np.arange(len(ids)), index=pd.Index(ids))
        rows = pos.reindex(all_items).to_numpy()
        text = np.zeros((len(all_items), matrix.shape[1]), dtype=np.float32)
        found = ~np.isnan(rows)
        text[found] = matrix[rows[found].astype(np.int64)]
        data.item_text = text
        users_t, pooled, _ = pooled_user_embeddings(train, all_items, text, half_life_days)
        utext = np.zeros((len(all_users), matrix.shape[1]), dtype=np.float32)
        utext[[upos[u] for u in users_t]] = pooled
        data.user_text = utext
    if use_kg and triples is not None and len(triples):
        offset = {"user": 0, "item": len(all_users), "entity": len(all_users) + len(all_items)}
        heads, tails, rels, names = [], [], [], []
        for (src, rel, dst), grp in kg_edges(index, entities, relations, triples).groupby(
                ["src_type", "relation", "dst_type"], sort=True):
            heads.append(grp.src.to_numpy() + offset[src])
            tails.append(grp.dst.to_numpy() + offset[dst])
            rels.append(np.full(len(grp), len(names)))
            names.append(f"{src}:{rel}:{dst}")
        if heads:
            h, t, r = np.concatenate(heads), np.concatenate(tails), np.concatenate(rels)
            h, t, r, kept = _prune_entities(h, t, r, offset["entity"], len(index.entity_keys), min_entity_degree)
            data.entity_keys = index.entity_keys[kept]
            used = np.unique(r)
            remap = np.full(len(names), -1)
            remap[used] = np.arange(len(used))
            r = remap[r]
            names = [names[k] for k in used]
            n_rel = len(names)
            data.kg_head = np.concatenate([h, t]).astype(np.int64)
            data.kg_tail = np.concatenate([t, h]).astype(np.int64)
            data.kg_rel = np.concatenate([r, r + n_rel]).astype(np.int64)
            data.relation_names = names + [f"rev:{n}" for n in names]
    return data


def _prune_entities(h, t, r, first_entity: int, n_entities: int, min_degree: int):
    """Drop entity nodes with degree < ``min_degree`` and their edges; renumber the rest."""
    ent_deg = np.bincount(np.concatenate([h[h >= first_entity], t[t >= first_entity]]) - first_entity,
                          minlength=n_entities)
    kept = np.flatnonzero(ent_deg >= min_degree)
    new_pos = np.full(n_entities, -1, dtype=np.int64)
    new_pos[kept] = np.arange(len(kept))

    def remap(nodes):
        out = nodes.copy()
        is_ent = nodes >= first_entity
        out[is_ent] = np.where(new_pos[nodes[is_ent] - first_entity] >= 0,
                               new_pos[nodes[is_ent] - first_entity] + first_entity, -1)
        return out

    h2, t2 = remap(h), remap(t)
    keep = (h2 >= 0) & (t2 >= 0)
    return h2[keep], t2[keep], r[keep], kept
