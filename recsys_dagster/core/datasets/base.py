"""The dataset interface every source implements, and the shared partition logic."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from recsys_dagster.core.datasets.errors import DatasetError
from recsys_dagster.core.datasets.timestamps import parse_timestamps
from recsys_dagster.core.warehouse import columns_of

#: Columns of ``raw_interactions`` besides ``event_date`` (all text: raw means raw).
RAW_COLUMNS = columns_of("raw_interactions", exclude=("event_date",))
ITEM_COLUMNS = columns_of("items")
USER_COLUMNS = columns_of("users")
#: A rejected metadata row (``metadata_quarantine`` less the table name the asset adds).
REJECT_COLUMNS = columns_of("metadata_quarantine", exclude=("table",))


@dataclass(frozen=True)
class Span:
    """Inclusive range of event days covered by a dataset."""

    start: dt.date
    end: dt.date


@dataclass
class ExternalKG:
    """An external knowledge graph: ``triples`` (head, relation, tail) and ``links`` (item_id, entity)."""

    name: str
    triples: pd.DataFrame
    links: pd.DataFrame
    rejects: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=REJECT_COLUMNS))
    labels: dict[str, str] = field(default_factory=dict)  # entity -> human-readable label


class Dataset:
    """A source of interactions and metadata.

    Subclasses implement :attr:`interactions_path` and :meth:`parse_interactions` (one row
    per physical line of a file in the dataset's own interaction format, text fields),
    :meth:`read_items`, :meth:`read_users` and optionally :meth:`external_kg`.
    ``rating_range`` is the inclusive valid range, or None for implicit feedback.
    ``interactions_header`` says whether interaction files start with a header line (the
    replay command copies it into every landed file). ``verb`` names an interaction in
    reasons ("watched", "listened to"); ``verb_positive`` one in the top quarter of an
    explicit rating scale ("rated highly"; None: ``verb``).
    """

    name: str = "dataset"
    rating_range: tuple[float, float] | None = None
    has_timestamps: bool = True
    snapshot_date: dt.date | None = None
    interactions_header: bool = True
    verb: str = "interacted with"
    verb_positive: str | None = None
    #: set by :func:`recsys_dagster.core.datasets.open_dataset` when a pseudonymization key
    #: is configured: readers then return user-id tokens (:meth:`private`)
    pseudonymizer = None

    # -- to implement -------------------------------------------------------------------
    @property
    def interactions_path(self) -> Path:
        raise NotImplementedError

    def parse_interactions(self, path: Path) -> pd.DataFrame:
        """Columns ``source_file, source_row, user_id, item_id, rating, timestamp, raw_line,
        parse_error`` (text) for every data line of ``path``."""
        raise NotImplementedError

    def read_items(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Returns ``(items, rejects)``."""
        raise NotImplementedError

    def read_users(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Returns ``(users, rejects)``."""
        raise NotImplementedError

    def external_kg(self) -> ExternalKG | None:
        return None

    def known_span(self) -> Span | None:
        """A fixed span for published datasets (lets the code location load without data)."""
        return None

    # -- shared -------------------------------------------------------------------------
    def private(self, frame: pd.DataFrame) -> pd.DataFrame:
        """What a reader returns from a file read with ``user_column="user_id"``: user ids
        (and the user field of malformed raw lines) as tokens when pseudonymizing."""
        from recsys_dagster.core.privacy.pseudonyms import strip_spans

        return strip_spans(frame, self.pseudonymizer)

    def read_interactions_text(self) -> pd.DataFrame:
        return self.parse_interactions(self.interactions_path)

    def raw_interactions(self) -> pd.DataFrame:
        """All raw rows with their ``event_date`` partition (see :func:`assign_partitions`)."""
        raw = self.read_interactions_text()
        if raw.empty:
            raise DatasetError(f"{self.interactions_path}: no data rows (only a header or blank lines): nothing to ingest")
        if not self.has_timestamps:
            raw["timestamp"] = self.snapshot_date.isoformat() if self.snapshot_date else None
        raw["event_date"] = assign_partitions(raw["timestamp"], self.span())
        return raw

    def span(self) -> Span:
        known = self.known_span()
        if known is not None:
            return known
        if not self.has_timestamps:
            day = self.snapshot_date or dt.date.today()
            return Span(day, day)
        ts, _ = parse_timestamps(self.read_interactions_text()["timestamp"])
        ts = ts.dropna()
        if ts.empty:
            day = self.snapshot_date or dt.date.today()
            return Span(day, day)
        return Span(ts.min().date(), ts.max().date())


def assign_partitions(timestamps: pd.Series, span: Span) -> pd.Series:
    """Daily partition of each raw row: its UTC event day when the timestamp is usable
    and inside the dataset span, else the span's last day (the "arrival" partition, where
    cleaning quarantines the row with the timestamp problem as reason)."""
    ts, _ = parse_timestamps(timestamps)
    day = ts.dt.tz_convert("UTC").dt.date
    start, end = pd.Timestamp(span.start), pd.Timestamp(span.end)
    day_ts = pd.to_datetime(day)
    inside = ts.notna() & (day_ts >= start) & (day_ts <= end)
    out = pd.Series(span.end, index=timestamps.index, dtype=object)
    out[inside] = day[inside]
    return out
