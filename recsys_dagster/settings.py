"""Environment-driven settings shared by the core and the Dagster layer.

Every value can be set with an environment variable so the same code location runs on a
laptop, in CI and on a cluster:

==========================  ===============================================  ==========================
variable                    meaning                                          default
==========================  ===============================================  ==========================
``RECSYS_DATASET``          ``movielens-100k``, ``movielens-latest-small``   ``movielens-100k``
                            or a path to a generic dataset folder
``RECSYS_DATA_DIR``         local mirror holding ``ml-100k/`` etc.           unset (download)
``RECSYS_HOME``             runtime outputs (downloads, weights, MLflow)      ``data``
``RECSYS_WAREHOUSE``        DuckDB file                                      ``$RECSYS_HOME/warehouse.duckdb``
``RECSYS_VERIFY_CHECKSUMS`` ``0`` skips SHA-256 checks of MovieLens files    ``1``
``RECSYS_SNAPSHOT_DATE``    date of a generic dataset without timestamps     file modification date
``RECSYS_DEVICE``           ``auto`` (CUDA when available), ``cpu``, ``cuda`` ``auto``
``RECSYS_TEXT_MODEL``       sentence-transformers model name or local path   ``all-MiniLM-L6-v2``
``MLFLOW_TRACKING_URI``     MLflow tracking server or store                  ``sqlite:///$RECSYS_HOME/mlflow.db``
==========================  ===============================================  ==========================
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    dataset: str
    data_dir: str | None
    home: str
    warehouse: str
    verify_checksums: bool
    snapshot_date: str | None
    device: str = "auto"
    text_model: str = "all-MiniLM-L6-v2"
    mlflow_tracking_uri: str | None = None

    @property
    def download_dir(self) -> str:
        return str(Path(self.home) / "downloads")


def load_settings(env: dict[str, str] | None = None) -> Settings:
    env = dict(os.environ if env is None else env)
    home = env.get("RECSYS_HOME") or "data"
    return Settings(
        dataset=env.get("RECSYS_DATASET") or "movielens-100k",
        data_dir=env.get("RECSYS_DATA_DIR") or None,
        home=home,
        warehouse=env.get("RECSYS_WAREHOUSE") or str(Path(home) / "warehouse.duckdb"),
        verify_checksums=(env.get("RECSYS_VERIFY_CHECKSUMS", "1").strip() not in ("0", "false", "no")),
        snapshot_date=env.get("RECSYS_SNAPSHOT_DATE") or None,
        device=env.get("RECSYS_DEVICE") or "auto",
        text_model=env.get("RECSYS_TEXT_MODEL") or "all-MiniLM-L6-v2",
        mlflow_tracking_uri=env.get("MLFLOW_TRACKING_URI") or None,
    )
