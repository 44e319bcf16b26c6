"""Differentially private training (opt-in): DP-SGD with **user-level** clipping, through
Opacus.

Each training example is a *user* (all of their training interactions), so clipping bounds
what one person can change in a step, and the privacy accountant (Opacus' RDP accountant,
Poisson sampling of users) bounds what the released parameters say about any one person:
``(ε, δ)``-DP at ``δ = 1/N`` (N = users) by default.

Two models, built so that every parameter is shared by all users (no per-user embedding
table: released per-user rows could not be private) and every layer is one Opacus computes
per-example gradients for (``nn.Embedding``, ``nn.Linear``):

* ``item_factors`` — matrix factorization with users folded in from their items: the user
  vector is the mean of input factors of the items in their history (FISM-style), scores are
  that vector times output item factors plus an item bias, trained with a full softmax.
* ``text_tower`` — the behaviour tower of the text space: the mean of the frozen sentence
  embeddings of a user's items goes through a 2-layer residual MLP to a query; items are
  their frozen text embeddings (so items with no interactions are scored too), plus an item
  bias; cosine / temperature, full softmax.

Not covered: the GNN (LightGCN-style propagation mixes users' neighbourhoods into every
node's vector, so one user's data reaches many rows through the graph; per-example DP-SGD
does not bound that), the closed-form peers (EASE/ItemKNN), and hyperparameter selection on
validation (each extra trial spends privacy that the reported ε does not include). The user's
own history is used at scoring time for their own list (their data, their recommendations).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from recsys_dagster.core.options import option

MODELS = ("item_factors", "text_tower")


@dataclass(frozen=True)
class DPConfig:
    model: str = option("text_tower", "item_factors or text_tower")
    epsilon: float | None = option(None, "target ε (None: non-private training of the same model)")
    delta: float | None = option(None, "δ (None: 1 / number of users)")
    max_grad_norm: float = option(1.0, "per-user gradient clipping norm C")
    epochs: int = option(20, "passes over the users (expected)")
    batch_size: int = option(128, "expected users per step (Poisson sampling)")
    lr: float = option(3e-3, "Adam learning rate")
    dim: int = option(64, "item factor dimension (item_factors)")
    hidden: int = option(256, "MLP width (text_tower)")
    temperature: float = option(0.1, "softmax temperature (text_tower)")
    max_history: int = option(200, "items of a user's history fed per step (a random subset)")
    targets: int = option(16, "held-out history items predicted per user and step")
    seed: int = 2020

    def __post_init__(self):
        if self.model not in MODELS:
            raise ValueError(f"DP model {self.model!r}: expected one of {list(MODELS)}")
        if self.epsilon is not None and self.epsilon <= 0:
            raise ValueError(f"epsilon={self.epsilon}: expected > 0 (None: non-private)")


@dataclass
class DPResult:
    model: object
    config: DPConfig
    epsilon: float | None  # spent, from the accountant (None: non-private)
    delta: float | None
    noise_multiplier: float
    steps: int
    seconds: float
    history: list = field(default_factory=list)


def _model(config: DPConfig, n_items: int, item_text: np.ndarray | None):
    import torch
    from torch import nn

    class ItemFactors(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp = nn.Embedding(n_items + 1, config.dim, padding_idx=n_items)  # row n_items: padding
            self.out = nn.Linear(config.dim, n_items)
            nn.init.normal_(self.inp.weight, std=0.05)
            nn.init.normal_(self.out.weight, std=0.05)
            nn.init.zeros_(self.out.bias)

        def forward(self, hist, mask):
            pooled = (self.inp(hist) * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1.0)
            return self.out(pooled)

    class TextTower(nn.Module):
        def __init__(self):
            super().__init__()
            text = torch.nn.functional.normalize(torch.as_tensor(item_text, dtype=torch.float32), dim=-1)
            d = text.shape[1]
            self.register_buffer("text", torch.cat([text, torch.zeros(1, d)]), persistent=True)
            self.fc1, self.fc2 = nn.Linear(d, config.hidden), nn.Linear(config.hidden, d)
            self.bias = nn.Linear(1, n_items, bias=False)  # an item bias Opacus can clip per user
            nn.init.zeros_(self.fc2.weight)
            nn.init.zeros_(self.fc2.bias)
            nn.init.zeros_(self.bias.weight)

        def forward(self, hist, mask):
            items = self.text[:-1]
            pooled = (self.text[hist] * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1.0)
            query = torch.nn.functional.normalize(pooled + self.fc2(torch.nn.functional.gelu(self.fc1(pooled))), dim=-1)
            ones = torch.ones(len(hist), 1, device=hist.device)
            return query @ items.T / config.temperature + self.bias(ones)

    if config.model == "text_tower":
        if item_text is None:
            raise ValueError("the text_tower needs item text embeddings (materialize item_text_embeddings)")
        return TextTower()
    return ItemFactors()


class _Users:
    """One example per user with training interactions: a random split of their history into
    input items (≤ max_history) and target items (≤ targets), drawn anew at every visit."""

    def __init__(self, csr: tuple, n_items: int, config: DPConfig):
        indptr, indices = csr
        self.rows = [indices[indptr[u]:indptr[u + 1]] for u in range(len(indptr) - 1)]
        self.users = np.flatnonzero(np.diff(indptr) >= 2)
        self.n_items, self.config = n_items, config
        self.rng = np.random.default_rng(config.seed)

    def __len__(self):
        return len(self.users)

    def __getitem__(self, i):
        import torch

        items = self.rng.permutation(self.rows[self.users[i]])
        n_tgt = max(1, min(self.config.targets, len(items) // 5))
        tgt, hist = items[:n_tgt], items[n_tgt:][: self.config.max_history]
        h = np.full(self.config.max_history, self.n_items)
        h[: len(hist)] = hist
        t = np.zeros(self.config.targets, dtype=np.int64)
        t[: len(tgt)] = tgt
        hm, tm = np.zeros(self.config.max_history, np.float32), np.zeros(self.config.targets, np.float32)
        hm[: len(hist)], tm[: len(tgt)] = 1.0, 1.0
        return torch.as_tensor(h), torch.as_tensor(hm), torch.as_tensor(t), torch.as_tensor(tm)


def _loss(logits, tgt, tmask):
    import torch

    logp = torch.log_softmax(logits, dim=-1).gather(1, tgt)
    return (-(logp * tmask).sum(1) / tmask.sum(1).clamp(min=1.0)).mean()


def train_dp(data, config: DPConfig, log=print) -> DPResult:
    """Train ``config.model`` on ``data``'s training split, DP-SGD when ``config.epsilon`` is
    set (noise calibrated by Opacus to reach it after ``epochs`` at ``delta``)."""
    import torch
    from torch.utils.data import DataLoader

    torch.manual_seed(config.seed)
    users = _Users(data.train_csr, data.n_items, config)
    model = _model(config, data.n_items, data.item_text)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    loader = DataLoader(users, batch_size=config.batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(config.seed))
    delta = config.delta if config.delta is not None else 1.0 / max(len(users), 1)
    engine, noise = None, 0.0
    if config.epsilon is not None:
        from opacus import PrivacyEngine

        with warnings.catch_warnings():  # "secure RNG off": Opacus' secure_mode needs torchcsprng (README)
            warnings.simplefilter("ignore")
            engine = PrivacyEngine(accountant="rdp")
            model, optimizer, loader = engine.make_private_with_epsilon(
                module=model, optimizer=optimizer, data_loader=loader, target_epsilon=config.epsilon,
                target_delta=delta, epochs=config.epochs, max_grad_norm=config.max_grad_norm)
        noise = float(optimizer.noise_multiplier)
    t0, steps, history = time.perf_counter(), 0, []
    model.train()
    for epoch in range(config.epochs):
        total, batches = 0.0, 0
        for hist, hmask, tgt, tmask in loader:
            if len(hist) == 0:
                continue
            optimizer.zero_grad()
            loss = _loss(model(hist, hmask), tgt, tmask)
            with warnings.catch_warnings():  # Opacus' hooks on a first layer with integer inputs: expected
                warnings.filterwarnings("ignore", message="Full backward hook is firing")
                loss.backward()
            optimizer.step()
            total, batches, steps = total + float(loss.detach()), batches + 1, steps + 1
        history.append({"epoch": epoch, "loss": total / max(batches, 1)})
    spent = float(engine.get_epsilon(delta)) if engine is not None else None
    log(f"dp {config.model} ε={config.epsilon}: spent {spent}, noise {noise:.3f}, {steps} steps, "
        f"{time.perf_counter() - t0:.1f}s")
    base = model._module if hasattr(model, "_module") else model
    base.eval()
    return DPResult(base, config, spent, delta if engine is not None else None, noise, steps,
                    time.perf_counter() - t0, history)


def scorer(result: DPResult, history_csr: tuple, n_items: int, max_history: int | None = None):
    """``score(user_batch) -> [B, n_items]`` from each user's history in ``history_csr``."""
    import torch

    indptr, indices = history_csr
    cap = max_history or result.config.max_history
    model = result.model

    @torch.no_grad()
    def score(users):
        users = np.asarray(users.cpu() if hasattr(users, "cpu") else users)
        hist = np.full((len(users), cap), n_items)
        mask = np.zeros((len(users), cap), np.float32)
        for r, u in enumerate(users):
            items = indices[indptr[u]:indptr[u + 1]][-cap:]
            hist[r, : len(items)], mask[r, : len(items)] = items, 1.0
        return model(torch.as_tensor(hist), torch.as_tensor(mask))

    return score
