"""The ranking losses: known values on tiny inputs, gradients, cosine scoring, determinism."""

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from recsys_dagster.core.train import TrainConfig, load_weights, save_weights, train
from recsys_dagster.core.train.loop import draw_negatives, ranking_loss
from tests.test_models import tiny_data


def _out(seed=0, n_users=3, n_items=4, dim=5, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n_users + n_items, dim, generator=g, dtype=dtype)


def test_bpr_known_value():
    out = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0], [0.0, 3.0]])  # 2 users, 2 items
    u, p, n = torch.tensor([0, 1]), torch.tensor([0, 1]), torch.tensor([1, 0])
    # user 0: 2 - 0 = 2; user 1: 3 - 0 = 3
    expected = -(math.log(1 / (1 + math.exp(-2))) + math.log(1 / (1 + math.exp(-3)))) / 2
    assert ranking_loss(out, u, p, n, 2, 2, "bpr").item() == pytest.approx(expected, rel=1e-6)


def test_softmax_is_cross_entropy_over_every_item_on_cosines():
    out = _out()
    u, p = torch.tensor([0, 2, 1]), torch.tensor([3, 0, 0])
    tau = 0.2
    users = out[:3].numpy()
    items = out[3:].numpy()
    cos = (users / np.linalg.norm(users, axis=1, keepdims=True)) @ (items / np.linalg.norm(items, axis=1, keepdims=True)).T
    logits = cos[u.numpy()] / tau
    expected = np.mean([np.log(np.exp(row).sum()) - row[k] for row, k in zip(logits, p.numpy(), strict=True)])
    got = ranking_loss(out, u, p, torch.zeros(3, dtype=torch.long), 3, 4, "softmax", tau)
    assert got.item() == pytest.approx(float(expected), rel=1e-5)
    # scale-free: cosine scores ignore the embeddings' norms
    assert ranking_loss(out * 7.0, u, p, p, 3, 4, "softmax", tau).item() == pytest.approx(got.item(), rel=1e-5)


def test_softmax_with_repeated_users_equals_cross_entropy_over_every_pair():
    """The softmax computes one logits row per distinct user of the batch; a batch where users
    repeat (in any order) must give cross_entropy's value and gradients over one row per pair."""
    import torch.nn.functional as F

    out = _out(n_users=3, n_items=6, dtype=torch.float64).requires_grad_(True)
    u, p = torch.tensor([2, 0, 2, 1, 0, 2]), torch.tensor([5, 1, 0, 5, 3, 2])
    got = ranking_loss(out, u, p, p, 3, 6, "softmax", 0.3)
    rows = F.normalize(out[u], dim=-1) @ F.normalize(out[3:], dim=-1).T / 0.3
    want = F.cross_entropy(rows, p)
    assert got.item() == pytest.approx(want.item(), rel=1e-12)
    g_got, = torch.autograd.grad(got, out)
    g_want, = torch.autograd.grad(want, out)
    torch.testing.assert_close(g_got, g_want)


def test_sampled_softmax_with_repeated_users_masks_each_rows_own_positive():
    """Scores are computed once per distinct user; each pair's row still masks its own
    positive among the candidates and gets the log-Q correction (reference: one row per pair)."""
    import torch.nn.functional as F

    out = _out(n_users=3, n_items=7, dtype=torch.float64).requires_grad_(True)
    u, p = torch.tensor([1, 0, 1, 2, 1]), torch.tensor([2, 5, 6, 2, 0])
    cands, log_pi = torch.tensor([0, 2, 3, 5, 6]), torch.log(torch.tensor([0.9, 0.5, 0.3, 0.7, 0.6], dtype=torch.float64))
    got = ranking_loss(out, u, p, p, 3, 7, "sampled_softmax", 0.25, (cands, log_pi))
    q, items = F.normalize(out[u], dim=-1), F.normalize(out[3:], dim=-1)
    pos = (q * items[p]).sum(-1, keepdim=True) / 0.25
    neg = (q @ items[cands].T / 0.25 - log_pi).masked_fill(cands.unsqueeze(0) == p.unsqueeze(1), -torch.inf)
    want = F.cross_entropy(torch.cat([pos, neg], 1), torch.zeros(len(u), dtype=torch.long))
    assert got.item() == pytest.approx(want.item(), rel=1e-12)
    torch.testing.assert_close(torch.autograd.grad(got, out)[0], torch.autograd.grad(want, out)[0])


def test_sampled_softmax_stays_accurate_in_float32_when_the_positive_dominates():
    """The per-pair partition subtracts the own positive's corrected term from its user's sum
    (float64 on the B per-pair values): with a sharp temperature, where the positive carries
    almost all the mass, float32 embeddings still give the float64 reference's loss."""
    import torch.nn.functional as F

    out = _out(seed=3, n_users=2, n_items=50, dim=8)
    out[2 + 7] = out[0] * 3  # user 0's positive 7 points exactly at it
    u, p = torch.tensor([0, 0, 1]), torch.tensor([7, 12, 30])
    cands = torch.tensor([3, 7, 12, 30, 41])
    log_pi = torch.log(torch.tensor([0.4, 0.05, 0.9, 0.6, 0.3]))
    got = ranking_loss(out, u, p, p, 2, 50, "sampled_softmax", 0.01, (cands, log_pi))
    ref = out.double()
    q, items = F.normalize(ref[u], dim=-1), F.normalize(ref[2:], dim=-1)
    pos = (q * items[p]).sum(-1, keepdim=True) / 0.01
    neg = (q @ items[cands].T / 0.01 - log_pi.double()).masked_fill(cands.unsqueeze(0) == p.unsqueeze(1), -torch.inf)
    want = F.cross_entropy(torch.cat([pos, neg], 1), torch.zeros(3, dtype=torch.long))
    assert torch.isfinite(got) and got.item() == pytest.approx(want.item(), rel=1e-4)


@pytest.mark.parametrize("loss", ["bpr", "softmax", "sampled_softmax"])
def test_loss_gradients_match_finite_differences(loss):
    out = _out(dtype=torch.float64).requires_grad_(True)
    u, p, n = torch.tensor([0, 1, 2, 1]), torch.tensor([1, 2, 3, 0]), torch.tensor([0, 0, 1, 3])  # user 1 twice
    negatives = (torch.tensor([0, 2]), torch.log(torch.tensor([0.5, 0.8])))  # row 1's positive among them (masked)
    assert torch.autograd.gradcheck(lambda o: ranking_loss(o, u, p, n, 3, 4, loss, 0.3, negatives), (out,))


def test_sampled_softmax_with_every_item_a_candidate_is_the_full_softmax():
    out = _out(n_users=4, n_items=9)
    u, p = torch.tensor([0, 3, 1, 1]), torch.tensor([8, 0, 4, 2])
    full = ranking_loss(out, u, p, p, 4, 9, "softmax", 0.2)
    every = torch.randperm(9, generator=torch.Generator().manual_seed(1))  # order does not matter
    got = ranking_loss(out, u, p, p, 4, 9, "sampled_softmax", 0.2, (every, torch.zeros(9)))
    assert got.item() == pytest.approx(full.item(), rel=1e-5)
    cfg = TrainConfig(loss="sampled_softmax", num_negatives=9)
    cands, log_pi = draw_negatives(SimpleNamespace(n_items=9, train_items=np.array([0, 1])), cfg, None, p)
    assert torch.equal(cands, torch.arange(9)) and torch.equal(log_pi, torch.zeros(9))


def test_sampled_softmax_partition_estimate_is_unbiased():
    """Over steps, exp(loss + positive logit) estimates the full partition: the batch's
    positives (popular items) plus uniform draws, each weighted by 1/P(candidate)."""
    n_items, tau, batch = 60, 0.5, 8
    rng = np.random.default_rng(0)
    train_items = rng.choice(n_items, size=400, p=np.arange(n_items, 0, -1) / np.arange(n_items, 0, -1).sum())
    data = SimpleNamespace(n_items=n_items, train_items=train_items)
    out = _out(n_users=1, n_items=n_items, dim=6)
    u, p = torch.tensor([0]), torch.tensor([7])
    s = torch.nn.functional.normalize(out[:1], dim=-1) @ torch.nn.functional.normalize(out[1:], dim=-1).T / tau
    truth = s.exp().sum().item()
    g = torch.Generator().manual_seed(0)
    cfg = TrainConfig(loss="sampled_softmax", num_negatives=10)
    estimates, sizes = [], []
    for _ in range(4000):
        positives = torch.as_tensor(train_items[rng.permutation(len(train_items))[:batch]])
        cands, log_pi = draw_negatives(data, cfg, g, positives)
        assert len(torch.unique(cands)) == len(cands) and set(positives.tolist()) <= set(cands.tolist())
        sizes.append(len(cands))
        loss = ranking_loss(out, u, p, p, 1, n_items, "sampled_softmax", tau, (cands, log_pi))
        estimates.append(math.exp(loss.item() + s[0, 7].item()))  # loss = log Z_hat - s_p
    assert np.mean(estimates) == pytest.approx(truth, rel=0.03)
    assert np.mean(sizes) < 0.4 * n_items  # a fraction of the catalogue per step


def test_draw_negatives_only_for_the_sampled_softmax():
    data = SimpleNamespace(n_items=100, train_items=np.arange(100))
    assert draw_negatives(data, TrainConfig(loss="softmax"), None, torch.tensor([1])) is None
    with pytest.raises(ValueError, match="needs the step's sampled negatives"):
        ranking_loss(_out(), torch.tensor([0]), torch.tensor([0]), torch.tensor([0]), 3, 4, "sampled_softmax")


def test_unknown_loss_is_one_clear_error():
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        ranking_loss(_out(), torch.tensor([0]), torch.tensor([0]), torch.tensor([0]), 3, 4, "hinge")


@pytest.mark.parametrize("model,loss", [("mf", "softmax"), ("kgtextgnn", "softmax"),
                                        ("kgtextgnn", "sampled_softmax")])
def test_softmax_training_is_deterministic_scores_by_cosine_and_reloads(model, loss, tmp_path: Path):
    data = tiny_data()
    cfg = TrainConfig(model=model, loss=loss, temperature=0.2, embedding_dim=8, batch_size=16, max_epochs=4,
                      min_epochs=1, device="cpu", num_negatives=3)
    first, second = train(data, cfg, log=lambda m: None), train(data, cfg, log=lambda m: None)
    assert first.best_valid == second.best_valid and first.history == [
        {**h, "epoch_seconds": first.history[i]["epoch_seconds"]} for i, h in enumerate(second.history)]
    assert first.model.cosine
    users, items = first.model.user_item_embeddings()
    assert torch.allclose(users.norm(dim=1), torch.ones(len(users)), atol=1e-5)
    save_weights(tmp_path / "m.pt", first, data)
    model_back, _ = load_weights(tmp_path / "m.pt", data)
    assert model_back.cosine
    u2, i2 = model_back.user_item_embeddings()
    assert torch.allclose(u2 @ i2.T, users @ items.T, atol=1e-5)
    bpr = train(data, TrainConfig(model=model, embedding_dim=8, batch_size=16, max_epochs=2, min_epochs=1,
                                  device="cpu"), log=lambda m: None)
    assert not bpr.model.cosine
