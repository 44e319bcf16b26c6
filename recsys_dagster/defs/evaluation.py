"""Stage 6 — evaluation: every model on the same leak-free splits, tuned peers, and the gate
that publishes a model version."""

import time

import dagster as dg
import pandas as pd
from pydantic import Field

from recsys_dagster.core import warehouse as wh
from recsys_dagster.defs.mlflow_resource import MLflowResource
from recsys_dagster.defs.resources import (
    WAREHOUSE_POOL,
    ComputeResource,
    ModelStoreResource,
    WarehouseResource,
)


class EvaluationConfig(dg.Config):
    protocols: list[str] = Field(default=["A", "cold_item"], description="A (hash split 8:1:1), A_recbole (RecBole's "
                                 "per-user shuffle, every model retrained), B (temporal), cold_item")
    ablations: bool = Field(default=False, description="main model without KG / without text / without both "
                                                       "(protocol A; three more trainings)")
    trained_baselines: list[str] = Field(default=["mf", "lightgcn"], description="collaborative baselines trained "
                                         "in the run (mf, lightgcn); Pop, ItemKNN, EASE and text kNN always run")
    split: str = Field(default="hash", description="protocol-A split; weights trained on another split are refused")
    split_seed: int = 2020
    max_epochs: int = Field(default=300, description="epoch budget of every model trained in the evaluation")
    min_epochs: int = 20
    patience: int = Field(default=30, description="early-stopping patience (validation NDCG@10) of every model "
                          "trained in the evaluation")
    cold_user_share: float = Field(default=0.2, description="share of test users (fewest train interactions) in the cold_users slice")
    cold_item_share: float = Field(default=0.1, description="share of items held out as cold in the cold_item protocol")
    required_peers: list[str] = Field(default=["pop", "mf"], description="the gate fails unless fused beats each of these")
    min_ndcg: float = Field(default=0.02, description="the gate's absolute floor on fused protocol-A NDCG@10")
    max_drop: float = Field(default=0.05, description="the gate fails below (1 - max_drop) x the last published "
                            "version's fused NDCG@10 on the same split")


@dg.asset(group_name="evaluation", kinds={"pytorch", "duckdb", "mlflow"}, pool=WAREHOUSE_POOL, deps=["gnn_model"])
def evaluation_metrics(context: dg.AssetExecutionContext, config: EvaluationConfig, warehouse: WarehouseResource,
                       mlflow_tracking: MLflowResource, model_store: ModelStoreResource,
                       compute: ComputeResource) -> dg.MaterializeResult:
    """The latest model version against every peer on the same splits with the same metric
    code: Pop, ItemKNN and EASE (tuned on validation), MF-BPR and LightGCN (tuned settings,
    same epoch budget), text kNN, the main GNN alone and fused. Refuses weights trained on
    another split and proves no valid/test pair was a training pair of the version or its
    warm-start ancestors. Tunes the fusion weights on validation; the quality gate (fused
    beats Pop and MF-BPR, floor, ≤5% below the last published version) publishes the
    version when it passes."""
    from recsys_dagster.core.evaluation import EvalConfig
    from recsys_dagster.core.gate import GateConfig
    from recsys_dagster.core.model_evaluation import (
        EvaluationRefused,
        evaluate_version,
        summary_table,
    )
    from recsys_dagster.core.plots import bar_plot_png
    from recsys_dagster.core.splits import SplitSpec
    from recsys_dagster.core.train import TrainConfig
    from recsys_dagster.core.training_data import read_tables
    from recsys_dagster.core.tuning import resolve
    from recsys_dagster.defs.embeddings import _png_md

    t0 = time.perf_counter()
    store = model_store.store()
    if (latest := store.latest()) is None:
        raise dg.Failure("evaluation_metrics needs a trained gnn_model: materialize it first")
    with warehouse.get_connection() as conn:
        tables = read_tables(conn, window_days=latest.manifest["config"].get("window_days"))
        tuned = resolve(wh.read_table(conn, "model_hyperparameters"))
    budget = TrainConfig(max_epochs=config.max_epochs, min_epochs=config.min_epochs, patience=config.patience)
    eval_cfg = EvalConfig(train=budget, cold_user_share=config.cold_user_share, protocols=tuple(config.protocols),
                          ablations=config.ablations, trained_baselines=tuple(config.trained_baselines),
                          cold_item_share=config.cold_item_share, hyperparameters=tuned)
    split = SplitSpec(config.split, config.split_seed, min_rating=latest.manifest["config"].get("min_rating"))
    gate_cfg = GateConfig(tuple(config.required_peers), config.min_ndcg, config.max_drop)
    try:
        ev = evaluate_version(store, latest.version, tables, eval_cfg, split, gate_cfg, compute.resolve(), context.log.info)
    except EvaluationRefused as exc:
        raise dg.Failure(str(exc)) from None
    rows = ev.rows.assign(run_id=context.run.run_id, model_version=ev.version, split_fingerprint=split.fingerprint,
                          created_at=pd.Timestamp.now(tz="UTC").tz_localize(None))
    with warehouse.get_connection() as conn:
        wh.write(conn, "evaluation_metrics", rows, run_id=context.run.run_id)
    if ev.fusion:
        store.update(ev.version, fusion=ev.fusion)
    store.record_gate(ev.version, ev.gate.passed, {**ev.gate.details(), "run_id": context.run.run_id})
    mlflow_tracking.log_to_run(latest.mlflow_run_id, {
        f"eval_{r.protocol}_{r.model}_{r.metric}_at_{r.k}": r.value for r in rows.itertuples() if r.slice == "all"},
        {"hyperparameters": ev.params, "gate": ev.gate.details(), "split": split.as_dict()},
        f"evaluation/{context.run.run_id}.json")
    a = rows[(rows.protocol == "A") & (rows.slice == "all") & (rows.metric == "ndcg") & (rows.k == 10)]
    return dg.MaterializeResult(metadata={
        "dagster/row_count": len(rows), "model_version": ev.version, "split_fingerprint": split.fingerprint,
        "summary": dg.MetadataValue.md(summary_table(rows)),
        "ndcg_plot": _png_md(bar_plot_png(a.model.tolist(), a.value.tolist(), "protocol A: NDCG@10"), "NDCG@10")
        if len(a) else dg.MetadataValue.md("_no protocol A_"),
        "hyperparameters": dg.MetadataValue.json(ev.params), "leak_check": dg.MetadataValue.json(ev.leak_check),
        "gate_passed": ev.gate.passed, "gate": dg.MetadataValue.json(ev.gate.details()),
        "fusion_alpha": ev.fusion.get("alpha", 1.0), "fusion_beta": ev.fusion.get("beta", 0.0),
        "seconds_by_step": dg.MetadataValue.json({k: round(v, 2) for k, v in ev.seconds.items()}),
        "seconds": round(time.perf_counter() - t0, 2),
    })


@dg.asset_check(asset=evaluation_metrics, blocking=True,
                description="this run's evaluation: fused NDCG@10 (protocol A) beats Pop and the tuned MF-BPR, clears "
                            "the floor and is within 5% of the last published version on the same split")
def fused_model_quality_gate(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource,
                             model_store: ModelStoreResource) -> dg.AssetCheckResult:
    with warehouse.get_connection() as conn:
        wh.ensure_table(conn, "evaluation_metrics")
        versions = conn.execute("SELECT DISTINCT model_version FROM evaluation_metrics WHERE run_id = ?",
                                [context.run.run_id]).fetchall()
    if len(versions) != 1:
        return dg.AssetCheckResult(passed=False, metadata={
            "failures": f"expected one evaluation in run {context.run.run_id}, found {len(versions)}"})
    gate = model_store.store().get(versions[0][0]).gate or {}
    if gate.get("run_id") != context.run.run_id:
        return dg.AssetCheckResult(passed=False, metadata={"failures": "no gate verdict from this run"})
    gap = gate.get("gap_to_best_peer")
    return dg.AssetCheckResult(passed=bool(gate["passed"]), metadata={
        "model_version": versions[0][0], "failures": gate["failures"],
        "fused_ndcg@10": gate.get("fused_ndcg@10") if gate.get("fused_ndcg@10") is not None else -1.0,
        "best_peer": gate.get("best_peer") or "-", "gap_to_best_peer": round(gap, 4) if gap is not None else "-",
        "peers_ndcg@10": dg.MetadataValue.json(gate.get("peers_ndcg@10") or {}),
        "previous_published_ndcg@10": gate.get("previous_published_ndcg@10") or -1.0,
        "published": bool(gate["passed"])})
