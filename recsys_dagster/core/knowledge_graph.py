"""Knowledge graph: entities and typed relations from item/user metadata plus an external KG.

Entity keys are ``kind:value`` strings (``item:42``, ``genre:Comedy``, ``fb:m.0bln8``);
integer ids are stable across rebuilds: existing keys keep their id, new keys get the next
free ids. External entities linked to an item are merged into that item's entity (as KGAT
and RecBole align them), so external triples attach directly to items.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from recsys_dagster.core.datasets.base import ExternalKG
from recsys_dagster.core.warehouse import columns_of

ENTITY_COLUMNS = columns_of("kg_entities")
RELATION_COLUMNS = columns_of("kg_relations")
TRIPLE_COLUMNS = columns_of("kg_triples")
KG_REJECT_COLUMNS = columns_of("kg_quarantine")

AGE_BANDS = [(0, 17, "under 18"), (18, 24, "18-24"), (25, 34, "25-34"), (35, 44, "35-44"), (45, 49, "45-49"),
             (50, 55, "50-55"), (56, 200, "56+")]  # MovieLens' own bands


@dataclass
class KnowledgeGraph:
    entities: pd.DataFrame
    relations: pd.DataFrame
    triples: pd.DataFrame
    rejects: pd.DataFrame
    linked_items: int = 0  # items linked to an external KG entity

    def summary(self) -> dict:
        deg = np.bincount(
            np.concatenate([self.triples["head"].to_numpy(), self.triples["tail"].to_numpy()]).astype(np.int64),
            minlength=int(self.entities["entity_id"].max()) + 1 if len(self.entities) else 0,
        )
        deg = deg[self.entities["entity_id"].to_numpy()] if len(self.entities) else deg
        return {
            "entities": len(self.entities),
            "relations": len(self.relations),
            "triples": len(self.triples),
            "entities_by_kind": self.entities["kind"].value_counts().to_dict(),
            "triples_by_relation_source": self.triples.merge(self.relations, left_on="relation", right_on="relation_id")[
                "source"].value_counts().to_dict(),
            "degree": {q: float(np.quantile(deg, p)) if len(deg) else 0.0
                       for q, p in [("min", 0), ("median", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1)]},
            "isolated_entities": int((deg == 0).sum()),
        }


_NOT_CATEGORICAL = r"(?:^|_)(?:id|url|date|link)$"


def age_band(age) -> str | None:
    if age is None or pd.isna(age):
        return None
    for lo, hi, name in AGE_BANDS:
        if lo <= int(age) <= hi:
            return name
    return None


def _categorical_attributes(items: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(item_id, column, value) for JSON attributes that behave like categories: values
    shared by at least two items (ids and URLs are unique per item, so they drop out;
    columns named like ids, URLs or dates are skipped)."""
    rows = []
    for item_id, attrs in zip(items["item_id"], items["attributes"], strict=True):
        try:
            parsed = json.loads(attrs) if isinstance(attrs, str) else (attrs or {})
        except json.JSONDecodeError:
            continue
        rows += [(item_id, k, str(v)) for k, v in parsed.items() if isinstance(v, str | int) and not isinstance(v, bool)]
    if not rows:
        return []
    frame = pd.DataFrame(rows, columns=["item_id", "column", "value"])
    frame = frame[~frame["column"].str.contains(_NOT_CATEGORICAL)]
    stats = frame.groupby("column")["value"].agg(["nunique", "size"])
    keep = stats[stats["nunique"] > 1].index  # a constant column says nothing
    frame = frame[frame["column"].isin(keep)]
    shared = frame.groupby(["column", "value"])["item_id"].transform("size") >= 2
    return list(frame[shared].itertuples(index=False, name=None))


def build_knowledge_graph(
    items: pd.DataFrame,
    users: pd.DataFrame,
    external: ExternalKG | None = None,
    previous_entities: pd.DataFrame | None = None,
    previous_relations: pd.DataFrame | None = None,
) -> KnowledgeGraph:
    """Build entities, relations and triples (see module docstring)."""
    triples: list[tuple[str, str, str, str]] = []  # head key, relation, tail key, source
    names: dict[str, tuple[str, str]] = {}  # key -> (kind, name)
    rejects: list[tuple[str, int | None, str, str]] = []

    def entity(kind: str, value, name: str | None = None) -> str:
        key = f"{kind}:{value}"
        names.setdefault(key, (kind, name if name is not None else str(value)))
        return key

    for row in items.itertuples(index=False):
        item = entity("item", row.item_id, row.title or str(row.item_id))
        for g in row.genres if row.genres is not None else []:
            triples.append((item, "has_genre", entity("genre", g), "metadata"))
        if row.year is not None and not pd.isna(row.year):
            year = int(row.year)
            triples.append((item, "released_in_year", entity("year", year), "metadata"))
            triples.append((item, "released_in_decade", entity("decade", f"{year // 10 * 10}s"), "metadata"))
        for t in row.tags if row.tags is not None else []:
            triples.append((item, "has_tag", entity("tag", t), "metadata"))
    for item_id, column, value in _categorical_attributes(items):
        triples.append((f"item:{item_id}", f"has_{column}", entity(column, value), "metadata"))

    for row in users.itertuples(index=False):
        user = entity("user", row.user_id)
        band = age_band(row.age)
        if band:
            triples.append((user, "in_age_band", entity("age_band", band), "metadata"))
        if isinstance(row.gender, str) and row.gender.strip():
            triples.append((user, "has_gender", entity("gender", row.gender.strip()), "metadata"))
        if isinstance(row.occupation, str) and row.occupation.strip():
            triples.append((user, "has_occupation", entity("occupation", row.occupation.strip().lower()), "metadata"))

    linked: set[str] = set()
    if external is not None:
        triples += _external_triples(external, set(items["item_id"]), entity, rejects, linked)

    frame = pd.DataFrame(triples, columns=["head", "relation", "tail", "source"])
    entities = _assign_ids(names, previous_entities, "entity_key", "entity_id")
    entities["kind"] = entities["entity_key"].map(lambda k: names[k][0])
    entities["name"] = entities["entity_key"].map(lambda k: names[k][1])
    rel_source = frame.drop_duplicates("relation").set_index("relation")["source"].to_dict()
    relations = _assign_ids({r: None for r in rel_source}, previous_relations, "name", "relation_id")
    relations["source"] = relations["name"].map(rel_source)
    eid = dict(zip(entities["entity_key"], entities["entity_id"], strict=True))
    rid = dict(zip(relations["name"], relations["relation_id"], strict=True))
    out = pd.DataFrame({
        "head": frame["head"].map(eid).astype("int64"),
        "relation": frame["relation"].map(rid).astype("int64"),
        "tail": frame["tail"].map(eid).astype("int64"),
    }).drop_duplicates().sort_values(TRIPLE_COLUMNS).reset_index(drop=True)
    return KnowledgeGraph(
        entities[ENTITY_COLUMNS].sort_values("entity_id").reset_index(drop=True),
        relations[RELATION_COLUMNS].sort_values("relation_id").reset_index(drop=True),
        out,
        pd.DataFrame(rejects, columns=KG_REJECT_COLUMNS),
        linked_items=len(linked),
    )


def _external_triples(external: ExternalKG, item_ids: set, entity, rejects, linked: set) -> list:
    links = external.links
    item_of: dict[str, str] = {}
    for row in links.itertuples(index=False):
        item, ent = (str(row.item_id or "").strip(), str(row.entity or "").strip())
        if getattr(row, "parse_error", None):
            rejects.append(("item_entities", row.source_row, str(row.raw_line), row.parse_error))
        elif not item or not ent:
            rejects.append(("item_entities", row.source_row, f"{item}\t{ent}", "missing item_id or entity"))
        elif item not in item_ids:
            rejects.append(("item_entities", row.source_row, f"{item}\t{ent}", "link to an item not in items"))
        elif ent in item_of and item_of[ent] != item:
            # one entity for several items (duplicate titles): keep the first link
            rejects.append(("item_entities", row.source_row, f"{item}\t{ent}", "entity already linked to another item"))
        else:
            item_of.setdefault(ent, item)
    out = []
    prefix = external.name
    t = external.triples
    for row in t.itertuples(index=False):
        h, r, tl = (str(v).strip() if v is not None else "" for v in (row.head, row.relation, row.tail))
        if getattr(row, "parse_error", None):
            rejects.append(("kg", row.source_row, str(row.raw_line), row.parse_error))
            continue
        if not h or not r or not tl:
            rejects.append(("kg", row.source_row, f"{h}\t{r}\t{tl}", "missing head, relation or tail"))
            continue
        if h == tl:
            rejects.append(("kg", row.source_row, f"{h}\t{r}\t{tl}", "self-loop triple"))
            continue
        # an external entity's name is its label, or empty: a bare id is no name for people
        hk = f"item:{item_of[h]}" if h in item_of else entity(prefix, h, external.labels.get(h, ""))
        tk = f"item:{item_of[tl]}" if tl in item_of else entity(prefix, tl, external.labels.get(tl, ""))
        if hk == tk:
            rejects.append(("kg", row.source_row, f"{h}\t{r}\t{tl}", "self-loop after linking to items"))
            continue
        linked.update(k[5:] for k in (hk, tk) if k.startswith("item:"))
        out.append((hk, r, tk, prefix))
    return out


def _assign_ids(keys, previous: pd.DataFrame | None, key_col: str, id_col: str) -> pd.DataFrame:
    known = {} if previous is None or previous.empty else dict(zip(previous[key_col], previous[id_col], strict=True))
    next_id = max(known.values(), default=-1) + 1
    rows = []
    for key in sorted(keys):
        if key in known:
            rows.append((known[key], key))
    for key in sorted(k for k in keys if k not in known):
        rows.append((next_id, key))
        next_id += 1
    return pd.DataFrame(rows, columns=[id_col, key_col])
