"""Hyperparameter tuning of every model on validation (on demand, and weekly by schedule).

Slow (every trained model at every grid point), so it is not part of ``full_rebuild`` or
``daily_refresh``: those read the cached choices from ``model_hyperparameters``.
"""

import time

import dagster as dg
from pydantic import Field

from recsys_dagster.core import warehouse as wh
from recsys_dagster.core.train.config import TrainConfig
from recsys_dagster.defs.config import config_fields, core_values, derive_config
from recsys_dagster.defs.resources import WAREHOUSE_POOL, ComputeResource, WarehouseResource

TUNING_GROUP = "tuning"


#: The launchpad form of ``model_hyperparameters``: which models, plus the split seed and
#: epoch budget fields of :class:`TrainConfig` (same names, defaults and help).
TuningConfig = derive_config(
    "TuningConfig", "Launchpad config of model_hyperparameters.",
    config_fields(TrainConfig, include=("split_seed", "max_epochs", "min_epochs", "patience")),
    models=(list[str], Field(default=["mf", "lightgcn", "kgtextgnn"],
                             description="trained models to tune; each gets its grid from core.tuning.GRIDS "
                                         "(ItemKNN and EASE are tuned inside every evaluation)")))


@dg.asset(group_name=TUNING_GROUP, kinds={"pytorch", "duckdb"}, pool=WAREHOUSE_POOL,
          deps=[dg.AssetDep("cleaned_interactions", partition_mapping=dg.AllPartitionMapping()),
                "knowledge_graph", "item_text_embeddings"])
def model_hyperparameters(context: dg.AssetExecutionContext, config: TuningConfig, warehouse: WarehouseResource,
                          compute: ComputeResource) -> dg.MaterializeResult:
    """The validation-best hyperparameters of every model, same grid effort for each: lr x
    L2 weight for MF-BPR, LightGCN and the main KGTextGNN (same epoch budget and early
    stopping). ``gnn_model`` and ``evaluation_metrics`` read the newest choice per model;
    every trial is kept. (ItemKNN's k x shrink and EASE's λ are tuned on validation inside
    every evaluation, so they are not cached.)"""
    from recsys_dagster.core.training_data import data_for_split, make_split, read_tables
    from recsys_dagster.core.tuning import (
        TRAINED,
        tune_trained,
        tuning_rows,
    )

    t0 = time.perf_counter()
    unknown = sorted(set(config.models) - set(TRAINED))
    if unknown:
        raise dg.Failure(f"cannot tune {unknown}: choose from {list(TRAINED)}")
    base = TrainConfig(**core_values(config, TrainConfig, device=compute.resolve()))
    with warehouse.get_connection() as conn:
        tables = read_tables(conn)
    data = data_for_split(tables, make_split(tables, base), base)
    choices = {}
    for name in config.models:
        params, trials = tune_trained(name, data, base, log=context.log.info)
        choices[name] = (params, trials)
        context.log.info(f"{name}: {params}")
    rows = tuning_rows(choices, base.split_spec().fingerprint)
    with warehouse.get_connection() as conn:
        wh.write(conn, "model_hyperparameters", rows, tuned_at=rows["tuned_at"].iloc[0])
    return dg.MaterializeResult(metadata={
        "chosen": dg.MetadataValue.md(rows[["model", "params", "valid_ndcg"]].to_markdown(index=False)),
        "split_fingerprint": base.split_spec().fingerprint, "seconds": round(time.perf_counter() - t0, 1)})
