"""`make scale-check`: gnn_model trained as a Ray job (Dagster Pipes + Ray Train DDP) on a
2-node Ray cluster bound to loopback, with 2 workers and with 1, must follow the same
optimisation step for step.

1. Starts a Ray head and a second node (``ray start``, ``--node-ip-address=127.0.0.1``,
   1 CPU each, dashboard on 127.0.0.1). Run as root, the whole check re-executes itself in
   fresh network and PID namespaces (``unshare``): the only interface is loopback, so no
   Ray port can listen anywhere else, and every process it started dies with it. Without
   that right, Ray's own agents bind some ports on the machine's address (a warning says so).
2. Builds a warehouse in a temporary home (ingestion of every partition, knowledge graph,
   item text embeddings — encoded by Ray tasks in a Ray job, checked against a local
   encoding) for the dataset (default: ML-100K from RECSYS_DATA_DIR).
3. Materializes ``gnn_model`` with ``RECSYS_LAUNCHER=ray`` and 2 workers, then 1 worker
   (same config, seed and global batch), and compares the per-step global losses and the
   final validation NDCG@10 (targets: ≤ 1e-5 and ≤ 1e-3).
4. Stops the cluster. The last line is ``scale-check: ok world_size=2 max_ndcg_diff=<x>``;
   the exit status is non-zero when equivalence fails.

    python -m benchmarks.scale_check [--dataset movielens-100k] [--epochs 4] [--keep HOME] [--results DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import print_table, write_json

NETNS_FLAG = "RECSYS_SCALE_CHECK_ISOLATED"
LOSS_TOL, NDCG_TOL, TEXT_TOL = 1e-5, 1e-3, 1e-5


def isolate(argv: list[str]) -> None:
    """Re-execute in new network + PID namespaces when allowed (root and ``unshare``)."""
    if os.environ.get(NETNS_FLAG) or os.geteuid() != 0 or not shutil.which("unshare"):
        return
    probe = subprocess.run(["unshare", "--net", "--pid", "--fork", "--mount-proc", "true"], capture_output=True)
    if probe.returncode != 0:
        return
    os.environ[NETNS_FLAG] = "1"
    os.execvp("unshare", ["unshare", "--net", "--pid", "--fork", "--mount-proc", "--",
                          sys.executable, "-m", "benchmarks.scale_check", *argv])


def loopback_up() -> None:
    """Bring ``lo`` up (a new network namespace starts with it down)."""
    import fcntl
    import struct

    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        flags = struct.unpack("16sh", fcntl.ioctl(s, siocgifflags, struct.pack("16sh", b"lo", 0)))[1]
        fcntl.ioctl(s, siocsifflags, struct.pack("16sh", b"lo", flags | iff_up))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def interfaces() -> list[str]:
    return [name for _, name in socket.if_nameindex()]


class LoopbackRayCluster:
    """``ray start`` head + one more node on 127.0.0.1, 1 CPU each; :meth:`stop` ends both."""

    def __init__(self, nodes: int = 2, cpus: int = 1):
        self.nodes, self.cpus = nodes, cpus
        self.port, self.dashboard_port = free_port(), free_port()
        self.temp = tempfile.mkdtemp(prefix="rsc-", dir="/tmp")  # short: Ray's socket paths have a length limit
        # token authentication with a token of this cluster's own (not ~/.ray/auth_token, which
        # a local ray.init may have written); this process and its children (the Dagster side's
        # job client, the nodes, the jobs) all carry it
        os.environ.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
                           "RAY_USAGE_STATS_ENABLED": "0"})
        self.env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def _ray(self, *args: str) -> None:
        ray = str(Path(sys.executable).parent / "ray")
        out = subprocess.run([ray, *args], env=self.env, capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"ray {' '.join(args)} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")

    def start(self) -> LoopbackRayCluster:
        common = ["--node-ip-address=127.0.0.1", f"--num-cpus={self.cpus}", "--num-gpus=0", "--disable-usage-stats"]
        self._ray("start", "--head", f"--port={self.port}", "--dashboard-host=127.0.0.1",
                  f"--dashboard-port={self.dashboard_port}", f"--temp-dir={self.temp}", *common)
        for _ in range(self.nodes - 1):
            self._ray("start", f"--address=127.0.0.1:{self.port}", *common)
        self.wait_for_nodes()
        return self

    def wait_for_nodes(self, timeout_s: float = 60) -> None:
        from ray.job_submission import JobSubmissionClient

        deadline = time.monotonic() + timeout_s
        while True:
            try:
                nodes = JobSubmissionClient(self.dashboard)._do_request("GET", "/nodes?view=summary").json()
                alive = [n for n in nodes["data"]["summary"] if n["raylet"]["state"] == "ALIVE"]
                if len(alive) >= self.nodes:
                    return
            except Exception:  # noqa: BLE001 - the dashboard is still starting
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"Ray cluster: {self.nodes} nodes not alive after {timeout_s} s at {self.dashboard} "
                                   "(the dashboard needs ray[default]: pip install -e '.[ray]')")
            time.sleep(1)

    def listeners(self) -> list[str]:
        """Listening TCP addresses of this machine (or namespace) that are not loopback."""
        out = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True).stdout if shutil.which("ss") else ""
        addrs = [line.split()[3] for line in out.splitlines() if len(line.split()) > 3]
        return [a for a in addrs if not a.startswith(("127.", "[::1]", "[::ffff:127."))]

    def stop(self) -> None:
        subprocess.run([str(Path(sys.executable).parent / "ray"), "stop", "--force"], env=self.env,
                       capture_output=True)
        shutil.rmtree(self.temp, ignore_errors=True)


def build_warehouse(settings) -> None:
    import dagster as dg

    from recsys_dagster.definitions import build_definitions

    defs = build_definitions(settings)
    keys = defs.resolve_job_def("full_rebuild").partitions_def.get_partition_keys()
    first, last = keys[0], keys[-1]
    instance = dg.DagsterInstance.ephemeral()
    job = defs.resolve_implicit_global_asset_job_def()
    graph = defs.resolve_asset_graph()
    for selection, tags in (("items,users", {}),
                            ("raw_interactions,cleaned_interactions",
                             {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}),
                            ("knowledge_graph,item_text_embeddings", {})):
        keys_sel = list(dg.AssetSelection.from_coercible(selection.split(",")).resolve(graph))
        job.execute_in_process(asset_selection=keys_sel, tags=tags, instance=instance)


def text_vectors_match_local(settings) -> float:
    """Largest difference between the item vectors the Ray tasks wrote and a local encoding."""
    import duckdb
    import numpy as np

    from recsys_dagster.core.text import EncoderConfig, TextEncoder

    conn = duckdb.connect(settings.warehouse, read_only=True)
    try:
        rows = conn.execute("SELECT text, embedding FROM item_text_embeddings ORDER BY item_id").fetchall()
    finally:
        conn.close()
    local = TextEncoder(EncoderConfig(model=settings.text_model, device="cpu")).encode([r[0] for r in rows])
    return float(np.abs(np.asarray([r[1] for r in rows], dtype=np.float32) - local).max())


def train_on_cluster(settings, workers: int, epochs: int) -> dict:
    """Materialize gnn_model with the ray launcher and ``workers`` workers; its metadata."""
    import dagster as dg

    from recsys_dagster.definitions import build_definitions

    defs = build_definitions(dataclasses.replace(settings, ray_workers=workers))
    job = defs.resolve_implicit_global_asset_job_def()
    run_config = {"ops": {"gnn_model": {"config": {"max_epochs": epochs, "min_epochs": epochs}}}}
    result = job.execute_in_process(asset_selection=[dg.AssetKey("gnn_model")], run_config=run_config,
                                    instance=dg.DagsterInstance.ephemeral())
    [event] = [e for e in result.get_asset_materialization_events()]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default=os.environ.get("RECSYS_DATASET") or "movielens-100k")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per run (no early stop before)")
    parser.add_argument("--keep", help="home folder to use and keep (default: a temporary one)")
    parser.add_argument("--results", help="folder of scale_check.json (default: benchmarks/results)")
    args = parser.parse_args()
    isolate(sys.argv[1:])
    isolated = bool(os.environ.get(NETNS_FLAG))
    if isolated:
        loopback_up()

    from recsys_dagster.settings import load_settings

    home = Path(args.keep or tempfile.mkdtemp(prefix="scale-check-"))
    settings = load_settings({**os.environ, "RECSYS_DATASET": args.dataset, "RECSYS_HOME": str(home),
                              "RECSYS_WAREHOUSE": str(home / "warehouse.duckdb"), "RECSYS_LAUNCHER": "ray",
                              "RECSYS_RAY_PYTHON": sys.executable, "RECSYS_DEVICE": "cpu"})
    cluster = LoopbackRayCluster()
    try:
        cluster.start()
        leaks = cluster.listeners()
        print(f"scale-check: Ray cluster up ({cluster.nodes} nodes, dashboard {cluster.dashboard}; "
              f"interfaces {interfaces()}; "
              f"{'isolated network namespace' if isolated else 'shared network'})", flush=True)
        if leaks:
            print(f"scale-check: WARNING listeners off loopback: {leaks} (run as root to isolate)", flush=True)
        settings = dataclasses.replace(settings, ray_address=cluster.dashboard)
        t0 = time.perf_counter()
        print(f"scale-check: building the warehouse for {args.dataset} in {home} (item texts encoded by Ray tasks)",
              flush=True)
        build_warehouse(settings)
        t_build = time.perf_counter() - t0
        text_diff = text_vectors_match_local(settings)
        print(f"scale-check: item text vectors from Ray tasks vs local encoding: max |diff| {text_diff:.2g}", flush=True)
        runs = {}
        for workers in (2, 1):
            t = time.perf_counter()
            meta = train_on_cluster(settings, workers, args.epochs)
            out = json.loads((Path(meta["ray_job_dir"]) / "result.json").read_text())
            runs[workers] = {"meta": meta, "result": out, "seconds": time.perf_counter() - t}
            print(f"scale-check: {workers} worker(s): {len(out['step_losses'])} steps, valid ndcg@10 "
                  f"{out['best_valid']['ndcg@10']:.6f}, version {meta['model_version']}", flush=True)
    finally:
        cluster.stop()
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)

    a, b = runs[2]["result"], runs[1]["result"]
    same_steps = len(a["step_losses"]) == len(b["step_losses"]) > 0
    loss_diff = max((abs(x - y) for x, y in zip(a["step_losses"], b["step_losses"], strict=False)), default=float("inf"))
    ndcg_diff = abs(a["best_valid"]["ndcg@10"] - b["best_valid"]["ndcg@10"])
    ok = (same_steps and loss_diff <= LOSS_TOL and ndcg_diff <= NDCG_TOL and a["world_size"] == 2 == b["world_size"] * 2
          and text_diff <= TEXT_TOL)
    rows = [{"workers": w, "world size": r["result"]["world_size"], "steps": len(r["result"]["step_losses"]),
             "epochs": r["result"]["epochs_run"], "valid ndcg@10": r["result"]["best_valid"]["ndcg@10"],
             "test ndcg@10": r["result"]["test"]["ndcg@10"], "gnn_model s": round(r["seconds"], 1),
             "launcher": r["meta"]["launcher"]} for w, r in runs.items()]
    print_table(rows, f"gnn_model as a Ray job on a 2-node loopback cluster ({args.dataset}, {args.epochs} epochs)")
    write_json("scale_check", {"dataset": args.dataset, "epochs": args.epochs, "isolated_network": isolated,
                               "listeners_off_loopback": leaks, "warehouse_s": round(t_build, 1), "runs": rows,
                               "text_max_abs_diff": text_diff,
                               "max_step_loss_diff": loss_diff, "ndcg_diff": ndcg_diff, "ok": ok}, folder=args.results)
    print(f"max per-step loss difference {loss_diff:.3g} (≤ {LOSS_TOL:g}), same steps {same_steps}")
    print(f"scale-check: {'ok' if ok else 'FAILED'} world_size=2 max_ndcg_diff={ndcg_diff:.3g}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
