"""The right to be forgotten: remove users from every store, keep them out, and audit it.

:func:`forget_users` (the CLI ``forget-user`` and the ``forget_users`` job call it):

1. deletes the users' rows from every personal table (``warehouse.PERSONAL_TABLES``: raw,
   cleaned, quarantines, users, behaviour vectors, recommendations) and their knowledge-graph
   nodes with the triples touching them, in **one transaction**;
2. records a tombstone per user (``forgotten_users``): ingestion skips their rows when old
   partitions or landed files are read again (:func:`skip_forgotten`). A tombstone holds a
   one-way digest of the stored id (:func:`tombstone_of`), not the id, so after forgetting no
   table holds the user's token (or raw id) itself; anyone holding the id can recompute it;
3. invalidates every model version that trained on their data or descends (warm start) from
   one that did: the manifest says so, the files holding ids or weights (weights, training
   pairs, serving snapshots) are deleted, the version is no longer published or used as a
   warm start, and its MLflow run, artifacts, logged and registered models are deleted. The
   next ``daily_refresh`` trains a fresh model without them and publishes it through the
   gate;
4. writes one ``privacy_audit`` line per user (its tombstone digest, the time, what was
   removed; never a raw id or a token).

Finally the warehouse file is rewritten (:func:`compact_warehouse`): DuckDB does not zero
the blocks that deleted rows occupied, so without it their bytes could linger in the file.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from recsys_dagster.core import warehouse as wh


@dataclass
class ForgetReport:
    users: int
    rows_deleted: dict[str, int] = field(default_factory=dict)
    kg_entities_deleted: int = 0
    kg_triples_deleted: int = 0
    already_forgotten: int = 0
    versions_invalidated: list[str] = field(default_factory=list)
    published_invalidated: bool = False
    mlflow_runs_deleted: int = 0

    def summary(self) -> str:
        rows = sum(self.rows_deleted.values())
        return (f"forgot {self.users} user(s): {rows} warehouse rows "
                f"({', '.join(f'{t} {n}' for t, n in self.rows_deleted.items() if n) or 'none'}), "
                f"{self.kg_entities_deleted} KG nodes, {self.kg_triples_deleted} KG triples; "
                f"{len(self.versions_invalidated)} model version(s) invalidated"
                + (" including the published one (nothing is published until the next refresh passes the gate)"
                   if self.published_invalidated else "")
                + f"; {self.mlflow_runs_deleted} MLflow run(s) deleted")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def tombstone_of(stored_id: str) -> str:
    """The digest a tombstone and the audit keep for a user id in stored form: ``t_`` + 128
    bits of SHA-256 over a fixed label and the id. With pseudonymization the id is already a
    keyed token, so the digest reveals nothing without the key; without it, a raw id from a
    small id space could be found by trying every id (the README says so)."""
    return "t_" + hashlib.sha256(b"recsys_dagster/forgotten\0" + str(stored_id).strip().encode()).hexdigest()[:32]


def tombstones_of(values: pd.Series) -> pd.Series:
    text = values.astype("string").str.strip()
    mapping = {v: tombstone_of(v) for v in pd.unique(text.dropna())}
    return text.map(mapping)


def tombstones(conn) -> frozenset[str]:
    if not wh.table_exists(conn, "forgotten_users"):
        return frozenset()
    return frozenset(r[0] for r in conn.execute("SELECT user_id FROM forgotten_users").fetchall())


def skip_forgotten(conn, frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """``frame`` less the rows of forgotten users, and how many rows that skipped."""
    gone = tombstones(conn)
    if not gone or frame.empty:
        return frame, 0
    hit = tombstones_of(frame["user_id"]).isin(gone).fillna(False).to_numpy(bool)
    return frame[~hit], int(hit.sum())


def forget_users(conn, user_ids: list[str], store=None, mlflow_uri: str | None = None,
                 scratch_dirs: tuple[Path, ...] = ()) -> ForgetReport:
    """Forget ``user_ids`` (in stored form: tokens when pseudonymized; see module docstring).
    ``store``: the :class:`~recsys_dagster.core.model_store.ModelStore`; ``scratch_dirs``:
    folders of intermediate training files (checkpoints, Ray job inputs) to empty."""
    ids = sorted({str(u).strip() for u in user_ids if str(u).strip()})
    if not ids:
        raise ValueError("forget-user: no user id given")
    report = ForgetReport(users=len(ids))
    report.already_forgotten = len({tombstone_of(u) for u in ids} & tombstones(conn))
    for table in ("forgotten_users", "privacy_audit"):
        wh.ensure_table(conn, table)
    now = _now()
    conn.register("_forget", pd.DataFrame({"user_id": ids, "tombstone": [tombstone_of(u) for u in ids]}))
    try:
        with wh.transaction(conn):
            _delete_users(conn, ids, report, now)
    finally:
        conn.unregister("_forget")
    if store is not None:
        invalidated, report.mlflow_runs_deleted = invalidate_versions(store, set(ids), mlflow_uri)
        report.versions_invalidated = [v.version for v in invalidated]
        report.published_invalidated = any(v.manifest.get("published_at") for v in invalidated)
        if invalidated:
            conn.execute("INSERT INTO privacy_audit VALUES (?, 'invalidate_models', NULL, ?)",
                         [now, json.dumps({"versions": report.versions_invalidated,
                                           "mlflow_runs_deleted": report.mlflow_runs_deleted})])
    for folder in scratch_dirs:
        shutil.rmtree(folder, ignore_errors=True)
    return report


def _delete_users(conn, ids: list[str], report: ForgetReport, now) -> None:
    """Steps 1, 2 and 4 for ``ids`` (registered as ``_forget``), inside the caller's transaction."""
    for table in wh.PERSONAL_TABLES:
        if wh.table_exists(conn, table):
            n = conn.execute(f"DELETE FROM {table} WHERE user_id IN (SELECT user_id FROM _forget)").fetchone()[0]
            report.rows_deleted[table] = int(n)
    if wh.table_exists(conn, "kg_entities"):
        conn.register("_forget_keys", pd.DataFrame({"entity_key": [f"user:{u}" for u in ids]}))
        nodes = "SELECT entity_id FROM kg_entities WHERE kind = 'user' AND entity_key IN (SELECT entity_key FROM _forget_keys)"
        if wh.table_exists(conn, "kg_triples"):
            report.kg_triples_deleted = int(conn.execute(
                f"DELETE FROM kg_triples WHERE head IN ({nodes}) OR tail IN ({nodes})").fetchone()[0])
        report.kg_entities_deleted = int(conn.execute(f"DELETE FROM kg_entities WHERE entity_id IN ({nodes})")
                                         .fetchone()[0])
        conn.unregister("_forget_keys")
    conn.execute("INSERT OR IGNORE INTO forgotten_users SELECT tombstone, ? FROM _forget", [now])
    detail = json.dumps({"rows_deleted": sum(report.rows_deleted.values()),
                         "kg_entities_deleted": report.kg_entities_deleted})
    conn.execute("INSERT INTO privacy_audit SELECT ?, 'forget', tombstone, ? FROM _forget", [now, detail])


def invalidate_versions(store, user_ids: set[str], mlflow_uri: str | None) -> tuple[list, int]:
    """Withdraw every version whose training pairs (or those of a peer its evaluation kept)
    include one of ``user_ids`` or whose warm-start parent is invalidated. Returns
    ``(versions, MLflow runs deleted)``."""
    from recsys_dagster.core.model_store import TRAIN_PAIRS

    bad: set[str] = set()
    reasons = {}
    for mv in store.versions():  # oldest first: parents before children
        if mv.invalidated:
            bad.add(mv.version)
            continue
        files = [mv.path / TRAIN_PAIRS, *(mv.peer_pairs(name) for name in mv.peers)]
        trained_on = any(pairs.is_file() and bool(pd.read_parquet(pairs, columns=["user_id"])["user_id"]
                                                  .isin(user_ids).any()) for pairs in files)
        source = _invalid_transfer_source(store, mv, bad)
        if trained_on or mv.parent in bad or source:
            bad.add(mv.version)
            reasons[mv.version] = ("trained on data of a forgotten user" if trained_on
                                   else f"warm-started from {mv.parent}, which was invalidated" if mv.parent in bad
                                   else f"transferred from {source}, which was invalidated")
    return withdraw_versions(store, reasons, mlflow_uri)


def _invalid_transfer_source(store, mv, bad: set[str]) -> str | None:
    """The transfer source of ``mv`` when it is invalidated (in this store or another one)."""
    from recsys_dagster.core.model_store import ModelStore, ModelStoreError

    src = mv.manifest.get("transfer_from")
    if not src:
        return None
    same = ModelStore(src["store"]).root.resolve() == store.root.resolve()
    if same and src["version"] in bad:
        return src["version"]
    try:
        return src["version"] if ModelStore(src["store"]).get(src["version"]).invalidated else None
    except ModelStoreError:
        return None


def withdraw_versions(store, reasons: dict[str, str], mlflow_uri: str | None) -> tuple[list, int]:
    """Invalidate each version (:meth:`ModelStore.invalidate` deletes its id- and
    weight-bearing files), the training checkpoint, and the versions' MLflow runs."""
    out = [store.invalidate(version, why) for version, why in reasons.items()]
    if out:
        (store.root / "checkpoint.pt").unlink(missing_ok=True)
    runs = [v.mlflow_run_id for v in out if v.mlflow_run_id]
    return out, (delete_mlflow_runs(mlflow_uri, runs) if runs and mlflow_uri else 0)


def delete_mlflow_runs(tracking_uri: str, run_ids: list[str]) -> int:
    """Delete MLflow runs for good: their artifacts (files), logged models, registered
    model versions, then the runs. Returns how many runs were found."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    found = 0
    for run_id in run_ids:
        try:
            run = client.get_run(run_id)
        except Exception:  # already gone (another forget, a manual cleanup)
            continue
        found += 1
        for mv in client.search_model_versions(f"run_id = '{run_id}'"):
            client.delete_model_version(mv.name, mv.version)
        try:
            logged = client.search_logged_models(experiment_ids=[run.info.experiment_id],
                                                 filter_string=f"source_run_id = '{run_id}'")
        except Exception:  # an MLflow without logged models
            logged = []
        for model in logged:
            _remove_local(model.artifact_location)
            client.delete_logged_model(model.model_id)
        _remove_local(run.info.artifact_uri)
        client.delete_run(run_id)
    return found


def _remove_local(uri: str | None) -> None:
    """Remove an artifact folder of a local (file) artifact store; remote stores keep theirs
    (documented: use the store's own lifecycle rules)."""
    from urllib.parse import urlparse
    from urllib.request import url2pathname

    if not uri:
        return
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        shutil.rmtree(url2pathname(parsed.path), ignore_errors=True)


def compact_warehouse(path: str | Path) -> None:
    """Rewrite the DuckDB file with its live rows only (``COPY FROM DATABASE`` into a new
    file, then an atomic rename), so deleted rows leave no bytes behind. The caller holds
    the warehouse lock and has closed its connection."""
    import os

    import duckdb

    path = Path(path)
    tmp = path.with_name(f".{path.name}.compact")
    tmp.unlink(missing_ok=True)
    conn = duckdb.connect(str(tmp))
    try:
        conn.execute("ATTACH ? AS old (READ_ONLY)", [str(path)])
        conn.execute("COPY FROM DATABASE old TO " + conn.execute("SELECT current_database()").fetchone()[0])
        conn.execute("DETACH old")
        conn.execute("CHECKPOINT")
    finally:
        conn.close()
    os.replace(tmp, path)
    Path(f"{path}.wal").unlink(missing_ok=True)


def forget_in_warehouse(database: str | Path, user_ids: list[str], store=None, mlflow_uri: str | None = None,
                        scratch_dirs: tuple[Path, ...] = (), compact: bool = True,
                        lock_timeout_s: float = 1800.0) -> ForgetReport:
    """:func:`forget_users` on a warehouse file under its cross-process lock (the one the
    Dagster resource takes), then :func:`compact_warehouse` while still holding it."""
    import duckdb
    from filelock import FileLock

    with FileLock(f"{database}.lock", timeout=lock_timeout_s):
        conn = duckdb.connect(str(database))
        try:
            report = forget_users(conn, user_ids, store, mlflow_uri, scratch_dirs)
        finally:
            conn.close()
        if compact:
            compact_warehouse(database)
    return report
