"""A small MLflow resource (instead of the legacy ``dagster-mlflow``)."""

from contextlib import contextmanager
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

    def log_to_run(self, run_id: str | None, metrics: dict, record: dict | None = None,
                   record_file: str = "evaluation.json") -> None:
        """Add metrics (and a JSON record, e.g. the chosen hyperparameters) to an existing
        run: evaluation results go to the training run of the version they grade. A record
        rather than params: MLflow params cannot change, and a version may be re-evaluated."""
        if not run_id:
            return
        mlflow, _ = self._client()
        with mlflow.start_run(run_id=run_id):
            mlflow.log_metrics({k.replace("@", "_at_"): float(v) for k, v in metrics.items()})
            if record:
                mlflow.log_dict(record, record_file)

    def run_url(self, run) -> str:
        uri = redact(self.uri())
        base = uri if uri.startswith("http") else "http://127.0.0.1:5000"
        return f"{base.rstrip('/')}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
