"""Dataset sources: MovieLens (downloaded with checksums or from a mirror) and a generic folder."""

from __future__ import annotations

from pathlib import Path

from recsys_dagster.core.datasets.base import Dataset, ExternalKG, Span
from recsys_dagster.core.datasets.errors import DatasetError

BUILTIN = ("movielens-100k", "movielens-latest-small")


def open_dataset(
    spec: str,
    *,
    mirror_dir: str | None = None,
    download_dir: str = "data/downloads",
    verify_checksums: bool = True,
    snapshot_date: str | None = None,
    pseudonymizer=None,
) -> Dataset:
    """Open a dataset by name (``movielens-100k``, ``movielens-latest-small``) or folder path;
    with a :class:`~recsys_dagster.core.privacy.Pseudonymizer` its readers return user-id tokens."""
    dataset = _open(spec, mirror_dir, download_dir, verify_checksums, snapshot_date)
    dataset.pseudonymizer = pseudonymizer
    return dataset


def _open(spec, mirror_dir, download_dir, verify_checksums, snapshot_date) -> Dataset:
    from recsys_dagster.core.datasets.generic import GenericFolder
    from recsys_dagster.core.datasets.movielens import MovieLens100K, MovieLensLatestSmall

    if spec == "movielens-100k":
        return MovieLens100K(mirror_dir, download_dir, verify_checksums)
    if spec == "movielens-latest-small":
        return MovieLensLatestSmall(mirror_dir, download_dir, verify_checksums)
    if Path(spec).is_dir():
        return GenericFolder(spec, snapshot_date=snapshot_date)
    raise DatasetError(f"unknown dataset {spec!r}: use one of {list(BUILTIN)} or a path to a dataset folder")


__all__ = ["BUILTIN", "Dataset", "DatasetError", "ExternalKG", "Span", "open_dataset"]
