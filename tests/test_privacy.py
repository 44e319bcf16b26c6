"""Privacy: pseudonymized user ids, forget-user, retention, re-tokenization."""

from pathlib import Path

import duckdb
import pandas as pd
import pytest

from recsys_dagster.core.privacy.pseudonyms import (
    PrivacyError,
    Pseudonymizer,
    check_key,
    is_token,
    read_key,
    stored_form,
)
from tests.conftest import (
    BUDGET,
    TINY_TRAIN,
    query,
    requires_ml100k,
    run_assets,
    synthetic_pipeline,
)

KEY = "test-key-0123456789abcdef"
RAW_ID = r"^u\d+$"  # the synthetic dataset's user ids


def test_tokens_are_keyed_deterministic_and_never_show_the_key():
    a, b = Pseudonymizer(KEY.encode()), Pseudonymizer(b"another-key-0123456789")
    assert a.token("u1") == a.token(" u1 ") and is_token(a.token("u1"))
    assert a.token("u1") != b.token("u1") and a.token("u1") != a.token("u2")
    assert a.fingerprint != b.fingerprint and KEY not in repr(a) + a.fingerprint
    assert stored_form(["u1", a.token("u2")], a) == [a.token("u1"), a.token("u2")]
    assert stored_form(["u1"], None) == ["u1"]
    with pytest.raises(PrivacyError, match="at least 16"):
        Pseudonymizer(b"short")


def test_key_from_env_or_file(tmp_path):
    (tmp_path / "key").write_text(KEY + "\n")
    assert read_key({"RECSYS_PSEUDONYMIZE_KEY_FILE": str(tmp_path / "key")}) == KEY.encode()
    assert read_key({"RECSYS_PSEUDONYMIZE_KEY": KEY}) == KEY.encode()
    assert read_key({}) is None
    with pytest.raises(PrivacyError, match="not both"):
        read_key({"RECSYS_PSEUDONYMIZE_KEY": KEY, "RECSYS_PSEUDONYMIZE_KEY_FILE": "x"})
    with pytest.raises(PrivacyError, match="cannot read the key file"):
        read_key({"RECSYS_PSEUDONYMIZE_KEY_FILE": str(tmp_path / "missing")})


def test_reader_tokenizes_user_field_of_malformed_lines(tmp_path):
    from recsys_dagster.core.datasets.reader import read_delimited

    path = tmp_path / "interactions.csv"
    path.write_text("item_id,user_id,rating\ni1,alice,5\ni2,bob\ni3\ni4,car\x01ol,4\n")
    raw = read_delimited(path, ["user_id", "item_id", "rating"], required=("user_id",), user_column="user_id")
    assert raw["user_id"].tolist()[:3] == ["alice", "bob", None]  # malformed 'i2,bob' attributed to bob
    pseudo = Pseudonymizer(KEY.encode())
    out = pseudo.protect(raw)
    assert out["user_id"].tolist()[:2] == [pseudo.token("alice"), pseudo.token("bob")]
    assert out["raw_line"].tolist()[1] == f"i2,{pseudo.token('bob')}"
    assert out["raw_line"].tolist()[2].startswith("[line redacted")  # no user field to tokenize
    # a malformed id keeps cleaning's verdict although its token looks fine
    assert out["parse_error"].tolist()[3].startswith("malformed user_id") and is_token(out["user_id"].tolist()[3])
    assert "_user_span" not in out.columns and not any("alice" in str(v) or "bob" in str(v) for v in out.to_numpy().ravel())


def test_warehouse_refuses_to_mix_id_spaces(tmp_path):
    conn = duckdb.connect(str(tmp_path / "w.duckdb"))
    a, b = Pseudonymizer(KEY.encode()), Pseudonymizer(b"another-key-0123456789")
    assert check_key(conn, a) == a.fingerprint
    assert check_key(conn, a) == a.fingerprint
    for other in (b, None):
        with pytest.raises(PrivacyError, match="refusing to mix id spaces.*retokenize"):
            check_key(conn, other)
    conn.close()


def _string_values(settings) -> dict[tuple[str, str], pd.Series]:
    """Every VARCHAR column of every warehouse table."""
    conn = duckdb.connect(settings.warehouse, read_only=True)
    try:
        cols = conn.execute("SELECT table_name, column_name FROM information_schema.columns "
                            "WHERE data_type = 'VARCHAR'").fetchall()
        return {(t, c): conn.execute(f'SELECT "{c}" FROM {t}').df()[c].dropna().astype(str) for t, c in cols}
    finally:
        conn.close()


def _files_containing(root: Path, needle: str) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file() and needle.encode() in path.read_bytes():
            hits.append(str(path.relative_to(root)))
    return hits


@pytest.fixture(scope="module")
def private_pipeline(tmp_path_factory):
    """One pseudonymized synthetic build for the module: the read-only test runs first, then
    the forget test (which changes it)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RECSYS_PSEUDONYMIZE_KEY", KEY)
        settings, defs, _ = synthetic_pipeline(tmp_path_factory.mktemp("private"), protocols=("A",), ablations=False,
                                               extra_assets="serving_snapshot")
    return settings, defs, Pseudonymizer(KEY.encode())


@pytest.mark.slow
def test_pseudonymized_pipeline_stores_no_raw_user_id(private_pipeline, monkeypatch):
    import torch

    monkeypatch.setenv("RECSYS_PSEUDONYMIZE_KEY", KEY)  # the service maps raw ids with it
    from recsys_dagster.core.model_store import ModelStore

    settings, defs, pseudo = private_pipeline
    values = _string_values(settings)
    raw_hits = {k: int(v.str.fullmatch(RAW_ID).sum()) for k, v in values.items() if v.str.fullmatch(RAW_ID).any()}
    assert raw_hits == {}
    for table in ("cleaned_interactions", "users", "fused_recommendations", "user_behavior_embeddings"):
        ids = values[(table, "user_id")]
        assert len(ids) and ids.map(is_token).all(), table
    assert values[("kg_entities", "name")][values[("kg_entities", "entity_key")].str.startswith("user:")].map(is_token).all()
    published = ModelStore(settings.models_dir).require_published()
    payload = torch.load(published.weights, weights_only=True)
    assert all(is_token(u) for u in payload["ids"]["user"])
    assert pd.read_parquet(published.path / "train_pairs.parquet")["user_id"].map(is_token).all()
    snapshot = next((published.path / "serving").iterdir())
    assert pd.read_parquet(snapshot / "fused_recommendations.parquet")["user_id"].map(is_token).all()
    assert _files_containing(Path(settings.home), KEY) == []  # the key is stored nowhere
    # the service maps the caller's raw id to its token
    from fastapi.testclient import TestClient

    from recsys_dagster.serving.app import create_app
    from recsys_dagster.serving.state import Reloader

    reloader = Reloader(ModelStore(settings.models_dir))
    reloader.check()
    with TestClient(create_app(reloader)) as client:
        user = values[("cleaned_interactions", "user_id")].iloc[0]
        raw_user = next(f"u{i}" for i in range(200) if pseudo.token(f"u{i}") == user)
        answer = client.get(f"/v1/users/{raw_user}/recommendations")
        assert answer.status_code == 200 and answer.json()["user_id"] == raw_user
        assert client.get("/v1/users/nobody/recommendations").status_code == 404
    monkeypatch.delenv("RECSYS_PSEUDONYMIZE_KEY")  # a service without the key refuses the snapshot, saying why
    keyless = Reloader(ModelStore(settings.models_dir))
    assert not keyless.check() and keyless.state is None and "RECSYS_PSEUDONYMIZE_KEY" in keyless.error


@pytest.mark.slow
def test_forget_user_everywhere_then_refresh_and_reingest(private_pipeline, monkeypatch):
    monkeypatch.setenv("RECSYS_PSEUDONYMIZE_KEY", KEY)
    from recsys_dagster import cli
    from recsys_dagster.core.model_store import ModelStore

    settings, defs, pseudo = private_pipeline
    home = Path(settings.home)
    monkeypatch.setenv("RECSYS_HOME", settings.home)
    monkeypatch.setenv("RECSYS_DATASET", settings.dataset)
    users = query(settings, "SELECT user_id, count(*) n FROM cleaned_interactions GROUP BY 1 ORDER BY 2 DESC, 1")
    token = users.user_id.iloc[0]
    raw = next(f"u{i}" for i in range(200) if pseudo.token(f"u{i}") == token)
    store = ModelStore(settings.models_dir)
    before = store.require_published()
    assert _files_containing(home, token)  # it is there before
    from recsys_dagster.serving.state import Reloader

    reloader = Reloader(store)
    assert reloader.check() and token in reloader.state.stored

    cli.main(["forget-user", raw])  # raw id in, tokenized with the key

    assert not reloader.check() and reloader.state is None and "withdrawn" in reloader.error  # not served from memory
    assert _files_containing(home, token) == []  # no table, model file, snapshot or MLflow artifact
    assert store.published() is None and store.get(before.version).invalidated
    assert not before.weights.exists()
    tomb = query(settings, "SELECT * FROM forgotten_users")
    audit = query(settings, "SELECT * FROM privacy_audit WHERE action = 'forget'")
    from recsys_dagster.core.privacy.forget import tombstone_of

    assert tomb.user_id.tolist() == [tombstone_of(token)] and audit.user_id.tolist() == [tombstone_of(token)]

    # refresh: a model trained without them is published (no warm start from an invalidated version)
    run_assets(defs, "gnn_model", run_config={"ops": {"gnn_model": {"config": {**TINY_TRAIN, "warm_start": True}}}})
    run_assets(defs, "evaluation_metrics,fused_recommendations,serving_snapshot", run_config={"ops": {
        "evaluation_metrics": {"config": {"protocols": ["A"], "ablations": False, **BUDGET}}}})
    after = store.require_published()
    assert after.version != before.version and after.parent is None
    assert token not in set(pd.read_parquet(after.path / "train_pairs.parquet")["user_id"])
    # a re-ingest of every partition and of the user file does not bring them back
    run_assets(defs, "users")
    result = run_assets(defs, "raw_interactions,cleaned_interactions", partition_range=("2024-01-01", "2024-01-06"))
    meta = result.asset_materializations_for_node("raw_interactions")[0].metadata
    assert meta["rows_of_forgotten_users_skipped"].value > 0
    assert query(settings, "SELECT count(*) n FROM cleaned_interactions WHERE user_id = ?", [token]).n[0] == 0
    assert _files_containing(home, token) == []
    import mlflow

    client = mlflow.tracking.MlflowClient(settings.tracking_uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert runs and all(token not in str(r.data.params) + str(r.data.tags) for r in runs)


@pytest.mark.slow
def test_forget_users_job_and_retention(tmp_path):
    from recsys_dagster.core.model_store import ModelStore

    settings, defs, _ = synthetic_pipeline(tmp_path, protocols=("A",), ablations=False)
    user = query(settings, "SELECT min(user_id) u FROM cleaned_interactions").u[0]
    n_before = query(settings, "SELECT count(*) n FROM cleaned_interactions WHERE user_id = ?", [user]).n[0]
    result = defs.get_job_def("forget_users").execute_in_process(
        run_config={"ops": {"forget_users_op": {"config": {"user_ids": [user]}}}})
    assert result.success
    for table in ("raw_interactions", "cleaned_interactions", "users", "fused_recommendations", "user_behavior_embeddings"):
        assert query(settings, f"SELECT count(*) n FROM {table} WHERE user_id = ?", [user]).n[0] == 0, table
    assert query(settings, "SELECT count(*) n FROM kg_entities WHERE entity_key = ?", [f"user:{user}"]).n[0] == 0
    assert n_before > 0 and ModelStore(settings.models_dir).published() is None
    # retention: raw rows more than 2 days before the newest cleaned day go after cleaning
    import dataclasses

    from recsys_dagster.definitions import build_definitions

    defs2 = build_definitions(dataclasses.replace(settings, retention_days=2))
    res = run_assets(defs2, "cleaned_interactions", partition_range=("2024-01-01", "2024-01-06"))
    assert res.success  # the reconciliation check (blocking) accepts the dropped days
    oldest = pd.Timestamp(query(settings, "SELECT min(event_date) d FROM raw_interactions").d[0])
    assert oldest == pd.Timestamp("2024-01-04")
    assert pd.Timestamp(query(settings, "SELECT min(event_date) d FROM cleaned_interactions").d[0]) < oldest
    assert query(settings, "SELECT count(*) n FROM privacy_audit WHERE action = 'retention'").n[0] == 1
    # cleaning a day whose raw rows were dropped would empty it: refused with a clear error
    res = run_assets(defs2, "cleaned_interactions", partition="2024-01-02", raise_on_error=False)
    assert not res.success
    assert "dropped by RECSYS_RETENTION_DAYS" in res.failure_data_for_node("cleaned_interactions").error.message


@pytest.mark.slow
def test_retokenize_moves_a_plain_warehouse_to_a_key(tmp_path, monkeypatch):
    from recsys_dagster import cli
    from recsys_dagster.core.privacy.forget import tombstone_of
    from tests.conftest import synthetic_warehouse

    settings, defs = synthetic_warehouse(tmp_path, "2024-01-03", n_users=30, n_items=20, n_interactions=300,
                                         days=3, seed=2)
    monkeypatch.setenv("RECSYS_HOME", settings.home)
    monkeypatch.setenv("RECSYS_DATASET", settings.dataset)
    cli.main(["forget-user", "u1"])  # a tombstone of the raw id
    monkeypatch.setenv("RECSYS_PSEUDONYMIZE_KEY", KEY)
    refused = run_assets(defs, "users", raise_on_error=False)
    assert not refused.success
    assert "refusing to mix id spaces" in refused.failure_data_for_node("users").error.message
    cli.main(["retokenize"])
    pseudo = Pseudonymizer(KEY.encode())
    values = _string_values(settings)
    for table in ("users", "raw_interactions", "cleaned_interactions"):
        assert values[(table, "user_id")].map(is_token).all(), table
    assert not any(v.str.fullmatch(RAW_ID).any() for v in values.values())
    assert query(settings, "SELECT user_id FROM forgotten_users").user_id.tolist() == [tombstone_of(pseudo.token("u1"))]
    assert run_assets(defs, "users").success  # the key now matches the warehouse
    assert query(settings, "SELECT count(*) n FROM users WHERE user_id = ?", [pseudo.token("u1")]).n[0] == 0
    monkeypatch.setenv("RECSYS_PSEUDONYMIZE_KEY", "yet-another-key-0123456789")
    with pytest.raises(SystemExit, match="old key given"):
        cli.main(["retokenize"])  # the old key (the warehouse's) is required


@pytest.mark.slow
@requires_ml100k
def test_ml100k_ingestion_with_a_key_stores_only_tokens(tmp_path, monkeypatch):
    from recsys_dagster.definitions import build_definitions
    from tests.conftest import make_settings

    monkeypatch.setenv("RECSYS_PSEUDONYMIZE_KEY", KEY)
    settings = make_settings(tmp_path, "movielens-100k")
    defs = build_definitions(settings)
    run_assets(defs, "items,users")
    run_assets(defs, "raw_interactions,cleaned_interactions", partition_range=("1997-09-20", "1998-04-22"))
    run_assets(defs, "knowledge_graph")
    values = _string_values(settings)
    for table in ("users", "raw_interactions", "cleaned_interactions"):
        ids = values[(table, "user_id")]
        assert len(ids) and ids.map(is_token).all(), table
    assert values[("users", "user_id")].nunique() == 943 and len(values[("cleaned_interactions", "user_id")]) == 100_000
    names = values[("kg_entities", "name")][values[("kg_entities", "entity_key")].str.startswith("user:")]
    assert len(names) == 943 and names.map(is_token).all()
