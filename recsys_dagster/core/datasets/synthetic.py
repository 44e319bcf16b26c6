"""A synthetic dataset generator in the generic folder format.

Users and items fall into latent topics; each item has template text and attributes that
reveal its topic; users mostly interact with items of their own topics, with power-law
item popularity inside a topic; timestamps spread over ``days`` days. Useful for tests
(signal a model can learn, text that matches behaviour) and for scaling benchmarks.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd

TOPICS = [
    ("space", "A science fiction story about astronauts exploring distant planets and alien worlds."),
    ("cooking", "A warm documentary about chefs, recipes, family kitchens and regional food."),
    ("crime", "A dark detective thriller about a murder investigation in a corrupt city."),
    ("romance", "A romantic comedy about two strangers who fall in love in Paris."),
    ("sports", "An inspiring sports drama about an underdog football team chasing the championship."),
    ("horror", "A terrifying horror film about a haunted house and a family possessed by ghosts."),
    ("animation", "An animated family adventure with talking animals for children."),
    ("war", "A historical war epic about soldiers fighting on the front lines."),
]

#: A second domain with its own vocabulary (books), for cross-domain tests: other topics,
#: other words, the same kind of signal.
BOOK_TOPICS = [
    ("poetry", "A collection of lyrical poems about seasons, memory and quiet longing."),
    ("gardening", "A practical handbook on growing vegetables, pruning roses and composting soil."),
    ("finance", "A guide to personal investing, saving for retirement and reading stock markets."),
    ("mythology", "Ancient legends of gods, heroes and monsters retold for modern readers."),
    ("travel", "A travel memoir of trains, mountain villages and markets across Asia."),
    ("programming", "A textbook on writing software: algorithms, data structures and debugging."),
]


def generate(
    folder: str | Path,
    n_users: int = 200,
    n_items: int = 120,
    n_interactions: int = 4000,
    days: int = 10,
    seed: int = 0,
    start: dt.date = dt.date(2024, 1, 1),
    with_kg: bool = True,
    exact: bool = False,
    titles: bool = True,
    entity_labels: bool = False,
    verb: str | None = None,
    topics: list[tuple[str, str]] | None = None,
) -> Path:
    """Write ``interactions.csv``, ``items.csv``, ``users.csv`` (+ ``kg.tsv``,
    ``item_entities.csv``) to ``folder`` and return it. Repeated (user, item) pairs are
    dropped; ``exact`` draws extra events so exactly ``n_interactions`` remain (benchmarks).
    ``titles=False`` leaves the title column out (items known by id and description); KG
    entities have opaque ids (``e17``) and get human labels only with ``entity_labels``
    (``entity_labels.csv``); ``verb`` goes to ``dataset.json``. ``topics``: ``(name, description)``
    pairs, :data:`TOPICS` (films) by default; :data:`BOOK_TOPICS` is another domain."""
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = topics or TOPICS
    k = len(vocab)
    item_topic = rng.integers(0, k, n_items)
    user_topic = rng.integers(0, k, n_users)
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.8
    popularity = popularity[rng.permutation(n_items)]
    draw = int(n_interactions * 3) + 100 if exact else n_interactions
    users = rng.integers(0, n_users, draw)
    same = rng.random(draw) < 0.85
    topic = np.where(same, user_topic[users], rng.integers(0, k, draw))
    items = np.empty(draw, dtype=np.int64)
    for t in range(k):
        idx = np.flatnonzero(topic == t)
        pool = np.flatnonzero(item_topic == t)
        if len(pool) == 0:
            pool = np.arange(n_items)
        p = popularity[pool] / popularity[pool].sum()
        items[idx] = rng.choice(pool, size=len(idx), p=p)
    t0 = int(pd.Timestamp(start, tz="UTC").timestamp())
    ts = t0 + rng.integers(0, days * 86400, draw)
    rating = np.clip(np.round(rng.normal(4.0, 0.8, draw)), 1, 5)
    inter = pd.DataFrame({"user_id": [f"u{u}" for u in users], "item_id": [f"i{i}" for i in items],
                          "timestamp": ts, "rating": rating})
    inter = inter.drop_duplicates(["user_id", "item_id"])
    if exact:
        if len(inter) < n_interactions:
            raise ValueError(f"only {len(inter)} distinct (user, item) pairs for {n_interactions} interactions: "
                             "add users or items")
        inter = inter.iloc[:n_interactions]
    inter.to_csv(folder / "interactions.csv", index=False)
    items_frame = pd.DataFrame({
        "item_id": [f"i{i}" for i in range(n_items)],
        "title": [f"{vocab[t][0].title()} Story {i}" for i, t in enumerate(item_topic)],
        "description": [vocab[t][1] for t in item_topic],
        "genres": [vocab[t][0] for t in item_topic],
        "year": rng.integers(1950, 2024, n_items),
        "studio": [f"studio{rng.integers(0, 5)}" for _ in range(n_items)],
    })
    items_frame.drop(columns=[] if titles else ["title"]).to_csv(folder / "items.csv", index=False)
    pd.DataFrame({
        "user_id": [f"u{u}" for u in range(n_users)],
        "age": rng.integers(16, 70, n_users),
        "gender": rng.choice(["F", "M"], n_users),
        "occupation": rng.choice(["student", "engineer", "artist", "writer"], n_users),
    }).to_csv(folder / "users.csv", index=False)
    if with_kg:
        directors = rng.integers(0, max(n_items // 6, 2), n_items)
        creator = {(t, d): f"e{n}" for n, (t, d) in enumerate((t, d) for t in range(k) for d in range(3))}
        theme = {t: f"e{len(creator) + t}" for t in range(k)}
        rows = [(f"film{i}", "film.directed_by", creator[item_topic[i], directors[i] % 3]) for i in range(n_items)]
        rows += [(f"film{i}", "film.theme", theme[item_topic[i]]) for i in range(n_items)]
        pd.DataFrame(rows, columns=["head", "relation", "tail"]).to_csv(folder / "kg.tsv", sep="\t", index=False)
        pd.DataFrame({"item_id": [f"i{i}" for i in range(n_items)], "entity": [f"film{i}" for i in range(n_items)]}
                     ).to_csv(folder / "item_entities.csv", index=False)
        if entity_labels:
            labels = [(e, f"Director {d + 1} of {vocab[t][0]}") for (t, d), e in creator.items()]
            labels += [(e, f"{vocab[t][0].title()} theme") for t, e in theme.items()]
            pd.DataFrame(labels, columns=["entity", "label"]).to_csv(folder / "entity_labels.csv", index=False)
    if verb:
        (folder / "dataset.json").write_text(json.dumps({"verb": verb}))
    return folder
