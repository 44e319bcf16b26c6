"""Locate MovieLens files: a local mirror, an earlier download, or GroupLens with SHA-256 checks."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from recsys_dagster.core.datasets.errors import DatasetError


@dataclass(frozen=True)
class Archive:
    folder: str  # the folder the official zip unpacks to
    url: str
    files: dict[str, str]  # file name -> SHA-256


GROUPLENS = "https://files.grouplens.org/datasets/movielens"
ARCHIVES = {
    "movielens-100k": Archive(
        "ml-100k",
        f"{GROUPLENS}/ml-100k.zip",
        {
            "u.data": "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490",
            "u.item": "553841ebc7de3a0fd0d6b62a204ea30c1e651aacfb2814c7a6584ac52f2c5701",
            "u.user": "f120e114da2e8cf314fd28f99417c94ae9ddf1cb6db8ce0e4b5995d40e90e62c",
            "u.genre": "9757e0d3e6b298159a80dd48eaf938114690e911e39af97a76949ef1663610bb",
            "u.occupation": "cd5fbec9afe345d993a62fc7817df1a4a9079c4feb267b3118763b8fd942137d",
        },
    ),
    "movielens-latest-small": Archive(
        "ml-latest-small",
        f"{GROUPLENS}/ml-latest-small.zip",
        {
            "ratings.csv": "aa289ca83157595d0df6aea1be6a4ded676ddc4385472e8313a8ed9805352646",
            "movies.csv": "5a5f32dd9bb3797b8e728a1b98958789d2b13f294a69fdfbc5727f8a9611aa07",
            "tags.csv": "92a9f8bb7916dceef6151209845788c3643f794dfa79d1feaec7121b5960399d",
            "links.csv": "97ad18e4e56a09363c65676b6cb3482ce3e2cea2372a24620c1599c843325f31",
        },
    ),
}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _complete(folder: Path, archive: Archive) -> bool:
    return all((folder / name).is_file() for name in archive.files)


def _verify(folder: Path, archive: Archive) -> None:
    for name, expected in archive.files.items():
        got = sha256_file(folder / name)
        if got != expected:
            raise DatasetError(
                f"{folder / name}: SHA-256 mismatch (expected {expected[:12]}…, got {got[:12]}…); "
                "the file is corrupt or not the official release (set RECSYS_VERIFY_CHECKSUMS=0 to accept it)"
            )


def locate_movielens(
    dataset: str,
    mirror_dir: str | None,
    download_dir: str,
    *,
    verify: bool = True,
    allow_download: bool = True,
    url: str | None = None,
) -> Path:
    """Return the folder holding ``dataset``'s files, downloading the official zip if needed.

    Looks in ``mirror_dir/<folder>`` then ``download_dir/<folder>``; downloads only when
    neither has every file. Every file is checked against its published SHA-256.
    """
    archive = ARCHIVES[dataset]
    if url is not None:  # a company mirror of the official zip
        archive = Archive(archive.folder, url, archive.files)
    candidates = [Path(d) / archive.folder for d in (mirror_dir, download_dir) if d]
    for folder in candidates:
        if _complete(folder, archive):
            if verify:
                _verify(folder, archive)
            return folder
    target = Path(download_dir) / archive.folder
    hint = (
        f"put the unpacked '{archive.folder}/' folder of {archive.url} in a directory and set "
        f"RECSYS_DATA_DIR to that directory"
    )
    if not allow_download:
        raise DatasetError(f"{dataset}: files not found in {[str(c) for c in candidates]}; {hint}")
    Path(download_dir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=download_dir) as tmp:
        zip_path = Path(tmp) / "archive.zip"
        try:
            with urllib.request.urlopen(archive.url, timeout=60) as resp, open(zip_path, "wb") as out:
                shutil.copyfileobj(resp, out)
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            raise DatasetError(f"{dataset}: download of {archive.url} failed ({exc}); offline? {hint}") from exc
        staging = Path(tmp) / archive.folder
        staging.mkdir()
        with zipfile.ZipFile(zip_path) as zf:
            for name in archive.files:
                member = f"{archive.folder}/{name}"
                try:
                    with zf.open(member) as src, open(staging / name, "wb") as dst:
                        shutil.copyfileobj(src, dst)
                except KeyError as exc:
                    raise DatasetError(f"{archive.url}: archive has no {member}") from exc
        if verify:
            _verify(staging, archive)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    return target
