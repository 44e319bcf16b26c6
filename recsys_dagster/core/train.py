"""BPR training loop: early stopping on validation NDCG@10, checkpoints every epoch,
resume, warm start. Runnable without Dagster::

    python -m recsys_dagster.core.train --config train.json

where ``train.json`` holds ``{"warehouse": ..., "output": ..., "train": {TrainConfig fields}}``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class TrainConfig:
    model: str = "kgtextgnn"  # mf | lightgcn | kgtextgnn
    embedding_dim: int = 64
    num_layers: int = 2
    lr: float = 5e-3
    reg_weight: float = 1e-4
    batch_size: int = 2048
    max_epochs: int = 300
    min_epochs: int = 20
    patience: int = 30  # epochs without a better valid metric; tens, for slow starters
    eval_every: int = 1
    seed: int = 2020
    kg_weight: float = 0.5
    kg_loss_weight: float = 0.0
    id_dropout: float = 0.0
    use_text: bool = True
    use_kg: bool = True
    device: str = "auto"
    amp: bool = True  # CUDA only
    valid_metric: str = "ndcg@10"
    min_rating: float | None = None  # None: every interaction is a positive (protocol A)
    split_seed: int = 2020
    split: str = "hash"  # hash (stable as data grows; protocol A) | recbole (per-user shuffle)
    max_seconds: float | None = None  # wall-clock cap; stops like early stopping
    window_days: int | None = None  # train on the last N days of interactions only (None: all)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown training config keys {sorted(unknown)}")
        return cls(**values)

    def split_spec(self):
        """The :class:`~recsys_dagster.core.splits.SplitSpec` this model trains on."""
        from recsys_dagster.core.splits import SplitSpec

        return SplitSpec(self.split, self.split_seed, min_rating=self.min_rating)


@dataclass
class TrainResult:
    model: object
    config: TrainConfig
    best_epoch: int
    best_valid: dict
    test: dict
    history: list[dict] = field(default_factory=list)
    epochs_run: int = 0
    resumed_from: int | None = None
    seconds_per_epoch: float = 0.0
    stopped_by: str = ""


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


def evaluate(model, data, split: str = "valid", ks=(10, 20), device: str = "cpu") -> dict:
    """Full-ranking metrics of ``model`` on the valid or test part of ``data``."""
    import torch

    from recsys_dagster.core.metrics import full_ranking

    model.eval()
    with torch.no_grad():
        out = model().float()
        users, items = out[: data.n_users], out[data.n_users: data.n_users + data.n_items]
    truth = data.valid_csr if split == "valid" else data.test_csr
    exclude = data.train_csr if split == "valid" else data.train_plus_valid_csr()
    return full_ranking(lambda ub: users[ub] @ items.T, truth, exclude, data.n_items, ks=ks, device=device)


def _atomic_save(obj, path: Path) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def node_keys(data) -> list[str]:
    """Key of every row of a model's node embedding table: users, items, then entities."""
    return ([f"user:{u}" for u in data.user_ids] + [f"item:{i}" for i in data.item_ids]
            + [str(e) for e in data.entity_keys])


def warm_start_state(model, previous: dict, data) -> int:
    """Copy weights of an earlier model: embedding rows matched by node key (new users,
    items and entities keep their fresh rows), relation tensors when the relation list is
    unchanged, other tensors when shapes match. Returns how many tensors were copied."""
    import torch

    state = model.state_dict()
    prev_state = previous["state_dict"]
    copied = 0
    with torch.no_grad():
        for name, tensor in state.items():
            old = prev_state.get(name)
            if old is None:
                continue
            if name == "embedding.weight":
                pos = {k: i for i, k in enumerate(previous.get("node_keys", []))}
                pairs = [(i, pos[k]) for i, k in enumerate(node_keys(data)) if k in pos and pos[k] < old.shape[0]]
                if pairs and old.shape[1:] == tensor.shape[1:]:
                    new_rows, old_rows = map(list, zip(*pairs, strict=True))
                    tensor[new_rows] = old[old_rows].to(tensor.device, tensor.dtype)
                    copied += 1
            elif name.startswith("rel_"):
                if previous.get("relations") == list(data.relation_names) and old.shape == tensor.shape:
                    tensor.copy_(old)
                    copied += 1
            elif old.shape == tensor.shape:
                tensor.copy_(old)
                copied += 1
    model.load_state_dict(state)
    return copied



def epoch_samples(data, gen, train_u=None, train_i=None, keys=None):
    """One epoch's shuffled (user, positive, negative) triples: a permutation of the training
    interactions and one vectorized negative draw."""
    import torch

    train_u = torch.as_tensor(data.train_users) if train_u is None else train_u
    train_i = torch.as_tensor(data.train_items) if train_i is None else train_i
    keys = torch.sort(train_u * data.n_items + train_i).values if keys is None else keys
    perm = torch.randperm(len(train_u), generator=gen)
    epoch_u, epoch_p = train_u[perm], train_i[perm]
    return epoch_u, epoch_p, sample_negatives(epoch_u, data.n_items, keys, gen)


def bpr_step(model, opt, u, p, n, data, config, gen=None, kg=None, use_amp: bool = False) -> float:
    """One optimizer step of BPR (+ L2 on the batch's ego embeddings, + optional TransR KG
    loss) on users ``u``, positive items ``p`` and negative items ``n``; returns the loss."""
    import torch

    device = next(model.parameters()).device
    u, p, n = u.to(device), p.to(device), n.to(device)
    p, n = p + data.n_users, n + data.n_users  # node index: users first, then items
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
        out = model()
        eu, ep, en = out.index_select(0, u), out.index_select(0, p), out.index_select(0, n)
        loss = -torch.nn.functional.logsigmoid((eu * ep).sum(-1) - (eu * en).sum(-1)).mean()
        reg = model.ego(torch.cat([u, p, n])).pow(2).sum() / (2 * len(u))
        loss = loss + config.reg_weight * reg
        if config.kg_loss_weight > 0 and kg is not None and hasattr(model, "kg_loss") and len(kg[0]):
            n_nodes = data.n_users + data.n_items + data.n_entities
            k = torch.randint(0, len(kg[0]), (len(u),), generator=gen)
            neg_t = torch.randint(0, n_nodes, (len(u),), generator=gen)
            loss = loss + config.kg_loss_weight * model.kg_loss(
                kg[0][k].to(device), kg[1][k].to(device), kg[2][k].to(device), neg_t.to(device))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.detach())


def train(
    data,
    config: TrainConfig,
    checkpoint_path: str | Path | None = None,
    warm_start: dict | None = None,
    on_epoch: Callable[[dict], None] | None = None,
    log: Callable[[str], None] = print,
) -> TrainResult:
    """Train ``config.model`` on ``data`` with BPR and early stopping (see module docstring).

    A checkpoint at ``checkpoint_path`` from the same config and data is resumed; it is
    rewritten after every epoch and removed when training finishes.
    """
    import torch

    from recsys_dagster.core.models import build_model
    from recsys_dagster.core.text import resolve_device

    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    model = build_model(config.model, data, config.embedding_dim, config.num_layers, config.kg_weight,
                        config.id_dropout, device)
    if hasattr(model, "generator"):
        model.generator = torch.Generator(device=device).manual_seed(config.seed + 1)
    if warm_start is not None:
        log(f"warm start: copied {warm_start_state(model, warm_start, data)} tensors from the previous model")
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    train_u = torch.as_tensor(data.train_users)
    train_i = torch.as_tensor(data.train_items)
    keys = torch.sort(train_u * data.n_items + train_i).values
    kg = (torch.as_tensor(data.kg_head), torch.as_tensor(data.kg_rel), torch.as_tensor(data.kg_tail))
    use_amp = config.amp and device.startswith("cuda")

    start_epoch, best, best_epoch, best_state, history, resumed = 0, -math.inf, -1, None, [], None
    ckpt = Path(checkpoint_path) if checkpoint_path else None
    fingerprint = data.fingerprint() + "|" + json.dumps(asdict(config), sort_keys=True)
    if ckpt is not None and ckpt.exists():
        state = torch.load(ckpt, map_location=device, weights_only=True)
        if state.get("fingerprint") == fingerprint:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            gen.set_state(state["generator"])
            if "model_generator" in state and getattr(model, "generator", None) is not None:
                model.generator.set_state(state["model_generator"].to(model.generator.get_state().device))
            start_epoch, best, best_epoch = state["epoch"] + 1, state["best"], state["best_epoch"]
            best_state, history, resumed = state["best_state"], state["history"], state["epoch"]
            log(f"resumed from checkpoint after epoch {state['epoch']} (best {config.valid_metric} {best:.4f})")
        else:
            log("checkpoint belongs to another config or data: starting fresh")

    stopped_by = "max_epochs"
    t_start = time.perf_counter()
    epoch_times = []
    for epoch in range(start_epoch, config.max_epochs):
        t0 = time.perf_counter()
        model.train()
        if hasattr(model, "refresh_attention"):
            model.refresh_attention()
        epoch_u, epoch_p, epoch_n = epoch_samples(data, gen, train_u, train_i, keys)
        total = 0.0
        for s in range(0, len(epoch_u), config.batch_size):
            b = slice(s, s + config.batch_size)
            total += bpr_step(model, opt, epoch_u[b], epoch_p[b], epoch_n[b], data, config, gen, kg, use_amp) \
                * len(epoch_u[b])
        train_s = time.perf_counter() - t0
        epoch_times.append(train_s)
        record = {"epoch": epoch, "loss": total / len(epoch_u), "epoch_seconds": train_s}
        if (epoch + 1) % config.eval_every == 0 or epoch == config.max_epochs - 1:
            metrics = evaluate(model, data, "valid", device=device)
            record.update({f"valid_{k}": v for k, v in metrics.items()})
            score = metrics[config.valid_metric]
            if score > best:
                best, best_epoch = score, epoch
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        history.append(record)
        if ckpt is not None:
            payload = {"epoch": epoch, "model": model.state_dict(), "optimizer": opt.state_dict(),
                       "generator": gen.get_state(), "best": best, "best_epoch": best_epoch,
                       "best_state": best_state, "history": history, "fingerprint": fingerprint}
            if getattr(model, "generator", None) is not None:
                payload["model_generator"] = model.generator.get_state()
            _atomic_save(payload, ckpt)
        if on_epoch is not None:  # after the checkpoint: a crash here loses no epoch
            on_epoch(record)
        if epoch + 1 >= config.min_epochs and epoch - best_epoch >= config.patience:
            stopped_by = "early_stopping"
            break
        if config.max_seconds is not None and time.perf_counter() - t_start > config.max_seconds:
            stopped_by = "max_seconds"
            break

    if best_state is not None:
        model.load_state_dict(best_state)
    if hasattr(model, "refresh_attention"):
        model.refresh_attention()
    best_valid = evaluate(model, data, "valid", device=device)
    test = evaluate(model, data, "test", device=device)
    if ckpt is not None and ckpt.exists():
        ckpt.unlink()
    return TrainResult(model, config, best_epoch, best_valid, test, history, len(history), resumed,
                       float(np.median(epoch_times)) if epoch_times else 0.0, stopped_by)


# ---- weights files ----------------------------------------------------------------------

def save_weights(path: str | Path, result: TrainResult, data) -> str:
    """Write ``state_dict`` + id maps + config + metrics (loadable with ``weights_only=True``);
    returns the file's SHA-256."""
    import hashlib


    path = Path(path)
    payload = {
        "state_dict": {k: v.detach().cpu() for k, v in result.model.state_dict().items()},
        "ids": {"user": [str(x) for x in data.user_ids], "item": [str(x) for x in data.item_ids],
                "entity": [str(x) for x in data.entity_keys]},
        "node_keys": node_keys(data),
        "relations": list(data.relation_names),
        "config": asdict(result.config),
        "metrics": {"valid": result.best_valid, "test": result.test, "best_epoch": result.best_epoch},
    }
    _atomic_save(payload, path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_weights(path: str | Path, data, device: str = "cpu"):
    """Rebuild the model for ``data`` and load saved weights (``weights_only=True``)."""
    import torch

    from recsys_dagster.core.models import build_model

    payload = torch.load(path, map_location=device, weights_only=True)
    cfg = TrainConfig.from_dict(payload["config"])
    if payload["ids"]["item"] != [str(x) for x in data.item_ids] or payload["ids"]["user"] != [str(x) for x in data.user_ids]:
        raise ValueError(f"{path}: weights were trained on other users/items than the data given")
    model = build_model(cfg.model, data, cfg.embedding_dim, cfg.num_layers, cfg.kg_weight, cfg.id_dropout, device)
    model.load_state_dict(payload["state_dict"])
    if hasattr(model, "refresh_attention"):
        model.refresh_attention()
    model.eval()
    return model, payload


# ---- command line -------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recsys_dagster.core.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="JSON file: warehouse, output, train")
    args = parser.parse_args(argv)
    spec = json.loads(Path(args.config).read_text())
    from recsys_dagster.core.training_data import load_training_data

    config = TrainConfig.from_dict(spec.get("train", {}))
    data = load_training_data(spec["warehouse"], config)
    out = Path(spec.get("output", "data/models/cli/model.pt"))
    result = train(data, config, checkpoint_path=out.with_suffix(".ckpt"),
                   on_epoch=lambda r: print(json.dumps(r)))
    sha = save_weights(out, result, data)
    print(json.dumps({"output": str(out), "sha256": sha, "best_epoch": result.best_epoch,
                      "valid": result.best_valid, "test": result.test}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
