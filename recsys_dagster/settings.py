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
``RECSYS_TEXT_QUANTIZE``    ``none`` or ``int8`` (dynamic int8 on CPU)        ``none``
``MLFLOW_TRACKING_URI``     MLflow tracking server or store                  ``sqlite:///$RECSYS_HOME/mlflow.db``
``RECSYS_SOURCE``           where raw interactions come from: ``dataset``    ``dataset``
                            (the source files) or ``landing`` (day folders)
``RECSYS_LANDING_DIR``      landing folder (``YYYY-MM-DD/`` sub-folders)     ``$RECSYS_HOME/landing``
``RECSYS_PARTITIONS_END``   last daily partition: ``span`` (dataset's last   ``span``
                            day), ``open`` (through today) or a date
``RECSYS_PARTITION_GRAIN``  ``day``, ``week`` or ``month`` partitions       ``day``
``RECSYS_REFRESH_CRON``     cron of the ``daily_refresh`` schedule           ``0 3 * * *``
``RECSYS_TIMEZONE``         timezone of that cron (IANA name)                ``UTC``
``RECSYS_SENSOR_INTERVAL``  seconds between landing-sensor evaluations       ``30``
``RECSYS_LAUNCHER``         where training, text encoding and scoring run:   ``local``
                            ``local`` (the run's process) or ``ray`` (Ray
                            jobs: Ray Train DDP workers, Ray tasks)
``RECSYS_RAY_ADDRESS``      Ray dashboard (Jobs API) address                 ``http://127.0.0.1:8265``
``RECSYS_RAY_WORKERS``      Ray Train workers                                ``2``
``RECSYS_RAY_CPUS``         CPUs per worker                                  ``1``
``RECSYS_RAY_GPUS``         GPUs per worker (> 0: NCCL on CUDA)              ``0``
``RECSYS_RAY_PYTHON``       python on the cluster (has this project)         ``python``
``PORT``                    port of the HTTP service (``make serve``)          ``8000``
``RECSYS_SERVE_HOST``       address it listens on                            ``127.0.0.1``
``RECSYS_SERVE_POLL_S``     seconds between checks for a new snapshot        ``2``
``RECSYS_SERVE_WORKERS``    service processes (each loads the snapshot)      ``1``
``RECSYS_PSEUDONYMIZE_KEY`` key of the user-id pseudonyms (HMAC-SHA256);     unset (raw ids)
                            or ``RECSYS_PSEUDONYMIZE_KEY_FILE``: a file
                            holding it. Read from the environment only
``RECSYS_RETENTION_DAYS``   drop raw_interactions rows this many days older  unset (keep)
                            than the newest cleaned day
==========================  ===============================================  ==========================
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from recsys_dagster.core.options import option

SOURCES = ("dataset", "landing")
LAUNCHERS = ("local", "ray")
GRAINS = ("day", "week", "month")


@dataclass(frozen=True)
class Settings:
    dataset: str = option(help="movielens-100k, movielens-latest-small or a generic dataset folder (RECSYS_DATASET)")
    data_dir: str | None = option(help="local mirror holding ml-100k/ etc. (RECSYS_DATA_DIR)")
    home: str = option(help="runtime outputs: downloads, landing, models, MLflow (RECSYS_HOME)")
    warehouse: str = option(help="DuckDB file (RECSYS_WAREHOUSE)")
    verify_checksums: bool = option(help="check SHA-256 of MovieLens files (RECSYS_VERIFY_CHECKSUMS)")
    snapshot_date: str | None = option(help="date of a generic dataset without timestamps (RECSYS_SNAPSHOT_DATE)")
    device: str = option("auto", "auto (CUDA when available), cpu, cuda (RECSYS_DEVICE)")
    text_model: str = option("all-MiniLM-L6-v2", "sentence-transformers model name or path (RECSYS_TEXT_MODEL)")
    text_quantize: str = option("none", "none, or int8: dynamic int8 linear layers of the text encoder on CPU "
                                        "(RECSYS_TEXT_QUANTIZE)")
    mlflow_tracking_uri: str | None = None
    source: str = option("dataset", "dataset (the source files) or landing (day folders) (RECSYS_SOURCE)")
    landing_dir: str | None = option(None, "landing folder with YYYY-MM-DD sub-folders (RECSYS_LANDING_DIR; "
                                           "default $RECSYS_HOME/landing)")
    partitions_end: str = "span"
    partition_grain: str = "day"
    refresh_cron: str = "0 3 * * *"
    timezone: str = "UTC"
    sensor_interval_s: int = 30
    launcher: str = option("local", "where gnn_model training, item text encoding and scoring of every user run: "
                                    "local (the run's process) or ray (Ray jobs through Dagster Pipes: Ray Train "
                                    "DDP workers, Ray tasks) (RECSYS_LAUNCHER)")
    ray_address: str = option("http://127.0.0.1:8265", "Ray dashboard address for job submission (RECSYS_RAY_ADDRESS)")
    ray_workers: int = option(2, "Ray Train workers; each trains on its share of every batch (RECSYS_RAY_WORKERS)")
    ray_cpus_per_worker: float = option(1.0, "CPUs per Ray Train worker (RECSYS_RAY_CPUS)")
    ray_gpus_per_worker: float = option(0.0, "GPUs per Ray Train worker; > 0 trains on CUDA with NCCL "
                                             "(RECSYS_RAY_GPUS)")
    serve_host: str = option("127.0.0.1", "address of the HTTP service (RECSYS_SERVE_HOST)")
    serve_port: int = option(8000, "port of the HTTP service (PORT)")
    serve_workers: int = option(1, "processes of the HTTP service; each holds the snapshot in memory "
                                   "(RECSYS_SERVE_WORKERS)")
    serve_poll_s: float = option(2.0, "seconds between the service's checks for a new serving snapshot "
                                      "(RECSYS_SERVE_POLL_S)")
    retention_days: int | None = option(None, "drop raw_interactions rows more than this many days older than the "
                                              "newest cleaned day, after cleaning (RECSYS_RETENTION_DAYS; unset: keep)")
    ray_python: str = option("python", "python executable on the Ray cluster, with this project installed "
                                       "(RECSYS_RAY_PYTHON)")

    def __post_init__(self):
        if self.source not in SOURCES:
            raise ValueError(f"RECSYS_SOURCE={self.source!r}: expected one of {list(SOURCES)}")
        if self.partition_grain not in GRAINS:
            raise ValueError(f"RECSYS_PARTITION_GRAIN={self.partition_grain!r}: expected one of {list(GRAINS)}")
        if self.text_quantize not in ("none", "int8"):
            raise ValueError(f"RECSYS_TEXT_QUANTIZE={self.text_quantize!r}: expected none or int8")
        if self.launcher not in LAUNCHERS:
            raise ValueError(f"RECSYS_LAUNCHER={self.launcher!r}: expected one of {list(LAUNCHERS)}")
        if self.ray_workers < 1 or self.ray_cpus_per_worker < 0 or self.ray_gpus_per_worker < 0:
            raise ValueError(f"Ray workers must be >= 1 and CPUs/GPUs per worker >= 0 (RECSYS_RAY_WORKERS="
                             f"{self.ray_workers}, RECSYS_RAY_CPUS={self.ray_cpus_per_worker}, "
                             f"RECSYS_RAY_GPUS={self.ray_gpus_per_worker})")
        if self.retention_days is not None and self.retention_days < 1:
            raise ValueError(f"RECSYS_RETENTION_DAYS={self.retention_days}: expected a number of days >= 1 (unset: keep)")
        if self.partitions_end not in ("span", "open"):
            try:
                dt.date.fromisoformat(self.partitions_end)
            except ValueError:
                raise ValueError(f"RECSYS_PARTITIONS_END={self.partitions_end!r}: expected span, open or YYYY-MM-DD") from None
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"RECSYS_TIMEZONE={self.timezone!r}: not an IANA timezone name (e.g. UTC, Europe/Berlin)") from None

    @property
    def download_dir(self) -> str:
        return str(Path(self.home) / "downloads")

    @property
    def tracking_uri(self) -> str:
        """``MLFLOW_TRACKING_URI``, else the SQLite store under ``home`` (as the MLflow resource)."""
        return self.mlflow_tracking_uri or f"sqlite:///{Path(self.home).resolve() / 'mlflow.db'}"

    @property
    def landing(self) -> str:
        return self.landing_dir or str(Path(self.home) / "landing")

    @property
    def models_dir(self) -> str:
        """Root of the model store (one folder per version)."""
        return str(Path(self.home) / "models" / "gnn_model")

    def open_dataset(self):
        """The configured dataset (:func:`recsys_dagster.core.datasets.open_dataset`), its
        readers pseudonymizing user ids when a key is configured (read from the environment
        here, never kept in settings, resources or run config)."""
        from recsys_dagster.core.datasets import open_dataset

        return open_dataset(self.dataset, mirror_dir=self.data_dir, download_dir=self.download_dir,
                            verify_checksums=self.verify_checksums, snapshot_date=self.snapshot_date,
                            pseudonymizer=pseudonymizer())


def pseudonymizer():
    """The pseudonymizer of ``RECSYS_PSEUDONYMIZE_KEY`` / ``RECSYS_PSEUDONYMIZE_KEY_FILE``, or None."""
    from recsys_dagster.core.privacy import pseudonymizer_from_env

    return pseudonymizer_from_env()


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
        text_quantize=(env.get("RECSYS_TEXT_QUANTIZE") or "none").strip().lower(),
        mlflow_tracking_uri=env.get("MLFLOW_TRACKING_URI") or None,
        source=(env.get("RECSYS_SOURCE") or "dataset").strip().lower(),
        landing_dir=env.get("RECSYS_LANDING_DIR") or None,
        partitions_end=(env.get("RECSYS_PARTITIONS_END") or "span").strip().lower(),
        partition_grain=(env.get("RECSYS_PARTITION_GRAIN") or "day").strip().lower(),
        refresh_cron=env.get("RECSYS_REFRESH_CRON") or "0 3 * * *",
        timezone=env.get("RECSYS_TIMEZONE") or "UTC",
        sensor_interval_s=_int(env, "RECSYS_SENSOR_INTERVAL", 30),
        launcher=(env.get("RECSYS_LAUNCHER") or "local").strip().lower(),
        ray_address=env.get("RECSYS_RAY_ADDRESS") or "http://127.0.0.1:8265",
        ray_workers=_int(env, "RECSYS_RAY_WORKERS", 2),
        ray_cpus_per_worker=_number(env, "RECSYS_RAY_CPUS", 1.0),
        ray_gpus_per_worker=_number(env, "RECSYS_RAY_GPUS", 0.0),
        ray_python=env.get("RECSYS_RAY_PYTHON") or "python",
        serve_host=env.get("RECSYS_SERVE_HOST") or "127.0.0.1",
        serve_port=_int(env, "PORT", 8000),
        serve_poll_s=_number(env, "RECSYS_SERVE_POLL_S", 2.0),
        serve_workers=_int(env, "RECSYS_SERVE_WORKERS", 1),
        retention_days=_int(env, "RECSYS_RETENTION_DAYS", None),
    )


def _int(env: dict[str, str], name: str, default: int) -> int:
    return _parse(env, name, default, int, "an integer")


def _number(env: dict[str, str], name: str, default: float) -> float:
    return _parse(env, name, default, float, "a number")


def _parse(env: dict[str, str], name: str, default, kind, expected: str):
    value = env.get(name)
    if not value:
        return default
    try:
        return kind(value)
    except ValueError:
        raise ValueError(f"{name}={value!r}: expected {expected}") from None
