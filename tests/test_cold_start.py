"""Cold items mapped from content: sources, the ridge map and the pseudo-cold choice."""

import numpy as np
import pytest
import torch
from scipy.sparse import csr_matrix

from recsys_dagster.core.cold_start import (
    ContentFeatures,
    ContentMap,
    grid,
    item_attributes,
    ridge_map,
    tune_content_map,
)
from recsys_dagster.core.fusion import FusedScorer, FusionWeights
from recsys_dagster.core.metrics import to_csr


def _world(informative: str, n_users=150, n_items=300, n_topics=6, seed=0):
    """Items belong to topics; users like one topic. Only the ``informative`` source
    (``text`` or ``kg``) knows the topics, the other one is noise. The "GNN" embeddings are
    the topic one-hots (what a trained model would have learnt)."""
    rng = np.random.default_rng(seed)
    topic = rng.integers(0, n_topics, n_items)
    user_topic = rng.integers(0, n_topics, n_users)
    onehot = np.eye(n_topics, dtype=np.float32)[topic]
    items = onehot + 0.05 * rng.standard_normal((n_items, n_topics)).astype(np.float32)
    users = np.eye(n_topics, dtype=np.float32)[user_topic]
    noise_text = rng.standard_normal((n_items, 16)).astype(np.float32)
    good_text = np.concatenate([onehot, 0.1 * noise_text[:, :10]], axis=1)
    text = good_text if informative == "text" else noise_text
    n_ent = 30
    if informative == "kg":
        ents = topic * 5 + rng.integers(0, 5, n_items)  # each topic has 5 entities
    else:
        ents = rng.integers(0, n_ent, n_items)
    attrs = csr_matrix((np.ones(n_items, np.float32), (np.arange(n_items), ents)), shape=(n_items, n_ent))
    # interactions: each user 8 items of their topic; half to training, half to validation
    tr_u, tr_i, va_u, va_i = [], [], [], []
    for u in range(n_users):
        pool = np.flatnonzero(topic == user_topic[u])
        chosen = rng.choice(pool, size=min(8, len(pool)), replace=False)
        tr_u += [u] * (len(chosen) // 2)
        tr_i += list(chosen[: len(chosen) // 2])
        va_u += [u] * (len(chosen) - len(chosen) // 2)
        va_i += list(chosen[len(chosen) // 2:])
    train = to_csr(np.array(tr_u), np.array(tr_i), n_users)
    valid = to_csr(np.array(va_u), np.array(va_i), n_users)
    pop = np.full(n_items, 10)
    return users, items, text, attrs, pop, train, valid


@pytest.mark.parametrize("informative", ["text", "kg"])
def test_the_informative_source_is_chosen_and_never_loses_to_a_single_source(informative):
    users, items, text, attrs, pop, train, valid = _world(informative)
    content = ContentFeatures(text, attrs)
    assert content.sources == ("text", "kg")
    choice, trials = tune_content_map(users, items, content, pop, valid, train, threshold=5, seed=1, k=5)
    score = dict(trials)
    assert score[choice] == max(score.values())
    weight = choice.text_weight if informative == "text" else choice.kg_weight
    assert weight > 0
    # the chosen map beats the noise source alone and the bias alone by a wide margin
    def weights(m):  # (informative source's weight, noise source's weight)
        return (m.text_weight, m.kg_weight) if informative == "text" else (m.kg_weight, m.text_weight)

    noise_only = max(v for m, v in trials if weights(m)[0] == 0 and weights(m)[1] > 0)
    bias_only = score[ContentMap(0.0, 0.0, 1.0)]
    assert score[choice] > 1.5 * max(noise_only, bias_only)
    again, _ = tune_content_map(users, items, content, pop, valid, train, threshold=5, seed=1, k=5)
    assert again == choice  # deterministic on CPU


def test_empty_text_is_no_source_and_the_kg_maps_cold_items():
    """A dataset without item text (e.g. listening logs with an external KG): the text
    column is empty, so the KG alone maps cold items (not the mean embedding)."""
    users, items, _, attrs, pop, train, valid = _world("kg")
    empty = np.zeros((len(items), 16), np.float32)
    content = ContentFeatures(empty, attrs)
    assert content.sources == ("kg",)
    assert all(m.text_weight == 0 for m in grid(content.sources))
    choice, _ = tune_content_map(users, items, content, pop, valid, train, threshold=5, k=5)
    assert choice.kg_weight > 0
    pop = pop.copy()
    pop[:10] = 0  # ten brand-new items whose id embeddings are noise
    noisy = items.copy()
    noisy[:10] = np.random.default_rng(3).standard_normal((10, items.shape[1]))
    t = torch.as_tensor
    scorer = FusedScorer(t(users), t(noisy), t(np.zeros((len(users), 16), np.float32)), t(empty),
                         t(np.full(len(users), 10)), t(pop), FusionWeights(), content=content, content_map=choice)
    err_mapped = (scorer.item_gnn[:10] - t(items[:10])).norm()
    err_mean = (t(items[10:]).mean(0, keepdim=True) - t(items[:10])).norm()
    assert err_mapped < 0.5 * err_mean
    assert torch.equal(scorer.item_gnn[10:], t(noisy[10:]))  # warm items keep their own embeddings


def test_content_features_weight_the_sources_and_keep_a_bias_column():
    text = np.random.default_rng(0).standard_normal((20, 4)).astype(np.float32)
    attrs = csr_matrix((np.ones(20, np.float32), (np.arange(20), np.arange(20) % 5)), shape=(20, 5))
    content = ContentFeatures(text, attrs, kg_dims=3)
    assert content.kg.shape == (20, 3)
    assert np.isclose(np.linalg.norm(content.kg, axis=1).mean(), 1.0, atol=1e-5)
    full = content(ContentMap(1.0, 2.0, 1.0))
    assert full.shape == (20, 1 + 4 + 3)
    assert np.all(full[:, 0] == 1.0)
    assert np.allclose(full[:, 1:5], text)
    assert np.allclose(full[:, 5:], 2.0 * content.kg)
    assert content(ContentMap(0.0, 0.0, 1.0)).shape == (20, 1)  # the bias alone
    assert ContentFeatures(None, None)(ContentMap()) is None  # nothing known: no mapping at all


def test_ridge_map_recovers_a_linear_map_from_the_fitted_rows():
    rng = np.random.default_rng(0)
    x = np.concatenate([np.ones((40, 1)), rng.standard_normal((40, 5))], axis=1).astype(np.float32)
    w = rng.standard_normal((6, 3)).astype(np.float32)
    fit = np.arange(40) >= 10
    y = x @ w
    y_seen = y.copy()
    y_seen[~fit] = 99.0  # the held-out rows' targets are never read
    pred = ridge_map(x, y_seen, fit, ridge=1e-6)
    assert np.allclose(pred, y, atol=1e-3)


def test_item_attributes_reads_item_to_entity_edges_of_the_graph():
    class Data:
        n_users, n_items, n_entities = 2, 3, 2
        # users 0-1, items 2-4, entities 5-6; a user-item edge and both directions of KG edges
        kg_head = np.array([0, 2, 3, 5, 4])
        kg_tail = np.array([2, 5, 6, 2, 6])

    m = item_attributes(Data()).toarray()
    assert m.tolist() == [[1, 0], [0, 1], [0, 1]]
