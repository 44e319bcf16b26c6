"""The explanation protocol (``core.explain_eval``) on the warehouse's dataset over seeds:
deletion fidelity, coverage and diversity of the reasons of the fusion and of the main
model alone, protocol A.

    python -m benchmarks.bench_explanations [--seeds 2020 2021 2022] [--users 100]

The reference measured in the same run is the random deletion: the same user, the same
recommended item, a history item drawn at random instead of the cited one. The fidelity
ratio is cited drop / random drop (per seed; mean ± std over seeds). Peers (MF, LightGCN)
are not trained here: the protocol explains the served models only.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import pandas as pd

from benchmarks.bench_accuracy import tuned_hyperparameters
from benchmarks.common import print_table, warehouse_tables, write_json
from recsys_dagster.settings import load_settings

SHOWN = ("expl_coverage", "expl_diversity", "expl_kind_entropy", "expl_score_drop_cited", "expl_score_drop_random",
         "expl_fidelity_ratio", "expl_cited_beats_random", "expl_rank_drop_cited", "expl_rank_drop_random",
         "expl_kg_score_drop_cited", "expl_kg_score_drop_random", "expl_kg_cited_beats_random")


def summarize(frame: pd.DataFrame) -> list[dict]:
    table = []
    for model, grp in frame.groupby("model", sort=False):
        row = {"model": model, "seeds": grp.seed.nunique()}
        for metric in SHOWN:
            v = grp[grp.metric == metric].value
            row[metric.removeprefix("expl_")] = f"{v.mean():.4f} ± {v.std(ddof=0):.4f}" if len(v) else "-"
        cited = grp[grp.metric == "expl_score_drop_cited"].value.mean()
        rand = grp[grp.metric == "expl_score_drop_random"].value.mean()
        # the ratio of the seed means (a per-seed ratio explodes when a random drop is ~0)
        row["pooled fidelity ratio"] = f"{cited / rand:.1f}" if rand > 0 else "-"
        table.append(row)
    return table


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[2020, 2021, 2022])
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--max-epochs", type=int, default=300)
    parser.add_argument("--name", default="explanations")
    args = parser.parse_args()
    from recsys_dagster.core.evaluation import ROW_COLUMNS, EvalConfig, evaluate_protocols
    from recsys_dagster.core.train import TrainConfig

    tables = warehouse_tables()
    tuned = tuned_hyperparameters()
    rows, timings = [], {}
    for seed in args.seeds:
        t0 = time.perf_counter()
        cfg = replace(TrainConfig(seed=seed, split_seed=seed, device="cpu", max_epochs=args.max_epochs),
                      **tuned["kgtextgnn"])
        ev = EvalConfig(train=cfg, protocols=("A",), trained_baselines=(), explanation_users=args.users,
                        hyperparameters=tuned)
        res = evaluate_protocols(tables, ev)
        rows += [(*r, seed) for r in res.rows]
        timings[seed] = {"seconds": time.perf_counter() - t0, "fusion": {k: v for k, v in res.fusion.items() if k != "grid"},
                         **{k: v for k, v in res.seconds.items() if "explain" in k}}
        print(seed, timings[seed])
    frame = pd.DataFrame(rows, columns=[*ROW_COLUMNS, "seed"])
    expl = frame[frame.metric.str.startswith("expl_")]
    table = summarize(expl)
    print_table(table, f"explanations, protocol A, {args.users} users per seed, seeds {args.seeds} (mean ± std)")
    write_json(args.name, {"dataset": load_settings().dataset, "seeds": args.seeds, "users": args.users,
                           "table": table, "rows": expl.to_dict("records"), "timings": timings})


if __name__ == "__main__":
    main()
