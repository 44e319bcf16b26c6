"""Stage 6 — evaluation: every model on the same leak-free splits, tuned peers, and the gate
that publishes a model version."""

import time

import dagster as dg

from recsys_dagster.core import warehouse as wh
from recsys_dagster.core.evaluation import EvalConfig
from recsys_dagster.core.gate import GateConfig
from recsys_dagster.core.train.config import TrainConfig
from recsys_dagster.defs.config import config_fields, core_values, derive_config
from recsys_dagster.defs.mlflow_resource import MLflowResource
from recsys_dagster.defs.resources import (
    WAREHOUSE_POOL,
    ComputeResource,
    ModelStoreResource,
    WarehouseResource,
)

#: :class:`TrainConfig` fields an evaluation sets: the protocol-A split, and the epoch
#: budget and early stopping of *every* model it trains.
BUDGET_FIELDS = ("split", "split_seed", "max_epochs", "min_epochs", "patience")


class _EvaluationConfigBase(dg.Config):
    def to_core(self, tuned: dict, min_rating: float | None):
        """``(EvalConfig, SplitSpec, GateConfig)``; the split's rating threshold is the graded version's."""
        budget = TrainConfig(**core_values(self, TrainConfig, min_rating=min_rating))
        return (EvalConfig(train=budget, hyperparameters=tuned, **core_values(self, EvalConfig)),
                budget.split_spec(), GateConfig(**core_values(self, GateConfig)))


#: The launchpad form of ``evaluation_metrics``: :class:`EvalConfig`, the split and budget
#: fields of :class:`TrainConfig` and :class:`GateConfig` (same names, defaults and help).
EvaluationConfig = derive_config(
    "EvaluationConfig", "Launchpad config of evaluation_metrics.",
    config_fields(EvalConfig, exclude=("train", "hyperparameters")), config_fields(TrainConfig, include=BUDGET_FIELDS),
    config_fields(GateConfig, exclude=("protocol",)), base=_EvaluationConfigBase)


def graded_version(context: dg.AssetExecutionContext, store):
    """The version the latest ``gnn_model`` materialization produced (its metadata: lineage,
    not a file), else — weights trained outside this instance — the store's latest."""
    event = context.instance.get_latest_materialization_event(dg.AssetKey("gnn_model"))
    produced = event.asset_materialization.metadata.get("model_version") if event and event.asset_materialization else None
    version = store.get(produced.value) if produced is not None else store.latest()
    if version is None:
        raise dg.Failure("evaluation_metrics needs a trained gnn_model: materialize it first")
    if version.invalidated:
        raise dg.Failure(f"model version {version.version} was invalidated ({version.manifest['invalidated']['reason']}): "
                         "materialize gnn_model again")
    return version


def evaluation_metadata(ev, rows) -> dict:
    from recsys_dagster.core.comparison import comparison_table
    from recsys_dagster.core.model_evaluation import explanation_table, summary_table
    from recsys_dagster.core.plots import bar_plot_png, png_markdown

    a = rows[(rows.protocol == "A") & (rows.slice == "all") & (rows.metric == "ndcg") & (rows.k == 10)]
    plot = png_markdown(bar_plot_png(a.model.tolist(), a.value.tolist(), "protocol A: NDCG@10"), "NDCG@10") \
        if len(a) else "_no protocol A_"
    return {
        "dagster/row_count": len(rows), "model_version": ev.version, "split_fingerprint": ev.split.fingerprint,
        "summary": dg.MetadataValue.md(summary_table(rows)), "ndcg_plot": dg.MetadataValue.md(plot),
        "explanations": dg.MetadataValue.md(explanation_table(rows)),
        "paired_comparisons": dg.MetadataValue.md(comparison_table(ev.comparisons, "A", ev.gate.graded)),
        "hyperparameters": dg.MetadataValue.json(ev.params), "leak_check": dg.MetadataValue.json(ev.leak_check),
        "warm_started_peers": dg.MetadataValue.json(ev.warm_started_peers),
        "gate_passed": ev.gate.passed, "gate": dg.MetadataValue.json(ev.gate.details()),
        "fusion_alpha": ev.fusion.get("alpha", 1.0), "fusion_beta": ev.fusion.get("beta", 0.0),
        "fusion_gamma": ev.fusion.get("gamma", 0.0),
        "fusion_few_shot": dg.MetadataValue.json(ev.fusion.get("few_shot") or {}),
        "seconds_by_step": dg.MetadataValue.json({k: round(v, 2) for k, v in ev.seconds.items()}),
    }


@dg.asset(group_name="evaluation", kinds={"pytorch", "duckdb", "mlflow"}, pool=WAREHOUSE_POOL,
          deps=["gnn_model", "model_hyperparameters"])
def evaluation_metrics(context: dg.AssetExecutionContext, config: EvaluationConfig, warehouse: WarehouseResource,
                       mlflow_tracking: MLflowResource, model_store: ModelStoreResource,
                       compute: ComputeResource) -> dg.MaterializeResult:
    """The latest model version against every peer on the same splits with the same metric
    code: Pop, ItemKNN and EASE (tuned on validation), MF-BPR and LightGCN (tuned settings,
    same epoch budget; continued from the ones kept with the version's warm-start parent
    when the version was warm-started, with its budget), text kNN, the main GNN alone and
    fused. Refuses weights trained on
    another split and proves no valid/test pair was a training pair of the version or its
    warm-start ancestors. Tunes the fusion weights on validation; the quality gate (fused
    beats Pop and MF-BPR, floor, ≤5% below the last published version) publishes the
    version when it passes."""
    from recsys_dagster.core.model_evaluation import (
        EvaluationRefused,
        evaluate_version,
        record_evaluation,
    )
    from recsys_dagster.core.training_data import read_tables
    from recsys_dagster.core.tuning import resolve

    t0 = time.perf_counter()
    store = model_store.store()
    version = graded_version(context, store)
    trained = version.manifest["config"]
    with warehouse.get_connection() as conn:
        tables = read_tables(conn, window_days=trained.get("window_days"))
        eval_cfg, split, gate_cfg = config.to_core(resolve(wh.read_table(conn, "model_hyperparameters")),
                                                   trained.get("min_rating"))
    try:
        ev = evaluate_version(store, version.version, tables, eval_cfg, split, gate_cfg, compute.resolve(),
                              context.log.info)
    except EvaluationRefused as exc:
        raise dg.Failure(str(exc)) from None
    rows, comparisons = record_evaluation(store, ev, context.run.run_id)
    with warehouse.get_connection() as conn:
        wh.write(conn, "evaluation_metrics", rows, run_id=context.run.run_id)
        wh.write(conn, "evaluation_comparisons", comparisons, run_id=context.run.run_id)
    mlflow_tracking.log_evaluation(ev, context.run.run_id, version.mlflow_run_id)
    return dg.MaterializeResult(metadata={**evaluation_metadata(ev, rows),
                                          "seconds": round(time.perf_counter() - t0, 2)})


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
        "best_peer_paired": dg.MetadataValue.json(gate.get("best_peer_paired") or {}),
        "peers_ndcg@10": dg.MetadataValue.json(gate.get("peers_ndcg@10") or {}),
        "previous_published_ndcg@10": gate.get("previous_published_ndcg@10") or -1.0,
        "published": bool(gate["passed"])})
