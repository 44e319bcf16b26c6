"""Lightweight scoring on the warehouse's dataset: int8 embedding tables and the int8 text
encoder against fp32, measured in the same run.

* int8 tables: the main model (tuned settings) and the fused scorer (EASE and text, weights
  tuned on validation) scored with fp32 tables and with int8 tables (per-row scales), same
  weights: test NDCG@10 retention and table memory, 3 seeds.
* cold items: Recall@20 of the held-out items (protocol cold_item) for the GNN and the
  fused scorer with fp32 and int8 tables and for the distilled student.
* int8 encoder: every item text encoded by the fp32 and the int8 encoder (texts/s, median of
  repeats, each reference measured in the same run), cosine of the int8 vectors to the fp32
  ones, and cold-item Recall@20 of text kNN with each encoder's vectors.

    python -m benchmarks.bench_lightweight [--seeds 2020 2021 2022] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np

from benchmarks.common import median, print_table, warehouse_tables, write_json


def _fused(data, model, ease, precision: str, weights=None):
    import torch

    from recsys_dagster.core.fusion import FusedScorer, FusionWeights

    users, items = model.user_item_embeddings()
    return FusedScorer(users, items, torch.as_tensor(data.user_text), torch.as_tensor(data.item_text),
                       torch.as_tensor(np.diff(data.train_csr[0])),
                       torch.as_tensor(np.bincount(data.train_items, minlength=data.n_items)),
                       weights or FusionWeights(), item_item=ease, precision=precision)


def tables_part(tables, seeds) -> list[dict]:
    from benchmarks.bench_accuracy import tuned_hyperparameters

    tuned = tuned_hyperparameters()["kgtextgnn"]
    runs = [_one_seed(tables, tuned, seed) for seed in seeds]
    return runs


def _one_seed(tables, tuned: dict, seed: int) -> dict:
    from recsys_dagster.core.distill import DistillConfig, distill
    from recsys_dagster.core.evaluation import EvalConfig, scorer_of
    from recsys_dagster.core.fusion import tune_fusion
    from recsys_dagster.core.metrics import full_ranking
    from recsys_dagster.core.quantize import int8_scores, quantize_rows
    from recsys_dagster.core.train import TrainConfig, train
    from recsys_dagster.core.training_data import data_for_split, make_split
    from recsys_dagster.core.tuning import tune_closed_form

    base = replace(TrainConfig(seed=seed, split_seed=seed, device="cpu"), **tuned)
    data = data_for_split(tables, make_split(tables, base), base)
    model = train(data, base, log=lambda m: None).model

    def test(fn):
        return full_ranking(fn, data.test_csr, data.train_plus_valid_csr(), data.n_items, ks=(10,))["ndcg@10"]

    def valid(fn):
        return full_ranking(fn, data.valid_csr, data.train_csr, data.n_items, ks=(10,))["ndcg@10"]

    u, i = model.user_item_embeddings()
    qu, qi = quantize_rows(u), quantize_rows(i)
    ease, _, _ = tune_closed_form("ease", data)  # λ on validation, as in the evaluation
    grid = EvalConfig()  # the evaluation's own fusion grid (β x γ on validation)
    fp32 = _fused(data, model, ease, "fp32")
    fp32.weights, _ = tune_fusion(fp32, valid, grid.fusion_betas, grid.fusion_gammas)
    int8 = _fused(data, model, ease, "int8", fp32.weights)
    student = distill(fp32, data.train_csr, data.n_items, DistillConfig(seed=seed), log=print)
    teacher_params = sum(p.numel() for p in model.parameters())
    run = {"seed": seed, "gnn_fp32": test(scorer_of(model)), "gnn_int8": test(lambda ub: int8_scores(qu, qi, ub)),
           "fused_fp32": test(fp32), "fused_int8": test(int8), "student": test(student.score),
           "student_valid": valid(student.score), "fused_valid": valid(fp32),
           "table_bytes_fp32": fp32.table_bytes(), "table_bytes_int8": int8.table_bytes(),
           "student_params": student.parameters(), "gnn_params": teacher_params,
           "fused_state": teacher_params + data.n_items ** 2 + int(fp32.table_bytes() // 4),
           "distill_seconds": student.seconds,
           "score_all_s_fused": _time_all(fp32, data), "score_all_s_student": _time_all(student.score, data)}
    print(run, flush=True)
    return run


def cold_part(tables, seeds) -> list[dict]:
    """Cold-item Recall@20 (protocol cold_item: 10% of items held out of training, ranked
    among themselves) of the GNN and the fused scorer with fp32 and int8 tables, and of the
    student distilled from that fused scorer; random for scale."""
    from benchmarks.bench_accuracy import tuned_hyperparameters

    tuned = tuned_hyperparameters()["kgtextgnn"]
    return [_cold_seed(tables, tuned, seed) for seed in seeds]


def _cold_seed(tables, tuned: dict, seed: int) -> dict:
    import torch

    from recsys_dagster.core.distill import DistillConfig, distill
    from recsys_dagster.core.evaluation import EvalConfig, ProtocolResult, add_rows, scorer_of
    from recsys_dagster.core.fusion import tune_fusion
    from recsys_dagster.core.gnn_data import implicit_interactions
    from recsys_dagster.core.metrics import full_ranking
    from recsys_dagster.core.quantize import int8_scores, quantize_rows
    from recsys_dagster.core.splits import cold_item_split
    from recsys_dagster.core.train import TrainConfig, train
    from recsys_dagster.core.training_data import data_for_split
    from recsys_dagster.core.tuning import tune_closed_form

    base = replace(TrainConfig(seed=seed, split_seed=seed, device="cpu"), **tuned)
    positives = implicit_interactions(tables.interactions, base.min_rating)
    split, _ = cold_item_split(positives, share=0.1, seed=seed, base=base.split_spec().apply(positives))
    data = data_for_split(tables, split, base)
    model = train(data, base, log=lambda m: None).model
    ease, _, _ = tune_closed_form("ease", data)
    grid = EvalConfig()
    fp32 = _fused(data, model, ease, "fp32")
    fp32.weights, _ = tune_fusion(fp32, lambda fn: full_ranking(fn, data.valid_csr, data.train_csr, data.n_items,
                                                                ks=(10,))["ndcg@10"],
                                  grid.fusion_betas, grid.fusion_gammas)
    int8 = _fused(data, model, ease, "int8", fp32.weights)
    student = distill(fp32, data.train_csr, data.n_items, DistillConfig(seed=seed), log=lambda m: None)
    u, i = model.user_item_embeddings()
    qu, qi = quantize_rows(u), quantize_rows(i)
    has_train = np.bincount(data.train_items, minlength=data.n_items) > 0
    cand = np.flatnonzero(~has_train & (np.bincount(data.test_csr[1], minlength=data.n_items) > 0))
    rand = torch.rand(data.n_users, data.n_items, generator=torch.Generator().manual_seed(seed))

    def cold(fn):
        return add_rows(ProtocolResult(), "cold_item", "x", fn, data, grid, cand)["recall@20"]

    run = {"seed": seed, "cold_items": len(cand), "random": cold(lambda ub: rand[ub]),
           "gnn_fp32": cold(scorer_of(model)), "gnn_int8": cold(lambda ub: int8_scores(qu, qi, ub)),
           "fused_fp32": cold(fp32), "fused_int8": cold(int8), "student": cold(student.score)}
    print(run, flush=True)
    return run


def _time_all(score, data, repeats: int = 3) -> float:
    """Median seconds to rank every user's top 20 unseen items."""
    from recsys_dagster.core.fusion import top_k

    users = np.arange(data.n_users)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        top_k(score, users, data.train_plus_valid_csr(), data.n_items, 20)
        times.append(time.perf_counter() - t0)
    return median(times)


def encoder_part(tables, repeats: int, seed: int) -> dict:
    import duckdb
    import torch

    from recsys_dagster.core.baselines import TextKNN
    from recsys_dagster.core.evaluation import EvalConfig, ProtocolResult, add_rows
    from recsys_dagster.core.gnn_data import implicit_interactions
    from recsys_dagster.core.splits import cold_item_split
    from recsys_dagster.core.text import EncoderConfig, TextEncoder
    from recsys_dagster.core.train import TrainConfig
    from recsys_dagster.core.training_data import data_for_split
    from recsys_dagster.settings import load_settings

    conn = duckdb.connect(load_settings().warehouse, read_only=True)
    frame = conn.execute("SELECT item_id, text FROM item_text_embeddings ORDER BY item_id").df()
    conn.close()
    texts = frame.text.tolist()
    out: dict = {"texts": len(texts), "threads": torch.get_num_threads()}
    vectors, seconds = {}, {}
    encoders = {"fp32": TextEncoder(EncoderConfig(device="cpu")),
                "int8": TextEncoder(EncoderConfig(device="cpu", quantize="int8"))}
    for enc in encoders.values():
        enc.encode(texts[:64])  # load + warm up
    for _ in range(repeats):  # interleaved: both see the same machine state
        for name, enc in encoders.items():
            t0 = time.perf_counter()
            vectors[name] = enc.encode(texts)
            seconds.setdefault(name, []).append(time.perf_counter() - t0)
    cos = (vectors["fp32"] * vectors["int8"]).sum(axis=1)
    out.update({f"{n}_texts_per_s": len(texts) / median(s) for n, s in seconds.items()})
    out["speedup"] = out["int8_texts_per_s"] / out["fp32_texts_per_s"]
    out["cosine_mean"], out["cosine_min"] = float(cos.mean()), float(cos.min())
    cfg = TrainConfig(seed=seed, split_seed=seed, device="cpu")
    positives = implicit_interactions(tables.interactions, cfg.min_rating)
    split, _ = cold_item_split(positives, share=0.1, seed=seed, base=cfg.split_spec().apply(positives))
    for name, v in vectors.items():
        data = data_for_split(replace(tables, item_text=(frame.item_id.to_numpy(), v)), split, cfg)
        has_train = np.bincount(data.train_items, minlength=data.n_items) > 0
        cand = np.flatnonzero(~has_train & (np.bincount(data.test_csr[1], minlength=data.n_items) > 0))
        out[f"cold_text_knn_recall@20_{name}"] = add_rows(ProtocolResult(), "cold_item", "text_knn",
                                                          TextKNN(data.user_text, data.item_text), data,
                                                          EvalConfig(), cand)["recall@20"]
    out["cold_ratio"] = out["cold_text_knn_recall@20_int8"] / out["cold_text_knn_recall@20_fp32"]
    print(out, flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[2020, 2021, 2022])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    tables = warehouse_tables()
    enc = encoder_part(tables, args.repeats, args.seeds[0])
    runs = tables_part(tables, args.seeds)
    colds = cold_part(tables, args.seeds)

    def stat(key):
        return f"{np.mean([r[key] for r in runs]):.4f} ± {np.std([r[key] for r in runs]):.4f}"

    table = []
    for part in ("gnn", "fused"):
        ratio = [r[f"{part}_int8"] / r[f"{part}_fp32"] for r in runs]
        table.append({"scorer": part, "NDCG@10 fp32": stat(f"{part}_fp32"), "NDCG@10 int8": stat(f"{part}_int8"),
                      "retention": f"{np.mean(ratio):.4f} (min {np.min(ratio):.4f})",
                      "table memory int8/fp32": f"{runs[0]['table_bytes_int8'] / runs[0]['table_bytes_fp32']:.3f}"})
    print_table(table, f"int8 embedding tables, protocol A, seeds {args.seeds}")
    ratio = [r["student"] / r["fused_fp32"] for r in runs]
    student_table = [{"model": "teacher: fused (GNN + text + EASE)", "NDCG@10": stat("fused_fp32"),
                      "retention": "1", "parameters": f"{runs[0]['fused_state']:,} (GNN {runs[0]['gnn_params']:,})",
                      "score every user (s, median)": f"{np.median([r['score_all_s_fused'] for r in runs]):.3f}"},
                     {"model": "student: MF dim 16, distilled", "NDCG@10": stat("student"),
                      "retention": f"{np.mean(ratio):.4f} (min {np.min(ratio):.4f})",
                      "parameters": f"{runs[0]['student_params']:,} ({runs[0]['student_params'] / runs[0]['gnn_params']:.1%}"
                                    f" of the GNN's, {runs[0]['student_params'] / runs[0]['fused_state']:.1%} of the fused)",
                      "score every user (s, median)": f"{np.median([r['score_all_s_student'] for r in runs]):.3f}"}]
    print_table(student_table, "distillation")

    def cold_stat(key):
        return f"{np.mean([r[key] for r in colds]):.4f} ± {np.std([r[key] for r in colds]):.4f}"

    cold_table = [{"scorer": name, "cold Recall@20": cold_stat(key),
                   "vs fp32": "-" if ref is None else f"{np.mean([r[key] / r[ref] for r in colds]):.3f}"}
                  for name, key, ref in (("random", "random", None), ("GNN fp32", "gnn_fp32", None),
                                         ("GNN int8 tables", "gnn_int8", "gnn_fp32"),
                                         ("fused fp32 (teacher)", "fused_fp32", None),
                                         ("fused int8 tables", "fused_int8", "fused_fp32"),
                                         ("student (distilled from fused)", "student", "fused_fp32"))]
    print_table(cold_table, f"cold items (protocol cold_item, 10% of items held out), seeds {args.seeds}")
    print_table([{k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in enc.items()}], "int8 text encoder")
    write_json("lightweight", {"seeds": args.seeds, "table": table, "student_table": student_table, "runs": runs,
                               "cold_table": cold_table, "cold_runs": colds, "encoder": enc})


if __name__ == "__main__":
    main()
