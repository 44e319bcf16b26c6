"""Tuning grids: the same grid for every trained model, stale caches ignored, choices applied."""

import json

import pandas as pd

from recsys_dagster.core.train import TrainConfig
from recsys_dagster.core.tuning import (
    DEFAULTS,
    GRIDS,
    TRAINED,
    grid_points,
    resolve,
    trained_config,
)


def test_every_trained_model_gets_the_same_grid_with_both_losses():
    points = {name: grid_points(name) for name in TRAINED}
    assert all(p == points["mf"] for p in points.values())
    losses = {p["loss"] for p in points["mf"]}
    assert losses == {"bpr", "softmax"}
    assert len(points["mf"]) == 6 + 4
    assert {p.get("embedding_dim") for p in points["mf"] if p["loss"] == "softmax"} == {64, 128}
    assert grid_points("ease") == [{"lam": v} for v in GRIDS["ease"]["lam"]]


def _cache(model, params, trials):
    return pd.DataFrame([{"model": model, "params": json.dumps(params), "valid_ndcg": 0.3, "trials": json.dumps(trials),
                          "split_fingerprint": "x", "tuned_at": pd.Timestamp("2026-01-01")}])


def test_a_choice_tuned_over_an_older_grid_is_ignored():
    old_trials = [{"lr": p["lr"], "reg_weight": p["reg_weight"], "valid_ndcg@10": 0.1}
                  for p in grid_points("mf") if p["loss"] == "bpr"]
    said = []
    got = resolve(_cache("mf", {"lr": 0.5, "reg_weight": 0.5}, old_trials), log=said.append)
    assert got["mf"] == DEFAULTS["mf"] and "older grid" in said[0]
    before_sizes = [{k: v for k, v in p.items() if k != "embedding_dim"} for p in grid_points("mf")]
    said.clear()
    stale = resolve(_cache("mf", {"loss": "softmax", "lr": 0.5}, [{**p, "valid_ndcg@10": 0.1} for p in before_sizes]),
                    log=said.append)
    assert stale["mf"] == DEFAULTS["mf"] and "older grid" in said[0]
    full = [{**p, "valid_ndcg@10": 0.1} for p in grid_points("mf")]
    assert resolve(_cache("mf", {"loss": "softmax", "lr": 0.5}, full))["mf"] == {"loss": "softmax", "lr": 0.5}


def test_trained_config_applies_a_choice_and_defaults_to_bpr():
    base = TrainConfig(loss="softmax", temperature=0.3, max_epochs=7)
    mf = trained_config(base, "mf", {"lr": 0.01, "reg_weight": 0.1})
    assert (mf.model, mf.loss, mf.lr, mf.reg_weight, mf.max_epochs) == ("mf", "bpr", 0.01, 0.1, 7)
    soft = trained_config(base, "lightgcn", {"loss": "softmax", "temperature": 0.2, "lr": 0.001, "reg_weight": 0.0})
    assert (soft.loss, soft.temperature) == ("softmax", 0.2)
    wide = TrainConfig(embedding_dim=128)  # the main model's size never leaks into a peer's choice
    assert trained_config(wide, "mf", {"lr": 0.01}).embedding_dim == TrainConfig.embedding_dim
    assert trained_config(TrainConfig(), "mf", {"loss": "softmax", "embedding_dim": 128}).embedding_dim == 128
