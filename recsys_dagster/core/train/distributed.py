"""Data-parallel training on Ray Train (``TorchTrainer``: DDP, gloo on CPU, NCCL on GPU).

Every worker reads the job folder that :func:`write_job` filled (the split's training data,
the warm-start weights), builds the same graph and model, draws the same global batches
and trains on its contiguous share of each; DDP averages the
gradients, so N workers follow one worker with the same global batch step for step
(:func:`recsys_dagster.core.train.loop.train`, ``world``). Worker 0 writes the weights and
reports the metrics and per-step losses.

Scoring every user and encoding item texts as Ray tasks: :mod:`recsys_dagster.core.parallel`.

Ray is an optional dependency (``pip install -e '.[ray]'``); nothing here imports it until
:func:`train_on_ray` runs.
"""

from __future__ import annotations

import json
import pickle
import tempfile
from dataclasses import asdict
from pathlib import Path

from recsys_dagster.core.train.config import TrainConfig, TrainResult

#: Files of a training job folder: what the workers read, what worker 0 writes.
JOB_DATA, JOB_WARM_START, JOB_WEIGHTS, JOB_RESULT = "train_data.pkl", "warm_start.pt", "model.pt", "result.json"


def write_job(job_dir: str | Path, data, config: TrainConfig, warm_start: dict | None = None) -> dict:
    """Write what the workers train from into ``job_dir`` (the split's :class:`TrainData` and
    the warm-start weights) and return the job spec (JSON) for :func:`train_on_ray`. On a
    multi-node cluster ``job_dir`` must be on storage every node mounts (``RECSYS_HOME``)."""
    import torch

    job_dir = Path(job_dir).resolve()
    job_dir.mkdir(parents=True, exist_ok=True)
    with open(job_dir / JOB_DATA, "wb") as f:  # our own arrays, read back by the same code version
        pickle.dump(data, f, protocol=5)
    if warm_start is not None:
        torch.save(warm_start, job_dir / JOB_WARM_START)
    return {"job_dir": str(job_dir), "train": asdict(config), "warm_start": warm_start is not None}


def _worker(job: dict) -> None:
    """One Ray Train worker (runs inside the worker process)."""
    import ray.train
    import torch

    from recsys_dagster.core.train.loop import train
    from recsys_dagster.core.train.weights import save_weights

    ctx = ray.train.get_context()
    rank, size = ctx.get_world_rank(), ctx.get_world_size()
    folder = Path(job["job_dir"])
    config = TrainConfig.from_dict(job["train"])
    with open(folder / JOB_DATA, "rb") as f:
        data = pickle.load(f)
    warm = torch.load(folder / JOB_WARM_START, map_location="cpu", weights_only=True) if job["warm_start"] else None
    losses: list[float] = []
    result = train(data, config, warm_start=warm, log=lambda m: None, world=(rank, size),
                   on_step=lambda i, v: losses.append(v))
    if rank == 0:
        sha = save_weights(folder / JOB_WEIGHTS, result, data)
        (folder / JOB_RESULT).write_text(json.dumps({
            "world_size": size, "best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
            "best_valid": result.best_valid, "test": result.test, "history": result.history, "step_losses": losses,
            "weights_sha256": sha, "seconds_per_epoch": result.seconds_per_epoch, "stopped_by": result.stopped_by}))
    ray.train.report({"world_size": size, "valid_ndcg@10": result.best_valid["ndcg@10"]})


def train_on_ray(job: dict, num_workers: int = 2, cpus_per_worker: float = 1, gpus_per_worker: float = 0,
                 address: str | None = None) -> dict:
    """Train the job written by :func:`write_job` on ``num_workers`` Ray Train workers
    (connecting to ``address``, or the running/local Ray; inside a Ray job: its cluster).
    Returns worker 0's result (metrics, per-epoch history, per-step global losses, weight
    SHA-256); the weights are in the job folder."""
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    use_gpu = gpus_per_worker > 0
    resources = {"CPU": cpus_per_worker, **({"GPU": gpus_per_worker} if use_gpu else {})}
    job = {**job, "train": {**job["train"], "device": "cuda" if use_gpu else "cpu"}}
    trainer = TorchTrainer(
        _worker, train_loop_config=job,
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu, resources_per_worker=resources),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=RunConfig(storage_path=tempfile.mkdtemp(prefix="recsys-ray-"), name="gnn_model"),
    )
    trainer.fit()
    return json.loads((Path(job["job_dir"]) / JOB_RESULT).read_text())


def result_from_job(job_dir: str | Path, data, config: TrainConfig) -> TrainResult:
    """The :class:`TrainResult` of a finished job (model rebuilt from worker 0's weights), as
    a local :func:`~recsys_dagster.core.train.loop.train` returns it; the job's training
    data and weight files are removed (the model store keeps its own copy)."""
    from recsys_dagster.core.train.weights import load_weights

    folder = Path(job_dir)
    out = json.loads((folder / JOB_RESULT).read_text())
    model, _ = load_weights(folder / JOB_WEIGHTS, data)
    for name in (JOB_DATA, JOB_WARM_START, JOB_WEIGHTS):
        (folder / name).unlink(missing_ok=True)
    return TrainResult(model, config, out["best_epoch"], out["best_valid"], out["test"], out["history"],
                       out["epochs_run"], None, out["seconds_per_epoch"], out["stopped_by"])


__all__ = ["result_from_job", "train_on_ray", "write_job"]
