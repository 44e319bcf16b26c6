"""Stage 4 — GNN training: text-initialized, knowledge-aware graph model, logged to MLflow."""

import datetime as dt
import json
import time
from dataclasses import asdict
from pathlib import Path

import dagster as dg
from pydantic import Field

from recsys_dagster.defs.mlflow_resource import MLflowResource, redact
from recsys_dagster.defs.resources import ComputeResource, WarehouseResource

GPU_POOL = "gpu"


def mlflow_metrics(values: dict, prefix: str = "") -> dict:
    """MLflow metric names may not contain '@': ``ndcg@10`` -> ``ndcg_at_10``."""
    return {f"{prefix}{k}".replace("@", "_at_"): float(v) for k, v in values.items()}


class TrainingConfig(dg.Config):
    """Launchpad config of ``gnn_model`` (defaults: the project's main model)."""

    model: str = Field(default="kgtextgnn", description="kgtextgnn | lightgcn | mf")
    embedding_dim: int = 64
    num_layers: int = 2
    lr: float = 5e-3
    reg_weight: float = 1e-4
    batch_size: int = 2048
    max_epochs: int = 300
    min_epochs: int = 20
    patience: int = 30
    seed: int = 2020
    kg_weight: float = 0.5
    kg_loss_weight: float = 0.0
    id_dropout: float = 0.0
    use_text: bool = True
    use_kg: bool = True
    min_rating: float | None = None
    max_seconds: float | None = Field(default=None, description="wall-clock cap on training")
    window_days: int | None = Field(default=None, description="train on the last N days of cleaned_interactions "
                                    "(up to the latest partition); None: every partition")
    warm_start: bool = Field(default=False, description="start from the latest weights (daily refresh)")

    def to_train_config(self, device: str):
        from recsys_dagster.core.train import TrainConfig

        values = self.model_dump()
        values.pop("warm_start")
        return TrainConfig(device=device, **values)


def models_dir(home: str) -> Path:
    return Path(home) / "models" / "gnn_model"


def latest_weights(home: str) -> Path | None:
    pointer = models_dir(home) / "LATEST"
    if pointer.is_file():
        path = models_dir(home) / pointer.read_text().strip() / "model.pt"
        return path if path.is_file() else None
    return None


@dg.asset(group_name="training", kinds={"pytorch", "mlflow"}, pool=GPU_POOL,
          deps=[dg.AssetDep("cleaned_interactions", partition_mapping=dg.AllPartitionMapping()),
                "knowledge_graph", "item_text_embeddings"])
def gnn_model(context: dg.AssetExecutionContext, config: TrainingConfig, warehouse: WarehouseResource,
              compute: ComputeResource, mlflow_tracking: MLflowResource) -> dg.MaterializeResult:
    """User and item embeddings from the main model (KGTextGNN: id + text projections,
    relation-aware attention over the knowledge graph, LightGCN-style propagation) trained
    with BPR on the protocol-A training split, early-stopped on validation NDCG@10. Weights
    are versioned files (``state_dict`` + id maps + config); a killed run resumes from its
    checkpoint; one MLflow run per materialization with a registered model version."""
    import torch

    from recsys_dagster.core.plots import line_plot_png
    from recsys_dagster.core.train import save_weights, train
    from recsys_dagster.core.training_data import data_for_split, make_split, read_tables
    from recsys_dagster.defs.embeddings import _png_md

    t0 = time.perf_counter()
    home = str(Path(warehouse.database).parent)
    train_config = config.to_train_config(compute.resolve())
    with warehouse.get_connection() as conn:
        tables = read_tables(conn, window_days=train_config.window_days)
    split = make_split(tables, train_config)
    data = data_for_split(tables, split, train_config)
    previous = None
    if config.warm_start and (path := latest_weights(home)) is not None:
        previous = torch.load(path, map_location="cpu", weights_only=True)
        context.log.info(f"warm start from {path}")
    out_dir = models_dir(home)
    ckpt = out_dir / "checkpoint.pt"
    tags = {"dagster.run_id": context.run.run_id, "dagster.asset_key": context.asset_key.to_user_string(),
            "dagster.partition": context.partition_key if context.has_partition_key else "",
            "model": train_config.model}
    with mlflow_tracking.start_run(run_name=f"gnn_model-{train_config.model}", tags=tags) as run:
        import mlflow

        mlflow.log_params({**asdict(train_config), "warm_start": config.warm_start,
                           "n_users": data.n_users, "n_items": data.n_items, "n_entities": data.n_entities,
                           "kg_edges": len(data.kg_head), **{f"split_{k}": v for k, v in split.sizes().items()}})

        def on_epoch(record: dict) -> None:
            mlflow.log_metrics(mlflow_metrics({k: v for k, v in record.items() if k != "epoch"}), step=record["epoch"])
            if record["epoch"] % 10 == 0:
                context.log.info(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in record.items()}))

        result = train(data, train_config, checkpoint_path=ckpt, warm_start=previous, on_epoch=on_epoch,
                       log=context.log.info)
        version = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S") + f"-{train_config.model}"
        weights = out_dir / version / "model.pt"
        sha = save_weights(weights, result, data)
        (out_dir / version / "config.json").write_text(json.dumps(asdict(train_config), indent=2))
        curves = {"loss": [h["loss"] for h in result.history],
                  "valid ndcg@10": [h.get("valid_ndcg@10", float("nan")) for h in result.history]}
        png = line_plot_png(curves, f"{train_config.model} training")
        (out_dir / version / "training_curve.png").write_bytes(png)
        mlflow.log_metrics(mlflow_metrics(result.best_valid, "best_valid_"))
        mlflow.log_metrics(mlflow_metrics(result.test, "test_"))
        mlflow.log_metrics({"best_epoch": result.best_epoch, "seconds_per_epoch": result.seconds_per_epoch})
        mlflow.log_artifacts(str(out_dir / version), artifact_path="weights")
        mlflow.pytorch.log_model(result.model.cpu(), name="model", registered_model_name=mlflow_tracking.registered_model,
                                 pip_requirements=["torch", "torch-geometric"], serialization_format="pickle")
        run_id, url = run.info.run_id, mlflow_tracking.run_url(run)
        (out_dir / version / "mlflow_run_id").write_text(run_id)
    (out_dir / "LATEST").write_text(version)
    return dg.MaterializeResult(
        metadata={
            "model_version": version,
            "weights_path": str(weights.resolve()),
            "weights_sha256": sha,
            "model": train_config.model,
            "device": train_config.device,
            "best_epoch": result.best_epoch,
            "epochs_run": result.epochs_run,
            "resumed_from_epoch": result.resumed_from if result.resumed_from is not None else -1,
            "warm_start": previous is not None,
            "stopped_by": result.stopped_by,
            "seconds_per_epoch": round(result.seconds_per_epoch, 4),
            **{f"valid_{k}": round(v, 4) for k, v in result.best_valid.items() if k.endswith("@10")},
            **{f"test_{k}": round(v, 4) for k, v in result.test.items() if k.endswith("@10")},
            "mlflow_run_id": run_id,
            "mlflow_run": dg.MetadataValue.url(url),
            "mlflow_tracking_uri": redact(mlflow_tracking.uri()),
            "training_curve": _png_md(png, "training curve"),
            "seconds": round(time.perf_counter() - t0, 2),
        }
    )
