"""The Dagster code location: ``dagster dev`` / ``dagster asset materialize -m recsys_dagster.definitions``.

Everything environment-specific comes from :mod:`recsys_dagster.settings`; heavy libraries
(torch, transformers, torch_geometric) are imported inside asset bodies only.
"""

from __future__ import annotations

import os

import dagster as dg

from recsys_dagster.settings import Settings, load_settings


def build_definitions(settings: Settings) -> dg.Definitions:
    from recsys_dagster.defs.checks import INGESTION_CHECKS
    from recsys_dagster.defs.embeddings import (
        EMBEDDING_CHECKS,
        item_text_embeddings,
        user_behavior_embeddings,
    )
    from recsys_dagster.defs.evaluation import evaluation_metrics, fused_model_quality_gate
    from recsys_dagster.defs.ingestion import build_ingestion_assets, items, users
    from recsys_dagster.defs.jobs import build_jobs
    from recsys_dagster.defs.knowledge_graph import KG_CHECKS, knowledge_graph
    from recsys_dagster.defs.mlflow_resource import MLflowResource
    from recsys_dagster.defs.partitions import event_partitions
    from recsys_dagster.defs.privacy import forget_users
    from recsys_dagster.defs.recommendations import (
        fused_recommendations,
        recommendations_are_valid,
        serving_snapshot,
    )
    from recsys_dagster.defs.resources import (
        ComputeResource,
        DatasetResource,
        LauncherResource,
        ModelStoreResource,
        TextEncoderResource,
        WarehouseResource,
    )
    from recsys_dagster.defs.schedules import build_refresh_schedule
    from recsys_dagster.defs.sensors import build_failure_sensor, build_landing_sensor
    from recsys_dagster.defs.training import gnn_model
    from recsys_dagster.defs.tuning import model_hyperparameters

    dataset = DatasetResource.from_settings(settings)
    span = settings.open_dataset().span()
    partitions_def = event_partitions(span, settings.partitions_end, settings.partition_grain)
    jobs = build_jobs(partitions_def)
    assets = [items, users, *build_ingestion_assets(partitions_def), knowledge_graph,
              item_text_embeddings, user_behavior_embeddings, gnn_model, evaluation_metrics, fused_recommendations, serving_snapshot,
              model_hyperparameters]
    return dg.Definitions(
        assets=assets,
        asset_checks=[*INGESTION_CHECKS, *KG_CHECKS, *EMBEDDING_CHECKS, fused_model_quality_gate,
                      recommendations_are_valid],
        jobs=[*jobs.values(), forget_users],
        schedules=[build_refresh_schedule(jobs["daily_refresh"], partitions_def, settings.refresh_cron,
                                          settings.timezone, settings.source, settings.landing),
                   dg.ScheduleDefinition(name="weekly_tuning_schedule", job=jobs["tune_hyperparameters"],
                                         cron_schedule="0 4 * * 0", execution_timezone=settings.timezone,
                                         default_status=dg.DefaultScheduleStatus.STOPPED,
                                         description="Re-tune every model's hyperparameters on validation, "
                                                     "Sundays 04:00 (turn on in the UI).")],
        sensors=[build_landing_sensor(jobs["ingest_interactions"], partitions_def, settings.source,
                                      settings.landing, settings.sensor_interval_s),
                 build_failure_sensor(settings.home)],
        resources={
            "dataset": dataset,
            "warehouse": WarehouseResource(database=settings.warehouse),
            "compute": ComputeResource(device=settings.device),
            "launcher": LauncherResource.from_settings(settings),
            "model_store": ModelStoreResource(root=settings.models_dir),
            "text_encoder": TextEncoderResource(model=settings.text_model, quantize=settings.text_quantize),
            # EnvVar: the UI's resource panel shows the variable's name, never a URI with credentials
            "mlflow_tracking": MLflowResource(
                home=settings.home,
                tracking_uri=dg.EnvVar("MLFLOW_TRACKING_URI")
                if settings.mlflow_tracking_uri and settings.mlflow_tracking_uri == os.environ.get("MLFLOW_TRACKING_URI")
                else settings.mlflow_tracking_uri),
        },
    )


defs = build_definitions(load_settings())
