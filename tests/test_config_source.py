"""One config source: the Dagster configs derive from the core dataclasses, and what a user
sets in the launchpad reaches the core."""

import dataclasses

import pytest

from recsys_dagster.core import warehouse as wh
from recsys_dagster.core.evaluation import EvalConfig
from recsys_dagster.core.gate import GateConfig
from recsys_dagster.core.recommend import RecommendConfig
from recsys_dagster.core.train import TrainConfig
from recsys_dagster.defs.evaluation import BUDGET_FIELDS, EvaluationConfig
from recsys_dagster.defs.recommendations import RecommendationConfig
from recsys_dagster.defs.resources import DatasetResource
from recsys_dagster.defs.training import TrainingConfig
from recsys_dagster.defs.tuning import TuningConfig
from recsys_dagster.settings import load_settings


def _fields(cls, exclude=()):
    return {f.name: f for f in dataclasses.fields(cls) if f.name not in exclude}


@pytest.mark.parametrize("config, sources", [
    (TrainingConfig, [(TrainConfig, None, ("device", "lr", "reg_weight", "loss", "temperature", "embedding_dim",
                                           "patience"))]),
    (EvaluationConfig, [(EvalConfig, None, ("train", "hyperparameters")), (TrainConfig, BUDGET_FIELDS, ()),
                        (GateConfig, None, ("protocol",))]),
    (RecommendationConfig, [(RecommendConfig, None, ())]),
    (TuningConfig, [(TrainConfig, ("split_seed", "max_epochs", "min_epochs", "patience"), ())]),
])
def test_launchpad_fields_mirror_the_core_dataclasses(config, sources):
    fields = config.model_fields
    for cls, include, exclude in sources:
        for name, f in _fields(cls, exclude).items():
            if include is not None and name not in include:
                continue
            assert name in fields, f"{config.__name__} lacks {cls.__name__}.{name}"
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            got = fields[name].default
            assert (list(default) if isinstance(default, tuple) else default) == got, name
            assert fields[name].description == f.metadata.get("help"), name


def test_the_production_model_stops_sooner_than_the_models_it_is_graded_against():
    from recsys_dagster.core.train.config import GNN_MODEL_PATIENCE

    assert TrainingConfig().to_train_config("cpu").patience == GNN_MODEL_PATIENCE < TrainConfig.patience
    ev, _, _ = EvaluationConfig().to_core({}, None)
    assert ev.train.patience == TrainConfig.patience == TuningConfig().patience


def test_launchpad_values_reach_the_core():
    train = TrainingConfig(model="lightgcn", max_epochs=7, lr=0.02, window_days=3).to_train_config("cpu")
    assert (train.model, train.max_epochs, train.lr, train.window_days, train.device) == ("lightgcn", 7, 0.02, 3, "cpu")
    tuned = TrainingConfig(model="mf").to_train_config("cpu", {"mf": {"lr": 0.5, "reg_weight": 0.25}})
    assert (tuned.lr, tuned.reg_weight, tuned.loss) == (0.5, 0.25, "bpr")
    tuned = TrainingConfig(model="mf").to_train_config("cpu", {"mf": {"loss": "softmax", "temperature": 0.3}})
    assert (tuned.loss, tuned.temperature) == ("softmax", 0.3)
    assert TrainingConfig(model="mf", loss="bpr").to_train_config("cpu", {"mf": {"loss": "softmax"}}).loss == "bpr"

    ev, split, gate = EvaluationConfig(cold_item_share=0.3, protocols=["A", "B"], split_seed=7, max_epochs=9,
                                       required_peers=["pop"], max_drop=0.2).to_core({"mf": {"lr": 1.0}}, 4.0)
    assert (ev.cold_item_share, ev.protocols, ev.train.max_epochs) == (0.3, ("A", "B"), 9)
    assert ev.hyperparameters == {"mf": {"lr": 1.0}}
    assert (split.seed, split.min_rating) == (7, 4.0)
    assert (gate.required_peers, gate.max_drop) == (("pop",), 0.2)


def test_dataset_resource_is_the_settings_dataset_part(tmp_path):
    settings = dataclasses.replace(load_settings({}), dataset=str(tmp_path), home=str(tmp_path / "home"),
                                   source="landing", snapshot_date="2024-01-02")
    resource = DatasetResource.from_settings(settings)
    assert set(DatasetResource.model_fields) <= {f.name for f in dataclasses.fields(settings)}
    back = resource.settings()
    for name in DatasetResource.model_fields:
        assert getattr(back, name) == getattr(settings, name)
    assert back.landing == settings.landing


def test_warehouse_writes_replace_only_by_the_declared_key():
    import duckdb
    import pandas as pd

    conn = duckdb.connect()
    rows = pd.DataFrame({c: [None] for c in wh.columns_of("evaluation_metrics")}).assign(run_id="r1", value=1.0)
    wh.write(conn, "evaluation_metrics", rows, run_id="r1")
    wh.write(conn, "evaluation_metrics", rows.assign(run_id="r2"), run_id="r2")
    assert conn.execute("SELECT count(*) FROM evaluation_metrics").fetchall() == [(2,)]
    wh.write(conn, "evaluation_metrics", rows.assign(value=2.0), run_id="r1")
    assert conn.execute("SELECT run_id, value FROM evaluation_metrics ORDER BY 1").fetchall() == [("r1", 2.0), ("r2", 1.0)]
    with pytest.raises(ValueError, match="replaced by \\['run_id'\\], not \\['model'\\]"):
        wh.write(conn, "evaluation_metrics", rows, model="x")
    with pytest.raises(ValueError, match="not partitioned by event_date"):
        wh.replace_partition(conn, {"items": pd.DataFrame()}, None, None)


def test_every_table_spec_creates_and_the_core_column_lists_come_from_it():
    import duckdb

    from recsys_dagster.core.datasets import base
    from recsys_dagster.core.evaluation import PROVENANCE, ROW_COLUMNS
    from recsys_dagster.core.knowledge_graph import ENTITY_COLUMNS, TRIPLE_COLUMNS

    conn = duckdb.connect()
    for name in wh.TABLES:
        wh.ensure_table(conn, name)
        got = [r[0] for r in conn.execute("SELECT column_name FROM information_schema.columns WHERE table_name = ? "
                                          "ORDER BY ordinal_position", [name]).fetchall()]
        assert got == wh.columns_of(name)
    assert base.ITEM_COLUMNS == wh.columns_of("items") and base.USER_COLUMNS == wh.columns_of("users")
    assert base.RAW_COLUMNS + ["event_date"] == wh.columns_of("raw_interactions")
    assert ENTITY_COLUMNS == wh.columns_of("kg_entities") and TRIPLE_COLUMNS == wh.columns_of("kg_triples")
    assert set(ROW_COLUMNS) | set(PROVENANCE) == set(wh.columns_of("evaluation_metrics"))
    assert not set(ROW_COLUMNS) & set(PROVENANCE)


def test_an_older_table_gains_the_columns_of_a_newer_spec():
    import duckdb

    conn = duckdb.connect()
    conn.execute("CREATE TABLE evaluation_metrics (protocol VARCHAR, model VARCHAR, value DOUBLE)")
    wh.ensure_table(conn, "evaluation_metrics")
    have = {r[0] for r in conn.execute("SELECT column_name FROM information_schema.columns "
                                       "WHERE table_name = 'evaluation_metrics'").fetchall()}
    assert have == set(wh.columns_of("evaluation_metrics"))
