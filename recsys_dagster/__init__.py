"""recsys_dagster: a batch recommendation platform on Dagster.

``recsys_dagster.core`` is the pure data/ML core (no Dagster imports);
``recsys_dagster.defs`` is the thin Dagster layer; ``recsys_dagster.definitions``
builds the code location.
"""

__version__ = "0.1.0"
