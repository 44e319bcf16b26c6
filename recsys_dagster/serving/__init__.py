"""The HTTP serving layer (FastAPI): :mod:`recsys_dagster.serving.app` over
:mod:`recsys_dagster.serving.state`, fed by the pipeline's serving snapshots."""
