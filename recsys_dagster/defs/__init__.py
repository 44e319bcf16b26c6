"""Thin Dagster layer: one module per pipeline stage, in data-flow order."""
