"""The BPR training loop: shuffled epochs with vectorized negatives, early stopping on
validation NDCG@10, a checkpoint after every epoch, optional warm start, an optional
moving average of the weights (what validation and the result then use)."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import numpy as np

from recsys_dagster.core.train.checkpoint import Checkpoint
from recsys_dagster.core.train.config import TrainConfig, TrainResult
from recsys_dagster.core.train.weights import warm_start_state

#: Catalogue size past which the full softmax is slow enough to say so in the log.
SOFTMAX_WARN_ITEMS = 5000


def sample_negatives(users, n_items: int, train_keys, generator, rounds: int = 10):
    """Uniform negatives, resampled where they hit a training positive (vectorized)."""
    import torch

    neg = torch.randint(0, n_items, users.shape, generator=generator)
    for _ in range(rounds):
        keys = users * n_items + neg
        pos = torch.searchsorted(train_keys, keys).clamp(max=len(train_keys) - 1)
        hit = train_keys[pos] == keys
        if not bool(hit.any()):
            break
        neg[hit] = torch.randint(0, n_items, (int(hit.sum()),), generator=generator)
    return neg


def epoch_samples(data, gen, train_u=None, train_i=None, keys=None, by_user: bool = False):
    """One epoch's shuffled (user, positive, negative) triples: a permutation of the training
    interactions and one vectorized negative draw. ``by_user`` keeps each user's pairs together
    (users in a random order, each user's pairs shuffled), so consecutive batches hold whole
    users: with a softmax loss each user's row of logits is computed once per epoch instead of
    once in almost every batch (:attr:`TrainConfig.batching`)."""
    import torch

    train_u = torch.as_tensor(data.train_users) if train_u is None else train_u
    train_i = torch.as_tensor(data.train_items) if train_i is None else train_i
    keys = torch.sort(train_u * data.n_items + train_i).values if keys is None else keys
    perm = torch.randperm(len(train_u), generator=gen)
    if by_user:  # a stable sort of the shuffled pairs by a random rank of their user
        rank = torch.randperm(data.n_users, generator=gen)
        perm = perm[torch.sort(rank[train_u[perm]], stable=True).indices]
    epoch_u, epoch_p = train_u[perm], train_i[perm]
    return epoch_u, epoch_p, sample_negatives(epoch_u, data.n_items, keys, gen)


def ranking_loss(out, u, p, n, n_users: int, n_items: int, loss: str = "bpr", temperature: float = 0.1,
                 negatives=None):
    r"""The ranking loss of a batch from all node embeddings ``out`` (users first, then items).

    * ``bpr``: :math:`-\log\sigma(e_u^\top e_p - e_u^\top e_n)` with one sampled negative.
    * ``softmax``: full-catalogue softmax (InfoNCE) on cosine scores,
      :math:`-\log \frac{\exp(\cos(u, p)/\tau)}{\sum_j \exp(\cos(u, j)/\tau)}` over every
      item ``j`` (exact, no sampling: a ``B x I`` matrix per batch; ``n`` is unused).
    * ``sampled_softmax``: the same softmax with the sum over the other items estimated from a
      candidate set ``negatives = (items, log_pi)`` shared by the batch (:func:`draw_negatives`:
      the batch's positives plus items drawn uniformly) with each item's probability
      :math:`\pi_j` of being a candidate: :math:`\sum_{j \ne p} e^{s_j} \approx
      \sum_{j \in C,\, j \ne p} e^{s_j} / \pi_j` (Horvitz–Thompson, unbiased), i.e. each
      candidate's logit gets :math:`-\log \pi_j` (the log-Q correction); the row's own positive
      is masked out of the candidates. A ``B x |C|`` matrix per batch; with every item a
      candidate (:math:`\pi = 1`) it equals ``softmax`` exactly.
    """
    import torch
    import torch.nn.functional as F

    if loss == "bpr":
        eu, ep, en = (out.index_select(0, x) for x in (u, p + n_users, n + n_users))
        return -F.logsigmoid((eu * ep).sum(-1) - (eu * en).sum(-1)).mean()
    if loss == "softmax":
        # Every pair of one user shares that user's logits row, so each row is computed once per
        # distinct user in the batch: cross_entropy's mean of logsumexp(row) - row[p], with the
        # same value and gradients. Measured on ML-100K (2048 pairs, ~830 distinct users, 1,682
        # items, size 128, 2 cores): 40 steps of loss + backward 1.25 s -> 0.49 s.
        users, row = torch.unique(u, return_inverse=True)
        items = F.normalize(out[n_users: n_users + n_items], dim=-1)
        logits = F.normalize(out.index_select(0, users), dim=-1) @ items.T / temperature
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # bf16 under AMP
        return (torch.logsumexp(logits, dim=1).index_select(0, row) - logits[row, p]).mean()
    if loss == "sampled_softmax":
        if negatives is None:
            raise ValueError("sampled_softmax needs the step's sampled negatives")
        cands, log_pi = negatives
        # Only the candidates' scores of each distinct user are computed (a U x |C| matrix, not
        # one row per pair): a pair's row is its user's row without its own positive, so its
        # partition is the user's corrected sum Z_u = sum_c exp(s_c - log pi_c), minus the own
        # positive's term when it is a candidate, plus the uncorrected positive — the same loss
        # and gradients as one masked row per pair. The subtraction runs in float64 on the B
        # per-pair values: the rest, 1 - x + x * pi_p with x <= 1, stays >= pi_p (no cancellation
        # below it). With batches of whole users (U ~ B / 130 on ml-latest-small) this removes
        # the B x |C| matrices entirely.
        users, row = torch.unique(u, return_inverse=True)
        qu = F.normalize(out.index_select(0, users), dim=-1)
        dtype = torch.promote_types(qu.dtype, torch.float32)  # bf16 under AMP
        pos = ((qu.index_select(0, row) * F.normalize(out.index_select(0, p + n_users), dim=-1)).sum(-1)
               / temperature).to(dtype)
        scores = (qu @ F.normalize(out.index_select(0, cands + n_users), dim=-1).T / temperature).to(dtype)
        corrected = scores - log_pi.to(dtype)
        log_z = torch.logsumexp(corrected, dim=1).index_select(0, row).double()
        order = torch.argsort(cands)
        at = order[torch.searchsorted(cands[order], p).clamp(max=len(cands) - 1)]
        own = torch.where(cands[at] == p, corrected[row, at].double(), -torch.inf)  # p among the candidates
        rest = 1 - torch.exp(own - log_z) + torch.exp(pos.double() - log_z)
        return (log_z + torch.log(rest) - pos.double()).mean().to(dtype)
    raise ValueError(f"unknown loss {loss!r}: choose bpr, softmax or sampled_softmax")


def draw_negatives(data, config, generator, positives, item_counts=None):
    r"""The candidate set of one ``sampled_softmax`` step (None for the other losses):
    ``(items, log_pi)`` — the batch's ``positives`` (free: their embeddings are computed for
    the positive term, and they are the popular, hard negatives) plus ``num_negatives``
    distinct items drawn uniformly, with :math:`\log \pi_j`, the probability that item
    ``j`` is a candidate: :math:`\pi_j = 1 - (1 - M/I)(1 - c_j/N)^B` for ``B`` positives
    drawn from ``N`` training pairs of which ``c_j`` are item ``j``'s. Every item, with
    :math:`\pi = 1`, when ``num_negatives`` covers the catalogue (the full softmax).
    ``item_counts`` (``c``, computed once per training run) defaults to counting ``data``."""
    import torch

    if config.loss != "sampled_softmax":
        return None
    n_items = data.n_items
    if config.num_negatives >= n_items:
        return torch.arange(n_items), torch.zeros(n_items)
    uniform = torch.randperm(n_items, generator=generator)[: config.num_negatives]
    cands = torch.unique(torch.cat([positives.cpu(), uniform]))
    if item_counts is None:
        item_counts = torch.bincount(torch.as_tensor(data.train_items), minlength=n_items)
    counts = item_counts[cands].double()
    in_batch = 1 - (1 - counts / max(len(data.train_items), 1)).pow(len(positives))
    pi = 1 - (1 - config.num_negatives / n_items) * (1 - in_batch)
    return cands, torch.log(pi).float()


def sampled_ranking_loss(emb, targets, u, p, n, n_users: int, loss: str = "bpr", temperature: float = 0.1):
    """:func:`ranking_loss` from the embeddings ``emb`` of the sorted node ids ``targets``
    (sampled-subgraph mode). The softmax runs over the batch's items (its positives and
    negatives: a sampled softmax), since the other items' embeddings are not computed."""
    import torch
    import torch.nn.functional as F

    def rows(nodes):
        return emb.index_select(0, torch.searchsorted(targets, nodes))

    eu = rows(u)
    if loss == "bpr":
        return -F.logsigmoid((eu * rows(p + n_users)).sum(-1) - (eu * rows(n + n_users)).sum(-1)).mean()
    if loss in ("softmax", "sampled_softmax"):  # over the batch's items: already a sampled softmax
        cands = torch.unique(torch.cat([p, n]))
        logits = F.normalize(eu, dim=-1) @ F.normalize(rows(cands + n_users), dim=-1).T / temperature
        return F.cross_entropy(logits.float(), torch.searchsorted(cands, p))
    raise ValueError(f"unknown loss {loss!r}: choose bpr, softmax or sampled_softmax")


def bpr_step(model, opt, u, p, n, data, config, gen=None, use_amp: bool = False, sampler=None, forward=None,
             scale: float = 1.0, item_counts=None) -> float:
    """One optimizer step of the ranking loss (``config.loss``: BPR, full or sampled softmax) + L2 on
    the batch's ego embeddings + the model's auxiliary loss weighted by ``kg_loss_weight``,
    on users ``u``, positive items ``p`` and negative items ``n``; returns the loss. With a
    ``sampler`` (:class:`~recsys_dagster.core.models.sampling.NeighbourSampler`) only the
    batch's sampled neighbourhoods are propagated. ``forward`` replaces ``model()`` (a DDP
    wrapper: data-parallel workers all-reduce the gradients); the loss is multiplied by
    ``scale`` before the backward pass (a worker's share of a global batch)."""
    import torch

    device = next(model.parameters()).device
    u, p, n = u.to(device), p.to(device), n.to(device)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
        if sampler is None:
            out = (forward or model)()
            negatives = draw_negatives(data, config, gen, p, item_counts)
            loss = ranking_loss(out, u, p, n, data.n_users, data.n_items, config.loss, config.temperature,
                                None if negatives is None else tuple(t.to(device) for t in negatives))
        else:
            from recsys_dagster.core.models.sampling import sampled_embeddings

            targets = torch.unique(torch.cat([u, p + data.n_users, n + data.n_users]))
            emb = sampled_embeddings(model, targets.cpu(), sampler)
            loss = sampled_ranking_loss(emb, targets, u, p, n, data.n_users, config.loss, config.temperature)
        nodes = torch.cat([u, p + data.n_users, n + data.n_users])  # node index: users first, then items
        reg = model.ego(nodes).pow(2).sum() / (2 * len(u))
        loss = loss + config.reg_weight * reg
        if config.kg_loss_weight > 0 and (aux := model.aux_loss(len(u), gen)) is not None:
            loss = loss + config.kg_loss_weight * aux
    opt.zero_grad(set_to_none=True)
    (loss * scale if scale != 1.0 else loss).backward()
    opt.step()
    return float(loss.detach())


def evaluate(model, data, split: str = "valid", ks=(10, 20), device: str = "cpu") -> dict:
    """Full-ranking metrics of ``model`` on the valid or test part of ``data``."""
    from recsys_dagster.core.metrics import full_ranking

    users, items = model.user_item_embeddings()
    truth = data.valid_csr if split == "valid" else data.test_csr
    exclude = data.train_csr if split == "valid" else data.train_plus_valid_csr()
    return full_ranking(lambda ub: users[ub] @ items.T, truth, exclude, data.n_items, ks=ks, device=device)


def _all_sum(value: float, device: str = "cpu") -> float:
    import torch
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.float64, device=device)  # NCCL reduces CUDA tensors only
    dist.all_reduce(t)
    return float(t)


def train(
    data,
    config: TrainConfig,
    checkpoint_path: str | Path | None = None,
    warm_start: dict | None = None,
    on_epoch: Callable[[dict], None] | None = None,
    log: Callable[[str], None] = print,
    world: tuple[int, int] | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Train ``config.model`` on ``data`` with BPR and early stopping.

    A checkpoint at ``checkpoint_path`` from the same config and data is resumed; it is
    rewritten after every epoch and removed when training finishes. ``world = (rank,
    size)`` trains data-parallel inside an initialized ``torch.distributed`` process group
    (Ray Train's workers, :mod:`recsys_dagster.core.train.distributed`): every worker draws
    the same global batches and takes its contiguous share of each, the gradients are
    averaged (DDP), so the result equals one worker with the same global batch.
    ``on_step(step, loss)`` gets each step's global loss.
    """
    import torch

    from recsys_dagster.core.models import build_model
    from recsys_dagster.core.text import resolve_device

    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    model = build_model(config.model, data, config.embedding_dim, config.num_layers, config.kg_weight,
                        config.id_dropout, device)
    model.generator = torch.Generator(device=device).manual_seed(config.seed + 1)
    model.cosine = config.cosine
    if config.loss == "softmax" and data.n_items > SOFTMAX_WARN_ITEMS:
        log(f"full softmax over {data.n_items} items costs batch x items scores per step (~8x a BPR epoch at 10k "
            "items); for large catalogues set loss=sampled_softmax (num_negatives per step) or tune on the data "
            "(make tune)")
    if warm_start is not None:
        what = ("transfer", "source") if warm_start.get("transfer") else ("warm start", "previous")
        log(f"{what[0]}: copied {warm_start_state(model, warm_start, data)} tensors from the {what[1]} model")
    operator = model.operator()
    mode, batch_size, lr = config.step_plan(len(data.train_users), operator.shape[0] if operator is not None else 0,
                                            data.n_items, propagates=operator is not None)
    if (batch_size, lr) != (config.batch_size, config.lr) or mode == "sampled":
        log(f"{mode} training: batch {batch_size}, learning rate {lr:.2e}"
            + (f", fan-out {config.fanout}" if mode == "sampled" else ""))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    rank, size = world or (0, 1)
    forward = None
    if size > 1:
        from torch.nn.parallel import DistributedDataParallel

        # relation parameters only serve the attention refresh (no gradient in the step)
        forward = DistributedDataParallel(model, find_unused_parameters=True)
    sampler_gen = gen if size == 1 else torch.Generator().manual_seed(config.seed * 1009 + rank)
    train_u, train_i = torch.as_tensor(data.train_users), torch.as_tensor(data.train_items)
    keys = torch.sort(train_u * data.n_items + train_i).values
    item_counts = torch.bincount(train_i, minlength=data.n_items) if config.loss == "sampled_softmax" else None
    use_amp = config.amp and device.startswith("cuda")
    ckpt = Checkpoint(checkpoint_path, data, config)
    loop = ckpt.resume(model, opt, gen, log)
    average = None
    if config.ema_decay > 0:
        from recsys_dagster.core.train.averaging import WeightAverage

        average = WeightAverage(model, config.ema_decay, loop.average)
    if warm_start is not None and loop.next_epoch == 0:  # the starting weights compete too (epoch -1)
        model.refresh()
        loop.best = evaluate(model, data, "valid", device=device)[config.valid_metric]
        loop.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    stopped_by, t_start, epoch_times, step = "max_epochs", time.perf_counter(), [], 0
    for epoch in range(loop.next_epoch, config.max_epochs):
        t0 = time.perf_counter()
        model.train()
        model.refresh()
        sampler = None
        if mode == "sampled":
            from recsys_dagster.core.models.sampling import NeighbourSampler

            sampler = NeighbourSampler(model.operator(), config.fanout, sampler_gen)
        epoch_u, epoch_p, epoch_n = epoch_samples(data, gen, train_u, train_i, keys, config.by_user)
        total = 0.0
        for s in range(0, len(epoch_u), batch_size):
            e = min(s + batch_size, len(epoch_u))
            lo, hi = s + (e - s) * rank // size, s + (e - s) * (rank + 1) // size  # this worker's share
            b = slice(lo, hi)
            # workers draw their auxiliary-loss samples from their own generator: the shared
            # one must stay in step across workers (it draws every epoch's batches)
            loss = bpr_step(model, opt, epoch_u[b], epoch_p[b], epoch_n[b], data, config,
                            gen if size == 1 else sampler_gen, use_amp, sampler, forward,
                            scale=(hi - lo) * size / (e - s), item_counts=item_counts) * (hi - lo)
            if average is not None:
                average.update(model)
            if size > 1:
                loss = _all_sum(loss, device)
            total += loss
            if on_step is not None:
                on_step(step, loss / (e - s))
            step += 1
        epoch_times.append(time.perf_counter() - t0)
        record = {"epoch": epoch, "loss": total / len(epoch_u), "epoch_seconds": epoch_times[-1]}
        if (epoch + 1) % config.eval_every == 0 or epoch == config.max_epochs - 1:
            # the raw weights, then their average: both compete for the best state, so the
            # average never costs a run whose raw weights validate better (a short run)
            graded = [("valid", nullcontext())]
            if average is not None:
                graded.append(("valid_average", average.applied(model)))
            for prefix, weights in graded:
                with weights:
                    metrics = evaluate(model, data, "valid", device=device)
                    if metrics[config.valid_metric] > loop.best:
                        loop.best, loop.best_epoch = metrics[config.valid_metric], epoch
                        loop.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                record.update({f"{prefix}_{k}": v for k, v in metrics.items()})
        loop.history.append(record)
        if average is not None:
            loop.average = average.state()
        ckpt.save(epoch, model, opt, gen, loop)
        if on_epoch is not None:  # after the checkpoint: a crash here loses no epoch
            on_epoch(record)
        if epoch + 1 >= config.min_epochs and epoch - loop.best_epoch >= config.patience:
            stopped_by = "early_stopping"
            break
        if config.max_seconds is not None and time.perf_counter() - t_start > config.max_seconds:
            stopped_by = "max_seconds"
            break

    if loop.best_state is not None:
        model.load_state_dict(loop.best_state)
    model.refresh()
    best_valid = evaluate(model, data, "valid", device=device)
    test = evaluate(model, data, "test", device=device)
    ckpt.remove()
    return TrainResult(model, config, loop.best_epoch, best_valid, test, loop.history, len(loop.history),
                       loop.resumed_from, float(np.median(epoch_times)) if epoch_times else 0.0, stopped_by)
