"""``option()``: a dataclass field with a help text, so a stage's config is declared once
(the Dagster layer derives its launchpad configs, descriptions included, from these)."""

from __future__ import annotations

import dataclasses


def option(default=dataclasses.MISSING, help: str = ""):  # noqa: A002 - the word users read
    """``dataclasses.field(default=default)`` carrying ``help`` in its metadata (no default:
    a required field)."""
    return dataclasses.field(default=default, metadata={"help": help})
