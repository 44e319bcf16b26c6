"""Pure data/ML core: never imports dagster (enforced by tests/test_layering.py)."""
