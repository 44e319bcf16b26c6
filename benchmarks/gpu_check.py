"""GPU check: CUDA training (LightGCN, KGTextGNN; AMP bf16) and the text-embedding path
(fp16 sentence-transformers) on ML-100K, from a bundle exported on a CPU machine.

    python -m benchmarks.gpu_check --export .gpu/bundle.pt     # on the CPU machine (needs the warehouse)
    python -m benchmarks.gpu_check --bundle .gpu/bundle.pt --model .gpu/minilm --out results.json   # on the GPU
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import numpy as np
import torch


def export(path: str, model_dir: str) -> None:
    import shutil
    from pathlib import Path

    import duckdb
    from safetensors.torch import load_file, save_file

    from recsys_dagster.core.text import item_texts, resolve_model_path
    from recsys_dagster.core.train import TrainConfig
    from recsys_dagster.core.training_data import data_for_split, make_split, read_tables
    from recsys_dagster.settings import load_settings

    conn = duckdb.connect(load_settings().warehouse, read_only=True)
    tables = read_tables(conn)
    items = conn.execute("SELECT * FROM items ORDER BY item_id").df()
    conn.close()
    data = data_for_split(tables, make_split(tables, TrainConfig()), TrainConfig())
    fields = {f.name: getattr(data, f.name) for f in dataclasses.fields(data)}
    texts = item_texts(items).tolist()
    ids, emb = tables.item_text
    torch.save({"data": fields, "texts": texts, "cpu_embeddings": emb}, path)
    src = Path(resolve_model_path("all-MiniLM-L6-v2"))
    dst = Path(model_dir)
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("model.safetensors", "*.onnx", "openvino", "onnx", "*.bin", "*.h5"))
    weights = {k: v.half() for k, v in load_file(str(src / "model.safetensors")).items()}
    save_file(weights, str(dst / "model.safetensors"), metadata={"format": "pt"})
    print(f"exported {path} and {dst}")


def check(bundle: str, model_dir: str, out: str) -> None:
    from sentence_transformers import SentenceTransformer

    from recsys_dagster.core.gnn_data import TrainData
    from recsys_dagster.core.text import EncoderConfig, TextEncoder
    from recsys_dagster.core.train import TrainConfig, train

    assert torch.cuda.is_available(), "no CUDA device"
    # our own bundle, written by --export from the same checkout (numpy arrays need pickle);
    # model weights anywhere in recsys_dagster are loaded with weights_only=True
    payload = torch.load(bundle, weights_only=False)
    data = TrainData(**payload["data"])
    report = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__}
    for name, amp in (("lightgcn", False), ("lightgcn", True), ("kgtextgnn", False), ("kgtextgnn", True), ("mf", True)):
        cfg = TrainConfig(model=name, device="cuda", amp=amp, max_epochs=6, min_epochs=6, eval_every=10**6)
        try:
            res = train(data, cfg, log=lambda m: None)
            report[f"{name}_amp{int(amp)}_s_per_epoch"] = float(np.median([h["epoch_seconds"] for h in res.history[1:]]))
            report[f"{name}_amp{int(amp)}_valid_ndcg@10_after_6"] = res.best_valid["ndcg@10"]
        except Exception as exc:  # record and go on: the point is to find what breaks on CUDA
            report[f"{name}_amp{int(amp)}_error"] = f"{type(exc).__name__}: {exc}"[:500]
        print(json.dumps(report), flush=True)
    amp_ok = "kgtextgnn_amp1_error" not in report
    t0 = time.perf_counter()
    res = train(data, TrainConfig(device="cuda", amp=amp_ok), log=lambda m: None)
    report["kgtextgnn_full"] = {"amp": amp_ok, "seconds": time.perf_counter() - t0, "epochs": res.epochs_run, "best_epoch": res.best_epoch,
                                "valid_ndcg@10": res.best_valid["ndcg@10"], "test_ndcg@10": res.test["ndcg@10"],
                                "test_recall@10": res.test["recall@10"], "s_per_epoch": res.seconds_per_epoch}
    texts = payload["texts"]
    enc = TextEncoder(EncoderConfig(model=model_dir, device="cuda", batch_size=256))
    plain = SentenceTransformer(model_dir, device="cuda")
    plain.max_seq_length = enc.model.max_seq_length
    ours_t, plain_t = [], []
    for _ in range(3):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        vec = enc.encode(texts)
        torch.cuda.synchronize()
        ours_t.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        plain.encode(texts, batch_size=256, normalize_embeddings=True, show_progress_bar=False)
        torch.cuda.synchronize()
        plain_t.append(time.perf_counter() - t0)
    cos = (vec * payload["cpu_embeddings"]).sum(1)
    report["encoder"] = {"texts": len(texts), "ours_fp16_texts_per_s": len(texts) / float(np.median(ours_t)),
                         "plain_fp32_texts_per_s": len(texts) / float(np.median(plain_t)),
                         "min_cosine_vs_cpu_fp32": float(cos.min()), "mean_cosine_vs_cpu_fp32": float(cos.mean()),
                         "dim": int(vec.shape[1]), "max_norm_error": float(np.abs(np.linalg.norm(vec, axis=1) - 1).max())}
    print(json.dumps(report, indent=2))
    with open(out, "w") as f:
        json.dump(report, f, indent=2)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--export")
    p.add_argument("--bundle")
    p.add_argument("--model", default=".gpu/minilm")
    p.add_argument("--out", default="gpu_check.json")
    a = p.parse_args()
    if a.export:
        export(a.export, a.model)
    else:
        check(a.bundle, a.model, a.out)
