"""Validation shared by every dataset's item and user tables."""

from __future__ import annotations

import json
import re

import pandas as pd

from recsys_dagster.core.datasets.base import ITEM_COLUMNS, REJECT_COLUMNS, USER_COLUMNS

MAX_TITLE_CHARS = 4096
MAX_TEXT_CHARS = 20_000
MAX_ID_CHARS = 256
_YEAR = re.compile(r"\((\d{4})\)\s*$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\ufffd]")


def id_problem(values: pd.Series, what: str) -> pd.Series:
    """Reason an id is unusable (None when fine). Ids are opaque strings, stripped."""
    text = values.astype("string").str.strip()
    reason = pd.Series(None, index=values.index, dtype=object)
    reason[text.isna() | (text == "")] = f"missing {what}"
    has = text.notna() & (text != "")
    reason[has & text.str.contains(_CONTROL, na=False)] = f"malformed {what} (control or undecodable characters)"
    reason[has & (text.str.len() > MAX_ID_CHARS)] = f"malformed {what} (longer than {MAX_ID_CHARS} characters)"
    return reason


def year_from_title(title: str | None) -> int | None:
    m = _YEAR.search(title or "")
    return int(m.group(1)) if m else None


def _clip(text, limit: int) -> tuple[str | None, bool]:
    if text is None or (isinstance(text, float) and pd.isna(text)):
        return None, False
    text = str(text)
    return (text[:limit], True) if len(text) > limit else (text, False)


def finalize_items(frame: pd.DataFrame, source_file: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Validate ids, de-duplicate, clip huge text; returns ``(items, rejects)``."""
    frame = frame.copy()
    for c in ITEM_COLUMNS:
        if c not in frame.columns:
            frame[c] = None
    reason = id_problem(frame["item_id"], "item_id")
    if "parse_error" in frame.columns:
        structural = frame["parse_error"].notna() & ~frame["parse_error"].astype(str).str.startswith("invalid")
        reason = reason.where(~structural, frame["parse_error"])
    frame["item_id"] = frame["item_id"].astype("string").str.strip()
    dup = frame["item_id"].duplicated(keep="first") & reason.isna()
    reason[dup] = "duplicate item_id (first occurrence kept)"
    rejects = _rejects(frame, reason, source_file)
    items = frame[reason.isna()].copy()
    clipped = items["title"].map(lambda t: _clip(t, MAX_TITLE_CHARS))
    items["title"] = [c[0] or "" for c in clipped]
    desc = items["description"].map(lambda t: _clip(t, MAX_TEXT_CHARS))
    items["description"] = [d[0] for d in desc]
    truncated = [c[1] or d[1] for c, d in zip(clipped, desc, strict=True)]
    items["attributes"] = [
        json.dumps({**(a if isinstance(a, dict) else {}), **({"text_truncated": True} if t else {})}, sort_keys=True)
        for a, t in zip(items["attributes"], truncated, strict=True)
    ]
    items["year"] = pd.array(items["year"], dtype="Int64")
    items["genres"] = [list(g) if isinstance(g, list | tuple) else [] for g in items["genres"]]
    items["tags"] = [list(g) if isinstance(g, list | tuple) else [] for g in items["tags"]]
    return items[ITEM_COLUMNS].reset_index(drop=True), rejects


def finalize_users(frame: pd.DataFrame, source_file: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    frame = frame.copy()
    for c in USER_COLUMNS:
        if c not in frame.columns:
            frame[c] = None
    reason = id_problem(frame["user_id"], "user_id")
    if "parse_error" in frame.columns:
        reason = reason.where(frame["parse_error"].isna(), frame["parse_error"])
    frame["user_id"] = frame["user_id"].astype("string").str.strip()
    dup = frame["user_id"].duplicated(keep="first") & reason.isna()
    reason[dup] = "duplicate user_id (first occurrence kept)"
    rejects = _rejects(frame, reason, source_file, user_ids=True)
    users = frame[reason.isna()].copy()
    users["age"] = pd.array(pd.to_numeric(users["age"], errors="coerce"), dtype="Float64").round().astype("Int64")
    users["attributes"] = [json.dumps(a if isinstance(a, dict) else {}, sort_keys=True) for a in users["attributes"]]
    return users[USER_COLUMNS].reset_index(drop=True), rejects


def _shown(value) -> str | None:
    """A field of a rejected row as text (lists and dicts included), capped at 200 chars."""
    if isinstance(value, list | tuple | dict):
        return json.dumps(value, default=str)[:200]
    return None if pd.isna(value) else str(value)[:200]


def _rejects(frame: pd.DataFrame, reason: pd.Series, source_file: str, user_ids: bool = False) -> pd.DataFrame:
    """Rejected rows as ``metadata_quarantine`` rows; ``user_ids``: rows of the users table,
    whose id goes to ``user_id`` too (so forgetting a user finds their rejected rows)."""
    bad = frame[reason.notna()]
    if bad.empty:
        return pd.DataFrame(columns=REJECT_COLUMNS)
    raw = bad["raw_line"] if "raw_line" in bad.columns else pd.Series(None, index=bad.index)
    shown = [
        r if isinstance(r, str) else json.dumps({k: _shown(v) for k, v in row.items()
                                                 if k not in ("raw_line", "parse_error", "source_row", "source_file")})
        for r, (_, row) in zip(raw, bad.iterrows(), strict=True)
    ]
    return pd.DataFrame(
        {
            "source_file": bad["source_file"] if "source_file" in bad.columns else source_file,
            "source_row": bad["source_row"] if "source_row" in bad.columns else None,
            "raw_line": shown,
            "reason": reason[reason.notna()],
            "user_id": bad["user_id"].astype(object).where(bad["user_id"].notna(), None) if user_ids else None,
        }
    ).reset_index(drop=True)
