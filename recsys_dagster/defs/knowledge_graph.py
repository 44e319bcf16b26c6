"""Stage 2 — knowledge graph: entities and typed relations (tables kg_entities, kg_relations, kg_triples)."""

import time

import dagster as dg

from recsys_dagster.core import warehouse as wh
from recsys_dagster.defs.metadata import counts_table, preview
from recsys_dagster.defs.resources import WAREHOUSE_POOL, DatasetResource, WarehouseResource


@dg.asset(group_name="knowledge_graph", kinds={"duckdb", "python"}, pool=WAREHOUSE_POOL, deps=["items", "users"])
def knowledge_graph(context: dg.AssetExecutionContext, dataset: DatasetResource, warehouse: WarehouseResource):
    """Entities (items, users, genres, years, decades, tags, demographics, categorical item
    attributes, external KG entities) and typed, deduplicated triples with ids that stay
    stable across rebuilds. External KG: Freebase for ML-100K when ``ml-100k-kg/`` is in the
    data folder; ``kg.tsv`` + ``item_entities.csv`` for generic datasets. Unusable external
    triples/links go to ``kg_quarantine`` with a reason."""
    from recsys_dagster.core.knowledge_graph import build_knowledge_graph

    t0 = time.perf_counter()
    external = dataset.open().external_kg()
    with warehouse.get_connection() as conn:
        items = wh.read_table(conn, "items")
        users = wh.read_table(conn, "users")
        if items is None or users is None:
            raise dg.Failure("knowledge_graph needs the items and users tables: materialize them first")
        kg = build_knowledge_graph(
            items, users, external,
            previous_entities=wh.read_table(conn, "kg_entities"),
            previous_relations=wh.read_table(conn, "kg_relations"),
        )
        wh.replace_tables(conn, {"kg_entities": kg.entities, "kg_relations": kg.relations,
                                 "kg_triples": kg.triples, "kg_quarantine": kg.rejects})
    s = kg.summary()
    linked = kg.linked_items
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": s["triples"],
            "entities": s["entities"],
            "relations": s["relations"],
            "triples": s["triples"],
            "entities_by_kind": counts_table(s["entities_by_kind"], "kind", "entities"),
            "triples_by_source": counts_table(s["triples_by_relation_source"], "source", "triples"),
            "degree": dg.MetadataValue.json(s["degree"]),
            "isolated_entities": s["isolated_entities"],
            "external_kg": external.name if external else "none",
            "items_linked_to_external_kg": linked,
            "share_items_linked": round(linked / max(len(items), 1), 4),
            "rows_quarantined": len(kg.rejects),
            "relations_preview": preview(kg.relations, rows=40),
            "seconds": round(time.perf_counter() - t0, 3),
        }
    )


@dg.asset_check(asset=knowledge_graph, blocking=True, description="every item is an entity of the graph")
def every_item_is_an_entity(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    with warehouse.get_connection() as conn:
        missing = conn.execute(
            "SELECT count(*) FROM items i WHERE NOT EXISTS "
            "(SELECT 1 FROM kg_entities e WHERE e.entity_key = 'item:' || i.item_id)"
        ).fetchall()[0][0]
    return dg.AssetCheckResult(passed=missing == 0, metadata={"items_without_entity": missing})


@dg.asset_check(asset=knowledge_graph, blocking=True, description="no triple points to a missing entity or relation")
def no_dangling_triples(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    with warehouse.get_connection() as conn:
        dangling = conn.execute(
            "SELECT count(*) FROM kg_triples t WHERE NOT EXISTS (SELECT 1 FROM kg_entities e WHERE e.entity_id = t.head) "
            "OR NOT EXISTS (SELECT 1 FROM kg_entities e WHERE e.entity_id = t.tail) "
            "OR NOT EXISTS (SELECT 1 FROM kg_relations r WHERE r.relation_id = t.relation)"
        ).fetchall()[0][0]
    return dg.AssetCheckResult(passed=dangling == 0, metadata={"dangling_triples": dangling})


KG_CHECKS = [every_item_is_an_entity, no_dangling_triples]
