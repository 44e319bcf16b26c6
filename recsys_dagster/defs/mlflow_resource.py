"""A small MLflow resource (instead of the legacy ``dagster-mlflow``)."""

from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import dagster as dg
from pydantic import Field


def redact(uri: str) -> str:
    """The URI without user:password (safe for logs, metadata and links)."""
    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class MLflowResource(dg.ConfigurableResource):
    """Tracking store: ``MLFLOW_TRACKING_URI`` when set (credentials, e.g.
    ``MLFLOW_TRACKING_USERNAME``/``PASSWORD``, also come from the environment and are never
    logged), else a SQLite database under the data folder."""

    tracking_uri: str | None = Field(default=None, description="explicit tracking URI (else MLFLOW_TRACKING_URI, else sqlite under home)")
    home: str = Field(default="data", description="folder of the default sqlite store and artifacts")
    experiment: str = "recsys_dagster"
    registered_model: str = "recsys_gnn"

    def uri(self) -> str:
        # MLFLOW_TRACKING_URI is read once, when the code location is built (settings):
        # mlflow.set_tracking_uri() itself exports that variable, so reading it here would
        # pick up whatever store an earlier run in this process used.
        if self.tracking_uri:
            return self.tracking_uri
        return f"sqlite:///{Path(self.home).resolve() / 'mlflow.db'}"

    def _client(self):
        import mlflow

        mlflow.set_tracking_uri(self.uri())
        exp = mlflow.get_experiment_by_name(self.experiment)
        if exp is None:
            artifacts = (Path(self.home).resolve() / "mlartifacts").as_uri()
            exp_id = mlflow.create_experiment(self.experiment, artifact_location=artifacts)
        else:
            exp_id = exp.experiment_id
        return mlflow, exp_id

    @contextmanager
    def start_run(self, run_name: str, tags: dict[str, str]):
        mlflow, exp_id = self._client()
        with mlflow.start_run(experiment_id=exp_id, run_name=run_name, tags=tags) as run:
            yield run

    @contextmanager
    def training_run(self, context: dg.AssetExecutionContext, config, warm_start: bool):
        """One MLflow run per ``gnn_model`` materialization: params up front, a per-epoch
        metric hook, and :meth:`TrainingRun.log_version` for what the fit produced."""
        tags = {"dagster.run_id": context.run.run_id, "dagster.asset_key": context.asset_key.to_user_string(),
                "dagster.partition": context.partition_key if context.has_partition_key else "",
                "model": config.model}
        with self.start_run(run_name=f"gnn_model-{config.model}", tags=tags) as run:
            import mlflow

            mlflow.log_params({**asdict(config), "warm_start": warm_start,
                               "split_fingerprint": config.split_spec().fingerprint})
            yield TrainingRun(self, run, context.run.run_id)

    def log_to_run(self, run_id: str | None, metrics: dict, record: dict | None = None,
                   record_file: str = "evaluation.json") -> None:
        """Add metrics (and a JSON record, e.g. the chosen hyperparameters) to an existing
        run: evaluation results go to the training run of the version they grade. A record
        rather than params: MLflow params cannot change, and a version may be re-evaluated."""
        if not run_id:
            return
        mlflow, _ = self._client()
        with mlflow.start_run(run_id=run_id):
            mlflow.log_metrics(metric_names(metrics))
            if record:
                mlflow.log_dict(record, record_file)

    def log_evaluation(self, ev, run_id: str, mlflow_run_id: str | None) -> None:
        """An evaluation's headline metrics and its record (hyperparameters, gate, split)
        on the training run of the version it graded."""
        rows = ev.rows[ev.rows.slice == "all"]
        self.log_to_run(mlflow_run_id, {f"eval_{r.protocol}_{r.model}_{r.metric}_at_{r.k}": r.value
                                        for r in rows.itertuples()},
                        {"hyperparameters": ev.params, "gate": ev.gate.details(), "split": ev.split.as_dict()},
                        f"evaluation/{run_id}.json")

    def run_url(self, run) -> str:
        uri = redact(self.uri())
        base = uri if uri.startswith("http") else "http://127.0.0.1:5000"
        return f"{base.rstrip('/')}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"


def metric_names(values: dict, prefix: str = "") -> dict:
    """MLflow metric names may not contain '@': ``ndcg@10`` -> ``ndcg_at_10``."""
    return {f"{prefix}{k}".replace("@", "_at_"): float(v) for k, v in values.items()}


class TrainingRun:
    """The active MLflow run of one training (see :meth:`MLflowResource.training_run`)."""

    def __init__(self, resource: MLflowResource, run, dagster_run_id: str):
        self.resource, self.run = resource, run
        self.ids = {"mlflow_run_id": run.info.run_id, "dagster_run_id": dagster_run_id}

    def log_epoch(self, record: dict) -> None:
        import mlflow

        mlflow.log_metrics(metric_names({k: v for k, v in record.items() if k != "epoch"}), step=record["epoch"])

    def log_version(self, fit) -> None:
        """Params, final metrics, the version folder as artifacts, and the registered model."""
        import mlflow

        result, mv = fit.result, fit.version
        src = mv.manifest.get("transfer_from") or {}
        mlflow.log_params({"parent_version": mv.parent or "", "model_version": mv.version,
                           **{f"split_{k}": v for k, v in mv.manifest["split_sizes"].items()},
                           **({"transfer_from": src["version"], "transfer_store": src["store"],
                               "transfer_mode": src["mode"]} if src else {})})
        mlflow.log_metrics({**metric_names(result.best_valid, "best_valid_"), **metric_names(result.test, "test_"),
                            "best_epoch": result.best_epoch, "seconds_per_epoch": result.seconds_per_epoch})
        mlflow.log_artifacts(str(mv.path), artifact_path="weights")
        mlflow.pytorch.log_model(result.model.cpu(), name="model", registered_model_name=self.resource.registered_model,
                                 pip_requirements=["torch", "torch-geometric"], serialization_format="pickle")

    def metadata(self) -> dict:
        return {"mlflow_run_id": self.run.info.run_id, "mlflow_run": dg.MetadataValue.url(self.resource.run_url(self.run)),
                "mlflow_tracking_uri": redact(self.resource.uri())}
