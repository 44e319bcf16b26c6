"""The training config (one dataclass; the Dagster launchpad form derives from it) and
the result of a run."""

from __future__ import annotations

from dataclasses import dataclass, field

from recsys_dagster.core.options import option


@dataclass
class TrainConfig:
    model: str = option("kgtextgnn", "kgtextgnn | lightgcn | mf")
    embedding_dim: int = 64
    num_layers: int = option(2, "propagation layers (LightGCN, KGTextGNN)")
    lr: float = option(5e-3, "Adam learning rate")
    reg_weight: float = option(1e-4, "L2 weight on the batch's layer-0 embeddings")
    batch_size: int = option(2048, "training pairs per optimizer step (full mode: the smallest batch)")
    train_mode: str = option("auto", "full: every step propagates the whole graph, a fixed number of steps per "
                                     "epoch; sampled: each step propagates over the batch's L-hop neighbourhoods "
                                     "(fan-out capped); auto: sampled when the graph has more than sampled_above "
                                     "edges")
    steps_per_epoch: int = option(40, "full mode: optimizer steps per epoch; past batch_size x steps training "
                                      "pairs the batch grows with the data and the learning rate by sqrt(growth)")
    fanout: int = option(10, "sampled mode: neighbours kept per node and hop")
    sampled_above: int = option(5_000_000, "auto mode: operator edges above which training is sampled")
    loss: str = option("bpr", "bpr (one sampled negative) or softmax (full-catalogue InfoNCE on cosine scores)")
    temperature: float = option(0.1, "softmax temperature τ")
    max_epochs: int = option(300, "epoch budget")
    min_epochs: int = option(20, "no early stop before this many epochs")
    patience: int = option(30, "early-stopping patience: epochs without a better validation metric")
    eval_every: int = option(1, "validate every N epochs")
    seed: int = 2020
    kg_weight: float = option(0.5, "weight of the KG attention edges next to the user-item edges (KGTextGNN)")
    kg_loss_weight: float = option(0.0, "weight of the auxiliary TransR KG loss (0: off)")
    id_dropout: float = option(0.0, "share of item id embeddings dropped in training (cold-start robustness)")
    use_text: bool = option(True, "initialize users/items from text embeddings (KGTextGNN)")
    use_kg: bool = option(True, "propagate over knowledge-graph edges (KGTextGNN)")
    device: str = option("auto", "auto (CUDA when available), cpu, cuda or cuda:N")
    amp: bool = option(True, "bfloat16 autocast on CUDA")
    valid_metric: str = option("ndcg@10", "metric that picks the best epoch")
    min_rating: float | None = option(None, "only ratings >= this are positives (None: every interaction)")
    split_seed: int = option(2020, "seed of the protocol-A split")
    split: str = option("hash", "protocol-A split: hash (stable as data grows) or recbole (per-user shuffle)")
    max_seconds: float | None = option(None, "wall-clock cap on training; stops like early stopping")
    window_days: int | None = option(None, "train on the last N days of interactions (up to the latest "
                                           "partition); None: every day")

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown training config keys {sorted(unknown)}")
        return cls(**values)

    def step_plan(self, n_pairs: int, n_edges: int) -> tuple[str, int, float]:
        """``(mode, batch, lr)`` for ``n_pairs`` training pairs on an operator with ``n_edges``
        non-zeros: full mode keeps at most ``steps_per_epoch`` steps (linear epoch cost),
        sampled mode keeps ``batch_size`` (each step costs O(batch x fanout^L))."""
        if self.train_mode not in ("auto", "full", "sampled"):
            raise ValueError(f"train_mode {self.train_mode!r}: choose auto, full or sampled")
        mode = self.train_mode
        if mode == "auto":
            mode = "sampled" if n_edges > self.sampled_above else "full"
        if mode == "sampled" or n_edges == 0:
            return mode if n_edges else "full", self.batch_size, self.lr
        batch = max(self.batch_size, -(-n_pairs // max(self.steps_per_epoch, 1)))
        return "full", batch, self.lr * (batch / self.batch_size) ** 0.5

    def split_spec(self):
        """The :class:`~recsys_dagster.core.splits.SplitSpec` this model trains on."""
        from recsys_dagster.core.splits import SplitSpec

        return SplitSpec(self.split, self.split_seed, min_rating=self.min_rating)


@dataclass
class TrainResult:
    model: object
    config: TrainConfig
    best_epoch: int
    best_valid: dict
    test: dict
    history: list[dict] = field(default_factory=list)
    epochs_run: int = 0
    resumed_from: int | None = None
    seconds_per_epoch: float = 0.0
    stopped_by: str = ""
