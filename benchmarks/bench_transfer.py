"""Cross-domain transfer between ML-100K and ml-latest-small, both directions.

Per seed: each dataset's own model (all of its training data, cold items held out) is
trained once; it is the ``scratch`` arm at 100% on its own dataset and the source of the
other direction. Then, on each target at 5%, 25% and 100% of its training (and validation)
pairs: ``zero_shot`` (source towers, no target training), ``transfer`` (fine-tuned from
them) and ``scratch`` (same settings, random start), see
:mod:`recsys_dagster.core.transfer_eval`. Every arm uses the main model's tuned settings and
the same epoch budget; NDCG@10 on the warm test and cold-item Recall@20 (random's for
scale), means and standard deviations over seeds, and the transfer/scratch ratio per seed.

    python -m benchmarks.bench_transfer [--seeds 2020 2021 2022] [--patience 15]
        [--a data/warehouse.duckdb] [--b data/ml-latest-small/warehouse.duckdb]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from benchmarks.common import print_table, write_json


def _tables(path: str):
    import duckdb

    from recsys_dagster.core.training_data import read_tables

    if not Path(path).exists():
        raise SystemExit(f"{path}: no warehouse; build it first (`make warehouse`, `make bench-mls` for "
                         "ml-latest-small)")
    conn = duckdb.connect(path, read_only=True)
    try:
        return read_tables(conn)
    finally:
        conn.close()


def summarize(rows: list[dict]) -> list[dict]:
    out = []
    keys = sorted({(r["direction"], r["fraction"]) for r in rows}, key=lambda k: (k[0], k[1]))
    for direction, fraction in keys:
        cell = [r for r in rows if r["direction"] == direction and r["fraction"] == fraction]
        by_arm = {a: [r for r in cell if r["arm"] == a] for a in ("zero_shot", "transfer", "scratch")}

        def stat(arm, key, by_arm=by_arm):
            vals = [r[key] for r in by_arm[arm] if key in r]
            return f"{np.mean(vals):.4f} ± {np.std(vals):.4f}" if vals else "-"

        ratios = [t["ndcg@10"] / s["ndcg@10"] for t, s in zip(by_arm["transfer"], by_arm["scratch"], strict=True)
                  if s["ndcg@10"] > 0]
        wins = sum(t["ndcg@10"] > s["ndcg@10"] for t, s in zip(by_arm["transfer"], by_arm["scratch"], strict=True))
        out.append({"direction": direction, "target data": f"{fraction:.0%}",
                    "train pairs": int(np.mean([r["train_pairs"] for r in by_arm["scratch"]])),
                    "zero-shot NDCG@10": stat("zero_shot", "ndcg@10"), "transfer NDCG@10": stat("transfer", "ndcg@10"),
                    "scratch NDCG@10": stat("scratch", "ndcg@10"),
                    "transfer/scratch": f"{np.mean(ratios):.3f} (wins {wins}/{len(by_arm['scratch'])})",
                    "zero-shot cold R@20": stat("zero_shot", "cold_recall@20"),
                    "transfer cold R@20": stat("transfer", "cold_recall@20"),
                    "scratch cold R@20": stat("scratch", "cold_recall@20"),
                    "random cold R@20": stat("scratch", "cold_random_recall@20")})
    return out


def main() -> None:
    from benchmarks.bench_accuracy import tuned_hyperparameters
    from recsys_dagster.core.train import TrainConfig
    from recsys_dagster.core.transfer_eval import TransferProtocol, own_model, run_transfer_protocol

    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[2020, 2021, 2022])
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.05, 0.25, 1.0])
    parser.add_argument("--patience", type=int, default=15, help="early-stopping patience of every arm")
    parser.add_argument("--max-seconds", type=float, default=300.0,
                        help="wall-clock cap of every training (the same for every arm; binds only on "
                             "ml-latest-small at 100%%, where one uncapped training takes ~15 min on 2 cores)")
    parser.add_argument("--a", default="data/warehouse.duckdb", help="ML-100K warehouse")
    parser.add_argument("--b", default="data/ml-latest-small/warehouse.duckdb", help="ml-latest-small warehouse")
    args = parser.parse_args()
    names = {"a": "ML-100K", "b": "ml-latest-small"}
    tables = {"a": _tables(args.a), "b": _tables(args.b)}
    tuned = tuned_hyperparameters()["kgtextgnn"]
    protocol = TransferProtocol(fractions=tuple(args.fractions))
    rows, own_stats, t_start = [], [], time.perf_counter()
    for seed in args.seeds:
        cfg = replace(TrainConfig(seed=seed, split_seed=seed, device="cpu", patience=args.patience,
                                  max_seconds=args.max_seconds), **tuned)
        own = {k: own_model(t, cfg, protocol) for k, t in tables.items()}
        for k, (_, res) in own.items():
            own_stats.append({"seed": seed, "dataset": names[k], "test_ndcg@10": round(res.test["ndcg@10"], 4),
                              "best_epoch": res.best_epoch, "epochs": res.epochs_run, "stopped_by": res.stopped_by,
                              "seconds": round(res.seconds, 1)})
            print(own_stats[-1], flush=True)
        for src, dst in (("a", "b"), ("b", "a")):
            direction = f"{names[src]} → {names[dst]}"
            for row in run_transfer_protocol(own[src][0], tables[dst], cfg, protocol,
                                             trained={(1.0, "scratch"): own[dst][1]},
                                             log=lambda m: print(m, flush=True)):
                rows.append({"direction": direction, **row})
        table = summarize(rows)  # after every seed: a run cut short still leaves its finished seeds
        print_table(table, f"cross-domain transfer, seeds {sorted({r['seed'] for r in rows})}")
        write_json("transfer", {"seeds": sorted({r["seed"] for r in rows}), "fractions": args.fractions,
                                "patience": args.patience, "max_seconds": args.max_seconds, "hyperparameters": tuned,
                                "table": table, "rows": rows, "own_models": own_stats,
                                "seconds": round(time.perf_counter() - t_start, 1)})


if __name__ == "__main__":
    main()
