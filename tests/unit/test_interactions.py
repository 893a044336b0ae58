import numpy as np
import pytest

from shared.interactions import ItemSets


def test_from_pairs_merges_duplicates_and_sorts():
    sets = ItemSets.from_pairs(np.array([1, 0, 1, 1]), np.array([3, 2, 0, 3]), n_users=3, n_items=4)
    assert sets.row(0).tolist() == [2]
    assert sets.row(1).tolist() == [0, 3]
    assert sets.row(2).tolist() == []
    assert sets.nnz == 3


def test_contains_and_gather():
    sets = ItemSets.from_lists([[0, 2], [], [1]], 3)
    assert sets.contains(np.array([0, 0, 1, 2]), np.array([2, 1, 0, 1])).tolist() == [True, False, False, True]
    positions, items = sets.gather(np.array([2, 0]))
    assert positions.tolist() == [0, 1, 1] and items.tolist() == [1, 0, 2]


def test_out_of_range_items_rejected():
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        ItemSets.from_lists([[3]], 3)
