"""Ranking metrics against values computed by hand."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from recsys_dagster.core.metrics import full_ranking, to_csr
from recsys_dagster.core.splits import random_split, recbole_split_sizes


def test_metrics_match_hand_computed_values():
    # 2 users, 6 items. Scores rank items 0..5 in order for user 0, reversed for user 1.
    scores = torch.tensor([[6, 5, 4, 3, 2, 1], [1, 2, 3, 4, 5, 6]], dtype=torch.float32)
    # user 0: train item 0 (masked); truth {2, 5} -> ranking 1,2,3,4,5 -> hits at ranks 2 and 5
    # user 1: no train; truth {0} -> ranking 5,4,3,2,1,0 -> hit at rank 6 (outside K=5)
    truth = to_csr(np.array([0, 0, 1]), np.array([2, 5, 0]), 2)
    exclude = to_csr(np.array([0]), np.array([0]), 2)
    m = full_ranking(lambda u: scores[u], truth, exclude, n_items=6, ks=(2, 5))
    d = [1 / math.log2(k + 1) for k in range(1, 6)]
    ndcg0_5 = (d[1] + d[4]) / (d[0] + d[1])
    assert m["ndcg@5"] == pytest.approx((ndcg0_5 + 0) / 2)
    assert m["ndcg@2"] == pytest.approx((d[1] / (d[0] + d[1])) / 2)
    assert m["recall@5"] == pytest.approx((2 / 2 + 0) / 2)
    assert m["recall@2"] == pytest.approx((1 / 2) / 2)
    assert m["precision@5"] == pytest.approx((2 / 5) / 2)
    assert m["mrr@5"] == pytest.approx((1 / 2) / 2)
    assert m["hit@2"] == pytest.approx(0.5)


def test_users_without_truth_are_skipped_and_truth_larger_than_k():
    scores = torch.arange(10, 0, -1, dtype=torch.float32).repeat(3, 1)
    truth = to_csr(np.array([1, 1, 1]), np.array([0, 1, 2]), 3)  # only user 1 has truth, 3 items, K=2
    m = full_ranking(lambda u: scores[u], truth, None, n_items=10, ks=(2,))
    assert m["ndcg@2"] == pytest.approx(1.0) and m["recall@2"] == pytest.approx(2 / 3)


def test_recbole_split_sizes():
    tr, va, te = recbole_split_sizes(np.array([100, 20, 9, 5, 2]))
    # n=2: test takes one row first, then train (1 row) is too small to give valid one
    assert tr.tolist() == [80, 16, 7, 3, 1] and va.tolist() == [10, 2, 1, 1, 0] and te.tolist() == [10, 2, 1, 1, 1]


def test_random_split_is_per_user_and_reproducible():
    inter = pd.DataFrame({"user_id": np.repeat(["a", "b"], [20, 30]), "item_id": np.arange(50)})
    s1, s2 = random_split(inter, seed=7), random_split(inter, seed=7)
    pd.testing.assert_frame_equal(s1.train, s2.train)
    assert s1.sizes() == {"train": 40, "valid": 5, "test": 5}
    assert s1.train.groupby("user_id").size().to_dict() == {"a": 16, "b": 24}
    assert len(pd.concat([s1.train, s1.valid, s1.test]).drop_duplicates()) == 50
