"""Resources: the DuckDB warehouse (serialized writers) and the dataset source."""

from contextlib import contextmanager
from pathlib import Path

import dagster as dg
from dagster_duckdb import DuckDBResource
from pydantic import Field

from recsys_dagster.settings import Settings

#: Concurrency pool of every asset that writes the warehouse; dagster.yaml limits it to 1.
WAREHOUSE_POOL = "duckdb_warehouse"

class WarehouseResource(DuckDBResource):
    """``dagster-duckdb``'s resource plus a cross-process file lock.

    DuckDB admits one read-write process per database file. The concurrency pool
    ``duckdb_warehouse`` (limit 1 in dagster.yaml) queues writers across runs; the file
    lock also covers code outside Dagster's scheduler (tests, notebooks, the CLI, a
    multiprocess executor without pools), and the connection is always closed, even when
    the body raises, so the next writer never finds the file held.
    """

    lock_timeout_s: float = Field(default=1800.0, description="Seconds to wait for the warehouse lock.")

    @contextmanager
    def get_connection(self):
        import duckdb
        from filelock import FileLock

        Path(self.database).parent.mkdir(parents=True, exist_ok=True)
        with FileLock(f"{self.database}.lock", timeout=self.lock_timeout_s):
            conn = duckdb.connect(self.database, read_only=False, config=dict(self.connection_config))
            try:
                yield conn
            finally:
                conn.close()

class DatasetResource(dg.ConfigurableResource):
    """Where interactions and metadata come from (see ``recsys_dagster.settings``)."""

    dataset: str = Field(default="movielens-100k", description="movielens-100k, movielens-latest-small or a folder path")
    data_dir: str | None = Field(default=None, description="Local mirror holding ml-100k/ etc. (RECSYS_DATA_DIR)")
    download_dir: str = Field(default="data/downloads", description="Where downloads are cached")
    verify_checksums: bool = True
    snapshot_date: str | None = None
    source: str = Field(default="dataset", description="dataset (the source files) or landing (day folders)")
    landing_dir: str = Field(default="data/landing", description="landing folder with YYYY-MM-DD sub-folders")

    def raw_interactions(self, start, end):
        """Raw rows of event days ``start..end`` from the source files or the landing folder."""
        dataset = self.open()
        if self.source == "landing":
            from recsys_dagster.core.landing import read_landed

            return read_landed(dataset, self.landing_dir, start, end)
        raw = dataset.raw_interactions()
        return raw[(raw["event_date"] >= start) & (raw["event_date"] <= end)]

    def open(self):
        from recsys_dagster.core.datasets import open_dataset

        return open_dataset(
            self.dataset,
            mirror_dir=self.data_dir,
            download_dir=self.download_dir,
            verify_checksums=self.verify_checksums,
            snapshot_date=self.snapshot_date,
        )

    @classmethod
    def from_settings(cls, s: Settings) -> "DatasetResource":
        return cls(
            dataset=s.dataset,
            data_dir=s.data_dir,
            download_dir=s.download_dir,
            verify_checksums=s.verify_checksums,
            snapshot_date=s.snapshot_date,
            source=s.source,
            landing_dir=s.landing,
        )


class ModelStoreResource(dg.ConfigurableResource):
    """The model store (:mod:`recsys_dagster.core.model_store`): versions, latest, published."""

    root: str = Field(default="data/models/gnn_model", description="folder of the model versions")

    def store(self):
        from recsys_dagster.core.model_store import ModelStore

        return ModelStore(self.root)


class ComputeResource(dg.ConfigurableResource):
    """Where tensors live: ``auto`` picks CUDA when available (set RECSYS_DEVICE to force)."""

    device: str = Field(default="auto", description="auto, cpu, cuda or cuda:N")

    def resolve(self) -> str:
        from recsys_dagster.core.text import resolve_device

        return resolve_device(self.device)


_ENCODERS: dict = {}


class TextEncoderResource(dg.ConfigurableResource):
    """The transformer text encoder (sentence-transformers), by name or local path."""

    model: str = Field(default="all-MiniLM-L6-v2", description="model name or local path (RECSYS_TEXT_MODEL)")
    batch_size: int = 64
    max_tokens: int = 256

    def get(self, device: str):
        """One loaded encoder per (config, device) per process."""
        from recsys_dagster.core.text import EncoderConfig, TextEncoder

        config = EncoderConfig(model=self.model, batch_size=self.batch_size, max_tokens=self.max_tokens, device=device)
        if config not in _ENCODERS:
            _ENCODERS[config] = TextEncoder(config)
        return _ENCODERS[config]
