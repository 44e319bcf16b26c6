"""Evaluation protocols: how interactions are split into train / valid / test.

* :func:`hash_split` — protocol A's split (the default): every (user, item) pair gets a
  part from a seeded hash of its identity, 8:1:1. A pair never changes part when new days
  arrive, so a model warm-started from yesterday's weights is never graded on a pair it
  (or an ancestor) trained on. Valid/test keep the users who have training pairs.
* :func:`random_split` — RecBole's per-user random split (``RS`` with ratios 8:1:1): each
  user's interactions are shuffled with a fixed seed and cut by ratio, so every user with
  enough interactions appears in all three parts. Reported beside the hash split for
  comparability with RecBole; it reshuffles when data grows, so nothing is warm-started
  on it.
* :func:`temporal_split` — train on days before ``cutoff``, valid/test on the days after
  (matches the daily partitions: what a daily refresh actually faces).
* :func:`cold_item_split` — a share of items loses all its interactions from train
  (and valid); the test set is those items' interactions.
* :func:`few_shot_user_split` — a share of users keeps only its first few training
  interactions (a user who has just joined); valid and test are those users' pairs.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass
class Split:
    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    name: str = "random"
    #: validation pairs of users the split does not grade (the few-shot split's other users),
    #: for tuning that needs users with whole histories
    support_valid: pd.DataFrame | None = None

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "valid": len(self.valid), "test": len(self.test)}


SPLIT_METHODS = ("hash", "recbole")


@dataclass(frozen=True)
class SplitSpec:
    """What defines a protocol-A split; its :attr:`fingerprint` travels with every model
    version, and evaluation refuses weights trained on another split."""

    method: str = "hash"
    seed: int = 2020
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
    min_rating: float | None = None

    def __post_init__(self):
        if self.method not in SPLIT_METHODS:
            raise ValueError(f"split method {self.method!r}: expected one of {list(SPLIT_METHODS)}")

    def as_dict(self) -> dict:
        return {"method": self.method, "seed": self.seed, "ratios": list(self.ratios), "min_rating": self.min_rating}

    @property
    def fingerprint(self) -> str:
        blob = json.dumps({"v": 1, **self.as_dict()}, sort_keys=True)
        return f"{self.method}-" + hashlib.sha256(blob.encode()).hexdigest()[:12]

    def apply(self, positives: pd.DataFrame) -> Split:
        if self.method == "hash":
            return hash_split(positives, self.ratios, self.seed)
        return random_split(positives, self.ratios, self.seed)


def _id_hashes(values: np.ndarray, salt: str) -> np.ndarray:
    """A 64-bit BLAKE2b hash of every distinct id (as text), salted; stable across
    processes, platforms and library versions (Python's ``hash`` and pandas' hashing are not
    promised to be)."""
    uniq, inverse = np.unique(np.asarray(values).astype(str), return_inverse=True)
    h = np.fromiter((int.from_bytes(hashlib.blake2b(f"{salt}\x1f{v}".encode(), digest_size=8).digest(), "little")
                     for v in uniq), dtype=np.uint64, count=len(uniq))
    return h[inverse]


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer: spreads every input bit over the output."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def pair_uniform(users: np.ndarray, items: np.ndarray, seed: int) -> np.ndarray:
    """A uniform number in [0, 1) per (user, item), a pure function of the two ids and the seed."""
    with np.errstate(over="ignore"):
        h = _mix64(_id_hashes(users, f"u{seed}") ^ (_id_hashes(items, f"i{seed}") * np.uint64(0x9E3779B97F4A7C15)))
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def hash_split(interactions: pd.DataFrame, ratios=(0.8, 0.1, 0.1), seed: int = 2020) -> Split:
    """Each (user, item) pair's part comes from :func:`pair_uniform`: below ``ratios[0]``
    train, below ``ratios[0] + ratios[1]`` valid, else test. Adding interactions never moves
    a pair. Valid/test rows of users without any training pair are left out (nothing to
    rank from; they come back once the user has a training pair)."""
    frame = interactions.reset_index(drop=True)
    total = float(sum(ratios))
    x = pair_uniform(frame["user_id"].to_numpy(), frame["item_id"].to_numpy(), seed)
    part = np.where(x < ratios[0] / total, 0, np.where(x < (ratios[0] + ratios[1]) / total, 1, 2))
    train = frame[part == 0]
    known = frame["user_id"].isin(set(train["user_id"]))
    return Split(train, frame[(part == 1) & known], frame[(part == 2) & known], name="hash")


def recbole_split_sizes(n: np.ndarray, ratios=(0.8, 0.1, 0.1)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-group train/valid/test sizes exactly as RecBole's ``_calcu_split_ids``:
    valid and test get ``int(ratio * n)``, train the rest; for small groups where a
    ratio gives between 0 and 1 rows, test then valid take one row while train keeps > 1."""
    total = float(sum(ratios))
    r = [x / total for x in ratios]
    n = np.asarray(n, dtype=np.int64)
    cnt_valid = np.floor(r[1] * n).astype(np.int64)
    cnt_test = np.floor(r[2] * n).astype(np.int64)
    cnt_train = n - cnt_valid - cnt_test
    active = np.ones_like(n, dtype=bool)
    for ratio, which in ((r[2], "test"), (r[1], "valid")):
        active &= cnt_train > 1
        bump = active & (ratio * n > 0) & (ratio * n < 1)
        if which == "test":
            cnt_test += bump
        else:
            cnt_valid += bump
        cnt_train -= bump
    return cnt_train, cnt_valid, cnt_test


def random_split(interactions: pd.DataFrame, ratios=(0.8, 0.1, 0.1), seed: int = 2020) -> Split:
    """Per-user random split with RecBole's group sizes (see :func:`recbole_split_sizes`)."""
    frame = interactions.reset_index(drop=True)
    rng = np.random.default_rng(seed)
    shuffled = frame.iloc[rng.permutation(len(frame))]
    rank = shuffled.groupby("user_id", sort=False).cumcount().to_numpy()
    n = shuffled.groupby("user_id", sort=False)["user_id"].transform("size").to_numpy()
    n_train, n_valid, _ = recbole_split_sizes(n, ratios)
    part = np.where(rank < n_train, 0, np.where(rank < n_train + n_valid, 1, 2))
    parts = [shuffled[part == k].sort_index() for k in range(3)]
    return Split(*parts, name="random")


def temporal_split(interactions: pd.DataFrame, cutoff: dt.date, valid_end: dt.date) -> Split:
    """Train: days before ``cutoff``; valid: ``cutoff`` .. ``valid_end`` (exclusive); test:
    from ``valid_end`` on. Valid/test keep users and items seen in train (warm ranking;
    cold users and items are what the fusion layer's fallbacks and the cold-item protocol
    are for)."""
    ts = pd.to_datetime(interactions["ts"])
    c0, c1 = pd.Timestamp(cutoff), pd.Timestamp(valid_end)
    train = interactions[ts < c0]
    valid = interactions[(ts >= c0) & (ts < c1)]
    test = interactions[ts >= c1]
    known_u, known_i = set(train["user_id"]), set(train["item_id"])

    def warm(f):
        return f[f["user_id"].isin(known_u) & f["item_id"].isin(known_i)]

    return Split(train, warm(valid), warm(test), name=f"temporal@{cutoff}")


def temporal_cutoffs(interactions: pd.DataFrame, train_share: float = 0.8, valid_share: float = 0.1) -> tuple[dt.date, dt.date]:
    """Day boundaries so that about ``train_share`` of the interactions fall before the
    first and ``valid_share`` between the two (whole days, as the daily partitions)."""
    ts = pd.to_datetime(interactions["ts"])
    c0 = ts.quantile(train_share).normalize()
    c1 = max(ts.quantile(train_share + valid_share).normalize(), c0 + pd.Timedelta(days=1))
    return c0.date(), c1.date()


def cold_item_split(interactions: pd.DataFrame, share: float = 0.1, seed: int = 2020,
                    base: Split | None = None) -> tuple[Split, np.ndarray]:
    """Remove every interaction of a ``share`` of items (chosen by a seeded hash of the item
    id, so an item keeps its role as data grows) from train/valid; test is those items'
    interactions (restricted to users who keep some training data)."""
    items = np.sort(interactions["item_id"].unique())
    x = pair_uniform(np.zeros(len(items), dtype=np.int64), items, seed + 7919)
    cold = items[x < share]
    if len(cold) == 0 and len(items):
        cold = items[[int(np.argmin(x))]]
    base = base or hash_split(interactions, seed=seed)
    is_cold = interactions["item_id"].isin(cold)
    train = base.train[~base.train["item_id"].isin(cold)]
    valid = base.valid[~base.valid["item_id"].isin(cold)]
    test = interactions[is_cold & interactions["user_id"].isin(set(train["user_id"]))]
    return Split(train, valid, test, name="cold_item"), cold


def few_shot_user_split(interactions: pd.DataFrame, share: float = 0.2, keep: int = 3, seed: int = 2020,
                        base: Split | None = None) -> tuple[Split, np.ndarray]:
    """A ``share`` of users (chosen by a seeded hash of the user id, so a user keeps its
    role as data grows) keeps only its ``keep`` earliest training pairs of ``base`` (protocol
    A's hash split; ties in time broken by a seeded pair hash): users who have just joined.
    Valid and test are those users' valid and test pairs of ``base``, so a pair never
    changes part; the other users train on their whole history and are not graded (their
    validation pairs are the split's ``support_valid``). The dropped training pairs are in no
    part (a model is never graded on them)."""
    if keep < 1:
        raise ValueError(f"few-shot users keep {keep} training interactions: expected at least 1")
    base = base or hash_split(interactions, seed=seed)
    users = np.sort(interactions["user_id"].unique())
    x = pair_uniform(users, np.zeros(len(users), dtype=np.int64), seed + 104729)
    chosen = users[x < share]
    if len(chosen) == 0 and len(users):
        chosen = users[[int(np.argmin(x))]]
    train = base.train
    few = train["user_id"].isin(chosen)
    order = train[few].assign(_tie=pair_uniform(train.loc[few, "user_id"].to_numpy(),
                                                train.loc[few, "item_id"].to_numpy(), seed + 1))
    kept = order.sort_values(["user_id", "ts", "_tie"], kind="stable").groupby("user_id").head(keep)
    train = pd.concat([train[~few], kept.drop(columns="_tie")]).sort_index()
    known = set(kept["user_id"])
    graded = base.valid["user_id"].isin(known)
    return (Split(train, base.valid[graded], base.test[base.test["user_id"].isin(known)], name="few_shot",
                  support_valid=base.valid[~graded]), np.asarray(sorted(known)))
