"""Training: BPR with early stopping on validation NDCG@10, per-epoch checkpoints, resume,
warm start. Runnable without Dagster::

    python -m recsys_dagster.core.train --config train.json

where ``train.json`` holds ``{"warehouse": ..., "output": ..., "train": {TrainConfig fields}}``.

Modules: ``config`` (:class:`TrainConfig`, :class:`TrainResult`), ``loop`` (the epoch
loop, BPR step, negatives, validation), ``checkpoint`` (resume), ``weights`` (weight files,
warm start), ``__main__`` (the command line).
"""

from recsys_dagster.core.train.checkpoint import Checkpoint
from recsys_dagster.core.train.config import TrainConfig, TrainResult
from recsys_dagster.core.train.loop import (
           bpr_step,
           epoch_samples,
           evaluate,
           sample_negatives,
           train,
)
from recsys_dagster.core.train.weights import (
           load_weights,
           node_keys,
           save_weights,
           warm_start_state,
           weights_payload,
)

__all__ = ["Checkpoint", "TrainConfig", "TrainResult", "bpr_step", "epoch_samples", "evaluate", "load_weights",
           "node_keys", "sample_negatives", "save_weights", "train", "warm_start_state", "weights_payload"]
