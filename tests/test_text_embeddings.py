import duckdb
import numpy as np
import pandas as pd
import pytest

from recsys_dagster.core.text import encode_cached, item_text, normalize_text
from recsys_dagster.core.user_profiles import pooled_user_embeddings
from recsys_dagster.definitions import build_definitions
from tests.conftest import make_settings, run_assets


class CountingEncoder:
    """Deterministic stand-in with the encoder interface, counting what it encodes."""

    model_id, dim = "fake|1", 8

    def __init__(self):
        self.seen: list[str] = []

    def encode(self, texts):
        self.seen += list(texts)
        rng = [np.random.default_rng(abs(hash(t)) % 2**32).normal(size=self.dim) for t in texts]
        out = np.asarray(rng, dtype=np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def test_item_text_is_normalized_and_never_empty():
    text = item_text("  Toy\tStory \x00 (1995) ", ["Animation", "Comedy"], ["pixar"], "A  film.\n")
    assert text == "Toy Story (1995). Genres: Animation, Comedy. Tags: pixar. A film."
    assert item_text(None, None, None, None) == "Untitled item."
    assert item_text("", [], [], float("nan")) == "Untitled item."
    assert normalize_text(b"caf\xe9 \xff") == "caf\ufffd \ufffd"
    assert len(item_text("x" * 1_000_000)) <= 2000


def test_cache_encodes_only_new_or_changed_texts():
    conn = duckdb.connect()
    enc = CountingEncoder()
    first, encoded, reused = encode_cached(conn, enc, ["a", "b", "a"])
    assert (encoded, reused) == (2, 0) and first.shape == (3, 8) and np.allclose(first[0], first[2])
    second, encoded, reused = encode_cached(conn, enc, ["a", "b", "c changed"])
    assert (encoded, reused) == (1, 2) and enc.seen == ["a", "b", "c changed"]
    np.testing.assert_array_equal(first[1], second[1])


def test_pooled_embeddings_weight_recent_items_more():
    emb = np.eye(3, dtype=np.float32)
    inter = pd.DataFrame({"user_id": ["u", "u", "v"], "item_id": ["a", "b", "c"],
                          "ts": pd.to_datetime(["2024-01-01", "2024-03-01", "2024-01-01"])})
    users, matrix, counts = pooled_user_embeddings(inter, ["a", "b", "c"], emb, half_life_days=30)
    assert list(users) == ["u", "v"] and list(counts) == [1 + 1, 1]
    u = matrix[0]
    assert u[1] > u[0] > 0 and np.isclose(np.linalg.norm(u), 1)
    # 60 days older at a 30-day half life: a quarter of the weight (before normalization)
    assert np.isclose(u[0] / u[1], 2 ** (-60 / 30), atol=0.01)
    np.testing.assert_allclose(matrix[1], [0, 0, 1])


def test_real_encoder_dimension_and_norm():
    from recsys_dagster.core.text import EncoderConfig, TextEncoder

    enc = TextEncoder(EncoderConfig(device="cpu"))
    vecs = enc.encode(["Star Wars (1977). Genres: Sci-Fi", "", "caf\ufffd" * 500])
    assert vecs.shape == (3, 384) and np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-4)
    sci = enc.encode(["A space opera with starships", "A film about starships in outer space", "A cooking show"])
    assert sci[0] @ sci[1] > sci[0] @ sci[2]


def test_assets_on_synthetic_data_are_incremental(tmp_path, synthetic_folder):
    settings = make_settings(tmp_path, str(synthetic_folder))
    defs = build_definitions(settings)
    run_assets(defs, "items,users")
    run_assets(defs, "raw_interactions,cleaned_interactions", partition_range=("2024-01-01", "2024-01-05"))
    first = run_assets(defs, "knowledge_graph,item_text_embeddings,user_behavior_embeddings")
    assert all(c.passed for c in first.get_asset_check_evaluations())
    meta = first.asset_materializations_for_node("item_text_embeddings")[0].metadata
    assert meta["texts_encoded"].value == 40 and meta["dim"].value == 384
    second = run_assets(defs, "item_text_embeddings")
    meta = second.asset_materializations_for_node("item_text_embeddings")[0].metadata
    assert meta["texts_encoded"].value == 0 and meta["texts_reused"].value == 40
    conn = duckdb.connect(settings.warehouse, read_only=True)
    methods = conn.execute("SELECT method, count(*) FROM user_behavior_embeddings GROUP BY 1 ORDER BY 1").fetchall()
    n_users = conn.execute("SELECT count(DISTINCT user_id) FROM cleaned_interactions").fetchall()[0][0]
    assert methods == [("pooled", n_users)]
    kg_items = conn.execute("SELECT count(*) FROM kg_entities WHERE kind = 'item'").fetchall()[0][0]
    assert kg_items == 40


@pytest.mark.parametrize("title", ["", "caf\ufffd \x7f", "x" * 1_000_000])
def test_odd_titles_embed_without_error(title):
    from recsys_dagster.core.text import item_texts

    items = pd.DataFrame({"item_id": ["1"], "title": [title], "genres": [None], "tags": [None], "description": [None]})
    conn = duckdb.connect()
    matrix, encoded, _ = encode_cached(conn, CountingEncoder(), item_texts(items).tolist())
    assert matrix.shape == (1, 8) and encoded == 1
