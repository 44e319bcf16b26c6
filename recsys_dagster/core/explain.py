"""Short reasons for recommendations, from the model's own evidence.

For a recommended item the reason is, in order of preference:

1. a KG entity it shares with the history item the GNN finds most similar (the most
   specific one: fewest items; entities shared by more than 5% of the catalogue, such as a
   country or a decade, only when they are genres or tags) — "same director as *Heat
   (1995)*, which you rated highly";
2. "similar description to *X*" when the text score outweighed the GNN score;
3. "because you rated *X* highly" / "because you watched *X*" (the most similar history item);
4. "popular with many users" when the user has no history.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

_LABELS = [
    ("directed_by", "director"), ("director", "director"), ("actor", "actor"), ("starring", "actor"),
    ("written_by", "writer"), ("writer", "writer"), ("produced_by", "producer"), ("producer", "producer"),
    ("production_compan", "studio"), ("cinematograph", "cinematographer"), ("has_genre", "genre"),
    ("genre", "genre"), ("has_tag", "tag"), ("subject", "subject"), ("country", "country"),
    ("language", "language"), ("prequel", "series"), ("sequel", "series"), ("decade", "decade"),
    ("year", "release year"),
]
_OPAQUE = re.compile(r"^(m\.|g\.|Q\d|/m/)|^[0-9a-f]{8,}$")


def relation_label(name: str) -> str:
    low = name.lower()
    for key, label in _LABELS:
        if key in low:
            return label
    return low.split(".")[-1].split(":")[-1].replace("_", " ").removeprefix("has ").strip() or "attribute"


def readable(name: str) -> bool:
    return bool(name) and not _OPAQUE.search(name)


@dataclass
class ExplainContext:
    titles: np.ndarray  # (I,) item titles
    item_vectors: np.ndarray  # (I, d) L2-normalized GNN item embeddings
    item_text: np.ndarray | None  # (I, T) normalized text embeddings
    item_entities: list[list[tuple[int, str, str, int]]]  # per item: (entity, label, name, degree)
    verb_positive: str = "rated highly"
    verb_other: str = "watched"


def item_entity_lists(n_items: int, item_pos: dict, entities: pd.DataFrame | None, relations: pd.DataFrame | None,
                      triples: pd.DataFrame | None) -> list[list[tuple[int, str, str, int]]]:
    """For each item index: the KG entities linked to it (either direction), with label,
    display name and degree (number of items sharing the entity)."""
    out: list[list] = [[] for _ in range(n_items)]
    if triples is None or entities is None or not len(triples):
        return out
    ent = entities.set_index("entity_id")
    is_item = ent["kind"] == "item"
    item_index = ent["entity_key"].where(is_item).str.slice(5).map(item_pos)
    rel = relations.set_index("relation_id")["name"]
    rows = []
    for a, b in (("head", "tail"), ("tail", "head")):
        t = triples[[a, "relation", b]]
        src = t[a].map(item_index)
        other_kind = t[b].map(ent["kind"])
        m = src.notna() & ~other_kind.isin(["item", "user"])
        rows.append(pd.DataFrame({"item": src[m].astype(int), "entity": t[b][m], "relation": t["relation"][m]}))
    frame = pd.concat(rows).drop_duplicates(["item", "entity"])
    degree = frame.groupby("entity")["item"].nunique()
    frame["degree"] = frame["entity"].map(degree)
    frame["label"] = frame["relation"].map(rel).map(relation_label)
    frame["name"] = frame["entity"].map(ent["name"]).fillna("")
    frame = frame[frame["degree"] >= 2].sort_values(["item", "degree"])
    for row in frame.itertuples(index=False):
        out[row.item].append((int(row.entity), row.label, row.name if readable(row.name) else "", int(row.degree)))
    return out


def explain_user(rec_items: np.ndarray, history: np.ndarray, history_positive: np.ndarray, text_dominant: np.ndarray,
                 ctx: ExplainContext) -> list[str]:
    """Reasons for one user's recommended items (see module docstring)."""
    if len(history) == 0:
        return ["popular with many users"] * len(rec_items)
    sims = ctx.item_vectors[rec_items] @ ctx.item_vectors[history].T
    best = history[np.argmax(sims, axis=1)]
    best_pos = history_positive[np.argmax(sims, axis=1)]
    text_best = best
    if ctx.item_text is not None:
        text_best = history[np.argmax(ctx.item_text[rec_items] @ ctx.item_text[history].T, axis=1)]
    reasons = []
    for i, h, positive, text_h, by_text in zip(rec_items, best, best_pos, text_best, text_dominant, strict=True):
        verb = ctx.verb_positive if positive else ctx.verb_other
        if by_text:
            reasons.append(f"similar description to *{ctx.titles[text_h]}*")
            continue
        h_entities = {e for e, *_ in ctx.item_entities[h]}
        broad = max(20, int(0.05 * len(ctx.titles)))  # "same country/decade" explains nothing
        shared = [x for x in ctx.item_entities[i] if x[0] in h_entities and (x[3] <= broad or x[1] in ("genre", "tag"))]
        if shared:
            _, label, name, _ = shared[0]  # sorted by degree: the most specific first
            what = f"{label} {name}" if name else label
            reasons.append(f"same {what} as *{ctx.titles[h]}*, which you {verb}")
        else:
            reasons.append(f"because you {verb} *{ctx.titles[h]}*")
    return reasons
