"""Stage 6 — evaluation: protocols A/B/cold-item, every baseline in the same run, and gates."""

import json
import time
from dataclasses import replace
from pathlib import Path

import dagster as dg
import pandas as pd
from pydantic import Field

from recsys_dagster.core import warehouse as wh
from recsys_dagster.defs.mlflow_resource import MLflowResource
from recsys_dagster.defs.resources import WAREHOUSE_POOL, WarehouseResource
from recsys_dagster.defs.training import latest_weights

TABLE_SQL = ("run_id VARCHAR, model_version VARCHAR, protocol VARCHAR, model VARCHAR, slice VARCHAR, "
             "metric VARCHAR, k INTEGER, value DOUBLE, created_at TIMESTAMP")


class EvaluationConfig(dg.Config):
    protocols: list[str] = Field(default=["A", "cold_item"], description="A (RecBole 8:1:1), B (temporal), cold_item; "
                                 "add B for the research evaluation")
    ablations: bool = Field(default=False, description="main model without KG / without text / without both "
                                                       "(protocol A; three more trainings)")
    trained_baselines: list[str] = Field(default=["mf", "lightgcn"], description="collaborative baselines trained "
                                         "in the run (mf, lightgcn); Pop, ItemKNN and text kNN always run")
    baseline_max_epochs: int = Field(default=100, description="epoch cap for every model trained inside the evaluation")
    cold_user_share: float = Field(default=0.2, description="share of test users (fewest train interactions) in the cold_users slice")


def _summary_table(rows: pd.DataFrame) -> str:
    a = rows[(rows.slice == "all") & rows.metric.isin(["ndcg", "recall", "mrr", "hit", "precision"])]
    if a.empty:
        return "_no rows_"
    pivot = a.pivot_table(index=["protocol", "model"], columns=["metric", "k"], values="value").round(4)
    pivot.columns = [f"{m}@{k}" for m, k in pivot.columns]
    return pivot.reset_index().to_markdown(index=False)


@dg.asset(group_name="evaluation", kinds={"pytorch", "duckdb", "mlflow"}, pool=WAREHOUSE_POOL, deps=["gnn_model"])
def evaluation_metrics(context: dg.AssetExecutionContext, config: EvaluationConfig, warehouse: WarehouseResource,
                       mlflow_tracking: MLflowResource) -> dg.MaterializeResult:
    """Every model on the same splits with the same metric code: Pop, ItemKNN, MF-BPR,
    LightGCN, text kNN, the main GNN alone, the fused model, ablations; protocols A
    (RecBole 8:1:1 full ranking), B (temporal) and cold items; slices by user activity,
    coverage and novelty. Also tunes the fusion weights (α, β) on validation and stores
    them with the model version. Gates: fused must beat Pop and MF-BPR, and must not drop
    more than 5% from the previous evaluation."""
    import torch

    from recsys_dagster.core.evaluation import ROW_COLUMNS, EvalConfig, evaluate_protocols
    from recsys_dagster.core.plots import bar_plot_png
    from recsys_dagster.core.train import TrainConfig, load_weights
    from recsys_dagster.core.training_data import read_tables
    from recsys_dagster.defs.embeddings import _png_md

    t0 = time.perf_counter()
    weights = latest_weights(str(Path(warehouse.database).parent))
    if weights is None:
        raise dg.Failure("evaluation_metrics needs a trained gnn_model: materialize it first")
    saved = TrainConfig.from_dict(torch.load(weights, map_location="cpu", weights_only=True)["config"])
    train_cfg = replace(saved, device=saved.device if torch.cuda.is_available() else "cpu")
    with warehouse.get_connection() as conn:
        tables = read_tables(conn, window_days=train_cfg.window_days)
    eval_cfg = EvalConfig(train=train_cfg, baseline_max_epochs=config.baseline_max_epochs,
                          cold_user_share=config.cold_user_share, protocols=tuple(config.protocols),
                          ablations=config.ablations, trained_baselines=tuple(config.trained_baselines))
    result = evaluate_protocols(tables, eval_cfg, lambda data: load_weights(weights, data, train_cfg.device)[0],
                                log=context.log.info)
    rows, fusion, seconds = result.rows, result.fusion, result.seconds

    version = weights.parent.name
    if fusion:
        (weights.parent / "fusion.json").write_text(json.dumps(fusion, indent=2))
    frame = pd.DataFrame(rows, columns=ROW_COLUMNS)
    frame.insert(0, "model_version", version)
    frame.insert(0, "run_id", context.run.run_id)
    frame["created_at"] = pd.Timestamp.now(tz="UTC").tz_localize(None)
    with warehouse.get_connection() as conn:
        conn.execute(f"CREATE TABLE IF NOT EXISTS evaluation_metrics ({TABLE_SQL})")
        conn.execute("DELETE FROM evaluation_metrics WHERE run_id = ?", [context.run.run_id])
        conn.register("_rows", frame)
        conn.execute("INSERT INTO evaluation_metrics SELECT * FROM _rows")
        conn.unregister("_rows")
    a = frame[(frame.protocol == "A") & (frame.slice == "all") & (frame.metric == "ndcg") & (frame.k == 10)]
    plot = _png_md(bar_plot_png(a.model.tolist(), a.value.tolist(), "protocol A: NDCG@10"), "NDCG@10") if len(a) else "_"
    run_file = weights.parent / "mlflow_run_id"
    if run_file.is_file():
        import mlflow

        mlflow_tracking._client()
        with mlflow.start_run(run_id=run_file.read_text().strip()):
            mlflow.log_metrics({f"eval_{r.protocol}_{r.model}_{r.slice}_{r.metric}_at_{r.k}": r.value
                                for r in frame.itertuples() if r.slice == "all"})
            if fusion:
                mlflow.log_params({"fusion_alpha": fusion["alpha"], "fusion_beta": fusion["beta"]})
    return dg.MaterializeResult(metadata={
        "dagster/row_count": len(frame),
        "model_version": version,
        "summary": dg.MetadataValue.md(_summary_table(frame)),
        "ndcg_plot": dg.MetadataValue.md(plot) if isinstance(plot, str) else plot,
        "fusion_alpha": fusion.get("alpha", 1.0),
        "fusion_beta": fusion.get("beta", 0.0),
        "seconds_by_step": dg.MetadataValue.json({k: round(v, 2) for k, v in seconds.items()}),
        "seconds": round(time.perf_counter() - t0, 2),
    })


def _metric(conn, run_id: str | None, model: str) -> float | None:
    sql = ("SELECT value FROM evaluation_metrics WHERE protocol = 'A' AND slice = 'all' AND metric = 'ndcg' "
           "AND k = 10 AND model = ? AND run_id = ?")
    rows = conn.execute(sql, [model, run_id]).fetchall()
    return rows[0][0] if rows else None


@dg.asset_check(asset=evaluation_metrics, blocking=True,
                description="fused NDCG@10 (protocol A) beats Pop and MF-BPR and is within 5% of the previous evaluation")
def fused_model_quality_gate(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    with warehouse.get_connection() as conn:
        if not wh.table_exists(conn, "evaluation_metrics"):
            return dg.AssetCheckResult(passed=False, metadata={"reason": "no evaluation_metrics table"})
        runs = conn.execute("SELECT run_id FROM evaluation_metrics WHERE protocol = 'A' GROUP BY run_id "
                            "ORDER BY max(created_at) DESC LIMIT 2").fetchall()
        if not runs:
            return dg.AssetCheckResult(passed=True, metadata={"reason": "protocol A not evaluated: nothing to gate"})
        latest = runs[0][0]
        fused, pop, mf = (_metric(conn, latest, m) for m in ("fused", "pop", "mf"))
        previous = _metric(conn, runs[1][0], "fused") if len(runs) > 1 else None
    failures = []
    if fused is None:
        failures.append("no fused result")
    else:
        if pop is not None and fused <= pop:
            failures.append(f"fused {fused:.4f} <= pop {pop:.4f}")
        if mf is not None and fused <= mf:
            failures.append(f"fused {fused:.4f} <= mf {mf:.4f}")
        if previous is not None and fused < 0.95 * previous:
            failures.append(f"fused {fused:.4f} dropped > 5% from previous {previous:.4f}")
    return dg.AssetCheckResult(passed=not failures, metadata={
        "fused_ndcg@10": fused if fused is not None else -1.0, "pop_ndcg@10": pop if pop is not None else -1.0,
        "mf_ndcg@10": mf if mf is not None else -1.0, "previous_fused_ndcg@10": previous if previous is not None else -1.0,
        "failures": "; ".join(failures) or "none"})
