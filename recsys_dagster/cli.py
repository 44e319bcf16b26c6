"""Small command-line helpers used by the Makefile: ``python -m recsys_dagster.cli span|summary``."""

import argparse
import sys

from recsys_dagster.settings import load_settings


def _dataset():
    from recsys_dagster.core.datasets import open_dataset

    s = load_settings()
    return open_dataset(s.dataset, mirror_dir=s.data_dir, download_dir=s.download_dir,
                        verify_checksums=s.verify_checksums, snapshot_date=s.snapshot_date)


def span() -> None:
    """Print the partition range of the configured dataset as ``START...END``."""
    sp = _dataset().span()
    print(f"{sp.start.isoformat()}...{sp.end.isoformat()}")


SUMMARY_TABLES = [
    "items", "users", "raw_interactions", "cleaned_interactions", "interactions_quarantine", "metadata_quarantine",
    "kg_entities", "kg_relations", "kg_triples", "text_embedding_cache", "item_text_embeddings",
    "user_behavior_embeddings", "fused_recommendations", "evaluation_metrics",
]


def summary() -> None:
    """Print row counts of every warehouse table (and the quarantine reasons)."""
    import duckdb

    s = load_settings()
    conn = duckdb.connect(s.warehouse, read_only=True)
    existing = {r[0] for r in conn.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    print(f"\nwarehouse {s.warehouse} (dataset {s.dataset})")
    print(f"{'table':<28}{'rows':>12}")
    for t in SUMMARY_TABLES:
        if t in existing:
            print(f"{t:<28}{conn.execute(f'SELECT count(*) FROM {t}').fetchall()[0][0]:>12,}")
    if "interactions_quarantine" in existing:
        rows = conn.execute(
            "SELECT reason, count(*) FROM interactions_quarantine GROUP BY 1 ORDER BY 2 DESC LIMIT 10"
        ).fetchall()
        for reason, n in rows:
            print(f"  quarantined: {n:>8,}  {reason}")
    conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recsys_dagster.cli")
    parser.add_argument("command", choices=["span", "summary"])
    args = parser.parse_args(argv)
    {"span": span, "summary": summary}[args.command]()
    return 0


if __name__ == "__main__":
    sys.exit(main())
