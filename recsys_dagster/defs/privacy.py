"""Privacy operations as a Dagster job: ``forget_users`` (the right to be forgotten).

It does what ``python -m recsys_dagster.cli forget-user`` does
(:func:`recsys_dagster.core.privacy.forget.forget_in_warehouse`). Dagster keeps every
run's config in its run history: with pseudonymization on, pass *tokens* (``python -m
recsys_dagster.cli token USER_ID``), not raw ids, or use the CLI, which records nothing
outside the warehouse's audit table.
"""

from pathlib import Path

import dagster as dg
from pydantic import Field

from recsys_dagster.defs.mlflow_resource import MLflowResource
from recsys_dagster.defs.resources import (
    WAREHOUSE_POOL,
    DatasetResource,
    ModelStoreResource,
    WarehouseResource,
)


class ForgetConfig(dg.Config):
    user_ids: list[str] = Field(description="users to forget: tokens (u_…) when pseudonymized (raw ids are tokenized, "
                                            "but stay in this run's config in Dagster's history)")
    compact: bool = Field(default=True, description="rewrite the DuckDB file afterwards so no deleted bytes remain")


@dg.op(pool=WAREHOUSE_POOL, tags={"recsys/privacy": "forget"})
def forget_users_op(context: dg.OpExecutionContext, config: ForgetConfig, warehouse: WarehouseResource,
                    model_store: ModelStoreResource, mlflow_tracking: MLflowResource,
                    dataset: DatasetResource) -> dg.Output:
    """Delete the users' rows everywhere (one transaction), tombstone them, invalidate the model
    versions trained on them (files and MLflow runs deleted) and audit it; the next
    ``daily_refresh`` trains and publishes a model without them."""
    from recsys_dagster.core.privacy.forget import forget_in_warehouse
    from recsys_dagster.core.privacy.pseudonyms import is_token, stored_form

    pseudo = dataset.pseudonymizer()
    if pseudo is not None and not all(is_token(u) for u in config.user_ids):
        context.log.warning("raw user ids in run config: Dagster keeps them in this run's history; pass tokens "
                            "(python -m recsys_dagster.cli token ID) or use the CLI")
    report = forget_in_warehouse(warehouse.database, stored_form(config.user_ids, pseudo), model_store.store(),
                                 mlflow_tracking.uri(), (Path(dataset.home) / "ray_jobs",), compact=config.compact)
    context.log.info(report.summary())
    return dg.Output(None, metadata={
        "users": report.users, "warehouse_rows_deleted": sum(report.rows_deleted.values()),
        "kg_entities_deleted": report.kg_entities_deleted, "already_forgotten": report.already_forgotten,
        "model_versions_invalidated": len(report.versions_invalidated),
        "published_version_invalidated": report.published_invalidated,
        "mlflow_runs_deleted": report.mlflow_runs_deleted})


@dg.job(tags={"recsys/job": "forget_users"}, executor_def=dg.in_process_executor)
def forget_users():
    """The right to be forgotten: remove users from every table, model version and MLflow run,
    keep them out of re-ingestion, audit it. daily_refresh then retrains without them."""
    forget_users_op()
