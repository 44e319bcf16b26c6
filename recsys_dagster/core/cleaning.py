"""Raw interaction rows -> cleaned rows + quarantined rows with a reason.

Invariant (checked here and by an asset check): every raw row ends up in exactly one of
the two outputs. Rules, first failing rule wins:

1. malformed line (wrong field count, bad quoting, undecodable bytes)
2. missing or malformed ``user_id`` / ``item_id``
3. unusable timestamp (missing, unparseable, not finite, before 1970, in the future,
   milliseconds in a seconds column)
4. timestamp outside the partition being cleaned
5. rating not a number, NaN/inf, or outside the dataset's rating range
6. unknown user / item (not in the ``users`` / ``items`` tables)
7. exact duplicate of an earlier event (same user, item, timestamp, rating)
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd

from recsys_dagster.core.datasets.metadata import id_problem
from recsys_dagster.core.datasets.timestamps import parse_timestamps


@dataclass(frozen=True)
class CleaningConfig:
    rating_range: tuple[float, float] | None = None
    known_users: frozenset[str] | None = None
    known_items: frozenset[str] | None = None


def clean_interactions(
    raw: pd.DataFrame, start: dt.date, end: dt.date, config: CleaningConfig = CleaningConfig()
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Clean the raw rows of partitions ``start..end`` (inclusive); see module docstring."""
    raw = raw.reset_index(drop=True)
    reason = pd.Series(None, index=raw.index, dtype=object)

    def flag(mask: pd.Series, why) -> None:
        new = mask & reason.isna()
        if isinstance(why, pd.Series):
            reason[new] = why[new]
        else:
            reason[new] = why

    flag(raw["parse_error"].notna(), raw["parse_error"])
    flag(pd.Series(True, index=raw.index), id_problem(raw["user_id"], "user_id").reindex(raw.index))
    flag(pd.Series(True, index=raw.index), id_problem(raw["item_id"], "item_id").reindex(raw.index))
    ts, ts_reason = parse_timestamps(raw["timestamp"])
    flag(ts_reason.notna(), ts_reason)
    day = pd.to_datetime(ts.dt.date)
    outside = ts.notna() & ((day < pd.Timestamp(start)) | (day > pd.Timestamp(end)))
    flag(outside, f"timestamp outside partition {start}..{end}")

    rating_text = raw["rating"].astype("string").str.strip()
    rating = pd.to_numeric(rating_text, errors="coerce").astype(float)
    flag(rating_text.isna() | (rating_text == ""), "missing rating")
    flag(rating.isna(), "rating is not a number")
    flag(~np.isfinite(rating.fillna(0.0)), "rating is not finite")
    if config.rating_range is not None:
        lo, hi = config.rating_range
        flag((rating < lo) | (rating > hi), f"rating outside [{lo:g}, {hi:g}]")

    user = raw["user_id"].astype("string").str.strip()
    item = raw["item_id"].astype("string").str.strip()
    if config.known_users is not None:
        flag(~user.isin(config.known_users), "unknown user_id (not in users)")
    if config.known_items is not None:
        flag(~item.isin(config.known_items), "unknown item_id (not in items)")

    key = pd.DataFrame({"u": user, "i": item, "t": ts, "r": rating})
    dup = key.duplicated(keep="first") & reason.isna()
    # a duplicate of a row that is itself quarantined is not a duplicate of a clean row
    clean_keys = key[reason.isna()]
    dup = clean_keys.duplicated(keep="first").reindex(raw.index, fill_value=False) & dup
    flag(dup, "duplicate event")

    ok = reason.isna()
    cleaned = pd.DataFrame(
        {
            "user_id": user[ok].astype(object),
            "item_id": item[ok].astype(object),
            "ts": ts[ok].dt.tz_localize(None),
            "rating": rating[ok],
            "event_date": ts[ok].dt.date,
            "source_file": raw.loc[ok, "source_file"],
            "source_row": raw.loc[ok, "source_row"].astype("int64"),
        }
    )
    bad = ~ok
    quarantine = pd.DataFrame(
        {
            "source_file": raw.loc[bad, "source_file"],
            "source_row": raw.loc[bad, "source_row"].astype("int64"),
            "user_id": raw.loc[bad, "user_id"],
            "item_id": raw.loc[bad, "item_id"],
            "rating": raw.loc[bad, "rating"],
            "timestamp": raw.loc[bad, "timestamp"],
            "raw_line": raw.loc[bad, "raw_line"],
            "reason": reason[bad],
            "event_date": raw.loc[bad, "event_date"],
        }
    )
    if len(cleaned) + len(quarantine) != len(raw):  # pragma: no cover - guards the invariant
        raise AssertionError(f"cleaning lost rows: {len(raw)} raw != {len(cleaned)} + {len(quarantine)}")
    return cleaned.reset_index(drop=True), quarantine.reset_index(drop=True)
