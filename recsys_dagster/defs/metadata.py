"""Small helpers that turn DataFrames into Dagster metadata."""

import dagster as dg
import pandas as pd


def preview(frame: pd.DataFrame, pseudonymized: bool = False, rows: int = 10) -> dg.MetadataValue:
    """The first rows as a Markdown table; ``pseudonymized``: user-id tokens are shown as
    ``u_…`` (Dagster's event log keeps metadata forever, so forget-user could not remove them)."""
    head = frame.head(rows).copy()
    if pseudonymized and "user_id" in head.columns:
        head["user_id"] = "u_…"
    for c in head.columns:
        head[c] = head[c].map(lambda v: (str(v)[:80] + "…") if isinstance(v, str) and len(v) > 80 else v)
    return dg.MetadataValue.md(head.to_markdown(index=False) if len(head) else "_empty_")

def counts_table(counts: dict, key: str = "reason", value: str = "rows") -> dg.MetadataValue:
    frame = pd.DataFrame({key: list(counts), value: list(counts.values())})
    return dg.MetadataValue.md(frame.to_markdown(index=False) if len(frame) else "_none_")
