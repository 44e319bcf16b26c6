"""The HTTP service over a serving snapshot: answers, hot reload, and bad input (4xx, never
500) — on the synthetic pipeline, through FastAPI's test client (real HTTP in bench_serving)."""

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.conftest import query, synthetic_pipeline


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from recsys_dagster.core.model_store import ModelStore
    from recsys_dagster.core.text import EncoderConfig, TextEncoder
    from recsys_dagster.serving.app import create_app
    from recsys_dagster.serving.state import Reloader

    settings, defs, _ = synthetic_pipeline(tmp_path_factory.mktemp("serve"), protocols=("A",), ablations=False,
                                           extra_assets="serving_snapshot")
    reloader = Reloader(ModelStore(settings.models_dir), lambda: TextEncoder(EncoderConfig(device="cpu")), poll_s=3600)
    reloader.check()
    with TestClient(create_app(reloader), raise_server_exceptions=False) as client:
        yield settings, defs, reloader, client


def test_health_ready_and_a_known_users_stored_list(served):
    settings, _, reloader, client = served
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready").json()
    assert ready["status"] == "ready" and ready["model_version"] == reloader.state.version
    stored = query(settings, "SELECT user_id, rank, item_id, reason FROM fused_recommendations ORDER BY user_id, rank")
    user = stored["user_id"].iloc[0]
    body = client.get(f"/v1/users/{user}/recommendations", params={"k": 5}).json()
    assert body["model_version"] == reloader.state.version and body["generated_at"]
    mine = stored[stored.user_id == user]
    assert [r["item_id"] for r in body["items"]] == mine["item_id"].head(5).tolist()
    assert [r["reason"] for r in body["items"]] == mine["reason"].head(5).tolist()
    assert all(r["evidence"] and r["title"] for r in body["items"])


def test_a_longer_list_than_stored_is_scored_live_and_starts_like_the_stored_one(served):
    settings, _, reloader, client = served
    user = reloader.state.prod.data.user_ids[3]
    stored = client.get(f"/v1/users/{user}/recommendations", params={"k": 20}).json()["items"]
    longer = client.get(f"/v1/users/{user}/recommendations", params={"k": 30}).json()["items"]
    assert len(longer) > len(stored)
    assert [r["item_id"] for r in longer[: len(stored)]] == [r["item_id"] for r in stored]
    seen = set(query(settings, "SELECT item_id FROM cleaned_interactions WHERE user_id = ?", [user])["item_id"])
    assert not seen & {r["item_id"] for r in longer}


def test_protocol_a_alone_tunes_few_shot_weights_by_fold_in_and_the_service_uses_them(served):
    from recsys_dagster.core.model_store import ModelStore

    settings, _, reloader, _ = served
    few = ModelStore(settings.models_dir).require_published().fusion["few_shot"]
    assert few["tuned_on"] == "fold-in" and few["alpha"] + few["beta"] + few["gamma"] + few["popularity"] > 0
    served_weights = reloader.state.prod.scorer.weights.few_shot
    assert served_weights is not None and served_weights.popularity == few["popularity"]


def test_new_user_from_items_and_from_text(served):
    _, _, reloader, client = served
    items = [str(i) for i in reloader.state.prod.data.item_ids[:3]]
    body = client.post("/v1/recommendations", json={"items": items + ["no-such-item"], "k": 7}).json()
    assert body["known_items"] == items and body["unknown_items"] == ["no-such-item"]
    got = [r["item_id"] for r in body["items"]]
    assert len(got) == 7 and not set(got) & set(items)  # seen items are excluded
    assert all(r["reason"] for r in body["items"]) and body["model_version"] == reloader.state.version
    # a text alone goes through the same sentence encoder as the pipeline
    body = client.post("/v1/recommendations", json={"text": "stars, ships and space travel", "k": 10}).json()
    assert len(body["items"]) == 10 and body["items"][0]["reason"]


def test_similar_items_have_reasons_and_exclude_the_item(served):
    _, _, reloader, client = served
    item = str(reloader.state.prod.data.item_ids[0])
    body = client.get(f"/v1/items/{item}/similar", params={"k": 5}).json()
    ids = [r["item_id"] for r in body["items"]]
    assert len(ids) == 5 and item not in ids
    scores = [r["score"] for r in body["items"]]
    assert scores == sorted(scores, reverse=True)
    assert all(r["reason"] and {"collaborative", "text"} <= set(r["evidence"]) for r in body["items"])


BAD = [
    ("get", "/v1/users/nobody/recommendations", None, None, 404),
    ("get", "/v1/items/nothing/similar", None, None, 404),
    ("get", "/v1/users/{user}/recommendations?k=0", None, None, 422),
    ("get", "/v1/users/{user}/recommendations?k=1001", None, None, 422),
    ("get", "/v1/users/{user}/recommendations?k=ten", None, None, 422),
    ("get", "/v1/items/{item}/similar?k=-3", None, None, 422),
    ("post", "/v1/recommendations", None, b"", 422),  # empty body
    ("post", "/v1/recommendations", {}, None, 422),  # neither items nor text
    ("post", "/v1/recommendations", {"items": "abc"}, None, 422),  # wrong type
    ("post", "/v1/recommendations", {"items": [{"a": 1}]}, None, 422),
    ("post", "/v1/recommendations", {"items": ["{item}"], "k": 0}, None, 422),
    ("post", "/v1/recommendations", {"items": ["{item}"], "k": 5000}, None, 422),
    ("post", "/v1/recommendations", {"items": ["{item}"], "color": "red"}, None, 422),  # unknown field
    ("post", "/v1/recommendations", {"items": ["nope", "nada"]}, None, 422),  # no known item
    ("post", "/v1/recommendations", {"text": "x" * 10241}, None, 422),  # text over 10 kB
    ("post", "/v1/recommendations", {"items": ["{item}"] * 1001}, None, 422),  # over 1000 items
    ("post", "/v1/recommendations", None, b'{"text": "caf\xe9 \xff\xfe"}', 400),  # invalid UTF-8
    ("post", "/v1/recommendations", None, b'{"text": ', 422),  # truncated JSON
    ("post", "/v1/recommendations", None, b"x" * 70_000, 413),  # oversized body
    ("get", "/v1/users/..%2F..%2Fetc%2Fpasswd/recommendations", None, None, 404),  # path tricks
    ("get", "/v1/users/%2e%2e/recommendations", None, None, 404),
    ("get", "/v1/users/a%00b/recommendations", None, None, 400),  # control character
    ("get", "/v1/users/" + "u" * 300 + "/recommendations", None, None, 400),  # over-long id
    ("delete", "/v1/users/{user}/recommendations", None, None, 405),
]


@pytest.mark.parametrize(("method", "path", "payload", "raw", "status"), BAD,
                         ids=[f"{m} {p[:40]} {s}" for m, p, _, _, s in BAD])
def test_bad_input_gets_a_clear_4xx_json_error(served, method, path, payload, raw, status):
    _, _, reloader, client = served
    data = reloader.state.prod.data
    fill = {"user": str(data.user_ids[0]), "item": str(data.item_ids[0])}
    path = path.format(**fill)
    if payload is not None:
        payload = json.loads(json.dumps(payload).replace("{item}", fill["item"]))
    kwargs = {"json": payload} if payload is not None else {"content": raw} if raw is not None else {}
    if raw is not None:
        kwargs["headers"] = {"content-type": "application/json"}
    response = client.request(method.upper(), path, **kwargs)
    assert response.status_code == status, response.text
    err = response.json()["error"]
    assert err["code"] and err["message"]


def test_a_new_snapshot_is_served_without_restart(served):
    """Re-exporting the snapshot (what serving_snapshot does after a new publish or a new
    recommendations run) is picked up by the reloader; the old state stays usable."""
    from tests.conftest import run_assets

    _, defs, reloader, client = served
    before = reloader.state
    user = str(before.prod.data.user_ids[0])
    run_assets(defs, "serving_snapshot")
    assert reloader.check()  # what the reloader thread does every few seconds
    after = client.get(f"/v1/users/{user}/recommendations").json()
    assert after["snapshot"] != before.export_id and after["snapshot"] == reloader.state.export_id
    assert before.user_recommendations(user, 5)["items"]  # a request still on the old state finishes
    assert not reloader.check()  # unchanged pointer: no reload
    assert np.isfinite([r["score"] for r in after["items"]]).all()


def test_a_pipeline_writing_the_warehouse_neither_blocks_nor_breaks_the_service(served):
    """The service never opens the DuckDB file: while another process holds it read-write
    (as a materialization does; DuckDB then refuses every other process), every endpoint
    still answers and a reload check still works."""
    import subprocess
    import sys

    settings, _, reloader, client = served
    data = reloader.state.prod.data
    hold = ("import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
            "c.execute('CREATE OR REPLACE TABLE scratch AS SELECT 1 AS x'); print('held', flush=True); time.sleep(60)")
    writer = subprocess.Popen([sys.executable, "-c", hold, settings.warehouse], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "held"
        assert client.get(f"/v1/users/{data.user_ids[1]}/recommendations").status_code == 200
        assert client.get(f"/v1/items/{data.item_ids[1]}/similar").status_code == 200
        assert client.post("/v1/recommendations", json={"items": [str(data.item_ids[2])]}).status_code == 200
        reloader.check()
        assert client.get("/ready").status_code == 200
    finally:
        writer.kill()
        writer.wait()


def test_texts_of_concurrent_requests_are_encoded_in_batches_with_the_same_vectors():
    from concurrent.futures import ThreadPoolExecutor

    from recsys_dagster.core.text import EncoderConfig, TextEncoder
    from recsys_dagster.serving.state import BatchEncoder

    encoder = TextEncoder(EncoderConfig(device="cpu"))
    texts = [f"I like {a} films and {b}" for a in ("war", "space", "silent", "noir") for b in ("jazz", "cats", "snow")]
    batcher = BatchEncoder(encoder)
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(batcher.encode_one, texts))
    np.testing.assert_allclose(np.stack(got), encoder.encode(texts), atol=1e-5)
    assert batcher.batches < len(texts)  # requests that waited together were encoded together


def test_api_docs_work_offline(served):
    """/docs loads the Swagger UI from the service itself, not from a CDN."""
    _, _, _, client = served
    page = client.get("/docs")
    assert page.status_code == 200 and "cdn." not in page.text
    assert client.get("/docs-static/swagger-ui-bundle.js").status_code == 200
    assert client.get("/docs-static/swagger-ui.css").status_code == 200
    spec = client.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.0") and "/v1/recommendations" in spec["paths"]  # what Swagger UI 4 reads
