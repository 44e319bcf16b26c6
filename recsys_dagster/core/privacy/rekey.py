"""Re-tokenization: move a warehouse to another id space (a new key, raw ids -> tokens, or
tokens -> raw ids).

Tokens are one-way, so the mapping comes from the sources: every user id the dataset files
(and the landing folder) hold is mapped from its old stored form to its new one. Every
personal table, the tombstones, the audit lines and the KG's user nodes are rewritten in
one transaction; rows of ids the sources no longer hold cannot be mapped and are deleted
(tombstone digests of such ids are kept in the old form and reported). Malformed raw lines are
rewritten where their user field held a token, else redacted until ``raw_interactions`` is
re-materialized. Every model version is invalidated (its id maps are in the old space) and
its MLflow run deleted; the next run trains fresh. The warehouse file is then compacted.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field

import pandas as pd

from recsys_dagster.core import warehouse as wh
from recsys_dagster.core.privacy.pseudonyms import (
    ID_SPACE,
    OFF,
    PrivacyError,
    id_space,
    recorded_space,
    stored_form,
)
from recsys_dagster.core.privacy.state import set_state

RAW_LINE_TABLES = ("raw_interactions", "interactions_quarantine", "metadata_quarantine")


@dataclass
class RekeyReport:
    old_space: str
    new_space: str
    ids_mapped: int = 0
    rows_rewritten: dict[str, int] = field(default_factory=dict)
    rows_deleted_unmapped: int = 0
    tombstones_unmapped: int = 0
    versions_invalidated: int = 0


def source_user_ids(dataset, landing_dir: str | None = None) -> list[str]:
    """Every user id (stripped) in ``dataset``'s interaction and user files and, when given,
    in every landed file; ``dataset`` must read raw ids (no pseudonymizer)."""
    from recsys_dagster.core.landing import read_landed, scan

    frames = [dataset.read_interactions_text()[["user_id"]]]
    users, rejects = dataset.read_users()
    frames += [users[["user_id"]], rejects[["user_id"]]]
    if landing_dir:
        days, _ = scan(landing_dir)
        if days:
            frames.append(read_landed(dataset, landing_dir, days[0].day, days[-1].day)[["user_id"]])
    ids = pd.concat(frames)["user_id"].astype("string").str.strip()
    return sorted(set(ids[ids.notna() & (ids != "")]))


def rekey(conn, raw_ids: list[str], old, new, store=None, mlflow_uri: str | None = None) -> RekeyReport:
    """Rewrite the warehouse from ``old``'s id space to ``new``'s (pseudonymizers or None for
    raw ids), ``raw_ids`` from :func:`source_user_ids`."""
    from recsys_dagster.core.privacy.forget import tombstone_of, withdraw_versions

    have, want = recorded_space(conn) or id_space(old), id_space(new)
    if have != id_space(old):
        raise PrivacyError(f"the warehouse's id space is {have}, but the old key given has {id_space(old)}: "
                           "give the key the warehouse was written with (RECSYS_PSEUDONYMIZE_OLD_KEY[_FILE])")
    report = RekeyReport(have, want)
    if have == want:
        return report

    olds, news = stored_form(raw_ids, old), stored_form(raw_ids, new)
    mapping = pd.DataFrame({"old": olds + [tombstone_of(o) for o in olds],
                            "new": news + [tombstone_of(n) for n in news]})  # ids, then tombstone digests
    report.ids_mapped = len(raw_ids)
    conn.register("_rekey", mapping)
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    for table in ("privacy_state", "privacy_audit"):  # DDL before the transaction
        wh.ensure_table(conn, table)
    try:
        with wh.transaction(conn):
            _rewrite(conn, report, now)
    finally:
        conn.unregister("_rekey")
    if store is not None:
        versions = {mv.version: f"re-tokenized: its ids are in the old id space {have}"
                    for mv in store.versions() if not mv.invalidated}
        report.versions_invalidated = len(withdraw_versions(store, versions, mlflow_uri)[0])
    return report


def _rewrite(conn, report: RekeyReport, now) -> None:
    """Every user id through ``_rekey`` (inside the caller's transaction)."""
    for table in (*wh.PERSONAL_TABLES, "forgotten_users", "privacy_audit"):
        if not wh.table_exists(conn, table):
            continue
        if table in RAW_LINE_TABLES:
            _rewrite_lines(conn, table, report.old_space != OFF)
        n = conn.execute(f"UPDATE {table} SET user_id = m.new FROM _rekey m WHERE {table}.user_id = m.old"
                         ).fetchone()[0]
        report.rows_rewritten[table] = int(n)
        unmapped = "user_id IS NOT NULL AND user_id NOT IN (SELECT new FROM _rekey)"
        if table == "forgotten_users":
            report.tombstones_unmapped = int(conn.execute(f"SELECT count(*) FROM {table} WHERE {unmapped}")
                                             .fetchone()[0])
        elif table != "privacy_audit":
            report.rows_deleted_unmapped += int(conn.execute(f"DELETE FROM {table} WHERE {unmapped}").fetchone()[0])
    if wh.table_exists(conn, "kg_entities"):
        conn.execute("UPDATE kg_entities SET entity_key = 'user:' || m.new, name = m.new FROM _rekey m "
                     "WHERE kg_entities.kind = 'user' AND kg_entities.entity_key = 'user:' || m.old")
    set_state(conn, ID_SPACE, report.new_space)
    conn.execute("INSERT INTO privacy_audit VALUES (?, 'retokenize', NULL, ?)",
                 [now, json.dumps({"from": report.old_space, "to": report.new_space, "ids_mapped": report.ids_mapped})])


def _rewrite_lines(conn, table: str, old_is_token: bool) -> None:
    """The user field of malformed raw lines: the old token replaced by the new one; a raw
    id cannot be found again reliably, so such lines are redacted."""
    if old_is_token:
        conn.execute(f"UPDATE {table} SET raw_line = replace(raw_line, m.old, m.new) FROM _rekey m "
                     f"WHERE {table}.raw_line IS NOT NULL AND {table}.user_id = m.old")
    else:
        conn.execute(f"UPDATE {table} SET raw_line = '[line redacted by re-tokenization: re-materialize "
                     f"raw_interactions to restore it]' WHERE raw_line IS NOT NULL AND user_id IS NOT NULL")
