"""Accuracy and time of the training modes on the warehouse's dataset (protocol A): the
full graph with today's steps (the reference, same run), the full graph with 4x fewer,
larger steps (what the full mode does when the data grows 4x), and sampled subgraphs with
fan-out 10. Main model, tuned settings, early stopping on validation.

    python -m benchmarks.bench_training_modes [--seeds 2020 2021 2022]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np

from benchmarks.bench_accuracy import tuned_hyperparameters
from benchmarks.common import print_table, warehouse_tables, write_json

VARIANTS = {
    "full (reference)": {"train_mode": "full"},
    "full, 4x fewer steps": {"train_mode": "full", "steps_per_epoch": 10},
    "sampled, fan-out 10": {"train_mode": "sampled", "fanout": 10},
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[2020, 2021, 2022])
    args = parser.parse_args()
    from recsys_dagster.core.train import TrainConfig, train
    from recsys_dagster.core.training_data import data_for_split, make_split

    tables = warehouse_tables()
    tuned = tuned_hyperparameters()["kgtextgnn"]
    runs = []
    for seed in args.seeds:
        base = replace(TrainConfig(seed=seed, split_seed=seed, device="cpu"), **tuned)
        data = data_for_split(tables, make_split(tables, base), base)
        for name, changes in VARIANTS.items():
            t0 = time.perf_counter()
            res = train(data, replace(base, **changes), log=lambda m: None)
            runs.append({"seed": seed, "variant": name, "seconds": time.perf_counter() - t0, "epochs": res.epochs_run,
                         "seconds_per_epoch": res.seconds_per_epoch, "valid_ndcg@10": res.best_valid["ndcg@10"],
                         "test_ndcg@10": res.test["ndcg@10"]})
            print(runs[-1], flush=True)
    table = []
    for name in VARIANTS:
        mine = [r for r in runs if r["variant"] == name]
        ratio = [r["test_ndcg@10"] / next(x for x in runs if x["seed"] == r["seed"] and x["variant"] == "full (reference)")
                 ["test_ndcg@10"] for r in mine]
        table.append({"mode": name, "seeds": len(mine),
                      "test ndcg@10": f"{np.mean([r['test_ndcg@10'] for r in mine]):.4f} ± "
                                      f"{np.std([r['test_ndcg@10'] for r in mine]):.4f}",
                      "valid ndcg@10": f"{np.mean([r['valid_ndcg@10'] for r in mine]):.4f}",
                      "ratio to full": f"{np.mean(ratio):.4f} (min {np.min(ratio):.4f})",
                      "s/epoch (median)": f"{np.median([r['seconds_per_epoch'] for r in mine]):.2f}",
                      "epochs": f"{np.mean([r['epochs'] for r in mine]):.0f}"})
    print_table(table, f"training modes, protocol A, seeds {args.seeds}")
    write_json("training_modes", {"seeds": args.seeds, "hyperparameters": tuned, "table": table, "runs": runs})


if __name__ == "__main__":
    main()
