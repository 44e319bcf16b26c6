"""Training core and the gnn_model asset on a tiny synthetic warehouse."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from recsys_dagster.core.train import TrainConfig, evaluate, load_weights, train
from recsys_dagster.core.training_data import load_training_data
from tests.conftest import run_assets, synthetic_warehouse

FAST = dict(embedding_dim=16, batch_size=256, max_epochs=6, min_epochs=1, patience=50, device="cpu")


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory):
    return synthetic_warehouse(tmp_path_factory.mktemp("train"), "2024-01-04", n_users=80, n_items=50,
                               n_interactions=1500, days=4, seed=3)


@pytest.mark.parametrize("model", ["mf", "lightgcn", "kgtextgnn"])
def test_training_is_deterministic_and_learns(warehouse, model):
    settings, _ = warehouse
    config = TrainConfig(model=model, **FAST)
    data = load_training_data(settings.warehouse, config)
    a = train(data, config, log=lambda m: None)
    b = train(data, config, log=lambda m: None)
    assert a.best_valid == b.best_valid and a.test == b.test
    assert a.history[-1]["loss"] < a.history[0]["loss"]
    assert 0 < a.best_valid["recall@20"] <= 1


@pytest.mark.parametrize("ema_decay", [0.0, 0.9])  # 0.9: the checkpoint carries the weight average too
def test_interrupted_training_resumes_to_the_same_result(warehouse, tmp_path, ema_decay):
    settings, _ = warehouse
    config = TrainConfig(model="kgtextgnn", ema_decay=ema_decay, **FAST)
    data = load_training_data(settings.warehouse, config)
    reference = train(data, config, log=lambda m: None)

    ckpt = tmp_path / "ckpt.pt"

    def crash(record):
        if record["epoch"] == 2:
            raise KeyboardInterrupt("simulated kill after epoch 2")

    with pytest.raises(KeyboardInterrupt):
        train(data, config, checkpoint_path=ckpt, on_epoch=crash, log=lambda m: None)
    assert ckpt.exists() and ("average" in torch.load(ckpt, weights_only=True)) == (ema_decay > 0)
    resumed = train(data, config, checkpoint_path=ckpt, log=lambda m: None)
    assert resumed.resumed_from == 2 and not ckpt.exists()
    assert resumed.best_valid == reference.best_valid and resumed.test == reference.test


def test_weight_average_is_the_bias_corrected_exponential_moving_average():
    from recsys_dagster.core.train.averaging import WeightAverage

    model = torch.nn.Linear(3, 2)
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    avg = WeightAverage(model, decay=0.9)
    assert avg.averaged() == {}
    with torch.no_grad():
        model.weight.add_(1.0)
        model.bias.sub_(2.0)
    avg.update(model)  # one step: the average is that step's weights, none of the initialization
    torch.testing.assert_close(avg.averaged()["weight"], start["weight"] + 1.0)
    torch.testing.assert_close(avg.averaged()["bias"], start["bias"] - 2.0)
    with torch.no_grad():
        model.weight.add_(1.0)
    avg.update(model)  # (0.9 * 0.1 * (w + 1) + 0.1 * (w + 2)) / (1 - 0.81) = w + 1 + 0.1 / 0.19
    torch.testing.assert_close(avg.averaged()["weight"], start["weight"] + 1.0 + 0.1 / 0.19)
    resumed = WeightAverage(model, decay=0.9, state=avg.state())
    torch.testing.assert_close(resumed.averaged()["weight"], avg.averaged()["weight"])
    with pytest.raises(ValueError, match="ema_decay"):
        WeightAverage(model, decay=1.0)


def test_a_short_run_with_a_slow_average_keeps_its_better_raw_weights(warehouse):
    # 0.998 over a few dozen steps averages in the first, poor steps; the raw weights compete
    # at every validation, so the average can only add candidates
    settings, _ = warehouse
    plain = TrainConfig(model="lightgcn", **FAST)
    data = load_training_data(settings.warehouse, plain)
    a = train(data, plain, log=lambda m: None)
    b = train(data, TrainConfig(model="lightgcn", ema_decay=0.998, **FAST), log=lambda m: None)
    assert [h["valid_ndcg@10"] for h in a.history] == [h["valid_ndcg@10"] for h in b.history]
    assert max(h["valid_average_ndcg@10"] for h in b.history) < max(h["valid_ndcg@10"] for h in b.history)
    assert b.best_valid == a.best_valid and b.best_epoch == a.best_epoch


@pytest.mark.parametrize("model", ["lightgcn", "kgtextgnn"])
def test_weight_average_changes_what_is_graded_not_how_the_model_trains(warehouse, model):
    settings, _ = warehouse
    plain = TrainConfig(model=model, **FAST)
    averaged = TrainConfig(model=model, ema_decay=0.5, **FAST)
    data = load_training_data(settings.warehouse, plain)
    a = train(data, plain, log=lambda m: None)
    b = train(data, averaged, log=lambda m: None)
    # the same training trajectory: the average never feeds back into the weights or the RNG
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]
    assert [h["valid_ndcg@10"] for h in a.history] == [h["valid_ndcg@10"] for h in b.history]
    # ... and the average is graded next to the raw weights
    assert [h["valid_average_ndcg@10"] for h in b.history] != [h["valid_ndcg@10"] for h in b.history]
    assert b.best_valid == train(data, averaged, log=lambda m: None).best_valid  # deterministic


def test_a_weight_average_with_decay_near_zero_grades_the_last_weights(warehouse):
    # LightGCN: no weight-dependent operator, so the averaged evaluation refreshes nothing
    settings, _ = warehouse
    plain = TrainConfig(model="lightgcn", **FAST)
    data = load_training_data(settings.warehouse, plain)
    a = train(data, plain, log=lambda m: None)
    c = train(data, TrainConfig(model="lightgcn", ema_decay=1e-12, **FAST), log=lambda m: None)
    assert [h["valid_average_ndcg@10"] for h in c.history] == pytest.approx(
        [h["valid_ndcg@10"] for h in a.history], abs=1e-6)


@pytest.mark.slow  # subprocesses / a real webserver: `make test` only, not `make check`
def test_sigkill_mid_training_then_resume_via_cli(warehouse, tmp_path):
    settings, _ = warehouse
    # 40 epochs at batch 64: seconds of work after the kill point (epoch 3), so it is never missed
    train_cfg = {**FAST, "model": "lightgcn", "max_epochs": 40, "batch_size": 64}
    spec = {"warehouse": settings.warehouse, "output": str(tmp_path / "m" / "model.pt"), "train": train_cfg}
    cfg_path = tmp_path / "cfg.json"
    cfg_path.write_text(json.dumps(spec))
    ckpt = tmp_path / "m" / "model.ckpt"
    cmd = [sys.executable, "-m", "recsys_dagster.core.train", "--config", str(cfg_path)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if ckpt.exists():
            state = torch.load(ckpt, weights_only=True)
            if state["epoch"] >= 3:
                break
        time.sleep(0.05)
    assert proc.poll() is None, "training finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    uninterrupted = train(load_training_data(settings.warehouse, TrainConfig(**train_cfg)), TrainConfig(**train_cfg),
                          log=lambda m: None)
    assert summary["valid"] == pytest.approx(uninterrupted.best_valid, abs=0)
    assert summary["test"] == pytest.approx(uninterrupted.test, abs=0)


def test_gnn_model_asset_logs_to_mlflow_and_weights_reload(warehouse):
    settings, defs = warehouse
    result = run_assets(defs, "gnn_model", run_config={"ops": {"gnn_model": {"config": {
        "embedding_dim": 16, "batch_size": 256, "max_epochs": 5, "min_epochs": 1}}}})
    meta = result.asset_materializations_for_node("gnn_model")[0].metadata
    weights = Path(meta["weights_path"].value)
    assert weights.is_file() and len(meta["weights_sha256"].value) == 64

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{Path(settings.home).resolve() / 'mlflow.db'}")
    run = mlflow.get_run(meta["mlflow_run_id"].value)
    assert run.data.tags["dagster.run_id"] == result.run_id
    history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "valid_ndcg_at_10")
    assert len(history) == 5
    versions = mlflow.MlflowClient().search_model_versions("name='recsys_gnn'")
    assert len(versions) >= 1

    payload = torch.load(weights, weights_only=True)
    config = TrainConfig.from_dict(payload["config"])
    data = load_training_data(settings.warehouse, config)
    model, _ = load_weights(weights, data)
    assert evaluate(model, data, "valid")["ndcg@10"] == pytest.approx(meta["valid_ndcg@10"].value, abs=1e-4)

    warm = run_assets(defs, "gnn_model", run_config={"ops": {"gnn_model": {"config": {
        "embedding_dim": 16, "batch_size": 256, "max_epochs": 2, "min_epochs": 1, "warm_start": True}}}})
    assert warm.asset_materializations_for_node("gnn_model")[0].metadata["warm_start"].value is True


@pytest.mark.slow  # subprocesses / a real webserver: `make test` only, not `make check`
def test_sigkill_mid_materialization_resumes_on_rematerialization(warehouse, tmp_path):
    """`dagster asset materialize --select gnn_model` killed with SIGKILL mid-training; the next
    materialization resumes from the checkpoint and ends exactly where an uninterrupted
    training with the same seed ends."""
    import yaml

    from recsys_dagster.core.training_data import data_for_split, make_split, read_tables
    from recsys_dagster.defs.training import TrainingConfig
    from tests.conftest import ROOT

    settings, defs = warehouse
    cfg = {"model": "lightgcn", "embedding_dim": 16, "batch_size": 64, "max_epochs": 60, "min_epochs": 60, "seed": 7}
    run_config = {"ops": {"gnn_model": {"config": cfg}}}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(run_config))
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text().replace("data/dagster", str(home / "s")))
    env = {**os.environ, "DAGSTER_HOME": str(home), "RECSYS_DATASET": settings.dataset, "RECSYS_HOME": settings.home,
           "RECSYS_WAREHOUSE": settings.warehouse, "RECSYS_DEVICE": "cpu"}
    ckpt = Path(settings.models_dir) / "checkpoint.pt"
    ckpt.unlink(missing_ok=True)
    proc = subprocess.Popen([sys.executable, "-m", "dagster", "asset", "materialize", "-m", "recsys_dagster.definitions",
                             "--select", "gnn_model", "-c", str(tmp_path / "run.yaml")], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline, killed_after = time.time() + 180, None
    while time.time() < deadline and proc.poll() is None:
        if ckpt.exists():
            try:
                killed_after = torch.load(ckpt, weights_only=True)["epoch"]
            except Exception:  # caught mid-rename: try again
                killed_after = None
            if killed_after is not None and killed_after >= 3:
                break
        time.sleep(0.05)
    assert proc.poll() is None, "training finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert ckpt.exists()

    resumed = run_assets(defs, "gnn_model", run_config=run_config).asset_materializations_for_node("gnn_model")[0]
    assert resumed.metadata["resumed_from_epoch"].value >= 3

    import duckdb

    train_cfg = TrainingConfig(**cfg).to_train_config("cpu")
    conn = duckdb.connect(settings.warehouse, read_only=True)
    tables = read_tables(conn)
    conn.close()
    reference = train(data_for_split(tables, make_split(tables, train_cfg), train_cfg), train_cfg, log=lambda m: None)
    for k in ("ndcg@10", "recall@10"):
        assert resumed.metadata[f"test_{k}"].value == round(reference.test[k], 4)
        assert resumed.metadata[f"valid_{k}"].value == round(reference.best_valid[k], 4)


@pytest.fixture(scope="module")
def tiny_data(warehouse):
    return load_training_data(warehouse[0].warehouse, TrainConfig(model="kgtextgnn"))


def test_sampled_propagation_with_a_large_fanout_is_exact_and_unbiased_below(tiny_data):
    """The CSR fan-out sampler reproduces full-graph propagation when no node is capped, and
    its capped estimate averages to it."""
    import torch

    from recsys_dagster.core.models import build_model
    from recsys_dagster.core.models.sampling import NeighbourSampler, sampled_embeddings

    model = build_model("kgtextgnn", tiny_data, 16, 2)
    model.refresh()
    model.eval()
    with torch.no_grad():
        full = model()
        targets = torch.unique(torch.randint(0, len(full), (40,), generator=torch.Generator().manual_seed(0)))
        exact = sampled_embeddings(model, targets, NeighbourSampler(model.operator(), 10**9))
        torch.testing.assert_close(exact, full[targets], atol=1e-5, rtol=1e-5)
        capped = NeighbourSampler(model.operator(), 2, torch.Generator().manual_seed(1))
        one = sampled_embeddings(model, targets, capped)
        mean = torch.stack([sampled_embeddings(model, targets, capped) for _ in range(300)]).mean(0)
    err_one = (one - full[targets]).norm() / full[targets].norm()
    err_mean = (mean - full[targets]).norm() / full[targets].norm()
    assert err_one > 1e-3, "a fan-out of 2 should cap some nodes on this graph"
    assert err_mean < err_one / 4


def test_full_mode_keeps_the_steps_per_epoch_as_data_grows():
    from recsys_dagster.core.train import TrainConfig

    cfg = TrainConfig(batch_size=1000, steps_per_epoch=10, lr=1e-3, train_mode="full")
    assert cfg.step_plan(5_000, 10**4, 100) == ("full", 1000, 1e-3)
    mode, batch, lr = cfg.step_plan(1_000_000, 10**6, 10**4)
    assert (mode, batch) == ("full", 100_000) and abs(lr - 1e-3 * 10) < 1e-12
    assert cfg.step_plan(1_000_000, 10**6, 10**4, propagates=False) == ("full", 1000, 1e-3)
    # auto: full while a full step fits the memory budget, sampled past it
    auto = TrainConfig(train_mode="auto", loss="softmax", embedding_dim=64, full_step_gb=1.0)
    assert auto.step_plan(80_000, 15_000, 1_700)[0] == "full"
    assert auto.step_plan(8_000_000, 500_000, 100_000)[0] == "sampled"  # 200k x 100k softmax logits
    # the sampled softmax's row: at most the batch's positives plus the uniform negatives
    assert TrainConfig(loss="sampled_softmax", num_negatives=1024).softmax_width(100_000, 2048) == 3072
    assert TrainConfig(loss="sampled_softmax", num_negatives=1024).softmax_width(1_700, 2048) == 1_700
    assert TrainConfig(loss="softmax").softmax_width(100_000, 2048) == 100_000
    assert TrainConfig(train_mode="auto", loss="bpr", full_step_gb=2.0).step_plan(8_000_000, 500_000, 100_000)[0] \
        == "full"
    with pytest.raises(ValueError, match="train_mode"):
        TrainConfig(train_mode="fast").step_plan(10, 10, 10)


def test_user_batching_keeps_each_users_pairs_together(tiny_data):
    """``batching=user``: the epoch is still a permutation of the training pairs, each user's
    pairs are one run, the users' order and the pairs inside a run change between epochs, and
    the same generator draws the same epoch."""
    from recsys_dagster.core.train import epoch_samples

    pairs = sorted(zip(tiny_data.train_users.tolist(), tiny_data.train_items.tolist(), strict=True))
    gen = torch.Generator().manual_seed(5)
    first, second = (epoch_samples(tiny_data, gen, by_user=True) for _ in range(2))
    for u, p, n in (first, second):
        assert sorted(zip(u.tolist(), p.tolist(), strict=True)) == pairs
        runs = torch.unique_consecutive(u)
        assert len(runs) == len(torch.unique(u)), "a user's pairs are split across the epoch"
        keys = set(zip(tiny_data.train_users.tolist(), tiny_data.train_items.tolist(), strict=True))
        assert not any((a, b) in keys for a, b in zip(u.tolist(), n.tolist(), strict=True))
    assert not torch.equal(torch.unique_consecutive(first[0]), torch.unique_consecutive(second[0]))
    again = epoch_samples(tiny_data, torch.Generator().manual_seed(5), by_user=True)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    # the default keeps the pairs' independent shuffle: users come back many times
    u, _, _ = epoch_samples(tiny_data, torch.Generator().manual_seed(5))
    assert len(torch.unique_consecutive(u)) > 2 * len(torch.unique(u))


def test_batching_follows_the_loss_unless_set():
    assert TrainConfig(loss="softmax").by_user and TrainConfig(loss="sampled_softmax").by_user
    assert not TrainConfig(loss="bpr").by_user
    assert TrainConfig(loss="bpr", batching="user").by_user
    assert not TrainConfig(loss="softmax", batching="pair").by_user
    with pytest.raises(ValueError, match="batching"):
        _ = TrainConfig(batching="users").by_user


@pytest.mark.parametrize("batching", ["user", "pair"])
def test_softmax_training_learns_with_either_batching(tiny_data, batching):
    cfg = TrainConfig(model="mf", embedding_dim=16, batch_size=256, max_epochs=15, min_epochs=15, device="cpu",
                      loss="softmax", temperature=0.2, lr=5e-3, batching=batching)
    res = train(tiny_data, cfg, log=lambda m: None)
    again = train(tiny_data, cfg, log=lambda m: None)
    untrained = train(tiny_data, TrainConfig(**{**cfg.__dict__, "max_epochs": 1, "min_epochs": 1, "lr": 0.0}),
                      log=lambda m: None)
    assert res.best_valid == again.best_valid
    assert res.best_valid["ndcg@10"] > untrained.best_valid["ndcg@10"] + 0.02


@pytest.mark.parametrize("loss", ["bpr", "softmax"])
def test_sampled_training_learns(tiny_data, loss):
    from recsys_dagster.core.train import TrainConfig, train

    cfg = TrainConfig(model="kgtextgnn", embedding_dim=16, batch_size=256, max_epochs=15, min_epochs=15, device="cpu",
                      train_mode="sampled", fanout=5, loss=loss, lr=5e-3)
    res = train(tiny_data, cfg, log=lambda m: None)
    untrained = TrainConfig(**{**cfg.__dict__, "max_epochs": 1, "min_epochs": 1, "lr": 0.0})
    base = train(tiny_data, untrained, log=lambda m: None)
    assert res.best_valid["ndcg@10"] > base.best_valid["ndcg@10"] + 0.02


def test_sampled_softmax_training_learns_in_full_mode(tiny_data):
    from recsys_dagster.core.train import TrainConfig, train

    cfg = TrainConfig(model="kgtextgnn", embedding_dim=16, batch_size=256, max_epochs=15, min_epochs=15, device="cpu",
                      train_mode="full", loss="sampled_softmax", num_negatives=16, temperature=0.2, lr=5e-3)
    res = train(tiny_data, cfg, log=lambda m: None)
    untrained = TrainConfig(**{**cfg.__dict__, "max_epochs": 1, "min_epochs": 1, "lr": 0.0})
    base = train(tiny_data, untrained, log=lambda m: None)
    assert res.model.cosine and tiny_data.n_items > 16
    assert res.best_valid["ndcg@10"] > base.best_valid["ndcg@10"] + 0.02


def test_warm_start_from_another_embedding_size_starts_fresh(tiny_data):
    """A tuned size can change between runs (the grid has two): a parent of another size
    copies nothing, one of the same size copies every tensor, and training goes on."""
    from recsys_dagster.core.models import build_model
    from recsys_dagster.core.train import TrainConfig, train
    from recsys_dagster.core.train.weights import warm_start_state, weights_payload

    cfg = TrainConfig(model="kgtextgnn", embedding_dim=8, batch_size=256, max_epochs=1, min_epochs=1, device="cpu")
    parent = weights_payload(train(tiny_data, cfg, log=lambda m: None), tiny_data)
    n_tensors = len(parent["state_dict"])
    assert warm_start_state(build_model("kgtextgnn", tiny_data, 16), parent, tiny_data) == 0
    assert warm_start_state(build_model("kgtextgnn", tiny_data, 8), parent, tiny_data) == n_tensors
    wider = train(tiny_data, TrainConfig(**{**cfg.__dict__, "embedding_dim": 16}), warm_start=parent, log=lambda m: None)
    assert wider.model.embedding.weight.shape[1] == 16
