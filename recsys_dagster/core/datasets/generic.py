"""The generic folder format for users' own data.

::

    my_dataset/
      interactions.csv   user_id, item_id[, timestamp][, rating | weight]   (required)
      items.csv          item_id[, title][, description][, genres][, year][, any attribute columns]
      users.csv          user_id[, age][, gender][, occupation][, any attribute columns]
      kg.tsv             head <TAB> relation <TAB> tail  (with or without a header line)
      item_entities.csv  item_id, entity
      entity_labels.csv  entity, label   (optional: human-readable names of KG entities)
      dataset.json       {"name": ..., "rating_min": 0, "rating_max": 5, "snapshot_date": "2024-01-31",
                          "verb": "listened to", "verb_positive": "loved"}

``timestamp`` is unix seconds (or milliseconds, detected per column) or ISO 8601. Without a
timestamp column the whole file is one snapshot dated ``snapshot_date`` (dataset.json,
else ``RECSYS_SNAPSHOT_DATE``, else the file's modification date). ``genres`` is split on
``|``. Any other column of items.csv/users.csv is kept in ``attributes`` (JSON).
``verb`` names an interaction in reasons (default "interacted with"); ``verb_positive`` one
in the top quarter of the rating scale (default "rated highly" with a ``rating`` column, else
``verb``). KG entities without a row in entity_labels.csv have no label: reasons name their
relation and a neighbouring item instead of a bare id.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pandas as pd

from recsys_dagster.core.datasets.base import Dataset, ExternalKG
from recsys_dagster.core.datasets.errors import DatasetError
from recsys_dagster.core.datasets.metadata import (
    finalize_items,
    finalize_users,
    id_problem,
    year_from_title,
)
from recsys_dagster.core.datasets.reader import read_delimited

ITEM_KNOWN = {"item_id", "title", "description", "genres", "year", "tags"}
USER_KNOWN = {"user_id", "age", "gender", "occupation", "zip_code"}
_BOOKKEEPING = {"source_file", "source_row", "raw_line", "parse_error"}


class GenericFolder(Dataset):
    def __init__(self, folder: str | Path, snapshot_date: str | None = None):
        self.folder = Path(folder)
        if not (self.folder / "interactions.csv").is_file():
            raise DatasetError(f"{self.folder / 'interactions.csv'}: not found; a generic dataset folder needs interactions.csv")
        config = self._config()
        self.name = str(config.get("name") or self.folder.name)
        header = read_delimited(self.folder / "interactions.csv", [], required=("user_id", "item_id")).columns
        self.has_timestamps = "timestamp" in header
        self.rating_column = "rating" if "rating" in header else ("weight" if "weight" in header else None)
        lo = float(config.get("rating_min", 0.0))
        hi = float(config.get("rating_max", float("inf")))
        self.rating_range = (lo, hi)
        for key in ("verb", "verb_positive"):
            if key in config and not (isinstance(config[key], str) and config[key].strip()):
                raise DatasetError(f"{self.folder / 'dataset.json'}: {key} must be a non-empty string")
        self.verb = str(config.get("verb") or Dataset.verb).strip()
        self.verb_positive = str(config["verb_positive"]).strip() if config.get("verb_positive") else (
            "rated highly" if self.rating_column == "rating" else None)
        snap = config.get("snapshot_date") or snapshot_date
        if snap:
            try:
                self.snapshot_date = dt.date.fromisoformat(str(snap))
            except ValueError as exc:
                raise DatasetError(f"{self.folder}: snapshot_date {snap!r} is not an ISO date (YYYY-MM-DD)") from exc
        else:
            mtime = (self.folder / "interactions.csv").stat().st_mtime
            self.snapshot_date = dt.datetime.fromtimestamp(mtime, tz=dt.timezone.utc).date()

    def _config(self) -> dict:
        path = self.folder / "dataset.json"
        if not path.is_file():
            return {}
        try:
            return json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DatasetError(f"{path}: invalid JSON ({exc})") from exc

    @property
    def interactions_path(self) -> Path:
        return self.folder / "interactions.csv"

    def parse_interactions(self, path: Path) -> pd.DataFrame:
        raw = self.private(read_delimited(path, ["user_id", "item_id", "timestamp", "rating"],
                                          required=("user_id", "item_id"), user_column="user_id"))
        if self.rating_column == "weight":
            raw["rating"] = raw["weight"] if "weight" in raw.columns else None
        elif self.rating_column is None:
            raw["rating"] = "1"
        extra = [c for c in raw.columns if c not in {"user_id", "item_id", "timestamp", "rating"} | _BOOKKEEPING]
        return raw.drop(columns=extra)

    def read_items(self):
        path = self.folder / "items.csv"
        if not path.is_file():
            return _ids_from_interactions(self.read_interactions_text(), "item_id", finalize_items)
        raw = read_delimited(path, ["item_id", "title", "description", "genres", "year", "tags"], required=("item_id",))
        extra = [c for c in raw.columns if c not in ITEM_KNOWN | _BOOKKEEPING]
        raw["attributes"] = _attributes(raw, extra)
        raw["genres"] = raw["genres"].map(_split)
        raw["tags"] = raw["tags"].map(_split)
        year = pd.to_numeric(raw["year"], errors="coerce")
        raw["year"] = [int(y) if pd.notna(y) and 0 < y < 3000 else year_from_title(t) for y, t in zip(year, raw["title"], strict=True)]
        return finalize_items(raw, "items.csv")

    def read_users(self):
        path = self.folder / "users.csv"
        if not path.is_file():
            return _ids_from_interactions(self.read_interactions_text(), "user_id", finalize_users)
        raw = self.private(read_delimited(path, sorted(USER_KNOWN), required=("user_id",), user_column="user_id"))
        extra = [c for c in raw.columns if c not in USER_KNOWN | _BOOKKEEPING]
        raw["attributes"] = _attributes(raw, extra)
        return finalize_users(raw, "users.csv")

    def external_kg(self) -> ExternalKG | None:
        kg_path, link_path = self.folder / "kg.tsv", self.folder / "item_entities.csv"
        if not kg_path.is_file():
            return None
        if not link_path.is_file():
            raise DatasetError(f"{kg_path}: found without {link_path.name}, which links items to KG entities")
        first = kg_path.read_bytes().split(b"\n", 1)[0].decode("utf-8", "replace").lower().split("\t")
        has_header = [c.strip() for c in first] == ["head", "relation", "tail"]
        triples = read_delimited(kg_path, ["head", "relation", "tail"], sep="\t", header=has_header, quoting=False)
        links = read_delimited(link_path, ["item_id", "entity"], required=("item_id", "entity"))
        return ExternalKG(self.name, triples, links, labels=self._entity_labels())

    def _entity_labels(self) -> dict[str, str]:
        path = self.folder / "entity_labels.csv"
        if not path.is_file():
            return {}
        frame = read_delimited(path, ["entity", "label"], required=("entity", "label"))
        bad = frame[frame["parse_error"].notna()]
        if len(bad):
            row = bad.iloc[0]
            raise DatasetError(f"{path}: row {row.source_row}: {row.parse_error}")
        ok = frame["entity"].notna() & frame["label"].notna()
        return {str(e).strip(): str(v).strip() for e, v in zip(frame["entity"][ok], frame["label"][ok], strict=True)
                if str(e).strip() and str(v).strip()}


def _split(value) -> list[str]:
    if not isinstance(value, str):
        return []
    return [v.strip() for v in value.split("|") if v.strip()]


def _attributes(raw: pd.DataFrame, extra: list[str]) -> list[dict]:
    values = raw[extra].to_numpy(dtype=object) if extra else [[]] * len(raw)
    return [{c: v for c, v in zip(extra, row, strict=True) if v not in (None, "")} for row in values]


def _ids_from_interactions(raw: pd.DataFrame, column: str, finalize):
    ok = raw["parse_error"].isna() & id_problem(raw[column], column).isna()
    ids = raw.loc[ok, column].astype("string").str.strip().drop_duplicates()
    frame = pd.DataFrame({column: ids.to_numpy(), "attributes": [{} for _ in range(len(ids))]})
    return finalize(frame, "interactions.csv")
