"""Check a pseudonymized warehouse against a plain one built from the same dataset.

    RECSYS_HOME=data/private RECSYS_PSEUDONYMIZE_KEY=... make demo      # the pseudonymized build
    python -m benchmarks.privacy_check --plain data --private data/private

Reports (JSON + table): every column holding user ids in the private build (personal tables,
the KG's user nodes, each model version's id map and training pairs, serving snapshots,
MLflow artifacts) and whether any value is not a token; whether any raw id of the dataset
appears there; and the evaluation's NDCG@10 per model in both builds. Tokens change the
hash split (it hashes the ids), so the two builds grade on different, equally sized test
sets: equal accuracy means equal within the seed spread, not bit-equal.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import duckdb
import pandas as pd

from benchmarks.common import print_table, write_json


def _id_columns(home: Path) -> dict[str, pd.Series]:
    """Every stored user-id value of a build, by where it is stored."""
    import torch

    from recsys_dagster.core import warehouse as wh

    out: dict[str, pd.Series] = {}
    conn = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    try:
        for table in wh.PERSONAL_TABLES:
            if wh.table_exists(conn, table):
                out[f"table {table}.user_id"] = conn.execute(f"SELECT user_id FROM {table} WHERE user_id IS NOT NULL").df().user_id
        out["table kg_entities (user nodes).name"] = conn.execute(
            "SELECT name FROM kg_entities WHERE kind = 'user'").df().name
    finally:
        conn.close()
    for path in sorted(home.rglob("model.pt")):
        out[f"file {path.relative_to(home)} ids.user"] = pd.Series(torch.load(path, weights_only=True)["ids"]["user"])
    for path in sorted(home.rglob("*.parquet")):
        frame = pd.read_parquet(path)
        if "user_id" in frame.columns:
            out[f"file {path.relative_to(home)} user_id"] = frame.user_id.dropna().astype(str)
    return out


def _ndcg(home: Path) -> dict[str, float]:
    conn = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    try:
        run = conn.execute("SELECT run_id FROM evaluation_metrics ORDER BY created_at DESC LIMIT 1").fetchone()[0]
        rows = conn.execute("SELECT model, value FROM evaluation_metrics WHERE run_id = ? AND protocol = 'A' "
                            "AND slice = 'all' AND metric = 'ndcg' AND k = 10", [run]).fetchall()
        cold = conn.execute("SELECT model, value FROM evaluation_metrics WHERE run_id = ? AND protocol = 'cold_item' "
                            "AND slice = 'all' AND metric = 'recall' AND k = 20", [run]).fetchall()
    finally:
        conn.close()
    return {**{m: v for m, v in rows}, **{f"cold_item {m} recall@20": v for m, v in cold}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--plain", default="data")
    parser.add_argument("--private", required=True)
    args = parser.parse_args()
    from recsys_dagster.core.datasets import open_dataset
    from recsys_dagster.core.privacy.pseudonyms import is_token
    from recsys_dagster.core.privacy.rekey import source_user_ids
    from recsys_dagster.settings import load_settings

    plain, private = Path(args.plain), Path(args.private)
    s = load_settings()
    raw_ids = set(source_user_ids(open_dataset(s.dataset, mirror_dir=s.data_dir, download_dir=s.download_dir)))
    places = []
    for where, values in _id_columns(private).items():
        values = values.astype(str)
        places.append({"where": where, "values": len(values), "not_tokens": int((~values.map(is_token)).sum()),
                       "raw_ids": int(values.isin(raw_ids).sum())})
    print_table(places, f"user ids stored in {private} (must all be tokens)")
    a, b = _ndcg(plain), _ndcg(private)
    acc = [{"model": m, "plain": f"{a[m]:.4f}", "pseudonymized": f"{b[m]:.4f}", "ratio": f"{b[m] / a[m]:.3f}"}
           for m in a if m in b and a[m]]
    print_table(acc, "evaluation (protocol A NDCG@10; cold items Recall@20): plain vs pseudonymized build")
    from recsys_dagster.core.evaluation import is_own

    def standing(scores):  # fused / best peer of the same build: comparable across the two splits
        peers = {m: v for m, v in scores.items() if not is_own(m) and not m.startswith("cold_item")}
        best = max(peers, key=peers.get)
        return {"best_peer": best, "fused_over_best_peer": scores["fused"] / peers[best]}

    ok = all(p["not_tokens"] == 0 and p["raw_ids"] == 0 for p in places)
    write_json("privacy_check", {"places": places, "accuracy": acc, "ok": ok, "raw_ids_checked": len(raw_ids),
                                 "standing": {"plain": standing(a), "pseudonymized": standing(b)}})
    print(f"privacy-check: {'ok' if ok else 'FAILED'}: {sum(p['values'] for p in places)} stored user ids in "
          f"{len(places)} places, all tokens: {ok}")


if __name__ == "__main__":
    main()
