"""Data-parallel training on Ray Train: N workers follow one worker step for step."""

import os

import numpy as np
import pytest

from tests.conftest import synthetic_warehouse

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install -e '.[ray]')")


@pytest.fixture(scope="module")
def local_ray():
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.slow
def test_two_workers_match_one_with_the_same_global_batch(tmp_path, local_ray):
    from recsys_dagster.core.train import TrainConfig
    from recsys_dagster.core.train.distributed import result_from_job, train_on_ray, write_job
    from recsys_dagster.core.training_data import load_training_data

    settings, _ = synthetic_warehouse(tmp_path, "2024-01-04", n_users=80, n_items=50, n_interactions=1500, days=4,
                                      seed=3)
    cfg = TrainConfig(model="kgtextgnn", embedding_dim=16, batch_size=128, max_epochs=3, min_epochs=3, device="cpu",
                      loss="softmax", temperature=0.2, lr=5e-3)
    data = load_training_data(settings.warehouse, cfg)
    one = train_on_ray(write_job(tmp_path / "w1", data, cfg), num_workers=1)
    two = train_on_ray(write_job(tmp_path / "w2", data, cfg), num_workers=2)
    assert one["world_size"] == 1 and two["world_size"] == 2
    a, b = np.array(one["step_losses"]), np.array(two["step_losses"])
    assert len(a) == len(b) > 3
    assert np.abs(a - b).max() <= 1e-5
    assert abs(one["best_valid"]["ndcg@10"] - two["best_valid"]["ndcg@10"]) <= 1e-3
    result = result_from_job(tmp_path / "w2", data, cfg)  # what gnn_model stores after a Ray job
    assert result.model.num_users == data.n_users and len(result.history) == result.epochs_run == 3
    assert result.best_valid == pytest.approx(two["best_valid"])
    assert not (tmp_path / "w2" / "train_data.pkl").exists()


def _through_a_ray_job_folder(tmp_path):
    """``run(fn, shared, blocks)`` as the Ray job does it: job files written, the map run as
    Ray tasks, results read back (what ``LauncherResource.map_blocks`` does around Pipes)."""
    from recsys_dagster.core.parallel import read_map_results, run_map_job, write_map_job

    def run(fn, shared, blocks):
        job = write_map_job(tmp_path / f"job{len(list(tmp_path.iterdir()))}", fn, shared, blocks)
        assert run_map_job(job) == len(blocks)
        return read_map_results(job["job_dir"])

    return run


def test_scoring_every_user_as_ray_tasks_equals_local_scoring(tmp_path, local_ray):
    """The production scorer (GNN + text + EASE fusion) scored in blocks by Ray tasks gives
    the same lists as one local top-K."""
    import torch

    from recsys_dagster.core.baselines import EASE
    from recsys_dagster.core.fusion import FusionWeights, top_k
    from recsys_dagster.core.models import build_model
    from recsys_dagster.core.parallel import block_top_k
    from recsys_dagster.core.recommend import build_scorer
    from recsys_dagster.core.train import TrainConfig
    from recsys_dagster.core.training_data import load_training_data

    settings, _ = synthetic_warehouse(tmp_path, "2024-01-04", n_users=70, n_items=45, n_interactions=1200, days=4,
                                      seed=4)
    cfg = TrainConfig(embedding_dim=16, device="cpu")
    data = load_training_data(settings.warehouse, cfg)
    torch.manual_seed(0)
    model = build_model("kgtextgnn", data, 16)
    scorer = build_scorer(model, data, FusionWeights(1.0, 0.5, gamma=0.7), EASE(data.train_csr, data.n_items, 50.0))
    users = np.arange(data.n_users)
    local = top_k(scorer, users, data.train_csr, data.n_items, 10)
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    remote = block_top_k(_through_a_ray_job_folder(jobs), per_block=16, min_blocks=2)(
        scorer, users, data.train_csr, data.n_items, 10)
    assert remote[0].shape == (data.n_users, 10)
    np.testing.assert_array_equal(remote[0], local[0])
    np.testing.assert_allclose(remote[1], local[1], rtol=1e-6)
    assert not any(jobs.rglob("*.pkl"))  # the job files are removed once read


def test_item_text_encoding_as_ray_tasks_equals_local_encoding(tmp_path, local_ray):
    from recsys_dagster.core.parallel import BlockEncoder
    from recsys_dagster.core.text import EncoderConfig, TextEncoder

    texts = [f"Item {i}. {g}. A story about {w} and {v}." for i, (g, w, v) in enumerate(
        (g, w, v) for g in ("Drama", "Comedy", "Science fiction") for w in ("ships", "love", "a long winter")
        for v in ("friends", "the sea", "an old map"))]
    local = TextEncoder(EncoderConfig(device="cpu"))
    remote = BlockEncoder(local, _through_a_ray_job_folder(tmp_path), per_block=10, min_blocks=2)
    assert remote.model_id == local.model_id  # one embedding cache for both ways
    a, b = local.encode(texts), remote.encode(texts)
    assert b.shape == a.shape == (len(texts), local.dim)
    np.testing.assert_allclose(b, a, atol=1e-5)


@pytest.mark.slow
def test_scale_check_trains_gnn_model_as_a_ray_job_on_a_two_node_loopback_cluster(tmp_path):
    """`make scale-check` on a small synthetic dataset: the gnn_model asset launches a Ray job
    through Dagster Pipes on a 2-node cluster (started and stopped by the check), with 2
    workers and with 1; they must agree step for step."""
    import json
    import subprocess
    import sys

    from recsys_dagster.core.datasets.synthetic import generate
    from tests.conftest import ROOT

    folder = generate(tmp_path / "synthetic", n_users=80, n_items=50, n_interactions=1500, days=4, seed=3)
    home = tmp_path / "home"
    out = subprocess.run([sys.executable, "-m", "benchmarks.scale_check", "--dataset", str(folder), "--epochs", "2",
                          "--keep", str(home), "--results", str(tmp_path / "results")],
                         cwd=ROOT, capture_output=True, text=True, timeout=900)
    last = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert last.startswith("scale-check: ok world_size=2 max_ndcg_diff=")
    report = json.loads((tmp_path / "results" / "scale_check.json").read_text())
    assert [r["world size"] for r in report["runs"]] == [2, 1] and report["max_step_loss_diff"] <= 1e-5
    assert all(r["launcher"] == "ray" for r in report["runs"])
    if report["isolated_network"]:
        assert report["listeners_off_loopback"] == []
    versions = [p for p in (home / "models" / "gnn_model").iterdir() if (p / "manifest.json").is_file()]
    assert len(versions) == 2  # both Ray runs became model versions, as local runs do
    assert not list((home / "models" / "gnn_model" / "ray_jobs").glob("*/train_data.pkl"))
