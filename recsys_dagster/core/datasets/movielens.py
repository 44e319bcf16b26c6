"""MovieLens 100K and MovieLens latest-small, plus the optional side data found beside them
(the Freebase KG ``ml-100k-kg/`` and Wikipedia summaries ``ml-100k-wiki/``)."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from pathlib import Path

import pandas as pd

from recsys_dagster.core.datasets.base import Dataset, ExternalKG, Span
from recsys_dagster.core.datasets.download import locate_movielens
from recsys_dagster.core.datasets.metadata import finalize_items, finalize_users, year_from_title
from recsys_dagster.core.datasets.reader import read_delimited

INTERACTION_COLUMNS = ["user_id", "item_id", "rating", "timestamp"]


def normalize_tag(tag: str | None) -> str | None:
    if tag is None or (isinstance(tag, float) and pd.isna(tag)):
        return None
    norm = " ".join(str(tag).lower().split()).strip(" .,;:!?\"'")
    return norm or None


class _MovieLens(Dataset):
    verb = "watched"
    verb_positive = "rated highly"

    def __init__(self, mirror_dir: str | None, download_dir: str, verify: bool = True):
        self.mirror_dir = mirror_dir
        self.download_dir = download_dir
        self.verify = verify
        self._folder: Path | None = None

    @property
    def folder(self) -> Path:
        if self._folder is None:
            self._folder = locate_movielens(self.name, self.mirror_dir, self.download_dir, verify=self.verify)
        return self._folder

    def side_folder(self, name: str) -> Path | None:
        """Optional side data (not part of the GroupLens release) next to the dataset."""
        for root in (self.mirror_dir, self.download_dir):
            if root and (Path(root) / name).is_dir():
                return Path(root) / name
        return None


class MovieLens100K(_MovieLens):
    name = "movielens-100k"
    rating_range = (1.0, 5.0)

    def known_span(self) -> Span:
        return Span(dt.date(1997, 9, 20), dt.date(1998, 4, 22))

    interactions_header = False

    @property
    def interactions_path(self) -> Path:
        return self.folder / "u.data"

    def parse_interactions(self, path: Path) -> pd.DataFrame:
        return self.private(read_delimited(path, INTERACTION_COLUMNS, sep="\t", header=False, quoting=False,
                                           user_column="user_id"))

    def read_items(self):
        genre_rows = read_delimited(self.folder / "u.genre", ["genre", "index"], sep="|", header=False, quoting=False)
        genres = [g for g in genre_rows["genre"].tolist() if g]
        cols = ["item_id", "title", "release_date", "video_release_date", "imdb_url", *[f"g{i}" for i in range(len(genres))]]
        raw = read_delimited(self.folder / "u.item", cols, sep="|", header=False, quoting=False, encoding="latin-1")
        flags = raw[[f"g{i}" for i in range(len(genres))]].to_numpy()
        raw["genres"] = [[g for g, f in zip(genres, row, strict=True) if f == "1" and g != "unknown"] for row in flags]
        release = pd.to_datetime(raw["release_date"], format="%d-%b-%Y", errors="coerce")
        raw["year"] = [d.year if not pd.isna(d) else year_from_title(t) for d, t in zip(release, raw["title"], strict=True)]
        raw["attributes"] = [
            {k: v for k, v in {"release_date": r, "imdb_url": u}.items() if v}
            for r, u in zip(raw["release_date"], raw["imdb_url"], strict=True)
        ]
        raw["description"] = raw["title"].map(self._wiki_summaries())
        return finalize_items(raw, "u.item")

    def _wiki_summaries(self) -> dict[str, str]:
        folder = self.side_folder("ml-100k-wiki")
        if folder is None or not (folder / "movie_wiki.csv").is_file():
            return {}
        wiki = read_delimited(folder / "movie_wiki.csv", ["movie_title", "wiki_summary"], required=("movie_title", "wiki_summary"))
        wiki = wiki[wiki["parse_error"].isna()]
        return dict(zip(wiki["movie_title"].str.strip(), wiki["wiki_summary"], strict=True))

    def read_users(self):
        raw = self.private(read_delimited(self.folder / "u.user", ["user_id", "age", "gender", "occupation", "zip_code"],
                                          sep="|", header=False, quoting=False, user_column="user_id"))
        raw["attributes"] = [{} for _ in range(len(raw))]
        return finalize_users(raw, "u.user")

    def external_kg(self) -> ExternalKG | None:
        folder = self.side_folder("ml-100k-kg")
        if folder is None or not (folder / "ml-100k.kg").is_file() or not (folder / "ml-100k.link").is_file():
            return None
        triples = _atomic(folder / "ml-100k.kg", ["head_id", "relation_id", "tail_id"])
        links = _atomic(folder / "ml-100k.link", ["item_id", "entity_id"])
        return ExternalKG(
            "freebase",
            triples.rename(columns={"head_id": "head", "relation_id": "relation", "tail_id": "tail"}),
            links.rename(columns={"entity_id": "entity"}),
        )


def _atomic(path: Path, columns: list[str]) -> pd.DataFrame:
    """RecBole atomic file: tab-separated with typed headers such as ``head_id:token``."""
    frame = read_delimited(path, columns, sep="\t", quoting=False)
    frame.columns = [c.split(":")[0] for c in frame.columns]
    return frame


class MovieLensLatestSmall(_MovieLens):
    name = "movielens-latest-small"
    rating_range = (0.5, 5.0)

    def known_span(self) -> Span:
        return Span(dt.date(1996, 3, 29), dt.date(2018, 9, 24))

    @property
    def interactions_path(self) -> Path:
        return self.folder / "ratings.csv"

    def parse_interactions(self, path: Path) -> pd.DataFrame:
        raw = read_delimited(path, ["userid", "movieid", "rating", "timestamp"],
                             required=("userid", "movieid", "rating", "timestamp"), user_column="userid")
        return self.private(raw.rename(columns={"userid": "user_id", "movieid": "item_id"}))

    def read_items(self):
        movies = read_delimited(self.folder / "movies.csv", ["movieid", "title", "genres"], required=("movieid", "title", "genres"))
        movies = movies.rename(columns={"movieid": "item_id", "genres": "genre_text"})
        movies["genres"] = [
            [g for g in str(t).split("|") if g and g != "(no genres listed)"] if isinstance(t, str) else []
            for t in movies["genre_text"]
        ]
        movies["year"] = movies["title"].map(year_from_title)
        movies["tags"] = movies["item_id"].map(self._tags())
        links = read_delimited(self.folder / "links.csv", ["movieid", "imdbid", "tmdbid"])
        links = links[links["parse_error"].isna()].set_index("movieid")
        movies["attributes"] = [
            {k: v for k, v in {"imdb_id": links["imdbid"].get(i), "tmdb_id": links["tmdbid"].get(i)}.items() if v}
            for i in movies["item_id"]
        ]
        return finalize_items(movies, "movies.csv")

    def _tags(self) -> dict[str, list[str]]:
        tags = read_delimited(self.folder / "tags.csv", ["userid", "movieid", "tag", "timestamp"])
        tags = tags[tags["parse_error"].isna()]
        by_item: dict[str, Counter] = {}
        for item, tag in zip(tags["movieid"], tags["tag"], strict=True):
            norm = normalize_tag(tag)
            if norm:
                by_item.setdefault(str(item).strip(), Counter())[norm] += 1
        return {k: [t for t, _ in sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))] for k, c in by_item.items()}

    def read_users(self):
        ratings = self.read_interactions_text()
        ids = ratings.loc[ratings["parse_error"].isna(), "user_id"].astype("string").str.strip()
        ids = ids[ids.notna() & (ids != "")].drop_duplicates()
        ids = sorted(ids, key=lambda s: (len(s), s))
        users = pd.DataFrame({"user_id": ids, "attributes": [{} for _ in ids], "source_file": "ratings.csv"})
        return finalize_users(users, "ratings.csv")


