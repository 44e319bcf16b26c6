"""Knowledge distillation: a small student that scores like the fused model, cheaply.

The student is matrix factorization with a small dimension (default 16): a user row and an
item row, a dot product at scoring time, no propagation, no text tower, no item-item matrix.
It learns from the teacher (any ``score(user_batch) -> (B, I)`` function, e.g. the fused
scorer) on the *same training split*: for every user, the teacher's top-``k`` unseen items
with a softmax over its scores / temperature are the soft target; the student's softmax over
all items (training items masked) is pulled towards it (cross-entropy = KL up to a
constant), plus ``positive_weight`` x the softmax cross-entropy of the user's own training
items. Only training interactions and the teacher's scores are used, so the student is
graded on the same held-out pairs as the teacher.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from recsys_dagster.core.options import option


@dataclass(frozen=True)
class DistillConfig:
    dim: int = option(16, "student embedding dimension")
    top_k: int = option(100, "teacher items per user in the soft target")
    temperature: float = option(1.0, "softmax temperature of the teacher's scores")
    student_temperature: float = option(0.1, "temperature of the student's dot products")
    positive_weight: float = option(0.5, "weight of the cross-entropy on the user's training items")
    epochs: int = option(60, "passes over the users")
    batch_size: int = option(256, "users per step")
    lr: float = option(0.01, "Adam learning rate")
    seed: int = 2020


@dataclass
class DistillResult:
    users: object  # (U, dim) float tensor
    items: object  # (I, dim)
    config: DistillConfig
    seconds: float
    history: list = field(default_factory=list)

    def parameters(self) -> int:
        return int(self.users.numel() + self.items.numel())

    def score(self, users):
        return self.users[users] @ self.items.T


def teacher_targets(teacher, train_csr: tuple, n_items: int, top_k: int, temperature: float, block: int = 1024):
    """``(items (U, k), probs (U, k))``: each user's teacher top-``k`` unseen items and the
    softmax of their scores / temperature."""
    import torch

    indptr, indices = train_csr
    n_users = len(indptr) - 1
    k = min(top_k, n_items)
    items = torch.zeros(n_users, k, dtype=torch.long)
    probs = torch.zeros(n_users, k)
    with torch.no_grad():
        for start in range(0, n_users, block):
            ub = torch.arange(start, min(start + block, n_users))
            s = teacher(ub).float().cpu().clone()
            rows = np.repeat(np.arange(len(ub)), np.diff(indptr[start:start + len(ub) + 1]))
            s[rows, indices[indptr[start]:indptr[start + len(ub)]]] = -torch.inf
            top = s.topk(k, dim=1)
            items[ub] = top.indices
            probs[ub] = torch.softmax(torch.nan_to_num(top.values / temperature, neginf=-1e9), dim=1)
    return items, probs


def distill(teacher, train_csr: tuple, n_items: int, config: DistillConfig = DistillConfig(), log=print) -> DistillResult:
    """Train the student on ``train_csr`` (users' training items) and the teacher's scores."""
    import torch

    torch.manual_seed(config.seed)
    indptr, indices = train_csr
    n_users = len(indptr) - 1
    t0 = time.perf_counter()
    tgt_items, tgt_probs = teacher_targets(teacher, train_csr, n_items, config.top_k, config.temperature)
    user = torch.nn.Parameter(torch.randn(n_users, config.dim) * 0.1)
    item = torch.nn.Parameter(torch.randn(n_items, config.dim) * 0.1)
    opt = torch.optim.Adam([user, item], lr=config.lr)
    gen = torch.Generator().manual_seed(config.seed)
    counts = np.diff(indptr)
    history = []
    for epoch in range(config.epochs):
        order = torch.randperm(n_users, generator=gen)
        total = 0.0
        for start in range(0, n_users, config.batch_size):
            ub = order[start:start + config.batch_size]
            logits = (torch.nn.functional.normalize(user[ub], dim=1)
                      @ torch.nn.functional.normalize(item, dim=1).T) / config.student_temperature
            rows = torch.as_tensor(np.repeat(np.arange(len(ub)), counts[ub.numpy()]))
            cols = torch.as_tensor(np.concatenate([indices[indptr[u]:indptr[u + 1]] for u in ub.numpy()])
                                   if len(ub) else np.zeros(0, dtype=np.int64))
            train_mask = torch.zeros_like(logits, dtype=torch.bool)
            train_mask[rows, cols] = True
            logp_unseen = torch.log_softmax(logits.masked_fill(train_mask, -torch.inf), dim=1)
            kd = -(tgt_probs[ub] * logp_unseen.gather(1, tgt_items[ub])).sum(1).mean()
            logp = torch.log_softmax(logits, dim=1)
            pos = -(logp[rows, cols]).sum() / max(len(rows), 1)
            loss = kd + config.positive_weight * pos
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(ub)
        history.append({"epoch": epoch, "loss": total / n_users})
    seconds = time.perf_counter() - t0
    log(f"distilled a dim-{config.dim} student in {seconds:.1f}s (final loss {history[-1]['loss']:.4f})")
    with torch.no_grad():
        scale = 1.0 / config.student_temperature
        users = torch.nn.functional.normalize(user.detach(), dim=1) * scale
        items = torch.nn.functional.normalize(item.detach(), dim=1)
    return DistillResult(users, items, config, seconds, history)
