"""PyG-style shape/range tests of the models on tiny random graphs."""

import numpy as np
import pandas as pd
import pytest
import torch

from recsys_dagster.core.gnn_data import build_train_data
from recsys_dagster.core.models import MODELS, build_model
from recsys_dagster.core.models.sparse import normalized_bipartite, spmm
from recsys_dagster.core.splits import Split


def tiny_data(with_kg=True, with_text=True, seed=0):
    rng = np.random.default_rng(seed)
    users = [f"u{i}" for i in range(12)]
    items = [f"i{i}" for i in range(10)]
    pairs = {(rng.choice(users), rng.choice(items[:8])) for _ in range(60)}  # i8, i9: no interactions
    inter = pd.DataFrame(sorted(pairs), columns=["user_id", "item_id"])
    inter["ts"] = pd.Timestamp("2024-01-01") + pd.to_timedelta(np.arange(len(inter)), unit="h")
    split = Split(inter.iloc[: len(inter) - 8], inter.iloc[-8:-4], inter.iloc[-4:])
    entities = pd.DataFrame({
        "entity_id": range(len(items) + 3), "entity_key": [f"item:{i}" for i in items] + ["genre:a", "genre:b", "director:x"],
        "kind": ["item"] * len(items) + ["genre", "genre", "director"], "name": [""] * (len(items) + 3)})
    relations = pd.DataFrame({"relation_id": [0, 1], "name": ["has_genre", "directed_by"], "source": ["metadata", "ext"]})
    triples = pd.DataFrame({"head": list(range(10)) + [8, 9, 0], "relation": [0] * 10 + [1, 1, 1],
                            "tail": [10 + (k % 2) for k in range(10)] + [12, 12, 12]})
    text = (np.array(items, dtype=object), rng.normal(size=(10, 16)).astype(np.float32))
    return build_train_data(split, users, items, entities if with_kg else None, relations, triples if with_kg else None,
                            text if with_text else None, use_kg=with_kg, use_text=with_text)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("layers", [1, 3])
def test_forward_shapes_and_backward(name, layers):
    data = tiny_data()
    torch.manual_seed(0)
    model = build_model(name, data, dim=8, layers=layers)
    model.refresh()
    out = model()
    assert out.shape == (data.n_users + data.n_items, 8) and torch.isfinite(out).all()
    out.pow(2).sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_spmm_gradient_matches_dense():
    users, items = np.array([0, 0, 1, 2]), np.array([0, 1, 1, 2])
    adj = normalized_bipartite(users, items, 3, 3)
    x = torch.randn(6, 4, requires_grad=True)
    spmm(adj, x).sum().backward()
    x2 = x.detach().clone().requires_grad_(True)
    (adj.to_dense() @ x2).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad)
    torch.testing.assert_close(adj.to_dense(), adj.to_dense().T)


def test_kg_edges_have_reverse_relations_and_text_reaches_cold_items():
    data = tiny_data()
    assert len(data.relation_names) == 4 and len(data.kg_head) == 2 * 13
    model = build_model("kgtextgnn", data, dim=8, layers=2)
    model.refresh_attention()
    cold = data.n_users + 8  # item i8 has no interactions
    out = model()
    # the cold item's embedding depends on its text and on its KG neighbourhood
    grad_text = torch.autograd.grad(out[cold].sum(), model.text_proj.weight, retain_graph=True)[0]
    assert grad_text.abs().sum() > 0
    entity_rows = torch.autograd.grad(out[cold].sum(), model.embedding.weight)[0][data.n_users + data.n_items:]
    assert entity_rows.abs().sum() > 0
    # attention weights per head sum to kg_weight over its KG neighbours
    kg_rows = model.adj.to_dense()[data.n_users + data.n_items:]  # entity rows: KG edges only
    torch.testing.assert_close(kg_rows.sum(1), torch.full((kg_rows.shape[0],), model.kg_weight))


def test_without_kg_and_text_main_model_has_no_extras():
    data = tiny_data(with_kg=False, with_text=False)
    model = build_model("kgtextgnn", data, dim=8)
    assert model.text_proj is None and model.behav_proj is None and data.n_entities == 0
    model.refresh_attention()
    assert model().shape == (data.n_users + data.n_items, 8)


def _with_user_attributes(data):
    """``data`` plus KG edges user -> genre entity (both directions, relation 0): users whose
    attention logits change when their behaviour text does."""
    from dataclasses import replace

    first_entity = data.n_users + data.n_items
    users = np.arange(0, data.n_users, 2)
    head = np.concatenate([data.kg_head, users, np.full(len(users), first_entity)])
    tail = np.concatenate([data.kg_tail, np.full(len(users), first_entity), users])
    rel = np.concatenate([data.kg_rel, np.zeros(2 * len(users), dtype=data.kg_rel.dtype)])
    return replace(data, kg_head=head, kg_tail=tail, kg_rel=rel)


@pytest.mark.parametrize("removal", ["item", "kg_pair", "user_attribute", "both"])
def test_incremental_deletions_score_like_a_rebuilt_graph(removal):
    """KGTextGNN's Deletions (the explanation protocol's fast path) give the embeddings of
    ``rewired`` on the edited data: degrees, the edited user's text and attention, the softmax
    without the removed KG edges."""
    from dataclasses import replace

    from recsys_dagster.core.explain_eval import Removal
    from recsys_dagster.core.metrics import to_csr

    data = _with_user_attributes(tiny_data())
    torch.manual_seed(0)
    model = build_model("kgtextgnn", data, dim=8, layers=2)
    with torch.no_grad():  # attention that is not a plain similarity
        model.rel_W.add_(0.3 * torch.randn_like(model.rel_W))
        model.rel_emb.weight.normal_()
    model.refresh()
    u = int(data.train_users[0])
    item = int(data.train_items[0]) if removal in ("item", "both") else None
    first_entity = data.n_users + data.n_items
    kg_pair = {"kg_pair": (data.n_users + 1, int(data.kg_tail[data.kg_head == data.n_users + 1][0])),
               "user_attribute": (0, first_entity), "both": (0, first_entity)}.get(removal)
    edited = data
    if item is not None:
        keep = ~((data.train_users == u) & (data.train_items == item))
        text = data.user_text.copy()
        text[u] = np.random.default_rng(1).normal(size=text.shape[1])
        edited = replace(edited, train_users=data.train_users[keep], train_items=data.train_items[keep],
                         train_csr=to_csr(data.train_users[keep], data.train_items[keep], data.n_users),
                         user_text=text)
    if kg_pair is not None:
        a, b = kg_pair
        keep = ~(((data.kg_head == a) & (data.kg_tail == b)) | ((data.kg_head == b) & (data.kg_tail == a)))
        assert (~keep).sum() == 2
        edited = replace(edited, kg_head=data.kg_head[keep], kg_tail=data.kg_tail[keep], kg_rel=data.kg_rel[keep])
    fast = model.rewirer(data)(edited, Removal(u if item is not None else kg_pair[0], item, kg_pair))
    for got, want in zip(fast.user_item_embeddings(), model.rewired(edited).user_item_embeddings(), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    base = model.user_item_embeddings()[0]
    assert not torch.allclose(fast.user_item_embeddings()[0], base)  # the removal changed something
