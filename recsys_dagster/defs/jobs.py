"""Jobs, selected by asset group (adding an asset to a group adds it to the jobs).

* ``ingest_interactions`` — the ingestion group for one day (what the landing sensor runs).
* ``daily_refresh`` — one day's partition, then the knowledge graph, incremental text
  embeddings (only new/changed texts are encoded), a GNN warm-started from the published
  version on the same split (few epochs), the fast evaluation (protocol A: Pop, ItemKNN,
  EASE, text kNN, MF-BPR with its tuned settings continued from the one kept with that
  parent version and the same few epochs — from scratch with the full budget when none was
  kept —, main, fused; no explanation protocol; the gate decides what is published) and
  fused recommendations.
* ``tune_hyperparameters`` — the ``model_hyperparameters`` asset (every model's grid on
  validation); weekly by ``weekly_tuning_schedule`` (stopped by default) or on demand.
* ``full_rebuild`` — everything from scratch over the whole partition range in one run
  (every partitioned asset has a single-run backfill policy): cold-started GNN, evaluation
  with ``evaluation_metrics``' defaults (protocol A with MF and LightGCN retrained, cold
  items; protocol B and the ablations are opt-in config, and part of ``make bench``).
"""

import dagster as dg

GROUPS = ("ingestion", "knowledge_graph", "embeddings", "training", "evaluation", "recommendations")

#: Run config of ``daily_refresh`` (editable in the launchpad; applied to single-partition runs,
#: which is how the schedule launches it).
DAILY_REFRESH_CONFIG = {
    "ops": {
        "gnn_model": {"config": {"warm_start": True, "max_epochs": 20, "min_epochs": 3, "patience": 5}},
        # the gate needs Pop and the tuned MF-BPR of this run; LightGCN (~30-45 s on ML-100K)
        # and the explanation protocol (~25 s: every deletion re-propagates the graph) are left
        # to full_rebuild (time: without them the refresh measured 16-21% of a rebuild). MF
        # continues from the MF kept with the GNN's warm-start parent, with the GNN's budget
        # (evaluation_metrics' warm_start_peers): both models get the same few epochs of new data
        "evaluation_metrics": {"config": {"protocols": ["A"], "ablations": False, "trained_baselines": ["mf"],
                                          "explanation_users": 0}},
    },
}

#: Both refresh jobs run their steps in the run's own process: the warehouse pool serializes
#: most steps anyway, and a process per step costs seconds of start-up and a torch import
#: each (measured: benchmarks/bench_e2e.py). ``ingest_interactions`` likewise. The implicit
#: asset job (UI materializations, asset backfills) keeps Dagster's multiprocess executor.
EXECUTOR = dg.in_process_executor


def build_jobs(partitions_def: dg.PartitionsDefinition) -> dict:
    everything = dg.AssetSelection.groups(*GROUPS)
    return {
        "tune_hyperparameters": dg.define_asset_job(
            "tune_hyperparameters", selection=dg.AssetSelection.groups("tuning"), executor_def=EXECUTOR,
            description="Tune every model's hyperparameters on validation (slow: each trained model at each grid "
                        "point); full_rebuild and daily_refresh read the cached choices.",
            tags={"recsys/job": "tune"}),
        "ingest_interactions": dg.define_asset_job(
            "ingest_interactions", selection=dg.AssetSelection.groups("ingestion"), partitions_def=partitions_def,
            description="Catalogue, users and one day's raw + cleaned interactions (run by landing_sensor). "
                        "In-process executor: its steps all write the warehouse (pool limit 1), so separate "
                        "step processes would only add start-up time.",
            executor_def=EXECUTOR, tags={"recsys/job": "ingest"}),
        "daily_refresh": dg.define_asset_job(
            "daily_refresh", selection=everything, partitions_def=partitions_def, config=DAILY_REFRESH_CONFIG,
            executor_def=EXECUTOR,
            description="One day's partition, then KG, incremental embeddings, warm-started GNN, fast evaluation "
                        "and fused recommendations (run by daily_refresh_schedule).",
            tags={"recsys/job": "daily_refresh"}),
        "full_rebuild": dg.define_asset_job(
            "full_rebuild", selection=everything, partitions_def=partitions_def, executor_def=EXECUTOR,
            description="Everything from scratch: launch it over the whole partition range (a single run; "
                        "`make rebuild` does this from the CLI).",
            tags={"recsys/job": "full_rebuild"}),
    }
