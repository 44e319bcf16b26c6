"""The Dagster code location: ``dagster dev`` / ``dagster asset materialize -m recsys_dagster.definitions``.

Everything environment-specific comes from :mod:`recsys_dagster.settings`; heavy libraries
(torch, transformers, torch_geometric) are imported inside asset bodies only.
"""

from __future__ import annotations

import dagster as dg

from recsys_dagster.settings import Settings, load_settings


def build_definitions(settings: Settings) -> dg.Definitions:
    from recsys_dagster.core.datasets import open_dataset
    from recsys_dagster.defs.checks import INGESTION_CHECKS
    from recsys_dagster.defs.ingestion import build_ingestion_assets, items, users
    from recsys_dagster.defs.partitions import daily_partitions
    from recsys_dagster.defs.resources import DatasetResource, WarehouseResource

    dataset = DatasetResource.from_settings(settings)
    span = open_dataset(
        settings.dataset, mirror_dir=settings.data_dir, download_dir=settings.download_dir,
        verify_checksums=settings.verify_checksums, snapshot_date=settings.snapshot_date,
    ).span()
    partitions_def = daily_partitions(span)
    assets = [items, users, *build_ingestion_assets(partitions_def)]
    return dg.Definitions(
        assets=assets,
        asset_checks=INGESTION_CHECKS,
        resources={
            "dataset": dataset,
            "warehouse": WarehouseResource(database=settings.warehouse),
        },
    )


defs = build_definitions(load_settings())
