"""Growth curve: synthetic data (template item text and attributes, power-law item
popularity, timestamps over 60 days) at 100k, 1M and 5M interactions through ingestion
(lossless read + cleaning + DuckDB write), graph build (KG + training graph), training of
the main model (KGTextGNN, BPR; one epoch in each training mode — full graph with a fixed
number of steps, and sampled subgraphs — steps timed, epoch time = steps x median step) and
full top-20 scoring of every user. Each size runs in a fresh process so peak RSS is per size.

Item text vectors are random unit vectors here: encoder cost grows linearly with the
catalogue and is measured by bench_text_encoder (texts/s).

    python -m benchmarks.bench_growth [--sizes 100000 1000000 2000000 5000000 10000000] [--max-steps 30]
                                      [--e2e 10000000 --epochs 3]

``--e2e SIZE`` also runs that size end to end: the real training loop for a few epochs (auto
mode, validation at the end), every user's top-20, written to a warehouse table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from benchmarks.common import ROOT, peak_rss_mb, print_table, write_json


def end_to_end(data, cfg, epochs: int, conn, stage) -> None:
    """Train ``epochs`` epochs of the main model with the real loop (auto mode: what a run
    at this size does), score every user and write their top-20 to the warehouse."""
    import numpy as np
    import pandas as pd

    from recsys_dagster.core.fusion import top_k
    from recsys_dagster.core.train import train

    t0 = time.perf_counter()
    run = replace(cfg, max_epochs=epochs, min_epochs=epochs, eval_every=epochs)
    result = train(data, run, log=lambda m: print(f"    {m}", flush=True))
    stage("e2e_train", t0, epochs=result.epochs_run, seconds_per_epoch=round(result.seconds_per_epoch, 1),
          valid_ndcg10=round(result.best_valid["ndcg@10"], 4), test_ndcg10=round(result.test["ndcg@10"], 4))
    t0 = time.perf_counter()
    users, items = result.model.user_item_embeddings()
    top, scores = top_k(lambda ub: users[ub] @ items.T, np.arange(data.n_users), data.train_csr, data.n_items, k=20)
    stage("e2e_score", t0, users=data.n_users)
    t0 = time.perf_counter()
    recs = pd.DataFrame({"user_id": np.repeat(np.asarray(data.user_ids, dtype=str), top.shape[1]),
                         "rank": np.tile(np.arange(1, top.shape[1] + 1, dtype=np.int32), len(top)),
                         "item_id": np.asarray(data.item_ids, dtype=str)[top.reshape(-1)],
                         "score": scores.reshape(-1).astype(np.float64)})
    conn.register("recs", recs)
    conn.execute("CREATE OR REPLACE TABLE growth_recommendations AS SELECT * FROM recs")
    conn.unregister("recs")
    rows = conn.execute("SELECT count(*) FROM growth_recommendations").fetchone()[0]
    stage("e2e_write", t0, rows=int(rows))


def one_size(size: int, max_steps: int, e2e_epochs: int = 0) -> dict:
    import duckdb
    import numpy as np
    import torch

    from recsys_dagster.core import warehouse as wh
    from recsys_dagster.core.cleaning import CleaningConfig, clean_interactions
    from recsys_dagster.core.datasets import open_dataset
    from recsys_dagster.core.datasets.synthetic import generate
    from recsys_dagster.core.fusion import top_k
    from recsys_dagster.core.knowledge_graph import build_knowledge_graph
    from recsys_dagster.core.models import build_model
    from recsys_dagster.core.models.sampling import NeighbourSampler
    from recsys_dagster.core.train import TrainConfig, bpr_step, epoch_samples
    from recsys_dagster.core.training_data import data_for_split, make_split, read_tables

    stages: dict[str, dict] = {}
    work = Path(tempfile.mkdtemp(prefix=f"growth-{size}-"))

    def stage(name: str, t0: float, **extra) -> None:
        stages[name] = {"seconds": round(time.perf_counter() - t0, 2), "peak_rss_mb": round(peak_rss_mb(), 0), **extra}
        print(f"  {size:>9,} {name:<12} {stages[name]}", flush=True)

    n_users, n_items = max(size // 25, 100), max(size // 100, 200)
    t0 = time.perf_counter()
    folder = generate(work / "data", n_users=n_users, n_items=n_items, n_interactions=size, days=60, seed=0, exact=True)
    stage("generate", t0, users=n_users, items=n_items)

    t0 = time.perf_counter()
    dataset = open_dataset(str(folder))
    items, _ = dataset.read_items()
    users, _ = dataset.read_users()
    raw = dataset.raw_interactions()
    span = dataset.span()
    config = CleaningConfig(rating_range=dataset.rating_range, known_users=frozenset(users["user_id"]),
                            known_items=frozenset(items["item_id"]))
    cleaned, quarantine = clean_interactions(raw, span.start, span.end, config)
    conn = duckdb.connect(str(work / "warehouse.duckdb"))
    wh.replace_tables(conn, {"items": items, "users": users})
    wh.replace_partition(conn, {"raw_interactions": raw, "cleaned_interactions": cleaned,
                                "interactions_quarantine": quarantine}, span.start, span.end)
    stage("ingest", t0, rows=len(raw), cleaned=len(cleaned))
    del raw, cleaned, quarantine

    t0 = time.perf_counter()
    kg = build_knowledge_graph(items, users, dataset.external_kg())
    wh.replace_tables(conn, {"kg_entities": kg.entities, "kg_relations": kg.relations, "kg_triples": kg.triples,
                             "kg_quarantine": kg.rejects})
    tables = read_tables(conn)
    rng = np.random.default_rng(0)
    text = rng.standard_normal((len(tables.item_ids), 384)).astype(np.float32)
    tables.item_text = (list(tables.item_ids), text / np.linalg.norm(text, axis=1, keepdims=True))
    cfg = TrainConfig(device="cpu")
    data = data_for_split(tables, make_split(tables, cfg), cfg)
    stage("graph", t0, kg_triples=len(kg.triples), train_edges=len(data.train_users))

    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, data, cfg.embedding_dim, cfg.num_layers, cfg.kg_weight, cfg.id_dropout, "cpu")
    model.train()
    model.refresh()  # the first call imports PyG's softmax: time the second
    t_attn = time.perf_counter()
    model.refresh()
    attention_s = time.perf_counter() - t_attn
    # the propagation alone (one SpMM of the operator with d=64 columns): its cost per nonzero
    # shows the memory hierarchy — at small sizes the node table fits the CPU caches
    op, x = model.operator(), torch.randn(model.operator().shape[0], cfg.embedding_dim)
    spmm_times = []
    for _ in range(5):
        ts = time.perf_counter()
        torch.sparse.mm(op, x)
        spmm_times.append(time.perf_counter() - ts)
    spmm_s = float(np.median(spmm_times[1:]))
    stage("spmm", time.perf_counter() - sum(spmm_times), nnz=int(op._nnz()), nodes=int(op.shape[0]),
          median_s=round(spmm_s, 4), ns_per_nnz=round(spmm_s / op._nnz() * 1e9, 2),
          table_mb=round(op.shape[0] * cfg.embedding_dim * 4 / 2**20, 1))
    del op, x
    for mode in ("full", "sampled"):
        t0 = time.perf_counter()
        mcfg = replace(cfg, train_mode=mode)
        _, batch, lr = mcfg.step_plan(len(data.train_users), model.operator().shape[0], data.n_items)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        gen = torch.Generator().manual_seed(cfg.seed)
        sampler = NeighbourSampler(model.operator(), cfg.fanout, gen) if mode == "sampled" else None
        epoch_u, epoch_p, epoch_n = epoch_samples(data, gen)
        batches = (len(epoch_u) + batch - 1) // batch
        times = []
        for s in range(0, min(batches, max_steps) * batch, batch):
            b = slice(s, s + batch)
            ts = time.perf_counter()
            bpr_step(model, opt, epoch_u[b], epoch_p[b], epoch_n[b], data, mcfg, sampler=sampler)
            times.append(time.perf_counter() - ts)
        step_s = float(np.median(times[1:] if len(times) > 2 else times))
        epoch_s = attention_s + batches * step_s
        stage(f"epoch_{mode}", t0, batch=batch, batches=batches, steps_timed=len(times), median_step_s=round(step_s, 4),
              epoch_s=round(epoch_s, 1), measured_whole_epoch=len(times) == batches)

    t0 = time.perf_counter()
    u_emb, i_emb = model.user_item_embeddings()
    top_k(lambda ub: u_emb[ub] @ i_emb.T, np.arange(data.n_users), data.train_csr, data.n_items, k=20)
    stage("score", t0, users=data.n_users, items=data.n_items)
    del model, opt
    if e2e_epochs:
        end_to_end(data, cfg, e2e_epochs, conn, stage)
    conn.close()
    return {"size": size, "stages": stages}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", nargs="+", type=int, default=[100_000, 1_000_000, 2_000_000, 5_000_000, 10_000_000])
    parser.add_argument("--max-steps", type=int, default=30, help="BPR steps timed per size (epoch = batches x median)")
    parser.add_argument("--e2e", type=int, default=0, metavar="SIZE",
                        help="also train SIZE's main model for --epochs epochs, score and write every user's top-20")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--name", default="growth", help="results file name (benchmarks/results/NAME.json)")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_size(args.one, args.max_steps, args.epochs if args.one == args.e2e else 0)))
        return
    results = []
    for size in args.sizes:
        out = subprocess.run([sys.executable, "-m", "benchmarks.bench_growth", "--one", str(size),
                              "--max-steps", str(args.max_steps), "--e2e", str(args.e2e), "--epochs", str(args.epochs)],
                             cwd=ROOT, capture_output=True, text=True)
        print(out.stdout.rsplit("\n", 2)[0] if out.stdout else "", flush=True)
        if out.returncode != 0:
            raise SystemExit(f"size {size} failed:\n{out.stderr[-3000:]}")
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    rows = []
    for r in results:
        s = r["stages"]
        rows.append({"interactions": f"{r['size']:,}", "users": s["generate"]["users"], "items": s["generate"]["items"],
                     "ingest s": s["ingest"]["seconds"], "graph s": s["graph"]["seconds"],
                     "epoch full s": s["epoch_full"]["epoch_s"], "full steps": s["epoch_full"]["batches"],
                     "epoch sampled s": s["epoch_sampled"]["epoch_s"], "score s": s["score"]["seconds"],
                     "peak RSS MB": max(v["peak_rss_mb"] for v in s.values())})
    base = next((r for r in results if r["size"] == 1_000_000), None)
    for row, r in zip(rows, results, strict=True):
        for mode in ("full", "sampled"):
            ref = base["stages"][f"epoch_{mode}"]["epoch_s"] if base else None
            row[f"{mode} t/t(1M)"] = round(r["stages"][f"epoch_{mode}"]["epoch_s"] / ref, 2) if ref else "-"
    print_table(rows, "growth curve (2 layers, dim 64, BPR; epoch = steps x median step + attention refresh; full: "
                      "at most 40 steps, the batch grows; sampled: batch 2048, fan-out 10)")
    write_json(args.name, {"results": results})


if __name__ == "__main__":
    main()
