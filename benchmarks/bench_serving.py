"""Load test of the HTTP service (loopback only, bounded in time and requests).

Starts ``python -m recsys_dagster.serving`` on a free 127.0.0.1 port over the latest serving
snapshot (``make demo`` makes one), then drives it with ``--concurrency`` clients (asyncio +
aiohttp) for ``--duration`` seconds per phase, in a mix of the four endpoints:

* phase ``1 client``: each endpoint alone with one client (the service time, no queueing);
* phase ``steady``: the mix at ``--concurrency``;
* phase ``reload``: the same load while a new snapshot is exported mid-phase (what
  ``serving_snapshot`` does after a publish); the service loads it in the background and
  swaps. Requests that fail during the switch are counted (target 0).

Reports throughput, p50/p95/p99 latency per endpoint (client side: includes queueing in the
service and the client's own CPU time — both run on the same cores) and errors; targets on
2 cores: GET p99 ≤ 50 ms, POST with items p99 ≤ 100 ms, POST with text p99 ≤ 200 ms.

    python -m benchmarks.bench_serving [--duration 60] [--concurrency 32] [--max-requests 200000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import subprocess
import sys
import threading
import time

import numpy as np

from benchmarks.common import ROOT, print_table, write_json

TARGET_P99_MS = {"GET user": 50, "GET similar": 50, "POST items": 100, "POST text": 200}
MIX = (("GET user", 0.5), ("GET similar", 0.2), ("POST items", 0.2), ("POST text", 0.1))
#: Texts are composed at random (almost every request's text is new: nothing is served from a cache).
LIKES = ["slow science fiction", "70s thrillers", "funny animated movies", "dark crime dramas", "romantic comedies",
         "war films based on true stories", "space adventures with robots", "french art house cinema",
         "musicals", "westerns", "horror with a sense of humour", "documentaries about nature", "heist movies"]
EXTRAS = ["with a great soundtrack", "set in New York", "for a rainy Sunday", "that my kids can watch",
          "with strong female leads", "from the nineties", "with a twist ending", ""]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def snapshot_ids():
    """Users and items of the snapshot the service will load (for the request mix)."""
    from recsys_dagster.core.model_store import ModelStore
    from recsys_dagster.core.snapshot import current_snapshot, open_snapshot
    from recsys_dagster.settings import load_settings

    version, export_id = current_snapshot(ModelStore(load_settings().models_dir))
    conn, _ = open_snapshot(version, export_id)
    try:
        users = [r[0] for r in conn.execute("SELECT DISTINCT user_id FROM fused_recommendations").fetchall()]
        items = [r[0] for r in conn.execute("SELECT item_id FROM items").fetchall()]
    finally:
        conn.close()
    return users, items


def export_again() -> float:
    """A new snapshot of the published version (as serving_snapshot writes it); seconds taken."""
    import duckdb

    from recsys_dagster.core.model_store import ModelStore
    from recsys_dagster.core.snapshot import export_snapshot
    from recsys_dagster.settings import load_settings

    settings = load_settings()
    store = ModelStore(settings.models_dir)
    version, dataset = store.require_published(), settings.open_dataset()
    t0 = time.perf_counter()
    conn = duckdb.connect(settings.warehouse, read_only=True)
    try:
        export_snapshot(conn, store, version, {"verb": dataset.verb, "verb_positive": dataset.verb_positive})
    finally:
        conn.close()
    return time.perf_counter() - t0


async def load(base: str, users, items, duration: float, concurrency: int, max_requests: int, seed: int,
               on_tick=None, only: str | None = None) -> list[tuple]:
    """``(endpoint, seconds since start, latency s, status, snapshot)`` per request. The
    client is aiohttp (it costs the shared CPU less per request than httpx)."""
    import aiohttp

    rng = random.Random(seed)
    names, weights = zip(*MIX, strict=True)
    out: list[tuple] = []
    t_start = time.perf_counter()
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(base, connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as client:

        async def one(kind: str):
            if kind == "GET user":
                return client.get(f"/v1/users/{rng.choice(users)}/recommendations", params={"k": "10"})
            if kind == "GET similar":
                return client.get(f"/v1/items/{rng.choice(items)}/similar", params={"k": "10"})
            if kind == "POST items":
                return client.post("/v1/recommendations", json={"items": rng.sample(items, 5), "k": 10})
            text = f"I like {rng.choice(LIKES)} and {rng.choice(LIKES)} {rng.choice(EXTRAS)}".strip()
            return client.post("/v1/recommendations", json={"text": text, "k": 10})

        async def worker():
            while time.perf_counter() - t_start < duration and len(out) < max_requests:
                kind = only or rng.choices(names, weights)[0]
                t0 = time.perf_counter()
                try:
                    async with await one(kind) as r:
                        body = await r.json()
                        status, snap = r.status, (body.get("snapshot") if r.status == 200 else None)
                except Exception as exc:  # noqa: BLE001 - a transport error counts as a failed request
                    status, snap = f"{type(exc).__name__}", None
                out.append((kind, t0 - t_start, time.perf_counter() - t0, status, snap))

        tasks = [asyncio.create_task(worker()) for _ in range(concurrency)]
        if on_tick is not None:
            tasks.append(asyncio.create_task(on_tick(t_start)))
        await asyncio.gather(*tasks)
    return out


def summarize(phase: str, records: list[tuple], duration: float) -> list[dict]:
    rows = []
    for kind, _ in MIX:
        mine = [r for r in records if r[0] == kind]
        if not mine:
            continue
        lat = np.array([r[2] for r in mine]) * 1000
        errors = sum(1 for r in mine if r[3] != 200)
        p99 = float(np.percentile(lat, 99))
        rows.append({"phase": phase, "endpoint": kind, "requests": len(mine), "req/s": round(len(mine) / duration, 1),
                     "p50 ms": round(float(np.percentile(lat, 50)), 1), "p95 ms": round(float(np.percentile(lat, 95)), 1),
                     "p99 ms": round(p99, 1), "target p99 ms": TARGET_P99_MS[kind],
                     "meets": p99 <= TARGET_P99_MS[kind], "errors": errors})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per phase")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--max-requests", type=int, default=200_000, help="per phase")
    parser.add_argument("--workers", type=int, default=1, help="service processes (RECSYS_SERVE_WORKERS)")
    parser.add_argument("--alone", type=float, default=10.0, help="seconds per endpoint with a single client")
    args = parser.parse_args()

    users, items = snapshot_ids()
    port = free_port()
    env = {**os.environ, "PORT": str(port), "RECSYS_SERVE_HOST": "127.0.0.1", "RECSYS_SERVE_POLL_S": "1",
           "RECSYS_SERVE_WORKERS": str(args.workers)}
    server = subprocess.Popen([sys.executable, "-m", "recsys_dagster.serving"], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        import httpx

        t0 = time.perf_counter()
        while True:
            try:
                if httpx.get(f"{base}/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.perf_counter() - t0 > 180:
                raise SystemExit(f"the service did not become ready:\n{server.stderr.read()[-3000:]}")
            time.sleep(0.5)
        startup_s = time.perf_counter() - t0
        first = httpx.get(f"{base}/ready").json()
        print(f"service ready in {startup_s:.1f} s: {first['model_version']} (snapshot {first['snapshot']})", flush=True)

        # service time: one client, one endpoint at a time (no queueing)
        alone = {kind: asyncio.run(load(base, users, items, args.alone, 1, args.max_requests, 3, only=kind))
                 for kind, _ in MIX}
        steady = asyncio.run(load(base, users, items, args.duration, args.concurrency, args.max_requests, 1))
        print(f"steady: {len(steady)} requests", flush=True)

        switch: dict = {}

        async def reload_mid_phase(t_start):
            await asyncio.sleep(args.duration / 3)
            switch["export_start"] = time.perf_counter() - t_start
            thread = threading.Thread(target=lambda: switch.update(export_s=export_again()))
            thread.start()
            while thread.is_alive():
                await asyncio.sleep(0.1)
            switch["exported"] = time.perf_counter() - t_start

        reload_records = asyncio.run(load(base, users, items, args.duration, args.concurrency, args.max_requests, 2,
                                          reload_mid_phase))
        after = httpx.get(f"{base}/ready").json()
        new_snap = [r[1] for r in reload_records if r[4] == after["snapshot"]]
        switch["first_new_answer"] = min(new_snap) if new_snap else None
        window = (switch["export_start"], (switch["first_new_answer"] or args.duration) + 1.0)
        in_switch = [r for r in reload_records if window[0] <= r[1] <= window[1]]
        failed_in_switch = sum(1 for r in in_switch if r[3] != 200)
        print(f"reload: snapshot {first['snapshot']} -> {after['snapshot']}, export {switch.get('export_s', 0):.1f} s, "
              f"first answer from the new one at {switch['first_new_answer']} s; {len(in_switch)} requests in the "
              f"switch window, {failed_in_switch} failed", flush=True)
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()

    rows = [r for kind, recs in alone.items() for r in summarize("1 client", recs, args.alone)]
    rows += summarize("steady", steady, args.duration) + summarize("reload", reload_records, args.duration)
    print_table(rows, f"serving load test: {args.concurrency} concurrent clients, {args.duration:.0f} s per phase, "
                      "loopback, client and service on the same cores")
    total_errors = sum(r["errors"] for r in rows)
    print(f"\nerrors: {total_errors}; failed during the snapshot switch: {failed_in_switch}")
    write_json("serving", {"concurrency": args.concurrency, "workers": args.workers, "duration_s": args.duration, "startup_s": round(startup_s, 1),
                           "rows": rows, "errors": total_errors, "reload": {
                               "from": first["snapshot"], "to": after["snapshot"], "model_version": after["model_version"],
                               "export_s": round(switch.get("export_s", 0.0), 2),
                               "export_started_at_s": round(switch["export_start"], 2),
                               "first_new_answer_at_s": round(switch["first_new_answer"], 2)
                               if switch["first_new_answer"] is not None else None,
                               "requests_in_switch_window": len(in_switch), "failed_in_switch": failed_in_switch}})


if __name__ == "__main__":
    main()
