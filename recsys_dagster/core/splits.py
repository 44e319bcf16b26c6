"""Evaluation protocols: how interactions are split into train / valid / test.

* :func:`random_split` — RecBole's per-user random split (``RS`` with ratios 8:1:1): each
  user's interactions are shuffled with a fixed seed and cut by ratio, so every user with
  enough interactions appears in all three parts.
* :func:`temporal_split` — train on days before ``cutoff``, valid/test on the days after
  (matches the daily partitions: what a daily refresh actually faces).
* :func:`cold_item_split` — a share of items loses all its interactions from train
  (and valid); the test set is those items' interactions.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass
class Split:
    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    name: str = "random"

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "valid": len(self.valid), "test": len(self.test)}


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
    """Remove every interaction of a random ``share`` of items from train/valid; test is
    those items' interactions (restricted to users who keep some training data)."""
    items = np.sort(interactions["item_id"].unique())
    rng = np.random.default_rng(seed)
    cold = rng.choice(items, size=max(1, int(round(share * len(items)))), replace=False)
    base = base or random_split(interactions, seed=seed)
    is_cold = interactions["item_id"].isin(cold)
    train = base.train[~base.train["item_id"].isin(cold)]
    valid = base.valid[~base.valid["item_id"].isin(cold)]
    test = interactions[is_cold & interactions["user_id"].isin(set(train["user_id"]))]
    return Split(train, valid, test, name="cold_item"), cold
