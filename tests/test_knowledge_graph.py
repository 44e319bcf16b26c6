import json

import pandas as pd
import pytest

from recsys_dagster.core.datasets.base import ExternalKG
from recsys_dagster.core.graph import build_hetero_graph, build_index
from recsys_dagster.core.knowledge_graph import build_knowledge_graph
from tests.conftest import DATA_DIR, requires_ml100k, requires_mlsmall


def tiny():
    items = pd.DataFrame({
        "item_id": ["1", "2", "3"], "title": ["A (1995)", "B (1996)", "C"], "year": [1995, 1996, None],
        "genres": [["Comedy"], ["Comedy", "Drama"], []], "tags": [["funny"], [], []], "description": [None] * 3,
        "attributes": [json.dumps({"studio": "s1"}), json.dumps({"studio": "s1"}), json.dumps({"studio": "s2"})],
    })
    users = pd.DataFrame({"user_id": ["u1", "u2"], "age": [23, None], "gender": ["F", None],
                          "occupation": ["Writer", None], "zip_code": [None, None], "attributes": ["{}", "{}"]})
    triples = pd.DataFrame({"head": ["m1", "m2", "m1", "m9", "", "m1"], "relation": ["directed_by", "directed_by", "directed_by", "x", "r", "sequel"],
                            "tail": ["d1", "d1", "d1", "m9", "t", "m2"],
                            "source_row": range(2, 8), "raw_line": None, "parse_error": None})
    links = pd.DataFrame({"item_id": ["1", "2", "404"], "entity": ["m1", "m2", "m3"], "source_row": [2, 3, 4],
                          "raw_line": None, "parse_error": None})
    return items, users, ExternalKG("ext", triples, links)


def test_tiny_graph_entities_relations_and_rejects():
    items, users, ext = tiny()
    kg = build_knowledge_graph(items, users, ext)
    keys = set(kg.entities["entity_key"])
    assert {"item:1", "item:2", "item:3", "user:u1", "user:u2", "genre:Comedy", "genre:Drama", "year:1995",
            "decade:1990s", "tag:funny", "studio:s1", "age_band:18-24", "gender:F", "occupation:writer", "ext:d1"} <= keys
    assert "studio:s2" not in keys  # a category value with one item says nothing
    assert "ext:m1" not in keys  # merged into item:1
    eid = dict(zip(kg.entities["entity_key"], kg.entities["entity_id"], strict=True))
    rid = dict(zip(kg.relations["name"], kg.relations["relation_id"], strict=True))
    t = set(map(tuple, kg.triples.to_numpy()))
    assert (eid["item:1"], rid["directed_by"], eid["ext:d1"]) in t
    assert (eid["item:1"], rid["sequel"], eid["item:2"]) in t  # external triple between two items
    assert len(kg.triples) == len(t)  # deduplicated (m1 directed_by d1 twice)
    reasons = sorted(kg.rejects["reason"])
    assert reasons == ["link to an item not in items", "missing head, relation or tail", "self-loop triple"]
    assert kg.linked_items == 2
    assert kg.summary()["isolated_entities"] == 2  # user u2 (no demographics) and item 3 (no metadata)


def test_ids_are_stable_when_entities_are_added():
    items, users, ext = tiny()
    first = build_knowledge_graph(items, users, ext)
    more = pd.concat([items, pd.DataFrame({"item_id": ["0"], "title": ["Z"], "year": [2001], "genres": [["Action"]],
                                           "tags": [[]], "description": [None], "attributes": ["{}"]})])
    second = build_knowledge_graph(more, users, ext, first.entities, first.relations)
    merged = first.entities.merge(second.entities, on="entity_key", suffixes=("_a", "_b"))
    assert len(merged) == len(first.entities) and (merged.entity_id_a == merged.entity_id_b).all()
    assert second.entities["entity_id"].is_unique


def test_hetero_data_from_tables():
    items, users, ext = tiny()
    kg = build_knowledge_graph(items, users, ext)
    index = build_index(["u1", "u2"], ["1", "2", "3"], kg.entities)
    inter = pd.DataFrame({"user_id": ["u1", "u2", "u2"], "item_id": ["1", "1", "3"]})
    data = build_hetero_graph(index, inter, kg.entities, kg.relations, kg.triples)
    assert data["user"].num_nodes == 2 and data["item"].num_nodes == 3
    assert data["entity"].num_nodes == len(kg.entities) - 5
    ui = data["user", "interacts", "item"].edge_index
    assert ui.tolist() == [[0, 1, 1], [0, 0, 2]]
    assert data["item", "rev_interacts", "user"].edge_index.tolist() == [[0, 0, 2], [0, 1, 1]]
    assert data["item", "has_genre", "entity"].edge_index.shape[1] == 3
    assert data["entity", "rev_has_genre", "item"].edge_index.shape[1] == 3
    assert data["item", "sequel", "item"].edge_index.tolist() == [[0], [1]]
    assert data["user", "has_gender", "entity"].edge_index.shape[1] == 1
    homo = data.to_homogeneous()
    assert homo.num_nodes == 2 + 3 + data["entity"].num_nodes
    assert int(homo.edge_type.max()) + 1 == len(data.edge_types)
    with pytest.raises(ValueError, match="not in the graph index"):
        build_hetero_graph(index, pd.DataFrame({"user_id": ["u9"], "item_id": ["1"]}))


@requires_ml100k
def test_ml100k_graph_includes_freebase():
    from recsys_dagster.core.datasets import open_dataset

    d = open_dataset("movielens-100k", mirror_dir=str(DATA_DIR))
    kg = build_knowledge_graph(d.read_items()[0], d.read_users()[0], d.external_kg())
    assert len(kg.triples) > 90_000 and kg.linked_items == 1598 - len(
        kg.rejects[kg.rejects.reason == "entity already linked to another item"])
    sources = set(kg.relations["source"])
    assert sources == {"freebase", "metadata"} and "film.film.directed_by" in set(kg.relations["name"])


@requires_mlsmall
def test_ml_latest_small_graph_has_genre_year_tag_relations():
    from recsys_dagster.core.datasets import open_dataset

    d = open_dataset("movielens-latest-small", mirror_dir=str(DATA_DIR))
    kg = build_knowledge_graph(d.read_items()[0], d.read_users()[0], d.external_kg())
    assert {"has_genre", "released_in_year", "released_in_decade", "has_tag"} <= set(kg.relations["name"])
