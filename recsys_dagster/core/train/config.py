"""The training config (one dataclass; the Dagster launchpad form derives from it) and
the result of a run."""

from __future__ import annotations

from dataclasses import dataclass, field

from recsys_dagster.core.options import option

#: Early-stopping patience of the production model (the ``gnn_model`` asset's default),
#: shorter than the :class:`TrainConfig` default (30) that every model an evaluation, a tuning
#: run or a benchmark trains gets. Measured on validation NDCG@10 per epoch (size-128 softmax
#: defaults, protocol A, replayed offline from patience-30 curves). With pair batches, past
#: ``min_epochs`` the main model's best epoch came at most 10 epochs after the previous best on
#: ML-100K seeds 2020-2022 and 2024 and at most 11 on ml-latest-small seeds 2020-2022, 16 on
#: ML-100K seed 2023 (+0.0002), and 15 was chosen (20 then cost 130 s, over the 2-minute budget).
#: With batches of whole users (``TrainConfig.batching``) the curves changed: on ML-100K seed
#: 2021 the best epoch came 19 epochs after the previous one (epoch 42 instead of 23: +0.0014
#: validation, half the plateau's epoch-to-epoch swing), which 15 misses and 20 catches; seed
#: 2023's largest gap is 8 and seeds 2020, 2022 and 2024 peak by epoch 14, where 15, 20 and 30
#: agree. An epoch now costs ~1.6 s on 2 cores, so 20 fits the budget (5 epochs, ~8 s, more
#: than 15). MF's validation creeps up to 25-30 epochs between improvements, so the peers keep 30
#: and are never cut short by it.
GNN_MODEL_PATIENCE = 20

#: The losses that are a softmax on cosine scores.
SOFTMAX_LOSSES = ("softmax", "sampled_softmax")


@dataclass
class TrainConfig:
    model: str = option("kgtextgnn", "kgtextgnn | lightgcn | mf")
    embedding_dim: int = 64
    num_layers: int = option(2, "propagation layers (LightGCN, KGTextGNN)")
    lr: float = option(5e-3, "Adam learning rate")
    reg_weight: float = option(1e-4, "L2 weight on the batch's layer-0 embeddings")
    batch_size: int = option(2048, "training pairs per optimizer step (full mode: the smallest batch)")
    batching: str = option("auto", "user: each step's pairs are whole users' (users shuffled, every pair of a user "
                                   "in one step), so a softmax computes each user's row of logits once per epoch; "
                                   "pair: pairs shuffled independently; auto: user with a softmax loss, pair with "
                                   "BPR (no row to share)")
    train_mode: str = option("auto", "full: every step propagates the whole graph, a fixed number of steps per "
                                     "epoch; sampled: each step propagates over the batch's L-hop neighbourhoods "
                                     "(fan-out capped); auto: full unless a full step would need more than "
                                     "full_step_gb of memory")
    steps_per_epoch: int = option(40, "full mode: optimizer steps per epoch; past batch_size x steps training "
                                      "pairs the batch grows with the data and the learning rate by sqrt(growth)")
    fanout: int = option(10, "sampled mode: neighbours kept per node and hop")
    full_step_gb: float = option(4.0, "auto mode: estimated memory of one full-graph step (activations of every "
                                      "node, and batch x items logits with the softmax loss) above which "
                                      "training is sampled")
    loss: str = option("bpr", "bpr (one sampled negative), softmax (full-catalogue InfoNCE on cosine scores) or "
                              "sampled_softmax (the same softmax over num_negatives items drawn per step: large "
                              "catalogues)")
    temperature: float = option(0.1, "softmax temperature τ")
    num_negatives: int = option(1024, "sampled_softmax: items drawn uniformly (without replacement) per step "
                                      "and shared by the batch, next to the batch's own positives; at least the "
                                      "catalogue size means the full softmax")
    max_epochs: int = option(300, "epoch budget")
    min_epochs: int = option(20, "no early stop before this many epochs")
    patience: int = option(30, "early-stopping patience: epochs without a better validation metric")
    eval_every: int = option(1, "validate every N epochs")
    ema_decay: float = option(0.0, "exponential moving average of the weights, updated after every step with "
                                    "this decay (bias-corrected); validated next to the raw weights at every "
                                    "epoch, the better of the two is kept (0: off)")
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

    def step_plan(self, n_pairs: int, n_nodes: int = 0, n_items: int = 0, propagates: bool = True
                  ) -> tuple[str, int, float]:
        """``(mode, batch, lr)`` for ``n_pairs`` training pairs on a graph of ``n_nodes`` nodes:
        full mode keeps at most ``steps_per_epoch`` steps (epoch cost linear in the data),
        sampled mode keeps ``batch_size`` (a step costs O(batch x fanout^L)). A model that
        does not propagate (MF) keeps ``batch_size`` in full mode."""
        if self.train_mode not in ("auto", "full", "sampled"):
            raise ValueError(f"train_mode {self.train_mode!r}: choose auto, full or sampled")
        if not propagates:
            return "full", self.batch_size, self.lr
        batch = max(self.batch_size, -(-n_pairs // max(self.steps_per_epoch, 1)))
        mode = self.train_mode
        if mode == "auto":
            activations = 3 * (self.num_layers + 1) * n_nodes * self.embedding_dim
            logits = 2 * batch * self.softmax_width(n_items, batch) if self.cosine else 0
            mode = "sampled" if 4 * (activations + logits) > self.full_step_gb * 2**30 else "full"
        if mode == "sampled":
            return mode, self.batch_size, self.lr
        return "full", batch, self.lr * (batch / self.batch_size) ** 0.5

    @property
    def by_user(self) -> bool:
        """Whether an epoch's batches hold whole users (:attr:`batching`)."""
        if self.batching not in ("auto", "user", "pair"):
            raise ValueError(f"batching {self.batching!r}: choose auto, user or pair")
        return self.batching == "user" or (self.batching == "auto" and self.cosine)

    @property
    def cosine(self) -> bool:
        """Whether the loss is a softmax on cosine scores (the model then scores by cosine)."""
        return self.loss in SOFTMAX_LOSSES

    def softmax_width(self, n_items: int, batch: int) -> int:
        """Items in one row of the softmax: the catalogue, or at most the batch's positives plus
        the uniform negatives (``sampled_softmax``)."""
        return min(n_items, self.num_negatives + batch) if self.loss == "sampled_softmax" else n_items

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
