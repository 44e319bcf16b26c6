"""Command-line helpers: ``python -m recsys_dagster.cli span|summary|replay``."""

import argparse
import sys

from recsys_dagster.settings import load_settings


def _dataset():
    return load_settings().open_dataset()


def span(tags: bool = False, day: str | None = None) -> None:
    """Print the partition range as ``START...END`` or, with ``tags``, as the JSON run tags of
    a single-run job over it (``day``: that one partition; empty: the last one)."""
    import datetime as dt
    import json

    from recsys_dagster.defs.partitions import event_partitions, partition_key_of_day

    s = load_settings()
    dataset_span = _dataset().span()
    parts = event_partitions(dataset_span, s.partitions_end, s.partition_grain)
    first, last = parts.get_first_partition_key(), parts.get_last_partition_key()
    if first is None or last is None:
        raise SystemExit(f"{s.dataset}: no partition has started yet (dataset span {dataset_span.start}..{dataset_span.end}, "
                         f"RECSYS_PARTITIONS_END={s.partitions_end}); check the dataset's dates or snapshot_date")
    if not tags:
        print(f"{first}...{last}")
        return
    if day is not None:
        key = partition_key_of_day(parts, dt.date.fromisoformat(day)) if day else last
        if not parts.has_partition_key(key):
            raise SystemExit(f"no partition {key!r}: partitions run {first}...{last}")
        print(json.dumps({"dagster/partition": key}))
        return
    print(json.dumps({"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}))


SUMMARY_TABLES = [
    "items", "users", "raw_interactions", "cleaned_interactions", "interactions_quarantine", "metadata_quarantine",
    "kg_entities", "kg_relations", "kg_triples", "text_embedding_cache", "item_text_embeddings",
    "user_behavior_embeddings", "fused_recommendations", "evaluation_metrics", "model_hyperparameters",
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
    if "evaluation_metrics" in existing:
        run = conn.execute("SELECT run_id FROM evaluation_metrics ORDER BY created_at DESC LIMIT 1").fetchall()
        if run:
            ndcg = conn.execute("SELECT protocol, model, value FROM evaluation_metrics WHERE run_id = ? AND slice = 'all' "
                                "AND metric = 'ndcg' AND k = 10 ORDER BY protocol, value DESC", [run[0][0]]).fetchall()
            print("\nlatest evaluation, NDCG@10 (test):")
            for protocol, model, value in ndcg:
                print(f"  {protocol:<10}{model:<26}{value:.4f}")
    conn.close()

    from recsys_dagster.core.model_store import ModelStore

    store = ModelStore(s.models_dir)
    latest, published = store.latest(), store.published()
    if latest is not None:
        gate = latest.gate or {}
        print(f"\nmodel versions: latest {latest.version} (gate: "
              f"{'passed' if gate.get('passed') else gate.get('failures', 'not evaluated')}), "
              f"published {published.version if published else 'none'}")


def replay(days: int = 1, day: str | None = None, reset: bool = False) -> list[str]:
    """Drop the next ``days`` event days (or exactly ``day``) of the dataset into the
    landing folder, as if they had just arrived. Returns the landed files."""
    import datetime as dt
    import shutil
    from pathlib import Path

    from recsys_dagster.core import landing

    s = load_settings()
    dataset = _dataset()
    if reset and Path(s.landing).is_dir():
        shutil.rmtree(s.landing)
        print(f"emptied {s.landing}")
    rows, lines = landing.replay_days(dataset), landing.source_lines(dataset)
    targets = [dt.date.fromisoformat(day)] if day else landing.next_days(dataset, s.landing, days, rows)
    landed = []
    for d in targets:
        path = landing.land_day(dataset, s.landing, d, rows, lines)
        if path is None:
            print(f"{d}: no events in {dataset.name}; nothing landed")
            continue
        print(f"{d}: landed {len(rows[d]):,} events -> {path}")
        landed.append(str(path))
    if not targets:
        print(f"nothing left to replay: every event day of {dataset.name} is in {s.landing}")
    if s.source != "landing":
        print("note: ingestion reads landed files only with RECSYS_SOURCE=landing", file=sys.stderr)
    return landed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recsys_dagster.cli")
    sub = parser.add_subparsers(dest="command", required=True)
    sp = sub.add_parser("span", help="print the partition range START...END of the configured dataset")
    sp.add_argument("--tags", action="store_true", help="print Dagster run tags (JSON) for a job over the range")
    sp.add_argument("--day", help="with --tags: one partition instead of the range ('' = the last one)")
    sub.add_parser("summary", help="row counts of every warehouse table")
    rc = sub.add_parser("run-config", help="print a job's run config as JSON (for `dagster job execute -c`)")
    rc.add_argument("job", choices=["daily_refresh"])
    rp = sub.add_parser("replay", help="drop the next day(s) of the dataset into the landing folder")
    rp.add_argument("--days", type=int, default=1, help="how many event days to land (default 1)")
    rp.add_argument("--day", help="land exactly this day (YYYY-MM-DD)")
    rp.add_argument("--reset", action="store_true", help="empty the landing folder first")
    args = parser.parse_args(argv)
    if args.command == "replay":
        replay(args.days, args.day, args.reset)
    elif args.command == "run-config":
        import json

        from recsys_dagster.defs.jobs import DAILY_REFRESH_CONFIG

        print(json.dumps(DAILY_REFRESH_CONFIG, indent=2))
    elif args.command == "span":
        span(args.tags, args.day)
    else:
        summary()
    return 0


if __name__ == "__main__":
    sys.exit(main())
