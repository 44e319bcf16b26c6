"""Fusion rules on hand-made tensors."""

import torch

from recsys_dagster.core.fusion import FusedScorer, FusionWeights, map_cold_items, top_k


def test_cold_items_get_embeddings_mapped_from_text():
    g = torch.Generator().manual_seed(0)
    text = torch.nn.functional.normalize(torch.randn(50, 8, generator=g), dim=1)
    true_map = torch.randn(8, 4, generator=g)
    gnn = text @ true_map
    pop = torch.full((50,), 10)
    pop[:5] = 0  # five cold items whose id embeddings are untrained noise
    noisy = gnn.clone()
    noisy[:5] = torch.randn(5, 4, generator=g)
    mapped = map_cold_items(noisy, text, pop, threshold=5, ridge=1e-3)
    assert torch.allclose(mapped[5:], noisy[5:])
    assert (mapped[:5] - gnn[:5]).norm() < 0.1 * (noisy[:5] - gnn[:5]).norm()


def test_cold_users_lean_on_text_and_empty_users_get_popularity():
    user_gnn = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
    item_gnn = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    user_text = torch.tensor([[0.0, 1.0], [0.0, 1.0], [0.0, 0.0]])
    item_text = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]])
    counts = torch.tensor([10, 0, 0])  # user 0 warm, user 1 cold with text, user 2 has nothing
    popularity = torch.tensor([1, 2, 50])
    scorer = FusedScorer(user_gnn, item_gnn, user_text, item_text, counts, popularity,
                         FusionWeights(alpha=1.0, beta=0.0, cold_user_threshold=5, cold_item_threshold=0))
    items, _ = top_k(scorer, torch.arange(3).numpy(), None, 3, k=1)
    assert items[:, 0].tolist() == [0, 1, 2]  # GNN taste, text taste, most popular
