"""Stage 4 — GNN training: text-initialized, knowledge-aware graph model, logged to MLflow."""

import time
from dataclasses import asdict

import dagster as dg
from pydantic import Field

from recsys_dagster.core import warehouse as wh
from recsys_dagster.defs.mlflow_resource import MLflowResource, redact
from recsys_dagster.defs.resources import ComputeResource, ModelStoreResource, WarehouseResource

GPU_POOL = "gpu"


def mlflow_metrics(values: dict, prefix: str = "") -> dict:
    """MLflow metric names may not contain '@': ``ndcg@10`` -> ``ndcg_at_10``."""
    return {f"{prefix}{k}".replace("@", "_at_"): float(v) for k, v in values.items()}


class TrainingConfig(dg.Config):
    """Launchpad config of ``gnn_model`` (defaults: the project's main model)."""

    model: str = Field(default="kgtextgnn", description="kgtextgnn | lightgcn | mf")
    embedding_dim: int = 64
    num_layers: int = 2
    lr: float | None = Field(default=None, description="learning rate; None: the tuned value "
                             "(model_hyperparameters), else the model's validated default")
    reg_weight: float | None = Field(default=None, description="L2 weight; None: tuned, as lr")
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
    split: str = Field(default="hash", description="protocol-A split: hash (stable as data grows) or recbole")
    split_seed: int = 2020
    warm_start: bool = Field(default=False, description="continue from the published version on the same split "
                             "(daily refresh)")

    def to_train_config(self, device: str, tuned: dict | None = None):
        from recsys_dagster.core.train import TrainConfig
        from recsys_dagster.core.tuning import resolve

        values = self.model_dump()
        values.pop("warm_start")
        chosen = (tuned or resolve(None)).get(self.model, {})
        for key in ("lr", "reg_weight"):
            if values[key] is None:
                values[key] = chosen.get(key, getattr(TrainConfig, key))
        return TrainConfig(device=device, **values)


@dg.asset(group_name="training", kinds={"pytorch", "mlflow"}, pool=GPU_POOL,
          deps=[dg.AssetDep("cleaned_interactions", partition_mapping=dg.AllPartitionMapping()),
                "knowledge_graph", "item_text_embeddings"])
def gnn_model(context: dg.AssetExecutionContext, config: TrainingConfig, warehouse: WarehouseResource,
              compute: ComputeResource, mlflow_tracking: MLflowResource,
              model_store: ModelStoreResource) -> dg.MaterializeResult:
    """User and item embeddings from the main model (KGTextGNN: id + text projections,
    relation-aware attention over the knowledge graph, LightGCN-style propagation) trained
    with BPR on the protocol-A training split (a seeded hash of each pair: stable as data
    grows), early-stopped on validation NDCG@10. Each run is a new version in the model
    store (weights, training pairs, split fingerprint, warm-start parent); a killed run
    resumes from its checkpoint; one MLflow run per materialization."""
    from recsys_dagster.core.fit import fit_version
    from recsys_dagster.core.plots import line_plot_png
    from recsys_dagster.core.training_data import read_tables
    from recsys_dagster.core.tuning import resolve
    from recsys_dagster.defs.embeddings import _png_md

    t0 = time.perf_counter()
    with warehouse.get_connection() as conn:
        tuned = resolve(wh.read_table(conn, "model_hyperparameters"))
        train_config = config.to_train_config(compute.resolve(), tuned)
        tables = read_tables(conn, window_days=train_config.window_days)
    store = model_store.store()
    tags = {"dagster.run_id": context.run.run_id, "dagster.asset_key": context.asset_key.to_user_string(),
            "dagster.partition": context.partition_key if context.has_partition_key else "", "model": train_config.model}
    with mlflow_tracking.start_run(run_name=f"gnn_model-{train_config.model}", tags=tags) as run:
        import mlflow

        mlflow.log_params({**asdict(train_config), "warm_start": config.warm_start,
                           "split_fingerprint": train_config.split_spec().fingerprint})
        fit = fit_version(tables, train_config, store, config.warm_start, log=context.log.info,
                          on_epoch=lambda r: mlflow.log_metrics(mlflow_metrics(
                              {k: v for k, v in r.items() if k != "epoch"}), step=r["epoch"]),
                          extra={"mlflow_run_id": run.info.run_id, "dagster_run_id": context.run.run_id})
        result, mv = fit.result, fit.version
        png = line_plot_png({"loss": [h["loss"] for h in result.history],
                             "valid ndcg@10": [h.get("valid_ndcg@10", float("nan")) for h in result.history]},
                            f"{train_config.model} training")
        (mv.path / "training_curve.png").write_bytes(png)
        mlflow.log_params({"parent_version": mv.parent or "", "model_version": mv.version,
                           **{f"split_{k}": v for k, v in mv.manifest["split_sizes"].items()}})
        mlflow.log_metrics({**mlflow_metrics(result.best_valid, "best_valid_"), **mlflow_metrics(result.test, "test_"),
                            "best_epoch": result.best_epoch, "seconds_per_epoch": result.seconds_per_epoch})
        mlflow.log_artifacts(str(mv.path), artifact_path="weights")
        mlflow.pytorch.log_model(result.model.cpu(), name="model", registered_model_name=mlflow_tracking.registered_model,
                                 pip_requirements=["torch", "torch-geometric"], serialization_format="pickle")
    return dg.MaterializeResult(metadata={
        "model_version": mv.version, "parent_version": mv.parent or "-", "split_fingerprint": mv.split_fingerprint,
        "weights_path": str(mv.weights.resolve()), "weights_sha256": mv.manifest["weights_sha256"],
        "model": train_config.model, "lr": train_config.lr, "reg_weight": train_config.reg_weight,
        "device": train_config.device, "best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
        "resumed_from_epoch": result.resumed_from if result.resumed_from is not None else -1,
        "warm_start": mv.parent is not None, "stopped_by": result.stopped_by,
        "seconds_per_epoch": round(result.seconds_per_epoch, 4),
        **{f"valid_{k}": round(v, 4) for k, v in result.best_valid.items() if k.endswith("@10")},
        **{f"test_{k}": round(v, 4) for k, v in result.test.items() if k.endswith("@10")},
        "mlflow_run_id": run.info.run_id, "mlflow_run": dg.MetadataValue.url(mlflow_tracking.run_url(run)),
        "mlflow_tracking_uri": redact(mlflow_tracking.uri()),
        "training_curve": _png_md(png, "training curve"), "seconds": round(time.perf_counter() - t0, 2),
    })
