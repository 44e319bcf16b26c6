"""The landing folder: interaction files arriving one UTC event day at a time.

::

    data/landing/
      1997-10-01/u.data             ML-100K format (tab-separated, no header)
      1997-10-02/u.data
      2024-01-31/interactions.csv   generic format (header line)

Contract: every file under ``landing/YYYY-MM-DD/`` is an interaction file in the dataset's
own format and holds the events of that UTC day. Rows whose timestamp falls on another
day are not moved: cleaning quarantines them ("timestamp outside partition") so nothing
is lost; re-land them in the right folder. Names starting with ``.`` or ending in
``.tmp``/``.partial`` are files in flight and ignored; writers write then rename (the
replay command does).

Replay (:func:`land_day`) copies one day of a static dataset (its source lines,
byte-for-byte, plus the header line where the format has one) into the landing folder, so
the schedule and sensor can be exercised as if the data arrived daily.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from recsys_dagster.core.datasets.base import Dataset
from recsys_dagster.core.datasets.reader import read_lines
from recsys_dagster.core.warehouse import TABLES

DAY_FOLDER = re.compile(r"^\d{4}-\d{2}-\d{2}$")
IN_FLIGHT_SUFFIXES = (".tmp", ".partial", ".part")


@dataclass(frozen=True)
class LandedDay:
    day: dt.date
    files: tuple[Path, ...]
    fingerprint: str  # changes when a file is added, removed, rewritten or touched


def _in_flight(path: Path) -> bool:
    return path.name.startswith(".") or path.name.endswith(IN_FLIGHT_SUFFIXES)


def _fingerprint(files: list[Path]) -> str:
    h = hashlib.sha1()
    for f in files:
        st = f.stat()
        h.update(f"{f.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def day_files(landing_dir: str | Path, day: dt.date, settle_seconds: float = 0.0) -> list[Path]:
    """Settled interaction files landed for ``day`` (sorted by name)."""
    folder = Path(landing_dir) / day.isoformat()
    if not folder.is_dir():
        return []
    now = time.time()
    return sorted(
        f for f in folder.iterdir()
        if f.is_file() and not _in_flight(f) and now - f.stat().st_mtime >= settle_seconds
    )


def scan(landing_dir: str | Path, settle_seconds: float = 0.0) -> tuple[list[LandedDay], list[str]]:
    """Days with at least one settled file (sorted), and problems found (one line each).

    ``settle_seconds``: ignore files modified more recently (a writer may still be
    appending to a file it did not write-then-rename).
    """
    root = Path(landing_dir)
    if not root.is_dir():
        return [], []
    days, problems = [], []
    for folder in sorted(root.iterdir()):
        if _in_flight(folder):
            continue
        if not folder.is_dir() or not DAY_FOLDER.match(folder.name):
            problems.append(f"{folder}: not a YYYY-MM-DD day folder; ignored")
            continue
        try:
            day = dt.date.fromisoformat(folder.name)
        except ValueError:
            problems.append(f"{folder}: {folder.name!r} is not a calendar date; ignored")
            continue
        files = day_files(root, day, settle_seconds)
        if files:
            days.append(LandedDay(day, tuple(files), _fingerprint(files)))
    return days, problems


def latest_day(landing_dir: str | Path) -> dt.date | None:
    """The replay clock: the most recent day with landed data."""
    days, _ = scan(landing_dir)
    return days[-1].day if days else None


def read_landed(dataset: Dataset, landing_dir: str | Path, start: dt.date, end: dt.date) -> pd.DataFrame:
    """Raw rows of every file landed for ``start..end`` (inclusive), ``event_date`` = the
    folder's day, ``source_file`` = ``landing/<day>/<name>``. Same columns as
    :meth:`Dataset.raw_interactions`; an unreadable file raises a one-line error naming it."""
    frames = []
    day = start
    while day <= end:
        for path in day_files(landing_dir, day):
            raw = dataset.parse_interactions(path)
            raw["source_file"] = f"landing/{day.isoformat()}/{path.name}"
            if not dataset.has_timestamps:
                raw["timestamp"] = day.isoformat()
            raw["event_date"] = day
            frames.append(raw)
        day += dt.timedelta(days=1)
    if not frames:
        return TABLES["raw_interactions"].empty()
    return pd.concat(frames, ignore_index=True)


def source_lines(dataset: Dataset) -> tuple[bytes | None, list[bytes]]:
    """``(header line or None, every line)`` of the dataset's interaction file, numbered as
    the reader numbers ``source_row``."""
    lines = read_lines(dataset.interactions_path)
    if dataset.interactions_header:
        return (lines[0] if lines else None), lines
    return None, lines


def replay_days(dataset: Dataset) -> dict[dt.date, list[int]]:
    """Source line numbers (1-based) of every event day of ``dataset``, days with events only."""
    raw = dataset.raw_interactions()
    out: dict[dt.date, list[int]] = {}
    for day, rows in raw.groupby("event_date")["source_row"]:
        out[day] = sorted(int(r) for r in rows)
    return dict(sorted(out.items()))


def land_day(dataset: Dataset, landing_dir: str | Path, day: dt.date,
             rows: dict[dt.date, list[int]] | None = None,
             lines: tuple[bytes | None, list[bytes]] | None = None) -> Path | None:
    """Copy the source lines of ``day`` into ``landing_dir/day/<source file name>``.

    Written to a temporary name and renamed, so a watcher never sees half a file. Landing
    the same day again with the same content leaves the file untouched (the sensor does
    not fire twice). Returns the landed path, or None when the day has no events.
    ``rows`` (:func:`replay_days`) and ``lines`` (:func:`source_lines`) may be passed to
    land many days with one read of the source.
    """
    rows = replay_days(dataset) if rows is None else rows
    if day not in rows:
        return None
    header, all_lines = source_lines(dataset) if lines is None else lines
    body = [all_lines[r - 1] for r in rows[day]]
    content = b"\n".join(([header] if header is not None else []) + body) + b"\n"
    folder = Path(landing_dir) / day.isoformat()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / dataset.interactions_path.name
    if target.is_file() and target.read_bytes() == content:
        return target
    tmp = folder / f".{target.name}.tmp"
    tmp.write_bytes(content)
    os.replace(tmp, target)
    return target


def next_days(dataset: Dataset, landing_dir: str | Path, count: int,
              rows: dict[dt.date, list[int]] | None = None) -> list[dt.date]:
    """The ``count`` event days after the latest landed day (the first days when none is)."""
    rows = replay_days(dataset) if rows is None else rows
    latest = latest_day(landing_dir)
    return [d for d in rows if latest is None or d > latest][:count]
