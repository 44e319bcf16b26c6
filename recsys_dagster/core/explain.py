r"""Reasons for recommendations, from the fused score's own decomposition.

The fused score (:mod:`recsys_dagster.core.fusion`) of item :math:`i` for user :math:`u` is a
sum of standardized parts. Each part splits exactly over the user's history:

* **GNN** (a propagation model, :meth:`Recommender.propagation_terms`): the user's final
  embedding is :math:`e_u = (x_u^{(0)} + \sum_n A_{un}\,t_n) / (L+1)` over its graph
  neighbours :math:`n` (history items, user-attribute entities), so
  :math:`z_{gnn}(u, i)` is one term per neighbour plus a *profile* term (the user's own
  layer-0 input: id embedding and behaviour projection). MF has no such split: all of its
  part is *profile*.
* **item–item** (EASE, :math:`x_u B`): :math:`\sum_{h \in H_u} B_{hi}` — one term per
  history item, exactly.
* **text**: the user's behaviour vector is the normalized recency-weighted sum of the
  history items' text vectors, so the cosine splits into :math:`w_h\, t_h^\top t_i / |P|`.

Every term is centred by the part's mean over items and divided by its standard deviation
(the z-score), and weighted like the fusion does for that user (:meth:`FusedScorer.
coefficients`); with the popularity term they add up to the served score (a test checks
it). The **reason names the largest contributor**: a history item (with the KG path
between it and the recommended item that has the highest attention, when the model has
KG attention), a shared user attribute, or — when no single piece of evidence beats them —
the user's overall profile or popularity. The structured evidence (type, item or entity,
channel, share; the lead first, then its KG path or the strongest history item) is kept
beside the sentence (``fused_recommendations.evidence``, JSON).

Names: an item's title, else its id; entity labels from the KG (``entity_labels.csv`` in
the generic format), never a bare external id; everything inserted into the markdown of a
reason is escaped. Verbs come from the dataset (``dataset.json``: ``verb``,
``verb_positive``), with "interacted with" as the neutral default.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd

_LABELS = [
    ("directed_by", "director"), ("director", "director"), ("actor", "actor"), ("starring", "actor"),
    ("written_by", "writer"), ("writer", "writer"), ("produced_by", "producer"), ("producer", "producer"),
    ("production_compan", "studio"), ("cinematograph", "cinematographer"), ("has_genre", "genre"),
    ("genre", "genre"), ("has_tag", "tag"), ("subject", "subject"), ("country", "country"),
    ("language", "language"), ("prequel", "series"), ("sequel", "series"), ("decade", "decade"),
    ("year", "release year"), ("age_band", "age group"), ("occupation", "occupation"), ("gender", "gender"),
]
_OPAQUE = re.compile(r"^(m\.|g\.|Q\d|/m/)|^[0-9a-f]{8,}$")
_MARKDOWN = re.compile(r"([\\`*_\[\]<>|~])")
#: evidence kinds that point at something specific (coverage counts them)
SPECIFIC = ("history_item", "user_attribute")
CHANNELS = ("gnn", "item_item", "text")


def relation_label(name: str) -> str:
    low = name.lower()
    for key, label in _LABELS:
        if key in low:
            return label
    parts = low.split(":")[-1].split(".")
    if len(parts) >= 3 and parts[-1] in (parts[0], parts[0] + "s"):  # film.content_rating.film: a back-link
        parts = parts[:-1]
    return parts[-1].replace("_", " ").removeprefix("has ").strip() or "attribute"


def readable(name: str) -> bool:
    return bool(name) and not _OPAQUE.search(name)


def escape_md(text: str) -> str:
    """``M*A*S*H`` -> ``M\\*A\\*S\\*H``: safe inside the emphasis of a reason."""
    return _MARKDOWN.sub(r"\\\1", str(text))


def display_names(item_ids, titles: pd.Series | None) -> np.ndarray:
    """Each item's title, else its id (never an empty name)."""
    ids = pd.Index(np.asarray(item_ids, dtype=object))
    got = titles.reindex(ids) if titles is not None else pd.Series(index=ids, dtype=object)
    names = [t.strip() if isinstance(t, str) and t.strip() else str(i) for i, t in zip(ids, got, strict=True)]
    return np.asarray(names, dtype=object)


def entity_display(entities: pd.DataFrame | None) -> dict[str, tuple[str, str]]:
    """``entity_key -> (kind, label)``; the label is empty when the KG has none (an external
    entity without a label file row has an empty name; an opaque Freebase id counts as none)."""
    if entities is None or not len(entities):
        return {}
    return {key: (kind, name if isinstance(name, str) and readable(name) else "")
            for key, kind, name in entities[["entity_key", "kind", "name"]].itertuples(index=False)}


def item_entity_lists(n_items: int, item_pos: dict, entities: pd.DataFrame | None, relations: pd.DataFrame | None,
                      triples: pd.DataFrame | None) -> list[list[tuple[int, str, str, int]]]:
    """For each item index: the KG entities linked to it (either direction) as ``(entity_key,
    relation label, display label ("" when unlabelled), degree (number of items sharing it))``."""
    out: list[list] = [[] for _ in range(n_items)]
    if triples is None or entities is None or not len(triples):
        return out
    labels = entity_display(entities)
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
    frame["key"] = frame["entity"].map(ent["entity_key"])
    frame["name"] = frame["key"].map(lambda k: labels.get(k, ("", ""))[1])
    frame = frame[frame["degree"] >= 2].sort_values(["item", "degree"])
    for row in frame.itertuples(index=False):
        out[row.item].append((row.key, row.label, row.name, int(row.degree)))
    return out


@dataclass
class Verbs:
    """How a reason names an interaction: ``verb`` ("listened to"), ``positive`` for
    interactions in the top quarter of an explicit rating scale ("rated highly"; None: same
    as ``verb``)."""

    verb: str = "interacted with"
    positive: str | None = None


@dataclass
class UserAttribution:
    """Contributions to the fused score of each recommended item (rows) for one user."""

    items: np.ndarray  # (R,) recommended item indices
    history: np.ndarray  # (H,) history item indices
    channels: np.ndarray  # (3, R, H): gnn, item_item, text contributions of each history item
    attributes: np.ndarray  # (A,) user-attribute entity node indices (KG neighbours of the user)
    attribute_contrib: np.ndarray  # (R, A)
    profile: np.ndarray  # (R,) the user's own layer-0 input (GNN) and undecomposed parts
    popularity: np.ndarray  # (R,)
    score: np.ndarray  # (R,) the fused score

    @property
    def per_history(self) -> np.ndarray:
        return self.channels.sum(0)

    def total(self) -> np.ndarray:
        return self.per_history.sum(1) + self.attribute_contrib.sum(1) + self.profile + self.popularity


def dense(table):
    """A float tensor of an embedding table (an int8 one dequantized), or None."""
    from recsys_dagster.core.quantize import Int8Rows

    return table.dequantize() if isinstance(table, Int8Rows) else table


class Attributor:
    """Splits a :class:`FusedScorer`'s scores over each user's history (module docstring).

    Args:
        scorer: the fused scorer that served the lists.
        model: the GNN behind ``scorer.user_gnn`` (None or a model without propagation: the
            GNN part is *profile*).
        train_csr: the history (the graph's user–item edges).
        history_weights: recency weights of the text pooling, aligned with ``train_csr[1]``.
    """

    def __init__(self, scorer, model, train_csr, history_weights: np.ndarray | None = None):
        self.scorer, self.train_csr = scorer, train_csr
        self.terms = model.propagation_terms() if model is not None and scorer.user_gnn is not None else None
        self.n_users = model.num_users if model is not None else 0
        self.behaviour = None
        if self.terms is not None and hasattr(model, "behaviour_projection") and scorer.user_text is not None:
            w = model.behaviour_projection()
            self.behaviour = None if w is None else w.detach().float().cpu()
        self.n_items = scorer.popularity.shape[0]
        self.weights = history_weights if history_weights is not None else np.ones(len(train_csr[1]))
        # item tables as the scorer's scores see them (an int8 scorer's rows dequantized: the
        # attribution splits the score that was served); fp32 tables are shared, not copied
        self.item_gnn, self.item_text = dense(scorer.item_gnn), dense(scorer.item_text)
        self.v_center = None if self.item_gnn is None else (self.item_gnn - self.item_gnn.mean(0)).float()
        self.t_center = None if self.item_text is None else (self.item_text - self.item_text.mean(0)).float()
        if self.terms is not None:
            adj = self.terms[2].to("cpu")
            self.crow, self.col, self.val = adj.crow_indices(), adj.col_indices(), adj.values()

    def neighbours(self, node: int):
        s, e = int(self.crow[node]), int(self.crow[node + 1])
        return self.col[s:e], self.val[s:e]

    def user(self, u: int, items: np.ndarray) -> UserAttribution:
        import torch

        sc = self.scorer
        ptr, idx = self.train_csr
        history = idx[ptr[u]: ptr[u + 1]]
        hw = torch.as_tensor(self.weights[ptr[u]: ptr[u + 1]], dtype=torch.float32)
        ub, it = torch.tensor([u]), torch.as_tensor(items, dtype=torch.long)
        R, H = len(items), len(history)
        channels, profile = torch.zeros(3, R, H), torch.zeros(R)
        attributes, attr_contrib = np.zeros(0, dtype=np.int64), torch.zeros(R, 0)
        with torch.no_grad():
            zg, zt, zc = sc.parts(ub)
            a_u, b_u, c_u, pop_coef = (float(x.reshape(-1)[0]) for x in sc.coefficients(ub))  # b_u = 0 without text
            # the behaviour vector is k * sum_h w_h t_h (recency-weighted pooling of the history's text)
            text = pooled = None
            if sc.user_text is not None and H and b_u + a_u:
                text = self.item_text[torch.as_tensor(history, dtype=torch.long)].float()
                pooled = hw @ text
                k = float((sc.user_text[u] @ pooled) / (pooled @ pooled).clamp_min(1e-12))
            if zg is not None and a_u:
                if self.terms is None:
                    profile += a_u * zg[0, it]
                else:
                    channels[0], attributes, attr_contrib, vr, scale = self._gnn(u, it, history, a_u)
                    ego = self.terms[0][u]  # the user's layer-0 input
                    if self.behaviour is not None and text is not None:  # x0_u = id_u + W b_u: W b_u is history
                        channels[0] += (vr @ (text @ self.behaviour.T).T) * hw * (k * scale)
                        ego = ego - self.behaviour @ (k * pooled)
                    profile += (vr @ ego) * scale
            if zc is not None and c_u:
                b = getattr(sc.item_item, "b", None)
                if b is not None and H:
                    rows = b[torch.as_tensor(history, dtype=torch.long)]  # (H, I)
                    sigma = rows.sum(0).std().clamp_min(1e-8)
                    channels[1] = (c_u * (rows[:, it] - rows.mean(1, keepdim=True)) / sigma).T
                else:
                    profile += c_u * zc[0, it]
            if zt is not None and b_u:
                if text is not None:
                    sigma = (sc.user_text[u] @ self.item_text.T).std().clamp_min(1e-8)
                    channels[2] = b_u * k * (self.t_center[it] @ text.T) * hw / sigma
                else:  # no history to split over (a text profile only)
                    profile += b_u * zt[0, it]
            score = sc(ub)[0, it]
            popularity = pop_coef * sc.pop_z[0, it]
        return UserAttribution(np.asarray(items), history, channels.numpy(), attributes, attr_contrib.numpy(),
                               profile.numpy(), popularity.numpy(), score.numpy())

    def _gnn(self, u: int, it, history: np.ndarray, a_u: float):
        """The GNN part split over the user's graph neighbours: ``(per history item (R, H),
        attribute nodes, their contributions (R, A), centred item vectors vr, scale)``; the
        user's own layer-0 input ``x0_u`` contributes ``vr @ x0_u * scale``."""
        import torch

        sc = self.scorer
        x0, through, _, layers = self.terms
        sigma = (sc.user_gnn[u] @ self.item_gnn.T).std().clamp_min(1e-8)
        vr = self.v_center[it]
        cols, vals = self.neighbours(u)
        e_u = (x0[u] + vals @ through[cols]) / (layers + 1)
        # the scorer's user vector is e_u up to a factor (1 / |e_u| for cosine models)
        scale = float((sc.user_gnn[u] @ e_u) / (e_u @ e_u).clamp_min(1e-12)) * a_u / (layers + 1) / float(sigma)
        per = (vr @ through[cols].T) * vals * scale  # (R, neighbours)
        is_item = (cols >= self.n_users) & (cols < self.n_users + self.n_items)
        pos = pd.Series(np.arange(len(history)), index=history).reindex(cols[is_item].numpy() - self.n_users)
        gnn = torch.zeros(len(it), len(history))
        gnn[:, torch.as_tensor(pos.to_numpy(), dtype=torch.long)] = per[:, is_item]
        return gnn, cols[~is_item].numpy(), per[:, ~is_item], vr, scale


@dataclass
class KGPaths:
    """Item -> {entity node: attention} from a model's propagation operator (KGTextGNN's
    relation-aware attention), with each edge's relation label."""

    out: list[dict[int, float]]
    into: dict[int, dict[int, float]]
    relation: dict[tuple[int, int], str]

    @classmethod
    def from_model(cls, attributor: Attributor, data) -> KGPaths | None:
        if attributor.terms is None or not len(data.kg_head):
            return None
        u, n_items = data.n_users, data.n_items
        first_entity = u + n_items
        out = []
        into: dict[int, dict[int, float]] = {}
        for i in range(n_items):
            cols, vals = attributor.neighbours(u + i)
            m = cols >= first_entity
            out.append(dict(zip(cols[m].tolist(), vals[m].tolist(), strict=True)))
            for e in cols[m].tolist():
                if e not in into:
                    ecols, evals = attributor.neighbours(e)
                    em = (ecols >= u) & (ecols < first_entity)
                    into[e] = dict(zip((ecols[em] - u).tolist(), evals[em].tolist(), strict=True))
        names = data.relation_names
        heads, tails, rels = data.kg_head, data.kg_tail, data.kg_rel
        m = (heads >= u) & (heads < first_entity) & (tails >= first_entity)
        relation = {(int(h) - u, int(t)): relation_label(_relation_of(names[r]))
                    for h, t, r in zip(heads[m], tails[m], rels[m], strict=True)}
        return cls(out, into, relation)

    def best(self, item: int, other: int) -> tuple[int, float] | None:
        """The entity on the path ``item - entity - other`` with the highest attention product."""
        best = None
        for e, a in self.out[item].items():
            b = self.into.get(e, {}).get(other)
            if b is not None and (best is None or a * b > best[1]):
                best = (e, a * b)
        return best


def _relation_of(name: str) -> str:
    """``rev:entity:film.actor.film:item`` -> ``film.actor.film`` (see ``TrainData.relation_names``)."""
    parts = name.removeprefix("rev:").split(":")
    return ":".join(parts[1:-1]) if len(parts) >= 3 else name


@dataclass
class Explainer:
    """Turns an :class:`Attributor`'s contributions into sentences and evidence."""

    attributor: Attributor
    names: np.ndarray  # (I,) display names
    item_ids: np.ndarray
    verbs: Verbs = field(default_factory=Verbs)
    positive: np.ndarray | None = None  # aligned with train_csr[1]: rated in the top quarter
    kg: KGPaths | None = None
    entity_keys: np.ndarray | None = None  # entity node -> entity_key (node index - U - I)
    entity_labels: dict = field(default_factory=dict)  # entity_key -> (kind, label)
    item_entities: list | None = None  # fallback shared attributes (models without KG attention)

    def entity_of(self, node: int) -> tuple[str, str]:
        """``(key, label)`` of an entity node."""
        first = self.attributor.n_users + self.attributor.n_items
        key = str(self.entity_keys[node - first]) if self.entity_keys is not None else str(node)
        return key, self.entity_labels.get(key, ("", ""))[1]

    @cached_property
    def _entity_nodes(self) -> dict[str, int]:
        first = self.attributor.n_users + self.attributor.n_items
        return {str(k): first + n for n, k in enumerate(self.entity_keys if self.entity_keys is not None else [])}

    def entity_node(self, key: str) -> int | None:
        """The node index of an entity key (None: not in the graph)."""
        return self._entity_nodes.get(key)

    def explain_user(self, u: int, items: np.ndarray) -> tuple[list[str], list[str], UserAttribution]:
        """Reasons and evidence (JSON) for user ``u``'s recommended ``items``."""
        att = self.attributor.user(u, items)
        ptr = self.attributor.train_csr[0]
        positive = self.positive[ptr[u]: ptr[u + 1]] if self.positive is not None else np.zeros(len(att.history), bool)
        reasons, evidence = [], []
        for r, item in enumerate(att.items):
            sentence, ev = self._one(att, r, int(item), positive)
            reasons.append(sentence)
            evidence.append(json.dumps(ev, separators=(",", ":")))
        return reasons, evidence, att

    def _one(self, att: UserAttribution, r: int, item: int, positive: np.ndarray):
        per_h = att.per_history[r]
        pos_total = float(np.clip(np.concatenate([per_h, att.attribute_contrib[r], [att.profile[r], att.popularity[r]]]),
                                  0, None).sum()) or 1.0
        candidates = [("profile", float(att.profile[r])), ("popularity", float(att.popularity[r]))]
        if len(per_h):
            candidates.append(("history_item", float(per_h.max())))
        if att.attribute_contrib.shape[1]:
            candidates.append(("user_attribute", float(att.attribute_contrib[r].max())))
        kind, value = max(candidates, key=lambda c: c[1])
        ev: list[dict] = []
        if kind == "history_item":
            j = int(per_h.argmax())
            h = int(att.history[j])
            ev.append(self._history_evidence(att, r, j, pos_total))
            channel = ev[0]["channels"]
            rated = bool(self.verbs.positive and positive[j])
            verb = self.verbs.positive if rated else self.verbs.verb
            name = escape_md(self.names[h])
            path = self._path(item, h)
            if path is not None:
                ev.append(path)
            if max(channel, key=channel.get) == "text":
                sentence = f"similar description to *{name}*, which you {verb}"
            elif path is not None and path["label"]:
                sentence = f"same {path['relation']} ({escape_md(path['label'])}) as *{name}*, which you {verb}"
            elif path is not None:
                sentence = f"shares *{path['relation']}* with *{name}*, which you {verb}"
            elif rated:  # "rated highly" does not take an object: "because of *X*, which you rated highly"
                sentence = f"because of *{name}*, which you {verb}"
            else:
                sentence = f"because you {verb} *{name}*"
        elif kind == "user_attribute":
            j = int(att.attribute_contrib[r].argmax())
            key, label = self.entity_of(int(att.attributes[j]))
            what = relation_label(key.split(":", 1)[0])
            ev.append({"type": "user_attribute", "entity": key, "label": label, "share": round(value / pos_total, 4)})
            sentence = f"liked by people who share your {what}" + (f" ({escape_md(label)})" if label else "")
        elif kind == "profile":
            ev.append({"type": "profile", "share": round(value / pos_total, 4)})
            sentence = "fits your overall taste"
        else:
            ev.append({"type": "popularity", "share": round(value / pos_total, 4)})
            sentence = "popular with many users"
        if kind != "history_item" and len(per_h) and per_h.max() > 0:  # the strongest history item, for UIs
            ev.append(self._history_evidence(att, r, int(per_h.argmax()), pos_total))
        return sentence, ev

    def _history_evidence(self, att: UserAttribution, r: int, j: int, pos_total: float) -> dict:
        return {"type": "history_item", "item_id": str(self.item_ids[att.history[j]]),
                "share": round(float(att.per_history[r, j]) / pos_total, 4),
                "channels": {c: round(float(att.channels[k, r, j]) / pos_total, 4) for k, c in enumerate(CHANNELS)}}

    def _path(self, item: int, h: int) -> dict | None:
        if self.kg is not None:
            best = self.kg.best(item, h)
            if best is None:
                return None
            key, label = self.entity_of(best[0])
            return {"type": "kg_path", "entity": key, "label": label,
                    "relation": self.kg.relation.get((item, best[0]), "attribute"), "attention": round(best[1], 6)}
        if self.item_entities is None:
            return None
        shared = {e for e, *_ in self.item_entities[h]}
        broad = max(20, int(0.05 * len(self.names)))  # "same decade" explains nothing
        hits = [x for x in self.item_entities[item] if x[0] in shared and (x[3] <= broad or x[1] in ("genre", "tag"))]
        if not hits:
            return None
        entity, relation, label, _ = hits[0]  # the most specific first
        return {"type": "shared_attribute", "entity": entity, "label": label, "relation": relation,
                "attention": None}


def kind_of(evidence: str) -> str:
    """The leading evidence kind of an ``evidence`` JSON (``history_item``, ``profile`` ...)."""
    return json.loads(evidence)[0]["type"]


__all__ = ["Attributor", "CHANNELS", "Explainer", "KGPaths", "SPECIFIC", "UserAttribution", "Verbs", "display_names",
           "entity_display", "escape_md", "item_entity_lists", "kind_of", "readable", "relation_label"]
