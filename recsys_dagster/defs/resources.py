"""Resources: the DuckDB warehouse (serialized writers) and the dataset source."""

import dataclasses
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
from dagster_duckdb import DuckDBResource
from pydantic import Field

from recsys_dagster.defs.config import config_fields, derive_config
from recsys_dagster.settings import Settings, load_settings

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

class _DatasetResourceBase(dg.ConfigurableResource):
    def settings(self) -> Settings:
        """Full settings with this resource's values (the rest: their defaults)."""
        return dataclasses.replace(load_settings({}), **self.model_dump())

    def raw_interactions(self, start, end):
        """Raw rows of event days ``start..end`` from the source files or the landing folder."""
        settings = self.settings()
        dataset = settings.open_dataset()
        if settings.source == "landing":
            from recsys_dagster.core.landing import read_landed

            return read_landed(dataset, settings.landing, start, end)
        raw = dataset.raw_interactions()
        return raw[(raw["event_date"] >= start) & (raw["event_date"] <= end)]

    def open(self):
        return self.settings().open_dataset()

    def pseudonymizer(self):
        """The pseudonymizer of the environment's key (never a config field: the key must not
        reach run config, metadata or the UI), or None."""
        from recsys_dagster.settings import pseudonymizer

        return pseudonymizer()

    @classmethod
    def from_settings(cls, s: Settings):
        return cls(**{name: getattr(s, name) for name in cls.model_fields})


#: Where interactions and metadata come from: the dataset fields of
#: :class:`~recsys_dagster.settings.Settings` (same names and help; see that module).
DatasetResource = derive_config(
    "DatasetResource", "Where interactions and metadata come from (see recsys_dagster.settings).",
    config_fields(Settings, include=("dataset", "data_dir", "home", "verify_checksums", "snapshot_date", "source",
                                     "landing_dir", "retention_days")), base=_DatasetResourceBase)


class ModelStoreResource(dg.ConfigurableResource):
    """The model store (:mod:`recsys_dagster.core.model_store`): versions, latest, published."""

    root: str = Field(default="data/models/gnn_model", description="folder of the model versions")

    def store(self):
        from recsys_dagster.core.model_store import ModelStore

        return ModelStore(self.root)


class _LauncherBase(dg.ConfigurableResource):
    @property
    def on_ray(self) -> bool:
        return self.launcher == "ray"

    def ray_options(self) -> dict:
        """Keyword arguments of :func:`~recsys_dagster.core.train.distributed.train_on_ray`."""
        return {"num_workers": self.ray_workers, "cpus_per_worker": self.ray_cpus_per_worker,
                "gpus_per_worker": self.ray_gpus_per_worker}

    def submit(self, context, module: str, extras: dict) -> dict:
        """Run ``python -m module`` as a Ray job through Dagster Pipes (dagster-ray's
        ``PipesRayJobClient``, Jobs API at ``ray_address``); blocks until it ends (a failed
        job raises with its message) and returns the metadata the job reported."""
        from dagster_ray import PipesRayJobClient

        client = PipesRayJobClient(address=self.ray_address, poll_interval=1.0)
        invocation = client.run(context=context, extras=extras,
                                submit_job_params={"entrypoint": f"{self.ray_python} -m {module}",
                                                   "entrypoint_num_cpus": 0})
        return dict(invocation.get_materialize_result().metadata)

    def runner(self, context, name: str):
        """``run(fn, shared, blocks) -> [fn(shared, b) for b in blocks]`` as Ray tasks in a Ray
        job (:mod:`recsys_dagster.core.parallel`; same results as locally), its files under
        ``job_dir(context, name)``."""
        from recsys_dagster.core.parallel import read_map_results, write_map_job

        def run(fn: str, shared, blocks) -> list:
            job_dir = self.job_dir(context, name)
            self.submit(context, "recsys_dagster.pipes.ray_tasks", {"job": write_map_job(job_dir, fn, shared, blocks)})
            return read_map_results(job_dir)

        return run

    def training_device(self, compute) -> str:
        """The device ``gnn_model`` trains on: the Ray workers' (CUDA when they get GPUs), else
        the compute resource's."""
        if self.on_ray:
            return "cuda" if self.ray_gpus_per_worker > 0 else "cpu"
        return compute.resolve()

    def job_dir(self, context, name: str) -> Path:
        """The folder of one Ray job of this run (under ``jobs_dir``)."""
        return Path(self.jobs_dir) / context.run.run_id / name

    @classmethod
    def from_settings(cls, s: Settings):
        return cls(jobs_dir=str(Path(s.home) / "ray_jobs"),
                   **{name: getattr(s, name) for name in cls.model_fields if name != "jobs_dir"})


#: Where the heavy steps run — ``gnn_model`` training, item text encoding, scoring every
#: user: the launcher fields of :class:`~recsys_dagster.settings.Settings` (``local``, or
#: ``ray``: Ray jobs through Dagster Pipes, Ray Train workers and Ray tasks).
LauncherResource = derive_config(
    "LauncherResource", "Where training, encoding and scoring run: local, or Ray jobs (see recsys_dagster.settings).",
    config_fields(Settings, include=("launcher", "ray_address", "ray_workers", "ray_cpus_per_worker",
                                     "ray_gpus_per_worker", "ray_python")), base=_LauncherBase,
    jobs_dir=(str, Field(default="data/ray_jobs", description="folder of the Ray jobs' files (shared storage on a "
                                                               "multi-node cluster)")))


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
    quantize: str = Field(default="none", description="none, or int8: dynamic int8 linear layers on CPU (faster "
                                                       "encoding, vectors cached under their own id; "
                                                       "RECSYS_TEXT_QUANTIZE)")

    def get(self, device: str):
        """One loaded encoder per (config, device) per process."""
        from recsys_dagster.core.text import EncoderConfig, TextEncoder

        config = EncoderConfig(model=self.model, batch_size=self.batch_size, max_tokens=self.max_tokens, device=device,
                               quantize=self.quantize)
        if config not in _ENCODERS:
            _ENCODERS[config] = TextEncoder(config)
        return _ENCODERS[config]
