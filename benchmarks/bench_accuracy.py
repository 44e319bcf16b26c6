"""Protocol A on the warehouse's dataset over several seeds: every model on the same split
with the same metric code and tuned settings, mean ± std per model, beside RecBole's numbers.

    python -m benchmarks.bench_accuracy [--seeds 2020 2021 2022] [--protocols A A_recbole]
                                        [--ablation-seeds 0] [--loss sampled_softmax --num-negatives 4096]

``A`` is the platform's hash split (stable as data grows); ``A_recbole`` is RecBole's
per-user shuffle with the same seed, where the RecBole 1.2.1 reference numbers apply.
Hyperparameters: the ``model_hyperparameters`` cache of the warehouse (``make tune``), else
the validated defaults of ``core.tuning``; ItemKNN and EASE are tuned on each split's
validation part. Nothing here is chosen on a test set. ``--loss`` sets one loss for every
trained model (the peers get the same): ``sampled_softmax`` for catalogues where the full
softmax is too slow to run several seeds (ml-latest-small).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np
import pandas as pd

from benchmarks.common import print_table, warehouse_tables, write_json
from recsys_dagster.settings import load_settings

#: RecBole 1.2.1 on ML-100K (RS 8:1:1, full ranking), NDCG@10 / Recall@10, measured here
#: by an earlier session. Its Pop undercounts (a batch counts a repeated item once, and it
#: trains one epoch), so the platform's Pop is right to be higher.
RECBOLE = {"pop": (0.103, 0.081), "itemknn": (0.283, 0.247), "mf": (0.293, 0.250), "lightgcn": (0.305, 0.261)}


def tuned_hyperparameters() -> dict:
    import duckdb

    from recsys_dagster.core import warehouse as wh
    from recsys_dagster.core.tuning import resolve
    from recsys_dagster.settings import load_settings

    conn = duckdb.connect(load_settings().warehouse, read_only=True)
    try:
        return resolve(wh.read_table(conn, "model_hyperparameters"))
    finally:
        conn.close()


def summarize(frame: pd.DataFrame) -> list[dict]:
    table = []
    for (protocol, model), grp in frame.groupby(["protocol", "model"], sort=False):
        def stat(metric, k, sl="all", grp=grp):
            v = grp[(grp.metric == metric) & (grp.k == k) & (grp.slice == sl)].value
            return f"{v.mean():.4f} ± {v.std(ddof=0):.4f}" if len(v) else "-"
        row = {"protocol": protocol, "model": model, "seeds": grp.seed.nunique(),
               "ndcg@10": stat("ndcg", 10), "recall@10": stat("recall", 10), "recall@20": stat("recall", 20),
               "sparse-user ndcg@10": stat("ndcg", 10, "cold_users"), "coverage@10": stat("coverage", 10)}
        if protocol == "A_recbole":
            row["recbole ndcg/recall@10"] = "{:.3f} / {:.3f}".format(*RECBOLE[model]) if model in RECBOLE else "-"
        table.append(row)
    return table


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[2020, 2021, 2022])
    parser.add_argument("--ablation-seeds", type=int, default=0, help="run the ablations on the first N seeds")
    parser.add_argument("--max-epochs", type=int, default=300)
    parser.add_argument("--protocols", nargs="+", default=["A", "A_recbole"])
    parser.add_argument("--name", default="accuracy", help="results file benchmarks/results/NAME.json")
    parser.add_argument("--loss", choices=["bpr", "softmax", "sampled_softmax"],
                        help="the loss of every trained model (MF, LightGCN, KGTextGNN alike); default: tuned")
    parser.add_argument("--num-negatives", type=int, default=None, help="sampled_softmax: negatives per step")
    parser.add_argument("--embedding-dim", type=int, default=None,
                        help="the embedding size of every trained model (MF, LightGCN, KGTextGNN alike); default: tuned")
    parser.add_argument("--few-shot-keep", type=int, default=None,
                        help="protocol few_shot: training interactions each few-shot user keeps (default: EvalConfig's)")
    parser.add_argument("--merge", nargs="+", metavar="NAME", help="no run: merge the results NAME.json of runs "
                        "over other seeds (e.g. one process per seed) into --name")
    args = parser.parse_args()
    if args.merge:
        return merge(args.merge, args.name)
    from recsys_dagster.core.evaluation import (
        COMPARISON_COLUMNS,
        ROW_COLUMNS,
        EvalConfig,
        evaluate_protocols,
    )
    from recsys_dagster.core.train import TrainConfig

    tables = warehouse_tables()
    tuned = tuned_hyperparameters()
    if args.loss:  # one loss for every trained model: the same treatment for the peers
        tuned = {name: {**params, "loss": args.loss} for name, params in tuned.items()}
    if args.embedding_dim:
        tuned = {name: {**params, "embedding_dim": args.embedding_dim} for name, params in tuned.items()}
    print("hyperparameters:", tuned)
    rows, comparisons, timings = [], [], {}
    for n, seed in enumerate(args.seeds):
        t0 = time.perf_counter()
        cfg = replace(TrainConfig(seed=seed, split_seed=seed, device="cpu", max_epochs=args.max_epochs),
                      **tuned["kgtextgnn"])
        if args.num_negatives:
            cfg = replace(cfg, num_negatives=args.num_negatives)
        ev = EvalConfig(train=cfg, ablations=n < args.ablation_seeds, protocols=tuple(args.protocols), explanation_users=0,
                        hyperparameters=tuned)
        if args.few_shot_keep:
            ev = replace(ev, few_shot_keep=args.few_shot_keep)
        res = evaluate_protocols(tables, ev)
        rows += [(*r, seed) for r in res.rows]
        comparisons += [(*c, seed) for c in res.comparisons]
        timings[seed] = {"seconds": time.perf_counter() - t0, "fusion": res.fusion, "params": res.params, **res.seconds}
    frame = pd.DataFrame(rows, columns=[*ROW_COLUMNS, "seed"])
    paired = pd.DataFrame(comparisons, columns=[*COMPARISON_COLUMNS, "seed"])
    write_json(args.name, {"dataset": load_settings().dataset, "seeds": args.seeds, "protocols": args.protocols,
                           "hyperparameters": tuned,
                           "num_negatives": cfg.num_negatives if cfg.loss == "sampled_softmax" else None,
                           **({"few_shot_keep": ev.few_shot_keep} if "few_shot" in args.protocols else {}),
                           "budget": {k: getattr(cfg, k) for k in ("max_epochs", "min_epochs", "patience")},
                           **report(frame, args.seeds, paired), "timings": timings, "recbole_reference": RECBOLE})


#: The paired comparisons the report reads: (protocol, metric, k, slice) of fused against the best peer.
PAIRED = (("A", "ndcg", 10, "all"), ("A", "ndcg", 10, "cold_users"), ("cold_item", "recall", 20, "all"),
          ("few_shot", "ndcg", 10, "all"))


def paired_summary(frame: pd.DataFrame, paired: pd.DataFrame | None, model: str = "fused") -> list[dict]:
    """For each of :data:`PAIRED`: ``model`` against the peer with the best mean over seeds on
    that metric and slice; then each attribution pair of protocols A and few_shot (NDCG@10, all
    users: the main model against its ablations, the fusion against itself less each part). Per seed the
    paired difference over the test users, its 95% interval and p-value; over seeds the mean
    and std of the paired differences."""
    from recsys_dagster.core.comparison import ATTRIBUTION
    from recsys_dagster.core.evaluation import is_own

    if paired is None or paired.empty:
        return []
    wanted = []
    for protocol, metric, k, sl in PAIRED:
        sel = frame[(frame.protocol == protocol) & (frame.metric == metric) & (frame.k == k) & (frame.slice == sl)]
        means = sel.groupby("model").value.mean()
        peers = means.drop([m for m in means.index if is_own(m)])
        if not peers.empty and model in means:
            wanted.append((protocol, metric, k, sl, model, peers.idxmax(), "best peer"))
    wanted += [(protocol, "ndcg", 10, "all", m, r, "attribution") for protocol in ("A", "few_shot")
               for m, r in ATTRIBUTION]
    out = []
    for protocol, metric, k, sl, m, peer, kind in wanted:
        p = paired[(paired.protocol == protocol) & (paired.model == m) & (paired.peer == peer)
                   & (paired.metric == metric) & (paired.k == k) & (paired.slice == sl)].sort_values("seed")
        if p.empty:
            continue
        out.append({"protocol": protocol, "metric": f"{metric}@{k}", "slice": sl, "model": m, "peer": peer,
                    "kind": kind, "mean_diff": float(p["diff"].mean()), "std_diff": float(p["diff"].std(ddof=0)),
                    "seeds_significant": int(((p.ci_low > 0) | (p.ci_high < 0)).sum()), "seeds": len(p),
                    "per_seed": [{"seed": int(r.seed), "users": int(r.n_users), "diff": float(r.diff),
                                  "ci": [float(r.ci_low), float(r.ci_high)], "p": float(r.p_value)}
                                 for r in p.itertuples()]})
    return out


def report(frame: pd.DataFrame, seeds: list[int], paired: pd.DataFrame | None = None) -> dict:
    """Prints the table, the fused / best-peer ratio and the paired differences; the JSON
    fields of all three."""
    from recsys_dagster.core.evaluation import is_own

    table = summarize(frame)
    print_table(table, f"seeds {seeds} (mean ± std over seeds)")
    a = frame[(frame.protocol == "A") & (frame.slice == "all") & (frame.metric == "ndcg") & (frame.k == 10)]
    means = a.groupby("model").value.mean()
    peers = means.drop([m for m in means.index if is_own(m)]).sort_values(ascending=False)
    if len(peers) and "fused" in means:
        print(f"fused / best peer ({peers.index[0]}): {means['fused'] / peers.iloc[0]:.3f}")
    summary = paired_summary(frame, paired)
    for s in summary:
        seeds_text = "; ".join(f"{x['seed']}: {x['diff']:+.4f} [{x['ci'][0]:+.4f}, {x['ci'][1]:+.4f}] p={x['p']:.2g}"
                               for x in s["per_seed"])
        print(f"paired ({s['kind']}), {s['protocol']} {s['metric']} {s['slice']}: {s['model']} - {s['peer']} = "
              f"{s['mean_diff']:+.4f} ± {s['std_diff']:.4f} over seeds, interval above/below 0 in "
              f"{s['seeds_significant']}/{s['seeds']} ({seeds_text})")
    return {"table": table, "rows": frame.to_dict("records"), "paired": summary,
            "comparisons": paired.to_dict("records") if paired is not None else []}


def merge(names: list[str], name: str) -> None:
    """One results file from runs over disjoint seeds of the same settings."""
    import json

    from benchmarks.common import RESULTS

    runs = [json.loads((RESULTS / f"{n}.json").read_text()) for n in names]
    for run in runs:  # runs before the budget was recorded had the defaults of the time
        run.setdefault("budget", {"max_epochs": 300, "min_epochs": 20, "patience": 30})
    keys = ("dataset", "protocols", "hyperparameters", "num_negatives", "budget", "few_shot_keep")
    for run in runs[1:]:
        if any(run.get(k) != runs[0].get(k) for k in keys):
            raise SystemExit(f"--merge: {names} differ in {[k for k in keys if run.get(k) != runs[0].get(k)]}")
    seeds = [s for run in runs for s in run["seeds"]]
    if len(set(seeds)) != len(seeds):
        raise SystemExit(f"--merge: a seed appears twice in {names}: {seeds}")
    frame = pd.DataFrame([r for run in runs for r in run["rows"]])
    # runs before the paired comparisons have none: then the merge has none either
    paired = pd.DataFrame([c for run in runs for c in run.get("comparisons", [])]) \
        if all(run.get("comparisons") for run in runs) else None
    write_json(name, {"machine": runs[0].get("machine"),  # where and when the runs ran, not the merge
                      **{k: runs[0].get(k) for k in keys}, "seeds": seeds, "merged_from": names,
                      **report(frame, seeds, paired), "timings": {k: v for run in runs for k, v in run["timings"].items()},
                      "recbole_reference": RECBOLE})


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
