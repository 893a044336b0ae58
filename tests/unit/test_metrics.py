import math

import numpy as np
import pytest

from shared.metrics import hit_rate, ndcg, ranking_metrics


def test_perfect_ranking_scores_one():
    ranks = np.zeros(10, dtype=np.int64)
    assert hit_rate(ranks, 1) == 1.0
    assert ndcg(ranks, 1) == 1.0


def test_no_hit_scores_zero():
    ranks = np.full(5, 50)
    assert hit_rate(ranks, 50) == 0.0
    assert ndcg(ranks, 50) == 0.0


def test_hand_computed_ndcg():
    # ranks 0, 2 and 9 at K=5: gains 1, 1/log2(4) = 0.5, 0 -> mean 0.5
    ranks = np.array([0, 2, 9])
    assert ndcg(ranks, 5) == pytest.approx(0.5)
    assert hit_rate(ranks, 5) == pytest.approx(2 / 3)
    # rank 1 (second place): 1/log2(3)
    assert ndcg(np.array([1]), 10) == pytest.approx(1 / math.log2(3))


def test_boundary_rank_equal_to_k_is_a_miss():
    # HR@K counts ranks 0..K-1 (the BD code's off-by-one counted 1..K-1)
    assert hit_rate(np.array([49]), 50) == 1.0
    assert hit_rate(np.array([50]), 50) == 0.0


def test_ranking_metrics_names_and_errors():
    out = ranking_metrics(np.array([0, 3]), ks=[1, 5])
    assert set(out) == {"HR@1", "NDCG@1", "HR@5", "NDCG@5"}
    with pytest.raises(ValueError, match="K must be positive"):
        ranking_metrics(np.array([0]), ks=[0])
    with pytest.raises(ValueError, match="no ranks"):
        hit_rate(np.array([]), 5)
