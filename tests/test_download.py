import shutil
import zipfile

import pytest

from recsys_dagster.core.datasets import DatasetError
from recsys_dagster.core.datasets.download import ARCHIVES, locate_movielens
from tests.conftest import DATA_DIR, requires_ml100k


@requires_ml100k
def test_download_extracts_and_verifies(tmp_path):
    archive = tmp_path / "ml-100k.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name in ARCHIVES["movielens-100k"].files:
            zf.write(DATA_DIR / "ml-100k" / name, f"ml-100k/{name}")
    folder = locate_movielens("movielens-100k", None, str(tmp_path / "dl"), url=archive.as_uri())
    assert folder == tmp_path / "dl" / "ml-100k" and (folder / "u.data").is_file()
    archive.unlink()  # second call finds the earlier download and does not fetch again
    assert locate_movielens("movielens-100k", None, str(tmp_path / "dl"), url=archive.as_uri()) == folder


@requires_ml100k
def test_mirror_with_a_modified_file_is_refused(tmp_path):
    mirror = tmp_path / "mirror"
    shutil.copytree(DATA_DIR / "ml-100k", mirror / "ml-100k")
    with open(mirror / "ml-100k" / "u.data", "a") as f:
        f.write("1\t1\t5\t881250949\n")
    with pytest.raises(DatasetError, match=r"u.data: SHA-256 mismatch"):
        locate_movielens("movielens-100k", str(mirror), str(tmp_path / "dl"))
    assert locate_movielens("movielens-100k", str(mirror), str(tmp_path / "dl"), verify=False) == mirror / "ml-100k"


def test_offline_without_mirror_says_where_to_put_files(tmp_path):
    with pytest.raises(DatasetError) as exc:
        locate_movielens("movielens-100k", str(tmp_path / "nothing"), str(tmp_path / "dl"),
                         url=(tmp_path / "missing.zip").as_uri())
    message = str(exc.value)
    assert "RECSYS_DATA_DIR" in message and "ml-100k/" in message and "\n" not in message
