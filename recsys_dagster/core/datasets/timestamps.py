"""Vectorized timestamp parsing: unix seconds (int/float), milliseconds, or ISO 8601."""

from __future__ import annotations

import numpy as np
import pandas as pd

#: Unix seconds above this are ~year 5138: such values are milliseconds, not seconds.
MILLIS_THRESHOLD = 1e11


def parse_timestamps(values: pd.Series, now: pd.Timestamp | None = None) -> tuple[pd.Series, pd.Series]:
    """Parse text timestamps into UTC datetimes.

    Returns ``(ts, reason)``: ``ts`` is ``datetime64[ns, UTC]`` (NaT where unusable) and
    ``reason`` is None for usable values or a short text saying what is wrong. A column
    whose numeric values are mostly above 1e11 is read as epoch milliseconds (detected
    per column, so a lone millisecond value among seconds is reported, not guessed).
    """
    now = now or pd.Timestamp.now(tz="UTC")
    text = values.astype("string").str.strip()
    reason = pd.Series(None, index=values.index, dtype=object)
    ts = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns, UTC]")

    missing = text.isna() | (text == "")
    reason[missing] = "missing timestamp"
    num = pd.to_numeric(text.where(~missing), errors="coerce")
    is_num = num.notna()
    finite = is_num & np.isfinite(num.astype(float))
    reason[is_num & ~finite] = "timestamp is not finite"
    seconds = num.where(finite).astype(float)
    if finite.any() and (seconds[finite] > MILLIS_THRESHOLD).mean() > 0.5:
        seconds = seconds / 1000.0
    too_big = finite & (seconds > MILLIS_THRESHOLD)
    reason[too_big] = "timestamp out of range (milliseconds in a seconds column?)"
    negative = finite & (seconds < 0)
    reason[negative] = "timestamp before 1970-01-01"
    ok_num = finite & ~too_big & ~negative
    ts[ok_num] = pd.to_datetime(seconds[ok_num], unit="s", utc=True)

    iso = ~missing & ~is_num
    if iso.any():
        parsed = pd.to_datetime(text[iso], utc=True, errors="coerce", format="ISO8601")
        reason[iso & parsed.reindex(values.index).isna()] = "unparseable timestamp"
        good = iso & parsed.reindex(values.index).notna()
        ts[good] = parsed[good[good].index]
        before = good & (ts < pd.Timestamp(0, tz="UTC"))
        reason[before] = "timestamp before 1970-01-01"
        ts[before] = pd.NaT
    future = ts.notna() & (ts > now + pd.Timedelta(days=1))
    reason[future] = "timestamp in the future"
    ts[future] = pd.NaT
    return ts, reason
