"""Protocol A on ML-100K with several seeds (every model, same split and metric code), the
cold-item protocol, and mean ± std per model.

    python benchmarks/bench_accuracy.py [--seeds 2020 2021 2022] [--ablation-seeds 1] [--protocols A cold_item]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from benchmarks.common import print_table, warehouse_tables, write_json

RECBOLE = {"pop": (0.103, 0.081), "itemknn": (0.283, 0.247), "mf": (0.293, 0.250), "lightgcn": (0.305, 0.261)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[2020, 2021, 2022])
    parser.add_argument("--ablation-seeds", type=int, default=1, help="run the ablations on the first N seeds")
    parser.add_argument("--max-epochs", type=int, default=300)
    parser.add_argument("--protocols", nargs="+", default=["A"], help="A and/or cold_item (the cold-item numbers "
                        "of `make bench` come from bench_e2e's full_rebuild evaluation)")
    args = parser.parse_args()
    from recsys_dagster.core.evaluation import ROW_COLUMNS, EvalConfig, evaluate_protocols
    from recsys_dagster.core.train import TrainConfig

    tables = warehouse_tables()
    rows, timings = [], {}
    for n, seed in enumerate(args.seeds):
        t0 = time.perf_counter()
        cfg = TrainConfig(seed=seed, split_seed=seed, device="cpu", max_epochs=args.max_epochs)
        ev = EvalConfig(train=cfg, baseline_max_epochs=args.max_epochs, ablations=n < args.ablation_seeds,
                        protocols=tuple(args.protocols))
        res = evaluate_protocols(tables, ev)
        rows += [(*r, seed) for r in res.rows]
        timings[seed] = {"seconds": time.perf_counter() - t0, "fusion": res.fusion, **res.seconds}
    frame = pd.DataFrame(rows, columns=[*ROW_COLUMNS, "seed"])
    table = []
    for (protocol, model), grp in frame[frame.slice == "all"].groupby(["protocol", "model"], sort=False):
        def stat(metric, k, grp=grp):
            v = grp[(grp.metric == metric) & (grp.k == k)].value
            return f"{v.mean():.4f} ± {v.std(ddof=0):.4f}" if len(v) else "-"
        row = {"protocol": protocol, "model": model, "seeds": grp.seed.nunique(),
               "ndcg@10": stat("ndcg", 10), "recall@10": stat("recall", 10), "mrr@10": stat("mrr", 10),
               "hit@10": stat("hit", 10), "ndcg@20": stat("ndcg", 20), "recall@20": stat("recall", 20),
               "coverage@10": stat("coverage", 10)}
        if protocol == "A" and model in RECBOLE:
            row["recbole ndcg/recall@10"] = "{:.3f} / {:.3f}".format(*RECBOLE[model])
        table.append(row)
    print_table(table, f"ML-100K, seeds {args.seeds} (mean ± std)")
    cold = frame[(frame.protocol == "cold_item") & (frame.slice == "all") & (frame.metric == "recall") & (frame.k == 20)]
    by_model = cold.groupby("model").value.mean()
    if "random" in by_model and by_model["random"] > 0:
        print("cold-item recall@20 vs random: " + ", ".join(f"{m} {v / by_model['random']:.1f}x" for m, v in by_model.items()))
    write_json("accuracy", {"seeds": args.seeds, "table": table, "rows": frame.to_dict("records"), "timings": timings,
                            "recbole_reference": RECBOLE})


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
