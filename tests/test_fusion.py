"""Fusion rules on hand-made tensors."""

import pytest
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


def _three_part_scorer(weights):
    # two users, four items; the GNN prefers item 0, text item 1, the item-item model item 2
    user_gnn = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    item_gnn = torch.tensor([[1.0, 0.0], [0.2, 0.0], [0.4, 0.0], [0.0, 0.0]])
    user_text = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    item_text = torch.tensor([[0.0, 0.1], [0.0, 1.0], [0.0, 0.2], [0.0, 0.0]])
    item_item = torch.tensor([[0.0, 0.0, 3.0, 0.1], [0.0, 0.1, 3.0, 0.0]])
    return FusedScorer(user_gnn, item_gnn, user_text, item_text, torch.tensor([10, 10]), torch.tensor([9, 9, 9, 9]),
                       weights, item_item=lambda ub: item_item[ub])


def test_item_item_part_is_weighted_by_gamma():
    from recsys_dagster.core.fusion import FusionWeights

    users = torch.arange(2)
    only_gnn = _three_part_scorer(FusionWeights(cold_item_threshold=0))
    assert only_gnn(users).argmax(1).tolist() == [0, 0]
    with_ii = _three_part_scorer(FusionWeights(gamma=4.0, cold_item_threshold=0))
    assert with_ii(users).argmax(1).tolist() == [2, 2]
    zg, zt, zc = with_ii.parts(users)
    assert zc is not None and torch.allclose(zc.mean(1), torch.zeros(2), atol=1e-6)
    # γ = 0 leaves the item-item model out entirely (it is not even computed)
    assert only_gnn.parts(users)[2] is None


def test_fusion_tuning_picks_the_part_that_validation_rewards():
    from recsys_dagster.core.fusion import FusionWeights, tune_fusion

    scorer = _three_part_scorer(FusionWeights(cold_item_threshold=0))
    users = torch.arange(2)
    weights, grid = tune_fusion(scorer, lambda fn: float((fn(users).argmax(1) == 2).float().mean()),
                                betas=(0.0, 0.5), gammas=(0.0, 1.0, 4.0))
    assert weights.gamma > 0 and len(grid) == 6
    # without an item-item part only γ = 0 is tried
    plain = FusedScorer(scorer.user_gnn, scorer.item_gnn, scorer.user_text, scorer.item_text, scorer.n, scorer.popularity)
    weights, grid = tune_fusion(plain, lambda fn: 0.0, betas=(0.0, 0.5), gammas=(0.0, 1.0, 4.0))
    assert weights.gamma == 0.0 and len(grid) == 2


def _few_shot_scorer(weights):
    # user 0 is warm (10 interactions), user 1 has just joined (2), user 2 has none and no text;
    # the GNN prefers item 0, the text item 1, popularity item 2
    user_gnn = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
    item_gnn = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.2, 0.0]])
    user_text = torch.tensor([[0.0, 1.0], [0.0, 1.0], [0.0, 0.0]])
    item_text = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.0]])
    return FusedScorer(user_gnn, item_gnn, user_text, item_text, torch.tensor([10, 2, 0]), torch.tensor([3, 1, 90]),
                       weights)


def test_few_shot_users_get_their_own_weights_with_popularity():
    from recsys_dagster.core.fusion import FewShotWeights

    users = torch.arange(3)
    plain = _few_shot_scorer(FusionWeights(beta=0.1, cold_item_threshold=0))
    # without few-shot weights a user who has just joined gets everyone's weights (no shift to text)
    assert plain(users).argmax(1).tolist() == [0, 0, 2]
    few = FewShotWeights(alpha=0.0, beta=0.0, gamma=0.0, popularity=1.0)
    scorer = _few_shot_scorer(FusionWeights(beta=0.1, cold_item_threshold=0, few_shot=few))
    assert scorer(users).argmax(1).tolist() == [0, 2, 2]  # only the few-shot user changes
    a, b, c, p = scorer.coefficients(users)
    assert a[:, 0].tolist() == [1.0, 0.0, 0.0] and b[:, 0].tolist() == pytest.approx([0.1, 0.0, 0.0])
    assert p[:, 0].tolist() == pytest.approx([1e-3, 1.0 + 1e-3, 1.0 + 1e-3])
    # the text part for the few-shot user when its weights say so
    text = _few_shot_scorer(FusionWeights(cold_item_threshold=0, few_shot=FewShotWeights(0.0, 1.0, 0.0, 0.0)))
    assert text(users).argmax(1).tolist() == [0, 1, 2]
    assert FewShotWeights.from_dict(few.as_dict()) == few and FewShotWeights.from_dict(None) is None


def test_weights_passed_to_a_call_get_the_item_item_part_they_weight():
    """A call's override weights decide whether the item–item part is computed: a scorer whose
    own weights leave it out must still score it for a call whose weights weight it (the
    few-shot protocol grades several weight sets on one scorer)."""
    from recsys_dagster.core.fusion import FewShotWeights

    users = torch.arange(3)
    ii_scores = torch.tensor([[0.0, 0.0, 5.0], [0.0, 5.0, 0.0], [5.0, 0.0, 0.0]])

    def item_item(ub):
        return ii_scores[ub]

    few_ii = FewShotWeights(alpha=0.0, beta=0.0, gamma=1.0, popularity=0.0)
    plain = _few_shot_scorer(FusionWeights(cold_item_threshold=0))
    plain.item_item = item_item
    fitted = _few_shot_scorer(FusionWeights(cold_item_threshold=0, few_shot=few_ii))
    fitted.item_item = item_item
    assert torch.allclose(plain(users, few_shot=few_ii), fitted(users))
    assert plain(users, few_shot=few_ii)[1].argmax().item() == 1  # the few-shot user follows the item-item part
    assert torch.allclose(plain(users, gamma=1.0), replace_weights(plain, gamma=1.0)(users))
    assert plain.coefficients(users, few_shot=few_ii)[2][1, 0].item() == 1.0


def replace_weights(scorer, **changes):
    from dataclasses import replace

    scorer.weights = replace(scorer.weights, **changes)
    return scorer


def test_few_shot_tuning_follows_validation_and_skips_missing_parts():
    from recsys_dagster.core.fusion import tune_few_shot

    scorer = _few_shot_scorer(FusionWeights(cold_item_threshold=0))
    user = torch.tensor([1])
    weights, grid = tune_few_shot(scorer, lambda fn: float(fn(user).argmax(1).item() == 2),
                                  alphas=(0.0, 1.0), betas=(0.0, 1.0), gammas=(0.0, 1.0), popularities=(0.0, 2.0))
    assert weights.popularity == 2.0 and weights.alpha == weights.beta == 0.0
    assert len(grid) == 2 * 2 * 1 * 2 - 1  # no item-item part: only gamma 0; all-zero is no grid point
    weights, _ = tune_few_shot(scorer, lambda fn: float(fn(user).argmax(1).item() == 1),
                               alphas=(0.0, 1.0), betas=(0.0, 1.0), popularities=(0.0, 2.0))
    assert weights.beta == 1.0 and weights.alpha == 0.0


def test_fold_in_scores_users_cut_to_a_few_items_as_the_service_scores_a_new_user():
    import numpy as np

    from recsys_dagster.core.baselines import EASE
    from recsys_dagster.core.fusion import few_shot_histories, fold_in_scorer
    from recsys_dagster.core.metrics import to_csr

    g = torch.Generator().manual_seed(1)
    n_users, n_items = 6, 12
    rng = np.random.default_rng(0)
    u, i = np.nonzero(rng.random((n_users, n_items)) < 0.5)
    train = to_csr(u, i, n_users)
    hist = few_shot_histories(train, np.array([0, 2, 3]), keep=2, seed=7)
    assert np.diff(hist[0]).tolist() == [2, 0, 2, 2, 0, 0]
    for user in (0, 2, 3):  # a subset of the user's own items, the same on every call
        kept = hist[1][hist[0][user]: hist[0][user + 1]]
        assert set(kept) <= set(train[1][train[0][user]: train[0][user + 1]])
    assert all(np.array_equal(a, b) for a, b in zip(hist, few_shot_histories(train, np.array([0, 2, 3]), 2, 7),
                                                    strict=True))
    item_gnn, item_text = torch.randn(n_items, 4, generator=g), torch.nn.functional.normalize(torch.randn(n_items, 3,
                                                                                                            generator=g))
    ease = EASE(train, n_items, lam=5.0)
    scorer = FusedScorer(torch.randn(n_users, 4, generator=g), item_gnn, torch.randn(n_users, 3, generator=g), item_text,
                         torch.as_tensor(np.diff(train[0])), torch.arange(n_items) + 1, FusionWeights(gamma=1.0),
                         item_item=ease, cold_items_mapped=True)
    fold = fold_in_scorer(scorer, hist)
    kept = torch.as_tensor(hist[1][hist[0][2]: hist[0][3]])
    assert torch.allclose(fold.user_gnn[2], item_gnn[kept].mean(0))
    assert torch.allclose(fold.user_text[2], torch.nn.functional.normalize(item_text[kept].mean(0), dim=0))
    assert torch.allclose(fold.item_item(torch.tensor([2]))[0], ease.score_history(kept.tolist())[0])
    assert fold.n.tolist() == [2, 0, 2, 2, 0, 0] and fold.item_gnn is scorer.item_gnn
