"""Command-line helpers: ``python -m recsys_dagster.cli span|summary|replay|forget-user|token|retokenize``."""

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
    "user_behavior_embeddings", "fused_recommendations", "evaluation_metrics", "evaluation_comparisons",
    "model_hyperparameters", "forgotten_users", "privacy_audit",
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


def forget_user(user_ids: list[str], compact: bool = True) -> None:
    """Forget users everywhere (see :mod:`recsys_dagster.core.privacy.forget`); ids may be raw
    (tokenized with the configured key) or tokens."""
    from pathlib import Path

    from recsys_dagster.core.model_store import ModelStore
    from recsys_dagster.core.privacy.forget import forget_in_warehouse
    from recsys_dagster.core.privacy.pseudonyms import stored_form
    from recsys_dagster.settings import pseudonymizer

    s = load_settings()
    if not Path(s.warehouse).is_file():
        raise SystemExit(f"no warehouse at {s.warehouse}: nothing to forget (set RECSYS_HOME / RECSYS_WAREHOUSE)")
    report = forget_in_warehouse(s.warehouse, stored_form(user_ids, pseudonymizer()), ModelStore(s.models_dir),
                                 s.tracking_uri, (Path(s.home) / "ray_jobs",), compact=compact)
    print(report.summary())
    if report.already_forgotten:
        print(f"{report.already_forgotten} of them had been forgotten before")
    print("next: daily_refresh (or make rebuild) trains and publishes a model without them")


def token(user_ids: list[str]) -> None:
    """Print each user id's stored form (its token under the configured key, or the id when
    there is none) and its tombstone digest (what forgotten_users and privacy_audit hold)."""
    from recsys_dagster.core.privacy.forget import tombstone_of
    from recsys_dagster.core.privacy.pseudonyms import stored_form
    from recsys_dagster.settings import pseudonymizer

    pseudo = pseudonymizer()
    if pseudo is None:
        print("note: no pseudonymization key (RECSYS_PSEUDONYMIZE_KEY[_FILE]): ids are stored raw", file=sys.stderr)
    print("user_id\tstored_as\ttombstone")
    for u, stored in zip(user_ids, stored_form(user_ids, pseudo), strict=True):
        print(f"{u}\t{stored}\t{tombstone_of(stored)}")


def retokenize() -> None:
    """Move the warehouse to the configured key (or to raw ids when none is set); the old key
    comes from RECSYS_PSEUDONYMIZE_OLD_KEY / RECSYS_PSEUDONYMIZE_OLD_KEY_FILE (unset: the
    warehouse held raw ids)."""
    from pathlib import Path

    import duckdb
    from filelock import FileLock

    from recsys_dagster.core.datasets import open_dataset
    from recsys_dagster.core.model_store import ModelStore
    from recsys_dagster.core.privacy.forget import compact_warehouse
    from recsys_dagster.core.privacy.pseudonyms import Pseudonymizer, read_key
    from recsys_dagster.core.privacy.rekey import rekey, source_user_ids
    from recsys_dagster.settings import pseudonymizer

    s = load_settings()
    old_key = read_key(name="RECSYS_PSEUDONYMIZE_OLD_KEY")
    old, new = (Pseudonymizer(old_key) if old_key else None), pseudonymizer()
    raw = open_dataset(s.dataset, mirror_dir=s.data_dir, download_dir=s.download_dir,
                       verify_checksums=s.verify_checksums, snapshot_date=s.snapshot_date)
    ids = source_user_ids(raw, s.landing if s.source == "landing" else None)
    with FileLock(f"{s.warehouse}.lock", timeout=1800):
        conn = duckdb.connect(s.warehouse)
        try:
            report = rekey(conn, ids, old, new, ModelStore(s.models_dir), s.tracking_uri)
        finally:
            conn.close()
        if report.old_space != report.new_space and Path(s.warehouse).is_file():
            compact_warehouse(s.warehouse)
    if report.old_space == report.new_space:
        print(f"nothing to do: the warehouse is already in id space {report.new_space}")
        return
    print(f"re-tokenized {report.old_space} -> {report.new_space}: {report.ids_mapped} source ids mapped, rows "
          f"rewritten {sum(report.rows_rewritten.values())}, unmappable rows deleted {report.rows_deleted_unmapped}, "
          f"tombstones left in the old form {report.tombstones_unmapped}, model versions invalidated "
          f"{report.versions_invalidated}")
    print("next: daily_refresh (or make rebuild) trains a model in the new id space")


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
    fu = sub.add_parser("forget-user", help="forget users: every table, model version and MLflow run; tombstone; audit")
    fu.add_argument("user_ids", nargs="+", metavar="USER_ID", help="raw ids (tokenized with the key) or tokens")
    fu.add_argument("--no-compact", action="store_true", help="skip rewriting the DuckDB file afterwards")
    tk = sub.add_parser("token", help="print user ids' pseudonyms under the configured key and tombstone digests")
    tk.add_argument("user_ids", nargs="+", metavar="USER_ID")
    sub.add_parser("retokenize", help="move the warehouse to the configured key (old key: "
                                      "RECSYS_PSEUDONYMIZE_OLD_KEY[_FILE])")
    args = parser.parse_args(argv)
    from recsys_dagster.core.privacy import PrivacyError

    try:
        return _run(args)
    except PrivacyError as exc:
        raise SystemExit(f"error: {exc}") from None


def _run(args) -> int:
    if args.command == "forget-user":
        forget_user(args.user_ids, compact=not args.no_compact)
    elif args.command == "token":
        token(args.user_ids)
    elif args.command == "retokenize":
        retokenize()
    elif args.command == "replay":
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
