"""Ingestion through Dagster on synthetic data with broken rows and on real MovieLens."""

import datetime as dt

import dagster as dg
import duckdb
import pandas as pd
import pytest

from recsys_dagster.definitions import build_definitions
from tests.conftest import DATA_DIR, make_settings, requires_ml100k, requires_mlsmall, run_assets


def _counts(warehouse: str) -> dict[str, int]:
    conn = duckdb.connect(warehouse, read_only=True)
    out = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0]
           for t in ("raw_interactions", "cleaned_interactions", "interactions_quarantine")}
    conn.close()
    return out


def _export(warehouse: str, table: str) -> pd.DataFrame:
    conn = duckdb.connect(warehouse, read_only=True)
    frame = conn.execute(f"SELECT * FROM {table} ORDER BY ALL").df()
    conn.close()
    return frame


def _break(folder):
    """Append broken rows of many kinds to a synthetic interactions.csv."""
    good = pd.read_csv(folder / "interactions.csv").iloc[0]
    t = int(good.timestamp)
    bad_lines = [
        f"{good.user_id},{good.item_id},{t},{good.rating}",  # exact duplicate
        f",{good.item_id},{t},4",  # empty user
        f"{good.user_id},i_missing,{t},4",  # item not in items.csv
        f"{good.user_id},{good.item_id},{t},nan",
        f"{good.user_id},{good.item_id},{t},-3",
        f"{good.user_id},{good.item_id},not-a-time,4",
        f"{good.user_id},{good.item_id},{t}",  # too few fields
        f"{good.user_id},{good.item_id},99999999999999,4",  # milliseconds among seconds
        f"{good.user_id},{good.item_id},-100,4",  # before 1970
        f"{good.user_id},{good.item_id},{t},inf",
    ]
    with open(folder / "interactions.csv", "a") as f:
        f.write("\n".join(bad_lines) + "\n")
    return len(bad_lines)


def test_broken_generic_folder_loses_nothing(tmp_path, synthetic_folder):
    n_bad = _break(synthetic_folder)
    total_lines = sum(1 for _ in open(synthetic_folder / "interactions.csv")) - 1
    settings = make_settings(tmp_path, str(synthetic_folder))
    defs = build_definitions(settings)
    run_assets(defs, "items,users")
    result = run_assets(defs, "raw_interactions,cleaned_interactions", partition_range=("2024-01-01", "2024-01-05"))
    assert result.success
    checks = [e for e in result.get_asset_check_evaluations()]
    assert checks and all(c.passed for c in checks)
    counts = _counts(settings.warehouse)
    assert counts["raw_interactions"] == total_lines
    assert counts["cleaned_interactions"] + counts["interactions_quarantine"] == total_lines
    assert counts["interactions_quarantine"] == n_bad
    reasons = set(_export(settings.warehouse, "interactions_quarantine")["reason"])
    for expected in ["duplicate event", "missing user_id", "unknown item_id (not in items)", "rating is not a number",
                     "rating is not finite", "unparseable timestamp", "timestamp before 1970-01-01"]:
        assert expected in reasons
    assert any(r.startswith("malformed line") for r in reasons)
    assert any(r.startswith("rating outside") for r in reasons)
    assert any(r.startswith("timestamp out of range") for r in reasons)

    before = {t: _export(settings.warehouse, t) for t in ("raw_interactions", "cleaned_interactions", "interactions_quarantine")}
    # overlapping re-run: per-partition and a range that overlaps the first one
    run_assets(defs, "raw_interactions,cleaned_interactions", partition="2024-01-03")
    run_assets(defs, "raw_interactions,cleaned_interactions", partition_range=("2024-01-04", "2024-01-05"))
    for table, frame in before.items():
        pd.testing.assert_frame_equal(frame, _export(settings.warehouse, table))


def test_snapshot_dataset_without_timestamps(tmp_path):
    folder = tmp_path / "snap"
    folder.mkdir()
    (folder / "interactions.csv").write_text("user_id,item_id\nu1,i1\nu2,i1\nu2,i1\n")
    settings = make_settings(tmp_path, str(folder), snapshot_date="2024-05-06")
    defs = build_definitions(settings)
    run_assets(defs, "items,users")
    assert run_assets(defs, "raw_interactions,cleaned_interactions", partition="2024-05-06").success
    cleaned = _export(settings.warehouse, "cleaned_interactions")
    assert len(cleaned) == 2 and set(cleaned["event_date"].dt.date) == {dt.date(2024, 5, 6)}
    assert list(_export(settings.warehouse, "interactions_quarantine")["reason"]) == ["duplicate event"]


@requires_ml100k
def test_ml100k_single_day_matches_source(tmp_path):
    settings = make_settings(tmp_path, "movielens-100k")
    defs = build_definitions(settings)
    run_assets(defs, "items,users")
    for _ in range(2):
        assert run_assets(defs, "raw_interactions,cleaned_interactions", partition="1997-10-01").success
        counts = _counts(settings.warehouse)
        data = pd.read_csv(DATA_DIR / "ml-100k" / "u.data", sep="\t", names=["u", "i", "r", "t"])
        expected = int((pd.to_datetime(data["t"], unit="s").dt.date == dt.date(1997, 10, 1)).sum())
        assert counts["raw_interactions"] == expected
        assert counts["cleaned_interactions"] + counts["interactions_quarantine"] == expected
    items = _export(settings.warehouse, "items")
    assert len(items) == 1682
    toy = items[items.item_id == "1"].iloc[0]
    assert toy.title == "Toy Story (1995)" and toy.year == 1995 and "Animation" in list(toy.genres)
    assert items["description"].notna().sum() > 1400  # Wikipedia summaries joined on title
    users = _export(settings.warehouse, "users")
    assert len(users) == 943 and users.loc[users.user_id == "1", "occupation"].item() == "technician"


@requires_ml100k
def test_ml100k_partitions_cover_dataset_span(tmp_path):
    defs = build_definitions(make_settings(tmp_path, "movielens-100k"))
    keys = defs.resolve_assets_def("cleaned_interactions").partitions_def.get_partition_keys()
    assert keys[0] == "1997-09-20" and keys[-1] == "1998-04-22" and len(keys) == 215


@requires_mlsmall
def test_ml_latest_small_items_have_tags(tmp_path):
    from recsys_dagster.core.datasets import open_dataset

    items, rejects = open_dataset("movielens-latest-small", mirror_dir=str(DATA_DIR)).read_items()
    assert len(items) == 9742 and rejects.empty
    jumanji = items[items.item_id == "2"].iloc[0]
    assert "robin williams" in list(jumanji.tags) and list(jumanji.genres) == ["Adventure", "Children", "Fantasy"]


def test_definitions_load_and_groups(tmp_path, synthetic_folder):
    defs = build_definitions(make_settings(tmp_path, str(synthetic_folder)))
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    groups = {k.to_user_string(): graph.get(k).group_name for k in graph.materializable_asset_keys}
    for key in ["items", "users", "raw_interactions", "cleaned_interactions"]:
        assert groups[key] == "ingestion"
    assert all(graph.get(k).description for k in graph.materializable_asset_keys)


def test_sql_values_are_bound_parameters(tmp_path):
    """An id full of quotes and semicolons is stored verbatim, not executed."""
    folder = tmp_path / "evil"
    folder.mkdir()
    evil = "x'; DROP TABLE items; --"
    (folder / "interactions.csv").write_text(f'user_id,item_id,timestamp\n"{evil}",i1,1704196800\n')
    settings = make_settings(tmp_path, str(folder))
    defs = build_definitions(settings)
    run_assets(defs, "items,users")
    run_assets(defs, "raw_interactions,cleaned_interactions", partition="2024-01-02")
    assert list(_export(settings.warehouse, "cleaned_interactions")["user_id"]) == [evil]
    assert len(_export(settings.warehouse, "items")) == 1


def test_unknown_dataset_is_one_clear_error(tmp_path):
    from recsys_dagster.core.datasets import DatasetError

    with pytest.raises(DatasetError, match="unknown dataset 'nope'"):
        build_definitions(make_settings(tmp_path, "nope"))
