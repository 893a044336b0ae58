"""Randomized response on purchase vectors: flip rates, determinism, scale (data_owner.privacy.controls)."""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest

from data_owner.privacy import flip_probability, randomized_response, randomized_response_seed
from shared.interactions import ItemSets


def random_sets(n_users: int, n_items: int, per_user: int, seed: int = 0) -> ItemSets:
    rng = np.random.default_rng(seed)
    return ItemSets.from_lists([rng.choice(n_items, per_user, replace=False) for _ in range(n_users)], n_items)


def test_flip_probability_is_one_over_one_plus_e_to_the_epsilon():
    assert flip_probability(math.log(3)) == pytest.approx(0.25)
    assert flip_probability(1.0) == pytest.approx(0.2689414, abs=1e-7)
    assert flip_probability(1000.0) == 0.0


@pytest.mark.parametrize("epsilon", [0, -1.0, float("nan"), float("inf"), "2"])
def test_a_bad_epsilon_is_refused_with_what_to_pass(epsilon):
    with pytest.raises(ValueError, match="epsilon must be a positive finite number"):
        randomized_response(random_sets(3, 10, 2), epsilon, seed=0)


def test_a_negative_seed_is_refused():
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        randomized_response(random_sets(3, 10, 2), 1.0, seed=-1)


@pytest.mark.parametrize("epsilon", [0.5, 1.0, 2.0])
def test_both_kinds_of_bit_flip_at_rate_p(epsilon):
    train = random_sets(n_users=200, n_items=2000, per_user=50)
    randomized = randomized_response(train, epsilon, seed=7)
    p = flip_probability(epsilon)
    users, items = train.to_pairs()
    ones = train.nnz
    zeros = train.n_users * train.n_items - ones
    ones_dropped = 1.0 - randomized.contains(users, items).mean()
    out_users, out_items = randomized.to_pairs()
    zeros_set = (~train.contains(out_users, out_items)).sum() / zeros
    # five binomial standard deviations: a fixed seed, so the test is deterministic, but the bound is honest
    assert abs(ones_dropped - p) < 5 * math.sqrt(p * (1 - p) / ones)
    assert abs(zeros_set - p) < 5 * math.sqrt(p * (1 - p) / zeros)


def test_added_items_are_distinct_new_and_uniform_over_the_users_zeros():
    n_users, n_items = 3000, 100
    train = ItemSets.from_lists([list(range(10))] * n_users, n_items)  # every user owns items 0..9
    p = flip_probability(1.0)
    randomized = randomized_response(train, 1.0, seed=3)
    for u in range(0, n_users, 97):
        assert np.all(np.diff(randomized.row(u)) > 0)  # sorted, no item twice
    counts = np.bincount(randomized.indices, minlength=n_items)
    kept = counts[:10] / n_users  # owned items survive with 1 - p
    added = counts[10:] / n_users  # every other item appears with p, whichever it is
    sigma = math.sqrt(p * (1 - p) / n_users)
    assert np.all(np.abs(kept - (1 - p)) < 5 * sigma)
    assert np.all(np.abs(added - p) < 5 * sigma)


def test_a_large_epsilon_keeps_every_set():
    train = random_sets(50, 500, 20)
    randomized = randomized_response(train, 60.0, seed=1)
    assert np.array_equal(randomized.indptr, train.indptr) and np.array_equal(randomized.indices, train.indices)


def test_the_same_seed_gives_the_same_matrix_and_another_seed_another():
    train = random_sets(40, 300, 15)
    first, again = randomized_response(train, 1.0, seed=11), randomized_response(train, 1.0, seed=11)
    other = randomized_response(train, 1.0, seed=12)
    assert np.array_equal(first.indptr, again.indptr) and np.array_equal(first.indices, again.indices)
    assert not (np.array_equal(first.indptr, other.indptr) and np.array_equal(first.indices, other.indices))


def test_empty_users_receive_flips_too():
    train = ItemSets.from_lists([[], [1, 2]], 1000)
    randomized = randomized_response(train, 0.5, seed=0)
    assert randomized.lengths()[0] > 0  # a user without interactions still gets ~p * n_items random ones


def test_a_huge_catalog_never_builds_a_dense_matrix():
    train = random_sets(n_users=100, n_items=10_000_000, per_user=30)
    tracemalloc.start()
    try:
        randomized = randomized_response(train, 10.0, seed=0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20_000_000  # a dense 100 x 10M boolean matrix alone would take 1 GB
    expected = 100 * (30 * (1 - flip_probability(10.0)) + (10_000_000 - 30) * flip_probability(10.0))
    assert abs(randomized.nnz - expected) < 5 * math.sqrt(expected)


def test_the_pipeline_seed_is_keyed_by_the_secret():
    secret = b"0123456789abcdef-owner"
    assert randomized_response_seed(secret, 0) == randomized_response_seed(secret, 0)
    assert randomized_response_seed(secret, 0) != randomized_response_seed(secret, 1)
    assert randomized_response_seed(secret, 0) != randomized_response_seed(b"another-secret-0123", 0)
    with pytest.raises(ValueError, match="at least 16 bytes"):
        randomized_response_seed(b"short", 0)


def test_the_randomized_split_keeps_the_held_out_items_out_of_the_input():
    from data_owner.data.split import LeaveOneOutSplit, check_no_leakage
    from data_owner.privacy import randomized_split
    from tests.conftest import checkerboard

    train, valid, test = checkerboard(n_users=200, n_items=40)
    split = LeaveOneOutSplit(train=train, valid_item=valid, test_item=test, user_ids=np.arange(200),
                             item_ids=np.arange(40), has_timestamps=False, source="board")
    randomized = randomized_split(split, 0.2, seed=5)  # p = 0.45: most held-out items would be flipped on
    check_no_leakage(randomized)  # raises if a validation or test item is among the training items
    assert np.array_equal(randomized.valid_item, valid) and np.array_equal(randomized.test_item, test)
    assert randomized.train.nnz != train.nnz and "randomized response, eps=0.2" in randomized.source
    expected = randomized_response(train, 0.2, seed=5)  # the same flips, minus the held-out positions
    users, items = expected.to_pairs()
    held = (valid[users] == items) | (test[users] == items)
    assert held.any() and np.array_equal(randomized.train.keys(), expected.keys()[~held])
