"""Differentially private training on the warehouse's dataset: NDCG@10 (protocol A) and
cold-item Recall@20 at ε ∈ {1, 4, 8} (δ = 1/users, RDP accountant, per-user clipping)
against the same models trained without privacy (ε = ∞) in the same run, with EASE (not
private) as the context of the best peer.

The learning rate of each (model, ε) is chosen on *validation* of the first seed from a
small grid and then used for every seed; those trials are not charged to ε (README).

    python -m benchmarks.bench_privacy [--seeds 2020 2021 2022] [--epsilons 1 4 8]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np

from benchmarks.common import print_table, warehouse_tables, write_json

LRS = (3e-3, 1e-2)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[2020, 2021, 2022])
    parser.add_argument("--epsilons", type=float, nargs="+", default=[1.0, 4.0, 8.0])
    parser.add_argument("--models", nargs="+", default=["item_factors", "text_tower"])
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args()
    from recsys_dagster.core.evaluation import EvalConfig, ProtocolResult, add_rows
    from recsys_dagster.core.gnn_data import implicit_interactions
    from recsys_dagster.core.metrics import full_ranking
    from recsys_dagster.core.privacy.dp import DPConfig, scorer, train_dp
    from recsys_dagster.core.splits import cold_item_split
    from recsys_dagster.core.train import TrainConfig
    from recsys_dagster.core.training_data import data_for_split
    from recsys_dagster.core.tuning import tune_closed_form

    tables = warehouse_tables()
    budgets = [None, *sorted(args.epsilons, reverse=True)]
    chosen: dict = {}
    runs = []
    for seed in args.seeds:
        cfg = TrainConfig(seed=seed, split_seed=seed, device="cpu")
        positives = implicit_interactions(tables.interactions, cfg.min_rating)
        split = cfg.split_spec().apply(positives)
        data = data_for_split(tables, split, cfg)
        cold_split, _ = cold_item_split(positives, share=0.1, seed=seed, base=split)
        cold = data_for_split(tables, cold_split, cfg)
        has_train = np.bincount(cold.train_items, minlength=cold.n_items) > 0
        candidates = np.flatnonzero(~has_train & (np.bincount(cold.test_csr[1], minlength=cold.n_items) > 0))
        ev = EvalConfig()
        ease, params, _ = tune_closed_form("ease", data)
        res = ProtocolResult()
        runs.append({"seed": seed, "model": "ease (not private)", "epsilon": None, "lr": None,
                     "ndcg@10": add_rows(res, "A", "ease", ease, data, ev)["ndcg@10"], "cold_recall@20": None,
                     "params": params})
        print(runs[-1], flush=True)
        for model in args.models:
            for eps in budgets:
                base = DPConfig(model=model, epsilon=eps, epochs=args.epochs, seed=seed)
                key = (model, eps)
                if key not in chosen:  # learning rate on validation, first seed only
                    valid = {}
                    for lr in LRS:
                        r = train_dp(data, replace(base, lr=lr), log=lambda m: None)
                        valid[lr] = full_ranking(scorer(r, data.train_csr, data.n_items), data.valid_csr,
                                                 data.train_csr, data.n_items, ks=(10,))["ndcg@10"]
                    chosen[key] = max(valid, key=valid.get)
                    print(f"{model} ε={eps}: lr by validation {valid} -> {chosen[key]}", flush=True)
                config = replace(base, lr=chosen[key])
                t0 = time.perf_counter()
                r = train_dp(data, config, log=print)
                seconds = time.perf_counter() - t0
                ndcg = add_rows(ProtocolResult(), "A", model, scorer(r, data.train_csr, data.n_items), data, ev)
                rc = train_dp(cold, config, log=lambda m: None)
                cold_m = add_rows(ProtocolResult(), "cold_item", model, scorer(rc, cold.train_csr, cold.n_items), cold,
                                  ev, candidates)
                runs.append({"seed": seed, "model": model, "epsilon": eps, "epsilon_spent": r.epsilon,
                             "delta": r.delta, "noise_multiplier": r.noise_multiplier, "steps": r.steps,
                             "lr": chosen[key], "ndcg@10": ndcg["ndcg@10"], "recall@20": ndcg["recall@20"],
                             "cold_recall@20": cold_m["recall@20"], "seconds": seconds})
                print(runs[-1], flush=True)
        rand = np.random.default_rng(seed)
        runs.append({"seed": seed, "model": "random (cold items)", "epsilon": None,
                     "cold_recall@20": add_rows(ProtocolResult(), "cold_item", "random",
                                                _random(rand, cold.n_users, cold.n_items), cold, EvalConfig(),
                                                candidates)["recall@20"]})
    table = _table(runs, args.models, budgets)
    print_table(table, f"differentially private training, protocol A + cold items, seeds {args.seeds}")
    write_json("privacy", {"seeds": args.seeds, "epochs": args.epochs, "lr_grid": LRS,
                           "chosen_lr": {f"{m}/{e}": v for (m, e), v in chosen.items()}, "table": table, "runs": runs})


def _random(rng, n_users, n_items):
    import torch

    scores = torch.as_tensor(rng.random((n_users, n_items)), dtype=torch.float32)
    return lambda ub: scores[ub]


def _fmt(values) -> str:
    values = [v for v in values if v is not None]
    return f"{np.mean(values):.4f} ± {np.std(values):.4f}" if values else "—"


def _table(runs, models, budgets) -> list[dict]:
    rows = []
    ease = [r["ndcg@10"] for r in runs if r["model"].startswith("ease")]
    rows.append({"model": "EASE (not private)", "ε": "∞", "NDCG@10": _fmt(ease), "vs ε=∞": "",
                 "cold Recall@20": "—", "noise σ": "", "ε spent": ""})
    for model in models:
        ref = {r["seed"]: r["ndcg@10"] for r in runs if r["model"] == model and r["epsilon"] is None}
        for eps in budgets:
            mine = [r for r in runs if r["model"] == model and r["epsilon"] == eps]
            ratio = [r["ndcg@10"] / ref[r["seed"]] for r in mine if ref.get(r["seed"])]
            rows.append({"model": model, "ε": "∞" if eps is None else f"{eps:g}",
                         "NDCG@10": _fmt([r["ndcg@10"] for r in mine]),
                         "vs ε=∞": f"{np.mean(ratio):.3f}" if eps is not None and ratio else "",
                         "cold Recall@20": _fmt([r["cold_recall@20"] for r in mine]),
                         "noise σ": f"{np.mean([r['noise_multiplier'] for r in mine]):.2f}" if eps else "0",
                         "ε spent": f"{max(r['epsilon_spent'] for r in mine):.2f}" if eps else ""})
    rand = [r["cold_recall@20"] for r in runs if r["model"].startswith("random")]
    rows.append({"model": "random", "ε": "", "NDCG@10": "", "vs ε=∞": "", "cold Recall@20": _fmt(rand),
                 "noise σ": "", "ε spent": ""})
    return rows


if __name__ == "__main__":
    main()
