"""Knowledge distillation (core/distill.py): targets, shapes, determinism, fidelity to the teacher."""

import numpy as np
import torch

from recsys_dagster.core.distill import DistillConfig, distill, teacher_targets


def _setup(n_users=80, n_items=60, seed=0):
    rng = np.random.default_rng(seed)
    rows = [np.sort(rng.choice(30, 6, replace=False) + (0 if u % 2 == 0 else 30)) for u in range(n_users)]
    indptr = np.concatenate([[0], np.cumsum([len(r) for r in rows])])
    csr = (indptr, np.concatenate(rows))
    u = torch.as_tensor(rng.normal(size=(n_users, 8)), dtype=torch.float32)
    u[:, 0] = torch.where(torch.arange(n_users) % 2 == 0, 2.0, -2.0)
    i = torch.as_tensor(rng.normal(size=(n_items, 8)), dtype=torch.float32)
    i[:30, 0], i[30:, 0] = 1.0, -1.0

    def teacher(ub):
        return u[ub] @ i.T

    return csr, n_items, teacher


def test_teacher_targets_skip_training_items_and_sum_to_one():
    csr, n_items, teacher = _setup()
    items, probs = teacher_targets(teacher, csr, n_items, top_k=10, temperature=1.0, block=16)
    assert items.shape == probs.shape == (80, 10)
    assert torch.allclose(probs.sum(1), torch.ones(80))
    for u in range(80):
        seen = set(csr[1][csr[0][u]:csr[0][u + 1]].tolist())
        assert not seen & set(items[u].tolist())
        s = teacher(torch.tensor([u]))[0]
        s[list(seen)] = -torch.inf
        assert set(items[u].tolist()) == set(s.topk(10).indices.tolist())


def test_student_is_small_deterministic_and_ranks_like_the_teacher():
    csr, n_items, teacher = _setup()
    cfg = DistillConfig(dim=8, top_k=10, epochs=40, batch_size=32, lr=0.05)
    a = distill(teacher, csr, n_items, cfg, log=lambda m: None)
    b = distill(teacher, csr, n_items, cfg, log=lambda m: None)
    assert a.users.shape == (80, 8) and a.items.shape == (n_items, 8) and a.parameters() == (80 + n_items) * 8
    assert torch.equal(a.score(torch.arange(5)), b.score(torch.arange(5)))
    overlap = []
    for u in range(80):
        seen = list(csr[1][csr[0][u]:csr[0][u + 1]])
        t, s = teacher(torch.tensor([u]))[0], a.score(torch.tensor([u]))[0]
        t[seen], s[seen] = -torch.inf, -torch.inf
        overlap.append(len(set(t.topk(10).indices.tolist()) & set(s.topk(10).indices.tolist())) / 10)
    assert np.mean(overlap) > 0.6  # a random ranking would share ~10 / 54 of them
