"""Stage 4 — GNN training: text-initialized, knowledge-aware graph model, logged to MLflow."""

import time

import dagster as dg
from pydantic import Field

from recsys_dagster.core import warehouse as wh
from recsys_dagster.core.train.config import GNN_MODEL_PATIENCE, TrainConfig
from recsys_dagster.defs.config import config_fields, core_values, derive_config
from recsys_dagster.defs.mlflow_resource import MLflowResource
from recsys_dagster.defs.resources import (
    ComputeResource,
    DatasetResource,
    LauncherResource,
    ModelStoreResource,
    WarehouseResource,
)

GPU_POOL = "gpu"


class _TrainingConfigBase(dg.Config):
    def to_train_config(self, device: str, tuned: dict | None = None) -> TrainConfig:
        """The core config: ``loss``/``temperature``/``lr``/``reg_weight``/``embedding_dim`` left
        empty take the tuned values (else the model's validated defaults); the device comes from the compute
        resource."""
        from recsys_dagster.core.tuning import TRAINED_KEYS, resolve

        chosen = {"loss": "bpr", **(tuned or resolve(None)).get(self.model, {})}
        filled = {k: chosen.get(k, getattr(TrainConfig, k)) for k in TRAINED_KEYS if getattr(self, k) is None}
        return TrainConfig(**core_values(self, TrainConfig, device=device, **filled))


#: The launchpad form of ``gnn_model``: every :class:`TrainConfig` field (same names,
#: defaults and help), with the tuned fields optional (None: tuned), the production model's
#: shorter patience (:data:`GNN_MODEL_PATIENCE`) and ``warm_start``.
TrainingConfig = derive_config(
    "TrainingConfig", "Launchpad config of gnn_model (defaults: the project's main model).",
    config_fields(TrainConfig, exclude=("device",)), base=_TrainingConfigBase,
    lr=(float | None, Field(default=None, description="learning rate; None: the tuned value "
                            "(model_hyperparameters), else the model's validated default")),
    reg_weight=(float | None, Field(default=None, description="L2 weight; None: tuned, as lr")),
    loss=(str | None, Field(default=None, description="bpr, softmax or sampled_softmax; None: tuned, as lr")),
    temperature=(float | None, Field(default=None, description="softmax temperature; None: tuned, as lr")),
    embedding_dim=(int | None, Field(default=None, description="embedding size; None: tuned, as lr")),
    patience=(int, Field(default=GNN_MODEL_PATIENCE, description="early-stopping patience: epochs without a better "
                         f"validation metric (the models the evaluation and tuning train get {TrainConfig.patience})")),
    warm_start=(bool, Field(default=False, description="continue from the published version on the same split "
                                                       "(daily refresh)")),
    transfer_from=(str | None, Field(default=None, description="start from a published model of this or another "
                                     "dataset: a version name, a version folder or a model store folder (its "
                                     "published version); towers, same-name relations and fusion transfer, ids "
                                     "start fresh")),
    transfer_mode=(str, Field(default="finetune", description="finetune (train on this data from the source's "
                              "towers) or zero_shot (score with the source's towers, no training)")),
)


def training_metadata(fit, config: TrainConfig) -> dict:
    from recsys_dagster.core.plots import png_markdown

    result, mv = fit.result, fit.version
    return {
        "model_version": mv.version, "parent_version": mv.parent or "-", "split_fingerprint": mv.split_fingerprint,
        "weights_path": str(mv.weights.resolve()), "weights_sha256": mv.manifest["weights_sha256"],
        "model": config.model, "loss": config.loss, "lr": config.lr, "reg_weight": config.reg_weight,
        "device": config.device,
        "best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
        "resumed_from_epoch": result.resumed_from if result.resumed_from is not None else -1,
        "warm_start": mv.parent is not None, "stopped_by": result.stopped_by,
        "transfer_from": (mv.manifest.get("transfer_from") or {}).get("version", "-"),
        "transfer_mode": (mv.manifest.get("transfer_from") or {}).get("mode", "-"),
        "seconds_per_epoch": round(result.seconds_per_epoch, 4),
        **{f"valid_{k}": round(v, 4) for k, v in result.best_valid.items() if k.endswith("@10")},
        **{f"test_{k}": round(v, 4) for k, v in result.test.items() if k.endswith("@10")},
        "training_curve": dg.MetadataValue.md(png_markdown((mv.path / "training_curve.png").read_bytes(),
                                                           "training curve")),
    }


def ray_trainer(context: dg.AssetExecutionContext, launcher: LauncherResource, job_dir, reported: dict):
    """A :data:`~recsys_dagster.core.fit.Trainer` that trains in a Ray job launched through
    Dagster Pipes (dagster-ray's ``PipesRayJobClient``: Jobs API at ``launcher.ray_address``);
    the job's Pipes metadata lands in ``reported``."""

    def run(data, config, warm_start, log):
        from recsys_dagster.core.train.distributed import result_from_job, write_job

        job = write_job(job_dir, data, config, warm_start)
        log(f"launching Ray job at {launcher.ray_address}: {launcher.ray_workers} worker(s)")
        reported.update(launcher.submit(context, "recsys_dagster.pipes.ray_training",
                                        {"job": job, "ray": launcher.ray_options()}))
        return result_from_job(job_dir, data, config)

    return run


@dg.asset(group_name="training", kinds={"pytorch", "mlflow"}, pool=GPU_POOL,
          deps=[dg.AssetDep("cleaned_interactions", partition_mapping=dg.AllPartitionMapping()),
                "knowledge_graph", "item_text_embeddings", "model_hyperparameters"])
def gnn_model(context: dg.AssetExecutionContext, config: TrainingConfig, warehouse: WarehouseResource,
              compute: ComputeResource, mlflow_tracking: MLflowResource, model_store: ModelStoreResource,
              launcher: LauncherResource, dataset: DatasetResource) -> dg.MaterializeResult:
    """User and item embeddings from the main model (KGTextGNN: id + text projections,
    relation-aware attention over the knowledge graph, LightGCN-style propagation) trained
    with the tuned loss (full-softmax InfoNCE or BPR) on the protocol-A training split (a
    seeded hash of each pair: stable as data grows), early-stopped on validation NDCG@10. Each run is a new version in the model
    store (weights, training pairs, split fingerprint, warm-start parent); a killed run
    resumes from its checkpoint; one MLflow run per materialization. With the ``ray``
    launcher (RECSYS_LAUNCHER) it trains as a Ray job through Dagster Pipes: Ray Train
    DDP workers, each on its share of every batch; the version, MLflow run and metadata come
    back the same (plus the job's ``ray_*`` metadata). ``transfer_from`` starts from a
    published model of another dataset (cross-domain transfer, see core/transfer.py)."""
    from recsys_dagster.core.fit import fit_version
    from recsys_dagster.core.training_data import read_tables
    from recsys_dagster.core.transfer import TransferError, plan_transfer
    from recsys_dagster.core.tuning import resolve

    t0, reported = time.perf_counter(), {}
    with warehouse.get_connection() as conn:
        train_config = config.to_train_config(launcher.training_device(compute),
                                              resolve(wh.read_table(conn, "model_hyperparameters")))
        tables = read_tables(conn, window_days=train_config.window_days)
    store = model_store.store()
    try:  # before the MLflow run: it logs the config actually trained (the source's architecture)
        transfer = plan_transfer(config.transfer_from, config.transfer_mode, store, train_config,
                                 config.warm_start, tables.text_model) if config.transfer_from else None
    except TransferError as exc:  # a config problem: retrying cannot help
        raise dg.Failure(str(exc), allow_retries=False) from None
    train_config = transfer.config if transfer is not None else train_config
    trainer = ray_trainer(context, launcher, launcher.job_dir(context, "gnn_model"), reported) if launcher.on_ray else None
    with mlflow_tracking.training_run(context, train_config, config.warm_start) as tracking:
        fit = fit_version(tables, train_config, store, config.warm_start, log=context.log.info,
                          on_epoch=tracking.log_epoch, trainer=trainer, transfer=transfer,
                          extra={**tracking.ids, "launcher": launcher.launcher, "dataset": dataset.dataset})
        tracking.log_version(fit)
    return dg.MaterializeResult(metadata={**training_metadata(fit, train_config), **tracking.metadata(),
                                          "launcher": launcher.launcher, **reported,
                                          "seconds": round(time.perf_counter() - t0, 2)})
