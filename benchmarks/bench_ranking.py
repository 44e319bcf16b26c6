"""Full-ranking evaluation of all users against the bare ``matmul + topk`` on the same
shapes (the practical limit), ML-100K protocol A.

    python benchmarks/bench_ranking.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks.common import median, print_table, warehouse_tables, write_json


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    from recsys_dagster.core.metrics import full_ranking
    from recsys_dagster.core.train import TrainConfig
    from recsys_dagster.core.training_data import data_for_split, make_split

    tables = warehouse_tables()
    cfg = TrainConfig(use_kg=False, use_text=False)
    data = data_for_split(tables, make_split(tables, cfg), cfg)
    g = torch.Generator().manual_seed(0)
    users = torch.randn(data.n_users, 64, generator=g)
    items = torch.randn(data.n_items, 64, generator=g)
    exclude = data.train_plus_valid_csr()
    ours, bare = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        full_ranking(lambda ub: users[ub] @ items.T, data.test_csr, exclude, data.n_items, ks=(10, 20))
        ours.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        with torch.no_grad():
            torch.topk(users @ items.T, 20, dim=1)
        bare.append(time.perf_counter() - t0)
    rows = [{"what": "bare matmul + topk", "median_s": median(bare)},
            {"what": "full_ranking (mask + topk + 5 metrics @10,@20)", "median_s": median(ours)}]
    ratio = median(ours) / median(bare)
    print_table(rows, f"{data.n_users} users x {data.n_items} items")
    print(f"ours / bare = {ratio:.2f} (target <= 2)")
    write_json("ranking", {"rows": rows, "ratio": ratio, "users": data.n_users, "items": data.n_items})


if __name__ == "__main__":
    main()
