"""Read the warehouse tables a model needs and assemble :class:`TrainData` for a protocol."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from recsys_dagster.core import warehouse as wh
from recsys_dagster.core.gnn_data import TrainData, build_train_data, implicit_interactions
from recsys_dagster.core.splits import Split


@dataclass
class WarehouseTables:
    interactions: pd.DataFrame
    user_ids: list
    item_ids: list
    entities: pd.DataFrame | None
    relations: pd.DataFrame | None
    triples: pd.DataFrame | None
    item_text: tuple | None
    text_model: str | None = None  # the encoder's model id of item_text


def read_tables(conn, until: str | None = None, window_days: int | None = None) -> WarehouseTables:
    """Interactions (optionally only ``event_date <= until``, and only the last
    ``window_days`` days up to the latest partition with data), ids, KG and item text."""
    where, params = [], []
    if until is not None:
        where.append("event_date <= ?")
        params.append(until)
    if window_days:
        where.append("event_date > (SELECT max(event_date) FROM cleaned_interactions) - CAST(? AS INTEGER)")
        params.append(int(window_days))
    sql = "SELECT user_id, item_id, ts, rating FROM cleaned_interactions"
    inter = conn.execute(sql + (" WHERE " + " AND ".join(where) if where else ""), params).df()
    users = [r[0] for r in conn.execute("SELECT user_id FROM users").fetchall()]
    items = [r[0] for r in conn.execute("SELECT item_id FROM items").fetchall()]
    text, text_model = None, None
    if wh.table_exists(conn, "item_text_embeddings"):
        text = wh.read_embeddings(conn, "item_text_embeddings", "item_id")
        text_model = conn.execute("SELECT any_value(model_id) FROM item_text_embeddings").fetchall()[0][0]
        if len(text[0]) == 0:
            text = None
    return WarehouseTables(inter, users, items, wh.read_table(conn, "kg_entities"), wh.read_table(conn, "kg_relations"),
                           wh.read_table(conn, "kg_triples"), text, text_model)


def make_split(tables: WarehouseTables, config) -> Split:
    """The protocol-A split of ``config`` (a TrainConfig) over the tables' positives."""
    positives = implicit_interactions(tables.interactions, config.min_rating)
    return config.split_spec().apply(positives)


def data_for_split(tables: WarehouseTables, split: Split, config) -> TrainData:
    data = build_train_data(split, tables.user_ids, tables.item_ids, tables.entities, tables.relations,
                            tables.triples, tables.item_text, use_kg=config.use_kg, use_text=config.use_text)
    data.text_model = tables.text_model if data.item_text is not None else None
    return data


def load_training_data(warehouse: str, config) -> TrainData:
    import duckdb

    conn = duckdb.connect(warehouse, read_only=True)
    try:
        tables = read_tables(conn, window_days=getattr(config, "window_days", None))
    finally:
        conn.close()
    return data_for_split(tables, make_split(tables, config), config)
