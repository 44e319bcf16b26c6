"""Encoder throughput of our asset path (text building + content-addressed cache + encode)
against a plain ``SentenceTransformer.encode`` on the same texts in the same run, and the
time of a no-change re-run (which must encode nothing).

    python benchmarks/bench_text_encoder.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import duckdb

from benchmarks.common import median, print_table, write_json


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--items", type=int, default=600, help="first N items of the catalogue (0: all)")
    args = parser.parse_args()
    from sentence_transformers import SentenceTransformer

    from recsys_dagster.core.text import (
        EncoderConfig,
        TextEncoder,
        encode_cached,
        item_texts,
        resolve_model_path,
    )
    from recsys_dagster.settings import load_settings

    conn = duckdb.connect(load_settings().warehouse, read_only=True)
    items = conn.execute("SELECT * FROM items ORDER BY item_id").df()
    conn.close()
    if args.items:
        items = items.head(args.items)
    texts = item_texts(items).tolist()
    encoder = TextEncoder(EncoderConfig())
    plain = SentenceTransformer(resolve_model_path("all-MiniLM-L6-v2"), device=encoder.device)
    plain.max_seq_length = encoder.model.max_seq_length
    ours_s, plain_s, rerun_s = [], [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        plain.encode(texts, batch_size=64, normalize_embeddings=True, show_progress_bar=False)
        plain_s.append(time.perf_counter() - t0)
        cache = duckdb.connect()  # empty cache: everything is encoded
        t0 = time.perf_counter()
        _, encoded, _ = encode_cached(cache, encoder, item_texts(items).tolist())
        ours_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        _, encoded_again, reused = encode_cached(cache, encoder, item_texts(items).tolist())
        rerun_s.append(time.perf_counter() - t0)
        assert encoded_again == 0 and reused == encoded
    n = len(texts)
    rows = [
        {"path": "plain SentenceTransformer.encode", "median_s": median(plain_s), "texts_per_s": n / median(plain_s)},
        {"path": "ours (build text + cache + encode)", "median_s": median(ours_s), "texts_per_s": n / median(ours_s)},
        {"path": "ours, no-change re-run (0 encoded)", "median_s": median(rerun_s), "texts_per_s": n / median(rerun_s)},
    ]
    ratio = median(plain_s) / median(ours_s)
    print_table(rows, f"{n} item texts, model {encoder.model_id}, device {encoder.device}")
    print(f"throughput ours / plain = {ratio:.3f} (target >= 0.9)")
    write_json("text_encoder", {"texts": n, "rows": rows, "ours_over_plain": ratio, "device": encoder.device,
                                "raw_seconds": {"plain": plain_s, "ours": ours_s, "rerun": rerun_s}})


if __name__ == "__main__":
    main()
