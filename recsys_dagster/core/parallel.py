"""Embarrassingly parallel work as Ray tasks: one function over blocks, results in order.

Item text encoding and the top-K scoring of every user split into independent blocks (of
texts, of users). :func:`map_blocks` runs ``fn(shared, block)`` on each block — locally, or
as Ray tasks with ``shared`` put in the object store once — and returns the results in
block order, so both ways give the same output (tests check it). In ``ray`` mode the assets
run it inside a Ray job launched through Dagster Pipes (``LauncherResource.runner``):
:func:`write_map_job` writes the job folder, the job calls :func:`run_map_job`, the asset
reads :func:`read_map_results`.

Ray is optional: nothing here imports it unless a map runs on Ray.
"""

from __future__ import annotations

import importlib
import pickle
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

MAP_JOB, MAP_RESULTS = "map_job.pkl", "map_results.pkl"


def resolve(name: str) -> Callable:
    """``"package.module:function"`` → the function (what a job file names)."""
    module, _, attr = name.partition(":")
    return getattr(importlib.import_module(module), attr)


def map_blocks(fn: str, shared, blocks: Sequence, on_ray: bool = False) -> list:
    """``[fn(shared, b) for b in blocks]``, on Ray tasks when ``on_ray`` (the connected or a
    local Ray)."""
    func = resolve(fn)
    if not on_ray:
        return [func(shared, b) for b in blocks]
    import ray

    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False)
    ref = ray.put(shared)
    task = ray.remote(func)
    return ray.get([task.remote(ref, b) for b in blocks])


def write_map_job(job_dir: str | Path, fn: str, shared, blocks: Sequence) -> dict:
    """The job folder of one :func:`map_blocks` call (our own objects, read back by the same
    code version); on a multi-node cluster ``job_dir`` must be on shared storage."""
    job_dir = Path(job_dir).resolve()
    job_dir.mkdir(parents=True, exist_ok=True)
    with open(job_dir / MAP_JOB, "wb") as f:
        pickle.dump({"fn": fn, "shared": shared, "blocks": list(blocks)}, f, protocol=5)
    return {"job_dir": str(job_dir), "fn": fn, "blocks": len(blocks)}


def run_map_job(job: dict) -> int:
    """Inside the Ray job: run the folder's map as Ray tasks and write the results; returns
    the number of tasks."""
    folder = Path(job["job_dir"])
    with open(folder / MAP_JOB, "rb") as f:
        spec = pickle.load(f)
    results = map_blocks(spec["fn"], spec["shared"], spec["blocks"], on_ray=True)
    with open(folder / MAP_RESULTS, "wb") as f:
        pickle.dump(results, f, protocol=5)
    return len(results)


def read_map_results(job_dir: str | Path) -> list:
    """The results of a finished map job, in block order; the job files are removed."""
    folder = Path(job_dir)
    with open(folder / MAP_RESULTS, "rb") as f:
        results = pickle.load(f)
    for name in (MAP_JOB, MAP_RESULTS):
        (folder / name).unlink(missing_ok=True)
    return results


def split(n: int, blocks: int) -> list[tuple[int, int]]:
    """``[start, end)`` ranges covering ``0..n`` in at most ``blocks`` near-equal parts."""
    bounds = np.linspace(0, n, max(1, min(blocks, n)) + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]


# ---- the two block functions -----------------------------------------------------------

_ENCODERS: dict = {}


def encode_block(config, texts: list[str]) -> np.ndarray:
    """Unit vectors of ``texts`` with the encoder of ``config`` (an
    :class:`~recsys_dagster.core.text.EncoderConfig`; loaded once per worker process)."""
    from recsys_dagster.core.text import TextEncoder

    if config not in _ENCODERS:
        _ENCODERS[config] = TextEncoder(config)
    return _ENCODERS[config].encode(texts)


def top_k_block(shared: dict, users: np.ndarray):
    """``(items, scores)`` of the user indices ``users`` for ``shared = {"scorer", "exclude",
    "n_items", "k", "batch_size"}`` (:func:`recsys_dagster.core.fusion.top_k`)."""
    from recsys_dagster.core.fusion import top_k

    return top_k(shared["scorer"], users, shared["exclude"], shared["n_items"], shared["k"], shared["batch_size"])


def block_top_k(run: Callable, per_block: int = 4096, min_blocks: int = 1) -> Callable:
    """A drop-in for :func:`recsys_dagster.core.fusion.top_k` that scores blocks of about
    ``per_block`` users through ``run(fn, shared, blocks)`` (e.g. Ray tasks in a Ray job);
    same ``(items, scores)``."""

    def top_k(score_fn, users, exclude_csr, n_items: int, k: int = 20, batch_size: int = 1024):
        users = np.asarray(users)
        shared = {"scorer": score_fn, "exclude": exclude_csr, "n_items": n_items, "k": k, "batch_size": batch_size}
        blocks = [users[a:b] for a, b in split(len(users), max(min_blocks, -(-len(users) // per_block)))]
        parts = run("recsys_dagster.core.parallel:top_k_block", shared, blocks)
        if not parts:
            return np.zeros((0, min(k, n_items)), dtype=np.int64), np.zeros((0, min(k, n_items)), dtype=np.float32)
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    return top_k


class BlockEncoder:
    """A :class:`~recsys_dagster.core.text.TextEncoder` whose :meth:`encode` runs through
    ``run(fn, shared, blocks) -> results`` (e.g. a Ray job), in blocks of about
    ``per_block`` texts and at least ``min_blocks``: same ``model_id``, so the embedding
    cache is shared with local encoding."""

    def __init__(self, local, run: Callable, per_block: int = 2000, min_blocks: int = 1):
        self.local, self.run, self.per_block, self.min_blocks = local, run, per_block, min_blocks
        self.model_id, self.device, self.config = local.model_id, local.device, local.config

    @property
    def dim(self) -> int:
        return self.local.dim

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return self.local.encode(texts)
        parts = self.run("recsys_dagster.core.parallel:encode_block", self.local.config,
                         [list(texts[a:b]) for a, b in split(len(texts), max(self.min_blocks,
                                                                             -(-len(texts) // self.per_block)))])
        return np.concatenate(parts).astype(np.float32, copy=False)


__all__ = ["BlockEncoder", "block_top_k", "encode_block", "map_blocks", "read_map_results", "run_map_job", "split", "top_k_block",
           "write_map_job"]
