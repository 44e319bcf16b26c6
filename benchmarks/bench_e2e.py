"""End to end: the ``full_rebuild`` job from an empty home (wall time, peak RSS, seconds per
step) — over every partition but the last when a refresh follows — then ``daily_refresh``
of the last partition on top of it (a day the rebuild has not seen), as a share of the
rebuild. Real `dagster job execute` processes with their own temporary DAGSTER_HOME.

    python -m benchmarks.bench_e2e [--datasets movielens-100k movielens-latest-small] [--name e2e]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import ROOT, print_table, write_json
from recsys_dagster.defs.jobs import DAILY_REFRESH_CONFIG

ASSETS = ("items", "users", "raw_interactions", "cleaned_interactions", "knowledge_graph", "item_text_embeddings",
          "user_behavior_embeddings", "gnn_model", "evaluation_metrics", "fused_recommendations")
#: a run whose one failed step is the blocking quality gate: a measured outcome, not a crash
GATE_ONLY = re.compile(r"Steps failed: \['evaluation_metrics_fused_model_quality_gate'\]")
STEP = re.compile(r'STEP_SUCCESS - Finished execution of step "([^"]+)" in ([\d.]+)(ms|s|m)(?:(\d+)s)?')


def _seconds(value: str, unit: str, extra: str | None) -> float:
    v = float(value)
    return v / 1000 if unit == "ms" else v * 60 + float(extra or 0) if unit == "m" else v


def run_job(job: str, tags: dict, env: dict, log: Path, config: dict | None = None) -> dict:
    """One `dagster job execute` process: wall seconds, peak RSS of the run process, steps."""
    cmd = [str(Path(sys.executable).parent / "dagster"), "job", "execute", "-m", "recsys_dagster.definitions",
           "-j", job, "--tags", json.dumps(tags)]
    if config:
        path = log.with_suffix(".config.json")
        path.write_text(json.dumps(config))
        cmd += ["-c", str(path)]
    t0 = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    text = log.read_text()
    gate_failed = bool(GATE_ONLY.search(text))  # every step ran; the quality gate refused to publish
    if (os.waitstatus_to_exitcode(status) != 0 or "RUN_SUCCESS" not in text) and not gate_failed:
        tail = "\n".join(text.splitlines()[-30:])
        raise SystemExit(f"{job} failed (log {log}):\n{tail}")
    steps, checks = {}, 0.0
    for name, value, unit, extra in STEP.findall(text):
        if name in ASSETS:
            steps[name] = round(_seconds(value, unit, extra), 2)
        else:
            checks += _seconds(value, unit, extra)
    steps["asset checks (all)"] = round(checks, 2)
    return {"wall_s": round(wall, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "steps_s": steps,
            "published": not gate_failed}


#: ml-latest-small spans 22 years: 8,215 daily partitions cost ~3 min of per-partition event
#: writes (SQLite) per partitioned asset in a full-range run; monthly partitions (271) do not.
GRAIN = {"movielens-100k": "day", "movielens-latest-small": "month"}


def _evaluation(warehouse: str) -> list[dict]:
    """The newest evaluation run's rows (slice all): protocol A and cold items."""
    import duckdb

    conn = duckdb.connect(warehouse, read_only=True)
    rows = conn.execute("SELECT protocol, model, metric, k, value FROM evaluation_metrics WHERE slice = 'all' "
                        "AND metric IN ('ndcg', 'recall') AND run_id = (SELECT run_id FROM evaluation_metrics "
                        "ORDER BY created_at DESC LIMIT 1) ORDER BY protocol, model, metric, k").df()
    conn.close()
    return rows.to_dict("records")


def refresh_deltas(rebuild: list[dict], refresh: list[dict]) -> list[dict]:
    """Protocol-A NDCG@10 of every model in both evaluations: a refresh that grades a
    warm-started model leak-free stays close to the rebuild (target ±0.015)."""
    def ndcg(rows):
        return {r["model"]: r["value"] for r in rows if r["protocol"] == "A" and r["metric"] == "ndcg" and r["k"] == 10}

    a, b = ndcg(rebuild), ndcg(refresh)
    return [{"model": m, "rebuild": round(a[m], 4), "refresh": round(b[m], 4), "delta": round(b[m] - a[m], 4)}
            for m in a if m in b]


#: First, second-to-last and last partition key of the dataset the environment names.
PARTITION_KEYS = ("from recsys_dagster.defs.partitions import event_partitions\n"
                  "from recsys_dagster.settings import load_settings\n"
                  "s = load_settings()\n"
                  "keys = event_partitions(s.open_dataset().span(), s.partitions_end, s.partition_grain)"
                  ".get_partition_keys()\n"
                  "print(keys[0], keys[-2], keys[-1])")


def bench_dataset(dataset: str, data_dir: str | None, keep: bool, daily: bool = True) -> dict:
    work = Path(tempfile.mkdtemp(prefix=f"e2e-{dataset}-"))
    dagster_home = work / "dagster_home"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text(
        (ROOT / "dagster.yaml").read_text().replace("data/dagster", str(dagster_home / "storage")))
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home), "RECSYS_HOME": str(work / "home"),
           "RECSYS_DATASET": dataset, "RECSYS_WAREHOUSE": str(work / "home" / "warehouse.duckdb"),
           "RECSYS_PARTITION_GRAIN": GRAIN.get(dataset, "day")}
    env.pop("RECSYS_SOURCE", None)
    if data_dir:
        env["RECSYS_DATA_DIR"] = data_dir
    first, before_last, last = subprocess.run([sys.executable, "-c", PARTITION_KEYS], cwd=ROOT, env=env, check=True,
                                              capture_output=True, text=True).stdout.split()
    # the rebuild stops a partition short, so the refresh learns a day (or month) it has not seen
    try:
        full = run_job("full_rebuild", {"dagster/asset_partition_range_start": first,
                                        "dagster/asset_partition_range_end": before_last if daily else last},
                       env, work / "full_rebuild.log")
        evaluation = _evaluation(env["RECSYS_WAREHOUSE"])
        refresh = run_job("daily_refresh", {"dagster/partition": last}, env, work / "daily_refresh.log",
                          DAILY_REFRESH_CONFIG) if daily else None
        deltas = refresh_deltas(evaluation, _evaluation(env["RECSYS_WAREHOUSE"])) if daily else None
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    return {"dataset": dataset, "partitions": f"{first}..{before_last if daily else last}",
            "refreshed_partition": last if daily else None, "grain": env["RECSYS_PARTITION_GRAIN"],
            "full_rebuild": full, "daily_refresh": refresh, "evaluation": evaluation, "refresh_vs_rebuild": deltas,
            "daily_share_of_full": round(refresh["wall_s"] / full["wall_s"], 3) if daily else None,
            "work_dir": str(work) if keep else None}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--datasets", nargs="+", default=["movielens-100k", "movielens-latest-small"])
    parser.add_argument("--daily", nargs="*", default=["movielens-100k"], help="datasets that also get a daily_refresh")
    parser.add_argument("--keep", action="store_true", help="keep the temporary homes and logs")
    parser.add_argument("--name", default="e2e", help="results file (benchmarks/results/NAME.json): a run of one "
                                                      "dataset need not replace the two-dataset file")
    args = parser.parse_args()
    data_dir = os.environ.get("RECSYS_DATA_DIR")
    results = [bench_dataset(d, data_dir, args.keep, d in args.daily) for d in args.datasets]
    rows = []
    for r in results:
        for job in [j for j in ("full_rebuild", "daily_refresh") if r[j]]:
            rows.append({"dataset": r["dataset"], "job": job, "wall s": r[job]["wall_s"],
                         "peak RSS MB": r[job]["peak_rss_mb"],
                         "share of full": r["daily_share_of_full"] if job == "daily_refresh" else 1.0})
    print_table(rows, "end to end (dagster job execute, empty home, in-process executor)")
    for r in results:
        steps = [{"step": k, **{job: r[job]["steps_s"].get(k, "") for job in ("full_rebuild", "daily_refresh")
                                if r[job]}} for k in r["full_rebuild"]["steps_s"]]
        print_table(steps, f"{r['dataset']}: seconds per step")
        if r.get("refresh_vs_rebuild"):
            print_table(r["refresh_vs_rebuild"], f"{r['dataset']}: protocol-A NDCG@10, daily_refresh vs full_rebuild "
                                                 "(target |delta| <= 0.015)")
    write_json(args.name, {"results": results, "targets": {"ml100k_full_rebuild_s": 300, "daily_share": 0.2}})


if __name__ == "__main__":
    main()
