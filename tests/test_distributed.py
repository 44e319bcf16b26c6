"""Data-parallel training on Ray Train: N workers follow one worker step for step."""

import os

import numpy as np
import pytest

from tests.conftest import synthetic_warehouse

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install -e '.[ray]')")


@pytest.fixture(scope="module")
def local_ray():
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.slow
def test_two_workers_match_one_with_the_same_global_batch(tmp_path, local_ray):
    from recsys_dagster.core.train import TrainConfig, load_weights
    from recsys_dagster.core.train.distributed import train_on_ray
    from recsys_dagster.core.training_data import load_training_data

    settings, _ = synthetic_warehouse(tmp_path, "2024-01-04", n_users=80, n_items=50, n_interactions=1500, days=4,
                                      seed=3)
    cfg = TrainConfig(model="kgtextgnn", embedding_dim=16, batch_size=128, max_epochs=3, min_epochs=3, device="cpu",
                      loss="softmax", temperature=0.2, lr=5e-3)
    one = train_on_ray(settings.warehouse, cfg, str(tmp_path / "w1" / "model.pt"), num_workers=1)
    two = train_on_ray(settings.warehouse, cfg, str(tmp_path / "w2" / "model.pt"), num_workers=2)
    assert one["world_size"] == 1 and two["world_size"] == 2
    a, b = np.array(one["step_losses"]), np.array(two["step_losses"])
    assert len(a) == len(b) > 3
    assert np.abs(a - b).max() <= 1e-5
    assert abs(one["best_valid"]["ndcg@10"] - two["best_valid"]["ndcg@10"]) <= 1e-3
    model, _ = load_weights(tmp_path / "w2" / "model.pt", load_training_data(settings.warehouse, cfg))
    assert model.num_users > 0


def test_scoring_as_ray_tasks_equals_local_scoring(local_ray):
    import torch

    from recsys_dagster.core.fusion import top_k
    from recsys_dagster.core.metrics import to_csr
    from recsys_dagster.core.train.distributed import top_k_on_ray

    g = torch.Generator().manual_seed(0)
    users, items = torch.randn(1000, 16, generator=g), torch.randn(300, 16, generator=g)
    rows = torch.randint(0, 1000, (5000,), generator=g).numpy()
    cols = torch.randint(0, 300, (5000,), generator=g).numpy()
    seen = to_csr(rows, cols, 1000)
    local = top_k(lambda ub: users[ub] @ items.T, np.arange(1000), seen, 300, 20)
    remote = top_k_on_ray(users.numpy(), items.numpy(), seen, k=20, users_per_task=300)
    np.testing.assert_array_equal(remote[0], local[0])
    np.testing.assert_allclose(remote[1], local[1], rtol=1e-6)
