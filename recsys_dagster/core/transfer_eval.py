"""The transfer protocol: does a model pretrained on another dataset help when the target
has little data?

Per seed, on the target's positives:

* a share of items (``cold_item_share``, chosen by a seeded hash of the item id) is held out
  entirely: their interactions are the cold test;
* the rest is split by protocol A's hash split; the test part stays fixed;
* the target's training *and* validation pairs are subsampled to ``fraction`` (a seeded hash
  of each pair, so the 5% sample is inside the 25% one); test users without any sampled
  training pair are left out, as protocol A does;
* the cold test keeps every user of the full split's cold test (at a small fraction some of
  them have no sampled training pair: every arm ranks for them from what it has);
* three arms score the same test: ``zero_shot`` (the source's towers over the target graph,
  no target training), ``transfer`` (that start fine-tuned on the target, early-stopped on
  the target's validation, the start being a candidate) and ``scratch`` (the same settings
  trained from a random start).

Metrics: NDCG@10 on the warm test (training and validation items excluded) and Recall@20 of
the cold items ranked among themselves, plus random's cold Recall@20 for scale.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

ARMS = ("zero_shot", "transfer", "scratch")


@dataclass
class TransferProtocol:
    fractions: tuple[float, ...] = (0.05, 0.25, 1.0)
    cold_item_share: float = 0.1


def protocol_splits(tables, config, cold_item_share: float):
    """``(warm split, cold test, cold item ids)`` of the target for ``config`` (a TrainConfig)."""
    from recsys_dagster.core.gnn_data import implicit_interactions
    from recsys_dagster.core.splits import Split, cold_item_split

    positives = implicit_interactions(tables.interactions, config.min_rating)
    base = config.split_spec().apply(positives)
    cold_split, cold = cold_item_split(positives, share=cold_item_share, seed=config.split_seed, base=base)
    warm_test = base.test[~base.test["item_id"].isin(cold)]
    return Split(cold_split.train, cold_split.valid, warm_test, name="transfer"), cold_split.test, cold


def subsample(split, fraction: float, seed: int):
    """``split`` with its train and valid pairs kept at ``fraction`` (nested across fractions);
    valid/test rows of users left without a training pair are dropped."""
    from recsys_dagster.core.splits import Split, pair_uniform

    if fraction >= 1.0:
        return split

    def keep(frame):
        return frame[pair_uniform(frame["user_id"].to_numpy(), frame["item_id"].to_numpy(), seed + 104729) < fraction]

    train = keep(split.train)
    known = set(train["user_id"])
    return Split(train, keep(split.valid).pipe(lambda f: f[f["user_id"].isin(known)]),
                 split.test[split.test["user_id"].isin(known)], name=f"{split.name}@{fraction:g}")


def _cold_candidates(data, cold_csr) -> np.ndarray:
    """Items without a training pair that some cold test pair holds (ranked among themselves)."""
    has_train = np.bincount(data.train_items, minlength=data.n_items) > 0
    return np.flatnonzero(~has_train & (np.bincount(cold_csr[1], minlength=data.n_items) > 0))


def _recall_among(score_fn, data, cold_csr, candidates) -> float:
    import torch

    from recsys_dagster.core.metrics import full_ranking

    mask = torch.full((data.n_items,), -torch.inf)
    mask[torch.as_tensor(candidates)] = 0.0
    return full_ranking(lambda ub: score_fn(ub) + mask, cold_csr, data.train_plus_valid_csr(), data.n_items,
                        ks=(20,))["recall@20"]


def _metrics(model, data, cold_csr, candidates) -> dict:
    from recsys_dagster.core.metrics import full_ranking

    users, items = model.user_item_embeddings()
    out = {"ndcg@10": full_ranking(lambda ub: users[ub] @ items.T, data.test_csr, data.train_plus_valid_csr(),
                                   data.n_items, ks=(10,))["ndcg@10"]}
    if len(candidates):
        out["cold_recall@20"] = _recall_among(lambda ub: users[ub] @ items.T, data, cold_csr, candidates)
    return out


def run_transfer_protocol(source: dict, tables, config, protocol: TransferProtocol | None = None,
                          log: Callable[[str], None] = print, arms=ARMS, trained: dict | None = None) -> list[dict]:
    """Rows ``{fraction, arm, ndcg@10, cold_recall@20, ...}`` for one seed (``config.seed``
    and ``config.split_seed``) on the target ``tables``; ``source`` is a weight payload
    (:func:`~recsys_dagster.core.train.weights_payload` of a model of another dataset).
    ``trained[(fraction, arm)]``: a result already trained for that cell (the target's own
    full-data model, which is also the source of the other direction)."""
    import torch

    from recsys_dagster.core.gnn_data import pairs_csr
    from recsys_dagster.core.training_data import data_for_split
    from recsys_dagster.core.transfer import transfer_config

    protocol = protocol or TransferProtocol()
    source = {**source, "transfer": True}
    split, cold_test, cold = protocol_splits(tables, config, protocol.cold_item_share)
    rows = []
    for fraction in protocol.fractions:
        part = subsample(split, fraction, config.seed)
        data = data_for_split(tables, part, config)
        upos = {u: n for n, u in enumerate(data.user_ids)}
        cold_csr = pairs_csr(cold_test, upos, {i: n for n, i in enumerate(data.item_ids)})
        candidates = _cold_candidates(data, cold_csr)
        rand = torch.rand(data.n_users, data.n_items, generator=torch.Generator().manual_seed(config.seed))
        random_recall = (_recall_among(lambda ub, r=rand: r[ub], data, cold_csr, candidates)
                         if len(candidates) else None)
        for arm in arms:
            cfg = transfer_config(config, source["config"], "zero_shot" if arm == "zero_shot" else "finetune")
            t0 = time.perf_counter()
            result = (trained or {}).get((fraction, arm)) or _fit(data, cfg, None if arm == "scratch" else source)
            row = {"seed": config.seed, "fraction": fraction, "arm": arm, "train_pairs": len(part.train),
                   "test_users": int((np.diff(data.test_csr[0]) > 0).sum()), "cold_items": len(cold),
                   "best_epoch": result.best_epoch, "epochs": result.epochs_run, "stopped_by": result.stopped_by,
                   "seconds": round(getattr(result, "seconds", time.perf_counter() - t0), 2),
                   **_metrics(result.model, data, cold_csr, candidates),
                   **({"cold_random_recall@20": random_recall} if random_recall is not None else {})}
            log(f"[transfer seed {config.seed}] {fraction:g} {arm}: ndcg@10 {row['ndcg@10']:.4f} cold recall@20 "
                f"{row.get('cold_recall@20', float('nan')):.4f} ({row['epochs']} epochs, {row['seconds']}s)")
            rows.append(row)
    return rows


def _fit(data, config, start: dict | None):
    from recsys_dagster.core.train import train

    t0 = time.perf_counter()
    result = train(data, config, warm_start=start, log=lambda m: None)
    result.seconds = time.perf_counter() - t0
    return result


def own_model(tables, config, protocol: TransferProtocol | None = None) -> tuple[dict, object]:
    """The dataset's own model trained from scratch on all of the protocol's training data
    (cold items held out): ``(weight payload, result)``. It is the ``scratch`` arm at
    fraction 1 when this dataset is the target, and the source when it is the source (a
    source never trains on the other dataset, so holding out its cold items costs nothing)."""
    from recsys_dagster.core.train import weights_payload
    from recsys_dagster.core.training_data import data_for_split

    protocol = protocol or TransferProtocol()
    config = replace(config, use_text=True)
    split, _, _ = protocol_splits(tables, config, protocol.cold_item_share)
    data = data_for_split(tables, split, config)
    result = _fit(data, config, None)
    return weights_payload(result, data), result


__all__ = ["ARMS", "TransferProtocol", "own_model", "protocol_splits", "run_transfer_protocol", "subsample"]
