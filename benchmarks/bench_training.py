"""Seconds per training epoch on ML-100K (dim 64, batch 2048, 2 layers): our LightGCN
(CSR SpMM), MF-BPR and the main KGTextGNN, next to a reference PyG ``LightGCN`` with
``edge_index`` message passing measured in the same run, plus peak RSS of a full
training of the main model.

    python benchmarks/bench_training.py [--epochs 5] [--full]
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks.common import median, peak_rss_mb, print_table, warehouse_tables, write_json


def epoch_times(data, model_name: str, epochs: int) -> list[float]:
    from recsys_dagster.core.train import TrainConfig, train

    cfg = TrainConfig(model=model_name, max_epochs=epochs, min_epochs=epochs, eval_every=10**6, device="cpu")
    res = train(data, cfg, log=lambda m: None)
    return [h["epoch_seconds"] for h in res.history]


def pyg_reference_epoch_times(data, epochs: int, batch_size: int = 2048) -> list[float]:
    """PyG's LightGCN with edge_index message passing, same BPR loop and sampling."""
    from torch_geometric.nn.models import LightGCN

    from recsys_dagster.core.train import sample_negatives

    u_n, i_n = data.n_users, data.n_items
    tu, ti = torch.as_tensor(data.train_users), torch.as_tensor(data.train_items)
    edge = torch.stack([torch.cat([tu, ti + u_n]), torch.cat([ti + u_n, tu])])
    model = LightGCN(u_n + i_n, 64, 2)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    keys = torch.sort(tu * i_n + ti).values
    gen = torch.Generator().manual_seed(0)
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        perm = torch.randperm(len(tu), generator=gen)
        for s in range(0, len(perm), batch_size):
            b = perm[s: s + batch_size]
            u, p = tu[b], ti[b]
            n = sample_negatives(u, i_n, keys, gen)
            emb = model.get_embedding(edge)
            eu, ep, en = emb[u], emb[p + u_n], emb[n + u_n]
            loss = -torch.nn.functional.logsigmoid((eu * ep).sum(-1) - (eu * en).sum(-1)).mean()
            loss = loss + 1e-4 * model.embedding.weight[torch.cat([u, p + u_n, n + u_n])].pow(2).sum() / (2 * len(b))
            opt.zero_grad()
            loss.backward()
            opt.step()
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--full", action="store_true", help="also run a full default training of the main model")
    args = parser.parse_args()
    from recsys_dagster.core.train import TrainConfig
    from recsys_dagster.core.training_data import data_for_split, make_split

    tables = warehouse_tables()
    cfg = TrainConfig()
    data = data_for_split(tables, make_split(tables, cfg), cfg)
    results = {}
    for name, fn in [("pyg_lightgcn_edge_index (reference)", lambda: pyg_reference_epoch_times(data, args.epochs)),
                     ("lightgcn (ours, CSR)", lambda: epoch_times(data, "lightgcn", args.epochs)),
                     ("mf", lambda: epoch_times(data, "mf", args.epochs)),
                     ("kgtextgnn", lambda: epoch_times(data, "kgtextgnn", args.epochs))]:
        times = fn()[1:] or fn()  # first epoch includes warm-up
        results[name] = {"median_s_per_epoch": median(times), "epochs_timed": len(times)}
    ref = results["pyg_lightgcn_edge_index (reference)"]["median_s_per_epoch"]
    ours = results["lightgcn (ours, CSR)"]["median_s_per_epoch"]
    rows = [{"model": k, "s/epoch (median)": v["median_s_per_epoch"], "vs PyG ref": v["median_s_per_epoch"] / ref,
             "vs our LightGCN": v["median_s_per_epoch"] / ours} for k, v in results.items()]
    full = {}
    if args.full:
        from recsys_dagster.core.train import train

        t0 = time.perf_counter()
        res = train(data, TrainConfig(device="cpu"), log=lambda m: None)
        full = {"seconds": time.perf_counter() - t0, "epochs": res.epochs_run, "best_epoch": res.best_epoch,
                "valid_ndcg@10": res.best_valid["ndcg@10"], "test_ndcg@10": res.test["ndcg@10"]}
    full["peak_rss_mb"] = peak_rss_mb()
    print_table(rows, f"ML-100K training, dim 64, batch 2048, 2 layers, {data.n_users} users, {data.n_items} items, "
                      f"{len(data.train_users)} train edges, {len(data.kg_head)} KG edges")
    print(f"peak RSS {full['peak_rss_mb']:.0f} MB" + (f"; full training {full['seconds']:.1f}s" if "seconds" in full else ""))
    write_json("training", {"epoch_seconds": results, "rows": rows, "full_training": full})


if __name__ == "__main__":
    main()
