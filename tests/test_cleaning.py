import datetime as dt

import pandas as pd
import pytest

from recsys_dagster.core.cleaning import CleaningConfig, clean_interactions
from recsys_dagster.core.datasets.reader import read_delimited
from recsys_dagster.core.datasets.timestamps import parse_timestamps

DAY = dt.date(2024, 1, 2)
NOON = int(pd.Timestamp("2024-01-02 12:00", tz="UTC").timestamp())


def raw_frame(rows):
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"], dtype=object)
    frame.insert(0, "source_row", range(2, len(rows) + 2))
    frame.insert(0, "source_file", "interactions.csv")
    frame["raw_line"] = None
    frame["parse_error"] = None
    frame["event_date"] = DAY
    return frame


@pytest.mark.parametrize(
    "row, reason",
    [
        (("", "i1", "4", str(NOON)), "missing user_id"),
        (("   ", "i1", "4", str(NOON)), "missing user_id"),
        (("u1", "", "4", str(NOON)), "missing item_id"),
        (("u1", "i\x01", "4", str(NOON)), "malformed item_id"),
        (("u1", "i1", "nan", str(NOON)), "rating is not a number"),
        (("u1", "i1", "inf", str(NOON)), "rating is not finite"),
        (("u1", "i1", "-1", str(NOON)), "rating outside [1, 5]"),
        (("u1", "i1", "9", str(NOON)), "rating outside [1, 5]"),
        (("u1", "i1", "four", str(NOON)), "rating is not a number"),
        (("u1", "i1", "", str(NOON)), "missing rating"),
        (("u1", "i1", "4", ""), "missing timestamp"),
        (("u1", "i1", "4", "yesterday"), "unparseable timestamp"),
        (("u1", "i1", "4", "-86400"), "timestamp before 1970-01-01"),
        (("u1", "i1", "4", "4102444800"), "timestamp in the future"),
        (("u1", "i1", "4", str(NOON + 86400)), "timestamp outside partition"),
        (("u9", "i1", "4", str(NOON)), "unknown user_id"),
        (("u1", "i9", "4", str(NOON)), "unknown item_id"),
    ],
)
def test_each_bad_row_is_quarantined_with_its_reason(row, reason):
    raw = raw_frame([("u1", "i1", "4", str(NOON)), row])
    config = CleaningConfig(rating_range=(1, 5), known_users=frozenset({"u1"}), known_items=frozenset({"i1"}))
    cleaned, quarantine = clean_interactions(raw, DAY, DAY, config)
    assert len(cleaned) == 1 and len(quarantine) == 1
    assert quarantine["reason"].iloc[0].startswith(reason)
    assert quarantine["source_row"].iloc[0] == 3


def test_duplicates_keep_first_and_types_are_coerced():
    raw = raw_frame([(" u1 ", "i1", "4", str(NOON)), ("u1", "i1", "4.0", str(NOON)), ("u1", "i1", "5", "2024-01-02T13:00:00Z")])
    cleaned, quarantine = clean_interactions(raw, DAY, DAY)
    assert list(quarantine["reason"]) == ["duplicate event"]
    assert list(cleaned["user_id"]) == ["u1", "u1"]
    assert cleaned["rating"].tolist() == [4.0, 5.0]
    assert cleaned["ts"].iloc[1] == pd.Timestamp("2024-01-02 13:00")
    assert set(cleaned["event_date"]) == {DAY}


def test_millisecond_column_is_detected():
    ms = pd.Series([str(NOON * 1000), str((NOON + 5) * 1000)])
    ts, reason = parse_timestamps(ms)
    assert reason.isna().all() and ts.iloc[0] == pd.Timestamp("2024-01-02 12:00", tz="UTC")
    mixed = pd.Series([str(NOON), str(NOON + 1), str(NOON * 1000)])
    assert parse_timestamps(mixed)[1].iloc[2].startswith("timestamp out of range")


def test_reader_keeps_every_line(tmp_path):
    path = tmp_path / "interactions.csv"
    path.write_bytes(
        b"user_id,item_id,rating,timestamp,extra\n"
        b"u1,i1,4,1704196800,x\n"
        b"u2,i2,4\n"                       # too few fields
        b'u3,"i3,4,1704196800,x\n'          # unterminated quote
        b"caf\xe9,i1,4,1704196800,x\n"      # latin-1 byte in a UTF-8 file
    )
    frame = read_delimited(path, ["user_id", "item_id", "rating", "timestamp"], required=("user_id", "item_id"))
    assert list(frame["source_row"]) == [2, 3, 4, 5]
    assert frame["parse_error"].iloc[0] is None
    assert frame["parse_error"].iloc[1].startswith("malformed line: expected 5 fields")
    assert frame["parse_error"].iloc[2].startswith("malformed line")
    assert "invalid utf-8" in frame["parse_error"].iloc[3]
    assert frame["raw_line"].iloc[1] == "u2,i2,4"


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "empty file"),
        (b"user,item\nu1,i1\n", "line 1: missing required column(s) ['user_id', 'item_id']"),
    ],
)
def test_unusable_files_fail_with_one_line_naming_the_file(tmp_path, content, message):
    from recsys_dagster.core.datasets import DatasetError

    path = tmp_path / "interactions.csv"
    path.write_bytes(content)
    with pytest.raises(DatasetError) as exc:
        read_delimited(path, ["user_id", "item_id"], required=("user_id", "item_id"))
    text = str(exc.value)
    assert "\n" not in text and str(path) in text and message in text
