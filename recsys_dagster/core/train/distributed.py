"""Data-parallel training on Ray Train (``TorchTrainer``: DDP, gloo on CPU, NCCL on GPU).

Every worker reads the warehouse (read-only), builds the same graph and model, draws the
same global batches and trains on its contiguous share of each; DDP averages the
gradients, so N workers follow one worker with the same global batch step for step
(:func:`recsys_dagster.core.train.loop.train`, ``world``). Worker 0 writes the weights and
reports the metrics and per-step losses.

:func:`top_k_on_ray` scores every user in blocks as Ray tasks.

Ray is an optional dependency (``pip install -e '.[ray]'``); nothing here imports it until
:func:`train_on_ray` runs.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict
from pathlib import Path

from recsys_dagster.core.train.config import TrainConfig


def _worker(cfg: dict) -> None:
    """One Ray Train worker (runs inside the worker process)."""
    import ray.train

    from recsys_dagster.core.train.loop import train
    from recsys_dagster.core.train.weights import save_weights
    from recsys_dagster.core.training_data import load_training_data

    ctx = ray.train.get_context()
    rank, size = ctx.get_world_rank(), ctx.get_world_size()
    config = TrainConfig.from_dict(cfg["train"])
    data = load_training_data(cfg["warehouse"], config)
    losses: list[float] = []
    result = train(data, config, log=lambda m: None, world=(rank, size), on_step=lambda i, v: losses.append(v))
    if rank == 0:
        out = Path(cfg["output"])
        out.parent.mkdir(parents=True, exist_ok=True)
        sha = save_weights(out, result, data)
        (out.parent / "distributed_result.json").write_text(json.dumps({
            "world_size": size, "best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
            "best_valid": result.best_valid, "test": result.test, "step_losses": losses, "weights_sha256": sha,
            "seconds_per_epoch": result.seconds_per_epoch, "stopped_by": result.stopped_by}))
    ray.train.report({"world_size": size, "valid_ndcg@10": result.best_valid["ndcg@10"]})


def train_on_ray(warehouse: str, config: TrainConfig, output: str, num_workers: int = 2, cpus_per_worker: float = 1,
                 gpus_per_worker: float = 0, address: str | None = None) -> dict:
    """Train ``config`` on ``num_workers`` Ray Train workers (connecting to ``address``, or
    the running/local Ray); weights go to ``output``. Returns worker 0's result (metrics,
    per-step global losses, weight SHA-256)."""
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    use_gpu = gpus_per_worker > 0
    resources = {"CPU": cpus_per_worker, **({"GPU": gpus_per_worker} if use_gpu else {})}
    trainer = TorchTrainer(
        _worker,
        train_loop_config={"warehouse": str(Path(warehouse).resolve()), "output": str(Path(output).resolve()),
                           "train": asdict(config)},
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu, resources_per_worker=resources),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=RunConfig(storage_path=tempfile.mkdtemp(prefix="recsys-ray-"), name="gnn_model"),
    )
    trainer.fit()
    return json.loads((Path(output).resolve().parent / "distributed_result.json").read_text())


def _top_k_block(users, items, exclude, start: int, k: int):
    """One Ray task of :func:`top_k_on_ray`: the users ``start .. start + len(users)``."""
    import numpy as np
    import torch

    from recsys_dagster.core.fusion import top_k

    u, i = torch.as_tensor(users), torch.as_tensor(items)
    return top_k(lambda ub: u[ub - start] @ i.T, np.arange(start, start + len(u)), exclude, i.shape[0], k)


def top_k_on_ray(user_emb, item_emb, exclude_csr, k: int = 20, users_per_task: int = 4096):
    """Top-``k`` items of every user (dot-product scores, ``exclude_csr`` items masked) as Ray
    tasks over blocks of users; the item embeddings and the exclusions go to the object
    store once. Returns the same ``(items, scores)`` as
    :func:`recsys_dagster.core.fusion.top_k` on one machine (a test checks it)."""
    import numpy as np
    import ray

    users = np.asarray(user_emb, dtype=np.float32)
    items_ref, exclude_ref = ray.put(np.asarray(item_emb, dtype=np.float32)), ray.put(exclude_csr)
    task = ray.remote(_top_k_block)
    parts = ray.get([task.remote(users[s: s + users_per_task], items_ref, exclude_ref, s, k)
                     for s in range(0, len(users), users_per_task)])
    if not parts:
        return np.zeros((0, k), dtype=np.int64), np.zeros((0, k), dtype=np.float32)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


__all__ = ["top_k_on_ray", "train_on_ray"]
