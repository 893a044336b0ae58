import math

import numpy as np
import pytest
import torch

from shared.evaluation import evaluate, sampled_target_ranks, target_ranks
from shared.interactions import ItemSets


def brute_force_ranks(scores, users, targets, train_rows, extra):
    """Reference: sort each user's candidate list in Python, ties counted against the target."""
    ranks = []
    for u, t in zip(users, targets, strict=True):
        excluded = set(train_rows[u]) | ({int(extra[u])} if extra is not None and extra[u] >= 0 else set())
        candidates = [i for i in range(scores.shape[1]) if i not in excluded and i != t]
        ranks.append(sum(1 for i in candidates if scores[u, i] >= scores[u, t]))
    return np.array(ranks)


def make_scorer(scores):
    table = torch.as_tensor(scores)
    return lambda users: table[users]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_brute_force_on_random_data(seed):
    rng = np.random.default_rng(seed)
    n_users, n_items = 30, 40
    scores = rng.normal(size=(n_users, n_items)).astype(np.float32)
    scores[:, :5] = np.round(scores[:, :5])  # some ties
    train_rows = [rng.choice(n_items, size=rng.integers(0, 10), replace=False) for _ in range(n_users)]
    train = ItemSets.from_lists(train_rows, n_items)
    valid = np.array([rng.choice(np.setdiff1d(np.arange(n_items), r)) for r in train_rows])
    test = np.array(
        [rng.choice(np.setdiff1d(np.arange(n_items), np.append(r, v))) for r, v in zip(train_rows, valid, strict=True)]
    )
    users = np.arange(n_users)
    got = target_ranks(make_scorer(scores), users, test[users], exclude=[train], exclude_items=[valid], batch_size=7)
    want = brute_force_ranks(scores, users, test, train_rows, valid)
    np.testing.assert_array_equal(got, want)
    result = evaluate(make_scorer(scores), users, test, [train], [valid], ks=(5, 10))
    assert result["HR@10"] == pytest.approx(np.mean(want < 10))
    assert result["NDCG@5"] == pytest.approx(np.mean([1 / math.log2(r + 2) if r < 5 else 0 for r in want]))


def test_training_items_are_excluded_not_zeroed():
    # negative scores: multiplying the training item's score by 0 would lift it above the target
    scores = np.array([[-5.0, -1.0, -2.0]], dtype=np.float32)
    train = ItemSets.from_lists([[1]], 3)
    ranks = target_ranks(make_scorer(scores), np.array([0]), np.array([2]), exclude=[train])
    assert ranks.tolist() == [0]


def test_constant_scorer_is_not_perfect():
    scores = np.zeros((2, 10), dtype=np.float32)
    ranks = target_ranks(make_scorer(scores), np.array([0, 1]), np.array([3, 4]))
    assert ranks.tolist() == [9, 9]


def test_target_in_excluded_items_raises():
    train = ItemSets.from_lists([[2]], 3)
    with pytest.raises(ValueError, match="leaks"):
        target_ranks(make_scorer(np.zeros((1, 3), np.float32)), np.array([0]), np.array([2]), exclude=[train])


def test_missing_target_raises():
    with pytest.raises(ValueError, match="target"):
        target_ranks(make_scorer(np.zeros((1, 3), np.float32)), np.array([0]), np.array([-1]))


def test_sampled_protocol_ranks():
    scores = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    ranks = sampled_target_ranks(
        lambda users, items: scores[users[:, None], items], np.array([0]), np.array([2]), np.array([[0, 1, 3]])
    )
    assert ranks.tolist() == [1]


def test_nan_target_is_an_error_and_nan_elsewhere_ranks_below():
    scores = np.array([[0.5, np.nan, 0.9, 0.1], [np.nan, 0.2, 0.3, 0.4]], dtype=np.float32)
    users = np.array([0])
    # user 0: target item 0 (0.5); item 2 (0.9) is above it, the NaN item 1 and item 3 are not
    assert target_ranks(make_scorer(scores), users, np.array([0])).tolist() == [1]
    with pytest.raises(FloatingPointError, match="NaN scores"):
        target_ranks(make_scorer(scores), np.array([1]), np.array([0]))
