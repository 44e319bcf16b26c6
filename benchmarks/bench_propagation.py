"""Why the full-mode epoch grows faster than the data on a CPU: the cost of one propagation
(CSR SpMM of LightGCN's normalized user–item operator, 64 columns) per nonzero, by graph
size, next to a reference measured in the same run — streaming the same number of rows
(sequential reads: no cache misses).

Synthetic power-law bipartite graphs with the growth benchmark's shape (users = E/25,
items = E/100). Work per nonzero is constant; time per nonzero rises once the node table
the SpMM gathers from outgrows the CPU caches.

    python -m benchmarks.bench_propagation [--sizes 1000000 2000000 5000000 10000000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks.common import median, print_table, write_json


def graph(edges: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    n_users, n_items = edges // 25, edges // 100
    p = 1.0 / np.arange(1, n_items + 1) ** 0.8
    return rng.integers(0, n_users, edges), rng.choice(n_items, edges, p=p / p.sum()), n_users, n_items


def timed(fn, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return median(times[1:])


def main() -> None:
    import torch

    from recsys_dagster.core.models.sparse import normalized_bipartite

    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", nargs="+", type=int, default=[1_000_000, 2_000_000, 5_000_000, 10_000_000])
    parser.add_argument("--dim", type=int, default=64)
    args = parser.parse_args()
    rows = []
    for edges in args.sizes:
        users, items, n_users, n_items = graph(edges)
        op = normalized_bipartite(users, items, n_users, n_items)
        x = torch.randn(n_users + n_items, args.dim)
        spmm = timed(lambda op=op, x=x: torch.sparse.mm(op, x))
        rows_streamed = torch.randn(min(op._nnz(), 4_000_000), args.dim)
        stream = timed(lambda r=rows_streamed: r.sum(0)) * op._nnz() / len(rows_streamed)
        rows.append({"interactions": f"{edges:,}", "nodes": n_users + n_items, "nonzeros": int(op._nnz()),
                     "node table MB": round((n_users + n_items) * args.dim * 4 / 2**20, 1),
                     "SpMM s": round(spmm, 4), "SpMM ns/nonzero": round(spmm / op._nnz() * 1e9, 2),
                     "stream same rows s": round(stream, 4), "SpMM / stream": round(spmm / stream, 2)})
        print(rows[-1], flush=True)
    base = rows[0]
    for r in rows:
        r["ns/nonzero vs first"] = round(r["SpMM ns/nonzero"] / base["SpMM ns/nonzero"], 2)
    print_table(rows, f"propagation cost per nonzero (CSR SpMM, {args.dim} columns, torch "
                      f"{torch.__version__}, {torch.get_num_threads()} threads)")
    write_json("propagation", {"dim": args.dim, "rows": rows})


if __name__ == "__main__":
    main()
