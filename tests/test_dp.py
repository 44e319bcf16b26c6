"""Differentially private training (core/privacy/dp.py): shapes, determinism, accounting, learning."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from recsys_dagster.core.privacy.dp import DPConfig, scorer, train_dp


def _two_taste_data(n_users=120, n_items=40, seed=0):
    """Users 0..59 like items 0..19, the others items 20..39; item texts encode the group."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        group = range(0, 20) if u < n_users // 2 else range(20, 40)
        rows.append(np.sort(rng.choice(list(group), size=10, replace=False)))
    indptr = np.concatenate([[0], np.cumsum([len(r) for r in rows])])
    text = rng.normal(size=(n_items, 16)).astype(np.float32)
    text[:20, 0] += 3.0
    text[20:, 1] += 3.0
    return SimpleNamespace(train_csr=(indptr, np.concatenate(rows)), n_items=n_items, item_text=text)


@pytest.mark.parametrize("model", ["item_factors", "text_tower"])
def test_shapes_and_determinism(model):
    data = _two_taste_data()
    cfg = DPConfig(model=model, epochs=3, batch_size=32, dim=8, hidden=16, max_history=12, targets=3)
    a, b = train_dp(data, cfg, log=lambda m: None), train_dp(data, cfg, log=lambda m: None)
    sa, sb = scorer(a, data.train_csr, data.n_items), scorer(b, data.train_csr, data.n_items)
    users = torch.arange(5)
    assert sa(users).shape == (5, data.n_items)
    assert torch.equal(sa(users), sb(users))  # same seed, same model on CPU
    assert a.epsilon is None and a.noise_multiplier == 0.0


def test_non_private_training_learns_the_tastes():
    data = _two_taste_data()
    res = train_dp(data, DPConfig(model="item_factors", epochs=30, batch_size=32, dim=8, lr=2e-2, max_history=12,
                                  targets=3), log=lambda m: None)
    scores = scorer(res, data.train_csr, data.n_items)(torch.arange(120))
    own = torch.cat([scores[:60, :20].mean(1), scores[60:, 20:].mean(1)])
    other = torch.cat([scores[:60, 20:].mean(1), scores[60:, :20].mean(1)])
    assert (own > other).float().mean() > 0.95


@pytest.mark.parametrize("epsilon", [1.0, 8.0])
def test_dp_sgd_spends_the_target_budget_with_per_user_clipping(epsilon):
    data = _two_taste_data()
    cfg = DPConfig(model="text_tower", epsilon=epsilon, epochs=4, batch_size=32, hidden=16, max_history=12, targets=3)
    res = train_dp(data, cfg, log=lambda m: None)
    assert res.delta == pytest.approx(1 / 120)  # δ = 1/N users
    assert 0.5 * epsilon < res.epsilon <= epsilon * 1.01  # the RDP accountant reaches, never exceeds, the target
    assert res.noise_multiplier > 0 and res.steps > 0
    assert scorer(res, data.train_csr, data.n_items)(torch.arange(3)).isfinite().all()


def test_smaller_epsilon_means_more_noise():
    data = _two_taste_data()
    noise = [train_dp(data, DPConfig(model="item_factors", epsilon=e, epochs=2, batch_size=32, dim=8, max_history=12,
                                     targets=3), log=lambda m: None).noise_multiplier for e in (1.0, 8.0)]
    assert noise[0] > noise[1] > 0


def test_bad_config_is_a_clear_error():
    with pytest.raises(ValueError, match="DP model"):
        DPConfig(model="gnn")
    with pytest.raises(ValueError, match="epsilon"):
        DPConfig(epsilon=0)


def test_evaluation_reports_dp_rows_as_own_models(tmp_path, synthetic_folder):
    from recsys_dagster.core.evaluation import EvalConfig, evaluate_protocols, is_own
    from recsys_dagster.core.train import TrainConfig
    from tests.conftest import synthetic_tables

    tables = synthetic_tables(tmp_path, synthetic_folder)
    config = EvalConfig(train=TrainConfig(device="cpu", max_epochs=2, min_epochs=1, embedding_dim=8),
                        protocols=("A", "cold_item"), trained_baselines=(), explanation_users=0, dp_epsilons=(4.0,))
    rows = evaluate_protocols(tables, config, log=lambda m: None).rows
    ndcg = {(p, m) for p, m, _, sl, metric, k, _ in rows if sl == "all" and metric == "ndcg" and k == 10}
    for model in ("dp_item_factors_nonprivate", "dp_item_factors_eps4", "dp_text_tower_nonprivate", "dp_text_tower_eps4"):
        assert ("A", model) in ndcg and ("cold_item", model) in ndcg and is_own(model)
    assert not is_own("ease") and is_own("fused")
